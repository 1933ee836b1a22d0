// The keep-alive pool for forwarded HTTP requests. Its connections are dialled like a
// tunnel's: across every address that passed the policy checks, in order, within the
// connect timeout. The candidate list is the pool key, so requests whose destination
// resolved to the same allowed addresses share idle connections.
import http from 'node:http';
import type httpProxy from 'http-proxy';
import type net from 'node:net';
import ipaddr from 'ipaddr.js';
import type { IpAddress } from '../policy/host.js';
import { dial } from './dial.js';
import type { FailureKind } from './outcomes.js';
import type { UpstreamProxy } from './upstream-proxy.js';

/** What http-proxy is given as the target host: the allowed addresses, comma-joined. */
export function poolHost(addresses: readonly IpAddress[]): string {
  return addresses.map((a) => a.toString()).join(',');
}

/**
 * http-proxy options for the keep-alive pool's key (the allowed addresses, see poolHost).
 * `exactPathLater`: http-proxy leaves the request path out (it would only fold `//` in it,
 * with string work on every request), because the caller sets the exact one on the upstream
 * request before its head is written (see exactTarget in http-handler); not for a request
 * with an Expect field, whose head Node renders as the request is created.
 */
export function poolTarget(address: string, port: number, exactPathLater = false): httpProxy.ServerOptions {
  const target = { host: address, hostname: address, port, protocol: 'http:' } as never;
  return exactPathLater ? { target, ignorePath: true } : { target };
}

// http-proxy reports upstream trouble as errno-style errors; keep the classification dial() made.
const ERRNO: Partial<Record<FailureKind, string>> = {
  connection_refused: 'ECONNREFUSED',
  connection_timeout: 'ETIMEDOUT',
  unreachable: 'EHOSTUNREACH',
};

const nodeAddRequest = (http.Agent.prototype as unknown as { addRequest(req: http.ClientRequest, options: http.ClientRequestArgs): void }).addRequest;

/** The `timeout=N` of a response's Keep-Alive field, in ms, or null (raw headers: name, value, ...). */
export function keepAliveHintMs(raw: readonly string[] | undefined): number | null {
  if (raw === undefined) return null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 10 || name.toLowerCase() !== 'keep-alive') continue;
    const m = /^timeout=(\d+)/.exec(raw[i + 1]!);
    // Node reads the first Keep-Alive field only (repeats are joined after it).
    return m ? Number(m[1]) * 1000 : null;
  }
  return null;
}

/** Node's own (undocumented, stable since v0.12) halves of addRequest used by freshNext's dial. */
interface NodeAgentInternals {
  createSocket(req: http.ClientRequest, options: http.ClientRequestArgs, cb: (err: Error | null, socket: net.Socket) => void): void;
}
interface NodeRequestInternals {
  onSocket(socket: net.Socket, err?: Error): void;
}

export class UpstreamAgent extends http.Agent {
  /** The request addRequest was last handed (see takeRequest). */
  private lastRequest: http.ClientRequest | null = null;
  /** What the last request's socket had read before it, or -1 for a new connection (see takeReadMark). */
  private lastReadMark = -1;
  /** The next request gets a new connection, not an idle one (see freshNext). */
  private fresh = false;

  constructor(
    private readonly connectTimeoutMs: number,
    /** Told how long each new upstream connection took (the connect latency histogram). */
    private readonly observeConnectSeconds?: (seconds: number) => void,
    /** A parent proxy (SOCKS or HTTP) to dial through, or null. */
    private readonly via: UpstreamProxy | null = null,
    /**
     * An idle pooled connection is closed after this long (0: no limit of its own), or a
     * second before the origin's own `Keep-Alive: timeout=N` when that is sooner. Sent on
     * just as the origin times it out, a request would fail; closing first, below the usual
     * origin keep-alive timeouts, avoids the race. (See keepSocketAlive.)
     */
    private readonly idleMs = 0,
  ) {
    super({ keepAlive: true, maxSockets: 512, maxFreeSockets: 64, scheduling: 'lifo' });
  }

