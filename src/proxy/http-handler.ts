// The HTTP face of the proxy: CONNECT tunnels, absolute-form forwarding (http-proxy over
// keep-alive upstream connections, WebSocket upgrades included), and clear refusals.
import http from 'node:http';
import type net from 'node:net';
import httpProxy from 'http-proxy';
import { HostError, parseAuthority, parsePort } from '../policy/host.js';
import { parseBasicAuth } from '../identity/identify.js';
import { classify, dial } from './dial.js';
import type { Admission, Gate, Protocol } from './gate.js';
import { proxyStatusHeader, renderingOf, type Failure } from './outcomes.js';
import type { Connections } from './connections.js';
import { UpstreamAgent, poolHost } from './upstream-agent.js';
import { clientAddress } from './client-address.js';

export interface HttpHandlerOptions {
  readonly gate: Gate;
  readonly connections: Connections;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  readonly maxHeaderBytes: number;
  /** Upstream connect latency, for the metrics histogram. */
  readonly observeConnectSeconds?: (seconds: number) => void;
}

// Hop-by-hop headers (RFC 9110 7.6.1) plus the proxy's own credentials: none of them may
// reach the origin. Transfer-Encoding is left to Node, which re-frames the body itself.
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authorization', 'proxy-authenticate', 'proxy-connection', 'te', 'trailer', 'upgrade'];

function stripHopByHop(headers: http.IncomingHttpHeaders, keepUpgrade: boolean): void {
  const named = headers.connection;
  if (typeof named === 'string') {
    for (const h of named.split(',')) {
      const name = h.trim().toLowerCase();
      if (name && !(keepUpgrade && name === 'upgrade')) delete headers[name];
    }
  }
  for (const h of HOP_BY_HOP) if (!(keepUpgrade && (h === 'upgrade' || h === 'connection'))) delete headers[h];
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 407: 'Proxy Authentication Required', 408: 'Request Timeout', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 504: 'Gateway Timeout' };

/** A complete response written straight to a raw socket (CONNECT, upgrades, parse errors). */
function rawResponse(socket: net.Socket, status: number, body: string, headers: Record<string, string> = {}, lingerMs = 10_000): void {
  if (socket.destroyed || !socket.writable) return;
  const payload = Buffer.from(body, 'utf8');
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  socket.end(Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), payload]));
  drainUntilClosed(socket, lingerMs);
}

/**
 * After the last response on a raw (CONNECT or upgrade) socket: read and discard whatever
 * the client still sends. Such a socket is paused, and bytes it holds unread (a TLS hello
 * pipelined after a refused CONNECT, say) would keep the client's FIN from ever being seen:
 * the socket would stay open forever and hold up shutdown. A client that does not close
 * within `lingerMs` is cut.
 */
function drainUntilClosed(socket: net.Socket, lingerMs: number): void {
  socket.resume();
  socket.setTimeout(lingerMs > 0 ? lingerMs : 10_000, () => socket.destroy());
}

function failureHeaders(f: Failure): Record<string, string> {
  const headers: Record<string, string> = { 'Proxy-Status': proxyStatusHeader(f.kind, f.detail) };
  if (f.kind === 'identity_required' || f.kind === 'identity_invalid') headers['Proxy-Authenticate'] = 'Basic realm="sluice"';
  if (f.retryAfterSeconds !== undefined) headers['Retry-After'] = String(f.retryAfterSeconds);
  return headers;
}

function failureBody(f: Failure): string {
  return f.body ?? `sluice: ${f.detail}\n`;
}

