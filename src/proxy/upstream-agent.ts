// The keep-alive pool for forwarded HTTP requests. Its connections are dialled like a
// tunnel's: across every address that passed the policy checks, in order, within the
// connect timeout. The candidate list is the pool key, so requests whose destination
// resolved to the same allowed addresses share idle connections.
import http from 'node:http';
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

// http-proxy reports upstream trouble as errno-style errors; keep the classification dial() made.
const ERRNO: Partial<Record<FailureKind, string>> = {
  connection_refused: 'ECONNREFUSED',
  connection_timeout: 'ETIMEDOUT',
  unreachable: 'EHOSTUNREACH',
};

const nodeAddRequest = (http.Agent.prototype as unknown as { addRequest(req: http.ClientRequest, options: http.ClientRequestArgs): void }).addRequest;

export class UpstreamAgent extends http.Agent {
  /** The request addRequest was last handed (see takeRequest). */
  private lastRequest: http.ClientRequest | null = null;

  constructor(
    private readonly connectTimeoutMs: number,
    /** Told how long each new upstream connection took (the connect latency histogram). */
    private readonly observeConnectSeconds?: (seconds: number) => void,
    /** A parent SOCKS proxy to dial through, or null. */
    private readonly via: UpstreamProxy | null = null,
  ) {
    super({ keepAlive: true, maxSockets: 512, maxFreeSockets: 64, scheduling: 'lifo' });
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
    return req;
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
