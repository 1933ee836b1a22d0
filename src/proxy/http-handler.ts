// The HTTP face of the proxy: CONNECT tunnels, absolute-form forwarding (http-proxy over
// keep-alive upstream connections, WebSocket upgrades included), and clear refusals.
import http from 'node:http';
import type net from 'node:net';
import httpProxy from 'http-proxy';
import { parsePort } from '../policy/host.js';
import { CLIENT_WENT_AWAY, classify } from './dial.js';
import type { Admission, AdmitResult, Gate, Protocol } from './gate.js';
import { renderingOf, type Failure } from './outcomes.js';
import { drainUntilClosed, failureBody, failureHeaders, rawRefusal, rawResponse } from './raw-response.js';
import type { Connections } from './connections.js';
import { UpstreamAgent, poolHost, poolTarget } from './upstream-agent.js';
import { forwardConn, type ForwardConn } from './forward-conn.js';
import { upstreamRequestHeaders } from './forward-headers.js';
import { relayResponse } from './forward-response.js';
import type { ConnectHandler } from './connect-handler.js';
import type { UpstreamProxy } from './upstream-proxy.js';

export interface HttpHandlerOptions {
  readonly gate: Gate;
  readonly connections: Connections;
  readonly connectTimeoutMs: number;
  /** How long an idle kept-alive connection to an origin is kept (0: until the origin closes it). */
  readonly upstreamIdleMs?: number;
  readonly handshakeTimeoutMs: number;
  readonly maxHeaderBytes: number;
  /** Upstream connect latency, for the metrics histogram. */
  readonly observeConnectSeconds?: (seconds: number) => void;
  /** A request sent again after an origin closed the reused connection it went on (see send). */
  readonly onRetry?: () => void;
  /** A parent proxy (SOCKS or HTTP) every allowed connection is dialled through, or null. */
  readonly upstreamProxy?: UpstreamProxy | null | undefined;
  readonly connect: ConnectHandler;
}