  /**
   * Node's keepSocketAlive, called as a connection goes back to the pool, with its idle
   * timeout armed here rather than through the agent's `timeout` option: with that option
   * Node also arms and clears a per-request timeout on every request (a listener and two
   * timer updates each), and reads the origin's Keep-Alive field from the response's header
   * object, which builds that object for every response (relayResponse works from the raw
   * headers and never needs it). The socket's timeout stays armed while it is in use; Node's
   * agent destroys a socket on timeout only while it is idle in the pool, and nothing
   * listens for it otherwise. False when the origin's announced timeout leaves no time:
   * Node then closes the connection instead of pooling it.
   */
  override keepSocketAlive(socket: net.Socket): boolean {
    socket.setKeepAlive(true, (this as unknown as { keepAliveMsecs: number }).keepAliveMsecs);
    socket.unref();
    let timeout = this.idleMs;
    const hint = keepAliveHintMs((socket as { _httpMessage?: { res?: http.IncomingMessage | null } | null })._httpMessage?.res?.rawHeaders);
    if (hint !== null) {
      // As Node does: a second early, and not kept at all when that leaves nothing.
      const early = hint - 1000;
      if (early <= 0) return false;
      if (timeout === 0 || early < timeout) timeout = early;
    }
    if (socket.timeout !== timeout) socket.setTimeout(timeout);
    return true;
  }

  /**
   * The next request (a retry after a reused connection failed) is sent on a new
   * connection: other idle connections to that origin may have been closed with it.
   */
  freshNext(): void {
    this.fresh = true;
  }

  /**
   * Hands a request an idle pooled connection, the common case, the way Node's own
   * addRequest does (newest idle first, destroyed ones dropped) but without first copying
   * the request's options twice (object spreads of some twenty fields: a visible share of
   * a forwarded request's CPU). No idle connection, or a request with its own timeout:
   * Node's addRequest (dial, or queue at maxSockets). Not done here: Node's re-tagging of a
   * reused socket for async_hooks, which nothing in sluice uses.
   */
  addRequest(req: http.ClientRequest, options: http.ClientRequestArgs): void {
    this.lastRequest = req;
    this.lastReadMark = -1;
    if (this.fresh) {
      this.fresh = false;
      // As Node's addRequest dials, less the maxSockets queue: a retry does not wait behind others.
      const agent = this as unknown as NodeAgentInternals;
      agent.createSocket(req, options, (err, socket) => (req as unknown as NodeRequestInternals).onSocket(socket, err ?? undefined));
      return;
    }
    const name = this.getName(options);
    const freeSockets = this.freeSockets as Record<string, net.Socket[] | undefined>;
    const free = freeSockets[name];
    if (free !== undefined && (req as { timeout?: number }).timeout === undefined) {
      let socket: net.Socket | undefined;
      while (socket === undefined && free.length > 0) {
        const s = free.pop()!;
        if (!s.destroyed) socket = s;
      }
      if (free.length === 0) delete freeSockets[name];
      if (socket !== undefined) {
        this.lastReadMark = socket.bytesRead;
        this.reuseSocket(socket, req);
        req.onSocket(socket);
        const sockets = this.sockets as Record<string, net.Socket[] | undefined>;
        (sockets[name] ??= []).push(socket);
        return;
      }
    }
    nodeAddRequest.call(this, req, options);
  }

  /**
   * The upstream request http-proxy created in the proxy.web()/ws() call that just returned
   * (Node's ClientRequest hands itself to its agent synchronously, in its constructor), or
   * null. http-proxy keeps it to itself; the forwarding path needs it to abort it when the
   * client leaves. Taking it clears it, so a finished request is not kept reachable.
   */
  takeRequest(): http.ClientRequest | null {
    const req = this.lastRequest;
    this.lastRequest = null;
    this.fresh = false;
    return req;
  }

  /**
   * For the request takeRequest returned: how many bytes its connection had read before it
   * was handed over, when it was an idle one reused; -1 for a new connection. A failure with
   * nothing read since is one where the origin sent no byte of a response.
   */
  takeReadMark(): number {
    const mark = this.lastReadMark;
    this.lastReadMark = -1;
    return mark;
  }

  override createConnection(options: http.ClientRequestArgs, callback?: (err: Error | null, socket: net.Socket) => void): net.Socket | undefined {
    const candidates = String(options.host ?? '')
      .split(',')
      .filter((a) => ipaddr.isValid(a))
      .map((a) => ipaddr.parse(a));
    void dial(candidates, Number(options.port), this.connectTimeoutMs, () => false, { observeSeconds: this.observeConnectSeconds, via: this.via }).then((r) => {
      if (r.ok) callback?.(null, r.socket);
      else callback?.(Object.assign(new Error(r.failure.detail), { code: ERRNO[r.failure.kind] ?? 'ECONNRESET', failure: r.failure }), undefined as never);
    });
    return undefined;
  }
}