export function createHttpHandler(opts: HttpHandlerOptions): http.Server {
  const { gate, connections } = opts;
  const agent = new UpstreamAgent(opts.connectTimeoutMs, opts.observeConnectSeconds);
  const proxy = httpProxy.createProxyServer({ agent, xfwd: false, ws: true, changeOrigin: false });
  // Responses get the same treatment as requests (RFC 9110 7.6.1): an origin's Connection
  // options, and the fields they name, describe the upstream hop only. http-proxy then sets
  // the client hop's own Connection header.
  proxy.on('proxyRes', (proxyRes: http.IncomingMessage, _req: http.IncomingMessage, res: http.ServerResponse) => {
    stripHopByHop(proxyRes.headers, false);
    // An origin that closes or resets half-way through its response: http-proxy would leave
    // the client waiting forever for the rest. Cut the client connection instead, which is
    // how a truncated response must be passed on (RFC 9112 9.6), and frees its slot.
    proxyRes.once('close', () => {
      if (!proxyRes.complete) res.destroy();
    });
  });
  // Without a listener http-proxy rethrows; every error is handled per request below.
  proxy.on('error', () => undefined);
  // An upgraded WebSocket leaves the HTTP server's hands; registered as a tunnel it is
  // drained and cut at shutdown (and idle-timed) instead of holding close() open forever.
  const pendingUpgrades = new WeakMap<http.IncomingMessage, Admission>();
  proxy.on('proxyReqWs', (proxyReq: http.ClientRequest, req: http.IncomingMessage, socket: net.Socket) => {
    // An origin that declines the upgrade: http-proxy relays its answer and ends the socket;
    // the client's side must still be read to the end (see drainUntilClosed).
    proxyReq.once('response', () => drainUntilClosed(socket, opts.handshakeTimeoutMs));
    const admission = pendingUpgrades.get(req);
    if (!admission) return;
    proxyReq.once('upgrade', (_res: http.IncomingMessage, upstream: net.Socket) => {
      connections.register(socket, upstream, 'http', admission, upstream.remoteAddress ?? admission.addresses[0]!.toString());
    });
  });

  const server = http.createServer({
    maxHeaderSize: opts.maxHeaderBytes,
    headersTimeout: opts.handshakeTimeoutMs,
    requestTimeout: 0,
    keepAliveTimeout: 30_000,
    noDelay: true,
    // headersTimeout is only enforced on this tick; Node's default (30 s) would let a stalled
    // client hold its socket far past handshake_ms.
    connectionsCheckingInterval: checkingInterval(opts.handshakeTimeoutMs),
  });
  // This server never listens: the proxy listeners hand it sockets. Node starts connection
  // tracking only on 'listening', and without it headersTimeout (408) is never enforced and
  // closeIdleConnections()/closeAllConnections() do nothing, so shutdown would wait for
  // every keep-alive client to leave on its own.
  server.emit('listening');

  /** Identity and policy for one request; renders the refusal itself when not admitted. */
  async function admitRequest(
    req: http.IncomingMessage,
    protocol: Protocol,
    host: string,
    port: number,
    refuse: (f: Failure) => void,
  ): Promise<Admission | null> {
    const from = clientAddress(req.socket);
    const identity = gate.identify(parseBasicAuth(req.headers['proxy-authorization']), from);
    if (!identity.ok) {
      refuse(gate.refuseIdentity(identity, protocol, from, host, port));
      return null;
    }
    const result = await gate.admit(identity.container, protocol, from, host, port);
    if (!result.ok) {
      refuse(result.failure);
      return null;
    }
    return result.admission;
  }

  server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    void (async () => {
      let target;
      try {
        target = parseAuthority(req.url ?? '');
      } catch (err) {
        if (!(err instanceof HostError)) throw err;
        const f: Failure = { kind: 'bad_request', detail: `CONNECT target must be host:port or [ipv6]:port (${err.message})` };
        rawResponse(socket, 400, failureBody(f), failureHeaders(f), opts.handshakeTimeoutMs);
        return;
      }
      // Admit by the raw host so the audit shows what the client asked for.
      const rawHost = (req.url ?? '').slice(0, (req.url ?? '').lastIndexOf(':'));
      const refuse = (f: Failure): void => rawResponse(socket, renderingOf(f.kind).status, failureBody(f), failureHeaders(f), opts.handshakeTimeoutMs);
      socket.pause();
      const admission = await admitRequest(req, 'connect', rawHost, target.port, refuse);
      if (!admission) return;
      let gone = false;
      socket.once('close', () => (gone = true));
      const dialled = await dial(admission.addresses, admission.port, opts.connectTimeoutMs, () => gone, { observeSeconds: opts.observeConnectSeconds, tunnel: true });
      if (!dialled.ok) {
        gate.upstreamFailed(admission, dialled.failure);
        refuse(dialled.failure);
        return;
      }
      if (gone) {
        admission.release();
        dialled.socket.destroy();
        return;
      }
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) dialled.socket.write(head);
      connections.relay(socket, dialled.socket, 'connect', admission, dialled.address, dialled.downstream);
    })().catch(() => socket.destroy());
  });

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    void (async () => {
      // A pipelined request is answered only after the ones before it; until then its
      // response has no socket, and if the client leaves first it never emits 'close'. So
      // decide and forward it only when its turn comes (or never, if the client is gone):
      // otherwise it would stay in the connection registry, holding its limiter slot, forever.
      if (!(await responseTurn(req, res))) return;
      const url = absoluteTarget(req);
      if ('error' in url) {
        respond(res, { kind: 'bad_request', detail: url.error });
        return;
      }
      const admission = await admitRequest(req, 'http', url.host, url.port, (f) => respond(res, f));
      if (!admission) return;
      stripHopByHop(req.headers, false);
      // RFC 9112 3.2.2: with an absolute-form target the Host header must be the URL's authority.
      req.headers.host = url.authority;
      req.url = url.path;
      const address = poolHost(admission.addresses);
      connections.trackForward(req, res, admission, admission.addresses[0]!.toString());
      proxy.web(req, res, { target: { host: address, hostname: address, port: admission.port, protocol: 'http:' } as never }, (err) => {
        const f = upstreamFailure(err as NodeJS.ErrnoException, url.authority);
        gate.upstreamFailed(admission, f);
        respond(res, f);
      });
    })().catch(() => res.destroy());
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    void (async () => {
      const url = absoluteTarget(req);
      const refuse = (f: Failure): void => rawResponse(socket, renderingOf(f.kind).status, failureBody(f), failureHeaders(f), opts.handshakeTimeoutMs);
      if ('error' in url) {
        refuse({ kind: 'bad_request', detail: url.error });
        return;
      }
      const admission = await admitRequest(req, 'http', url.host, url.port, refuse);
      if (!admission) return;
      stripHopByHop(req.headers, true);
      req.headers.host = url.authority;
      req.url = url.path;
      const address = poolHost(admission.addresses);
      pendingUpgrades.set(req, admission);
      // An upgrade the origin declines never becomes a tunnel; its limiter slot ends with the socket.
      socket.once('close', admission.release);
      proxy.ws(req, socket, head, { target: { host: address, hostname: address, port: admission.port, protocol: 'http:' } as never }, (err) => {
        const f = upstreamFailure(err as NodeJS.ErrnoException, url.authority);
        gate.upstreamFailed(admission, f);
        refuse(f);
      });
    })().catch(() => socket.destroy());
  });

  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const f: Failure =
      code === 'HPE_HEADER_OVERFLOW'
        ? { kind: 'bad_request', detail: `request headers exceed ${opts.maxHeaderBytes} bytes` }
        : code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? { kind: 'bad_request', detail: 'request headers were not received in time' }
          : { kind: 'bad_request', detail: `malformed HTTP request (${code || err.message})` };
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    rawResponse(socket, status, failureBody(f), failureHeaders(f), opts.handshakeTimeoutMs);
  });

  return server;
}