export function createHttpHandler(opts: HttpHandlerOptions): http.Server {
  const { gate, connections } = opts;
  const agent = new UpstreamAgent(opts.connectTimeoutMs, opts.observeConnectSeconds, opts.upstreamProxy ?? null, opts.upstreamIdleMs ?? 0);
  // http-proxy forwards the request; the response is relayed by relayResponse (hop-by-hop
  // fields dropped, truncation passed on as a cut connection), not by http-proxy's own passes.
  // toProxy: the request's url (already the origin-form target) is taken as it is, not
  // re-parsed with url.parse (which also turns backslashes into slashes). http-proxy still
  // folds repeated slashes when it joins paths, so the target is set again on the upstream
  // request it creates (see exactTarget).
  const proxy = httpProxy.createProxyServer({ agent, xfwd: false, ws: true, changeOrigin: false, selfHandleResponse: true, toProxy: true });
  proxy.on('proxyRes', relayResponse);
  // Without a listener http-proxy rethrows; every error is handled per request below.
  proxy.on('error', () => undefined);
  // An upgraded WebSocket leaves the HTTP server's hands; registered as a tunnel it is
  // drained and cut at shutdown (and idle-timed) instead of holding close() open forever.
  const pendingUpgrades = new WeakMap<http.IncomingMessage, Admission>();
  proxy.on('proxyReqWs', (proxyReq: http.ClientRequest, req: http.IncomingMessage, socket: net.Socket) => {
    // Emitted before http-proxy ends the handshake request (and so before Node writes its head).
    exactTarget(proxyReq, req.url ?? '/');
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

  /**
   * Identity and policy for one request: the gate's verdict (identity not established is
   * decided and recorded at once). Not an async function of its own: the gate answers IP
   * literals without a promise, and hostnames with the one its DNS lookup needs.
   */
  function admitRequest(conn: ForwardConn, req: http.IncomingMessage, protocol: Protocol, host: string, port: number): AdmitResult | Promise<AdmitResult> {
    // Parsing is remembered per connection; identity and policy are decided afresh.
    const from = conn.from;
    const identity = gate.identify(conn.credentials(req.headers['proxy-authorization']), from);
    const destination = conn.destination(host);
    if (!identity.ok) return { ok: false, failure: gate.refuseIdentity(identity, protocol, from, destination, port), record: null };
    return gate.admit(identity.container, protocol, from, destination, port);
  }

  /** admitRequest's admission, or null once `refuse` has been given the failure. */
  async function admitted(pending: AdmitResult | Promise<AdmitResult>, refuse: (f: Failure) => void): Promise<Admission | null> {
    const result = await pending;
    if (result.ok) return result.admission;
    refuse(result.failure);
    return null;
  }

  /** http-proxy's error callback: the failure is audited as the admission's outcome, then refused. */
  function upstreamFailed(admission: Admission, authority: string, refuse: (f: Failure) => void): (err: Error) => void {
    return (err) => {
      const f = upstreamFailure(err as NodeJS.ErrnoException, authority);
      gate.upstreamFailed(admission, f);
      refuse(f);
    };
  }

  // CONNECTs the listener's fast path did not take (split or unusual heads) arrive here.
  // (Socket errors are handled by the listener, which every socket here came through.)
  server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    opts.connect(socket, req.url ?? '', req.headers['proxy-authorization'], head);
  });

  async function forward(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = absoluteTarget(req);
    if ('error' in url) {
      respond(res, { kind: 'bad_request', detail: url.error });
      return;
    }
    const conn = forwardConn(req.socket);
    const pending = admitRequest(conn, req, 'http', url.host, url.port);
    const result = pending instanceof Promise ? await pending : pending;
    if (!result.ok) {
      respond(res, result.failure);
      return;
    }
    const admission = result.admission;
    toUpstream(req, url, false);
    // A client that left while its request was decided (waiting for DNS, say): nothing is
    // sent upstream, and, as for a tunnel, the allow is recorded as going nowhere.
    if (res.destroyed || req.socket.destroyed) {
      gate.upstreamFailed(admission, CLIENT_WENT_AWAY);
      return;
    }
    connections.trackForward(req, res, admission, conn.ipText(admission.addresses[0]!));
    const target = req.headers.expect === undefined ? conn.poolTarget(admission.addresses, admission.port) : poolTarget(conn.poolHost(admission.addresses), admission.port);
    send(req, res, admission, url, target, true);
  }

  /**
   * Sends an admitted request upstream through the pool. A request that fails on a reused
   * connection before any byte of a response came back most likely met the origin closing
   * that idle connection as the request arrived, and the origin never saw it: an idempotent
   * one without a body (see retryable) is sent once more, on a new connection, under the same
   * admission (one request, one decision and one audit row; the retry is the pool's business
   * like the dial itself). Anything else fails as it is: a 502 naming what happened.
   */
  function send(req: http.IncomingMessage, res: http.ServerResponse, admission: Admission, url: { authority: string; path: string }, target: httpProxy.ServerOptions, mayRetry: boolean): void {
    let upstream: http.ClientRequest | null = null;
    let readMark = -1;
    // http-proxy also reports the client request's own errors through this callback, on every
    // attempt it was handed; once retried, only the retry's callback answers them.
    let superseded = false;
    proxy.web(req, res, target, (err: Error) => {
      if (superseded) return;
      if (mayRetry && upstream !== null && retryable(req, res, upstream, readMark, err as NodeJS.ErrnoException)) {
        superseded = true;
        opts.onRetry?.();
        agent.freshNext();
        send(req, res, admission, url, target, false);
        return;
      }
      const f = upstreamFailure(err as NodeJS.ErrnoException, url.authority);
      gate.upstreamFailed(admission, f);
      respond(res, f);
    });
    upstream = agent.takeRequest();
    readMark = agent.takeReadMark();
    // A response that closes unfinished (the client left or aborted, or the registry cut it)
    // takes its upstream request with it, at once, whether the origin has answered yet or
    // not: its connection is closed, never handed back to the pool half-used. Node destroys
    // the client side only; a GET's request stream has already ended, so http-proxy's own
    // abort-on-'aborted' never fires for it. (A request that completed is not touched: Node
    // marks it destroyed once its connection went back to the pool, so destroy() is a no-op.)
    if (upstream !== null) {
      const sent = upstream;
      exactTarget(sent, url.path);
      res.on('close', () => {
        if (!res.writableFinished) sent.destroy();
      });
    }
  }

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const failed = (): void => void res.destroy();
    // A pipelined request is answered only after the ones before it; until then its
    // response has no socket, and if the client leaves first it never emits 'close'. So
    // decide and forward it only when its turn comes (or never, if the client is gone):
    // otherwise it would stay in the connection registry, holding its limiter slot, forever.
    // The usual case, a request with nothing ahead of it, goes straight on.
    if (res.socket) forward(req, res).catch(failed);
    else responseTurn(req, res).then((turn) => (turn ? forward(req, res) : undefined)).catch(failed);
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    void (async () => {
      const url = absoluteTarget(req);
      const refuse = (f: Failure): void => rawRefusal(socket, f, opts.handshakeTimeoutMs);
      if ('error' in url) {
        refuse({ kind: 'bad_request', detail: url.error });
        return;
      }
      const admission = await admitted(admitRequest(forwardConn(req.socket), req, 'http', url.host, url.port), refuse);
      if (!admission) return;
      toUpstream(req, url, true);
      pendingUpgrades.set(req, admission);
      // An upgrade the origin declines never becomes a tunnel; its limiter slot ends with the socket.
      socket.once('close', admission.release);
      proxy.ws(req, socket, head, poolTarget(poolHost(admission.addresses), admission.port), upstreamFailed(admission, url.authority, refuse));
      // Not needed here (proxyReqWs above has it); only cleared, so it is not kept reachable.
      agent.takeRequest();
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

/** Per client socket: what its queued (pipelined) requests do if the client leaves first. */
const leaveWaiters = new WeakMap<net.Socket, Set<() => void>>();

/**
 * Resolves true once `res` is the response being written on its socket; false if the client
 * left first. A client may pipeline any number of requests: they share one 'close' listener
 * per socket rather than adding one each (Node warns of a leak past ten, on stderr).
 */
function responseTurn(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> {
  if (res.socket) return Promise.resolve(true);
  const socket = req.socket;
  if (socket.destroyed) return Promise.resolve(false);
  let waiters = leaveWaiters.get(socket);
  if (waiters === undefined) {
    const all = new Set<() => void>();
    waiters = all;
    leaveWaiters.set(socket, all);
    socket.once('close', () => {
      leaveWaiters.delete(socket);
      for (const w of all) w();
    });
  }
  const mine = waiters;
  return new Promise((resolve) => {
    const onSocket = (): void => {
      mine.delete(onClose);
      resolve(true);
    };
    const onClose = (): void => {
      res.off('socket', onSocket);
      resolve(false);
    };
    res.once('socket', onSocket);
    mine.add(onClose);
  });
}

/**
 * Rewrites a forwarded request into what goes upstream. Hop-by-hop fields, the proxy
 * credentials among them, never reach the origin; with an absolute-form target the Host
 * header must be the URL's authority (RFC 9112 3.2.2); the target becomes origin-form.
 */
function toUpstream(req: http.IncomingMessage, url: { authority: string; path: string }, upgrade: boolean): void {
  req.headers = upstreamRequestHeaders(req.headers, upgrade);
  req.headers.host = url.authority;
  req.url = url.path;
}

/**
 * Puts the request target back as the client sent it, on the upstream request http-proxy
 * just created: its path join folds `//` into `/`, which changes what the origin serves (and
 * breaks signed URLs); forwarded requests have it leave the path out altogether (see
 * poolTarget), so this is where their path is set. Node writes the request line from `path`
 * when the head is first sent, which is later (when http-proxy's pipe ends or writes the
 * body); a request with an Expect field is the exception (Node writes its head at once),
 * and keeps http-proxy's path.
 */
function exactTarget(upstream: http.ClientRequest, path: string): void {
  if (upstream.path !== path) upstream.path = path;
}

/** Methods that may be sent twice (RFC 9110 9.2.2), less the one with a body by design (see retryable). */
const RETRYABLE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * Whether a failed forwarded request is safe to send again: it was sent on a reused pooled
 * connection (`readMark` >= 0, what that connection had read before), which the origin
 * closed or reset without a byte of response since; its method is idempotent; it has no
 * body (a streamed body is consumed and cannot be sent twice); and its client still waits
 * with nothing answered yet.
 */
function retryable(req: http.IncomingMessage, res: http.ServerResponse, upstream: http.ClientRequest, readMark: number, err: NodeJS.ErrnoException): boolean {
  if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') return false;
  if (readMark < 0 || !upstream.reusedSocket || (upstream as { res?: unknown }).res != null) return false;
  const socket = upstream.socket;
  if (socket === null || socket.bytesRead !== readMark) return false;
  if (res.headersSent || res.destroyed || req.socket.destroyed) return false;
  if (!RETRYABLE_METHODS.has(req.method ?? '')) return false;
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0');
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