/** Resolves true once `res` is the response being written on its socket; false if the client left first. */
function responseTurn(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> {
  if (res.socket) return Promise.resolve(true);
  const socket = req.socket;
  if (socket.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onSocket = (): void => {
      socket.off('close', onClose);
      resolve(true);
    };
    const onClose = (): void => {
      res.off('socket', onSocket);
      resolve(false);
    };
    res.once('socket', onSocket);
    socket.once('close', onClose);
  });
}

/** How often to look for clients that are too slow with their headers (a fraction of the limit). */
function checkingInterval(handshakeTimeoutMs: number): number {
  if (handshakeTimeoutMs <= 0) return 1000;
  return Math.max(25, Math.min(1000, Math.floor(handshakeTimeoutMs / 4)));
}

function respond(res: http.ServerResponse, f: Failure): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = failureBody(f);
  res.writeHead(renderingOf(f.kind).status, { ...failureHeaders(f), 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/** The failure behind a forwarding error: the pool's own dial verdict when it has one. */
function upstreamFailure(err: NodeJS.ErrnoException & { failure?: Failure }, authority: string): Failure {
  return err.failure ?? classify(err, authority);
}

type AbsoluteTarget = { host: string; port: number; authority: string; path: string } | { error: string };

/** The origin of an absolute-form request; origin-form is refused with an explanation. */
function absoluteTarget(req: http.IncomingMessage): AbsoluteTarget {
  const raw = req.url ?? '';
  if (raw.startsWith('/')) {
    return { error: 'this is a forward proxy: send requests in absolute form (http://host/path) by configuring HTTP_PROXY, or tunnel with CONNECT' };
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)([^#]*)/.exec(raw);
  if (!m) return { error: 'request target must be an absolute http:// URL' };
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'https') return { error: 'https:// URLs must be tunnelled with CONNECT, not sent to the proxy in the clear' };
  if (scheme !== 'http' && scheme !== 'ws') return { error: `unsupported scheme ${scheme}:// (only http:// is forwarded; use CONNECT for anything else)` };
  const authority = m[2]!;
  if (authority.includes('@')) return { error: 'credentials in the request URL are not allowed' };
  let host = authority;
  let port = 80;
  const portMatch = /^(.*):([0-9]*)$/.exec(authority);
  if (portMatch && !(authority.startsWith('[') && !authority.includes(']:'))) {
    host = portMatch[1]!;
    try {
      port = portMatch[2] === '' ? 80 : parsePort(portMatch[2]!);
    } catch {
      return { error: 'invalid port in request URL' };
    }
  }
  if (host.length === 0) return { error: 'request URL has no host' };
  // `http://host?q` has an empty path; origin-form needs it spelled `/?q` (RFC 9112 3.2.1).
  const path = m[3] ?? '';
  return { host, port, authority, path: path.startsWith('/') ? path : `/${path}` };
}
