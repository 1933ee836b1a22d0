// Connects to the first reachable address among those the policy allowed.
import net from 'node:net';
import type { IpAddress } from '../policy/host.js';
import type { Failure } from './outcomes.js';
import { Downstream } from './downstream.js';
import { connectVia, type UpstreamProxy } from './upstream-proxy.js';

/** `downstream` is set when dialled for a tunnel: it carries the upstream's bytes to the client. */
export type DialResult = { ok: true; socket: net.Socket; address: string; downstream?: Downstream } | { ok: false; failure: Failure };

/** What an errno from connecting to `target` means for the client. */
export function classify(err: NodeJS.ErrnoException, target: string): Failure {
  switch (err.code) {
    case 'ECONNREFUSED':
      return { kind: 'connection_refused', detail: `${target} refused the connection` };
    case 'ETIMEDOUT':
      return { kind: 'connection_timeout', detail: `${target} did not answer in time` };
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return { kind: 'unreachable', detail: `${target} is unreachable (${err.code})` };
    case 'ECONNRESET':
      // Forwarding reports an origin that accepted and then closed or reset before answering.
      return { kind: 'connect_error', detail: `${target} closed or reset the connection before answering (ECONNRESET)` };
    default:
      return { kind: 'connect_error', detail: `connecting to ${target} failed (${err.code ?? err.message})` };
  }
}

export const CLIENT_WENT_AWAY: Failure = Object.freeze({ kind: 'connect_error', detail: 'client went away' });

function target(ip: IpAddress, port: number): string {
  return ip.kind() === 'ipv6' ? `[${ip.toString()}]:${port}` : `${ip.toString()}:${port}`;
}

/** Through the parent proxy: its socket carries the handshake, so no `onread` relay (see Downstream). */
async function connectOnceVia(via: UpstreamProxy, ip: IpAddress, port: number, timeoutMs: number, isCancelled: () => boolean, tunnel: boolean): Promise<DialResult> {
  const r = await connectVia(via, ip, port, timeoutMs, target(ip, port));
  if (!r.ok) return r;
  if (isCancelled()) {
    r.socket.destroy();
    return { ok: false, failure: CLIENT_WENT_AWAY };
  }
  // As for a direct tunnel: the client may keep sending after the origin's FIN.
  if (tunnel) r.socket.allowHalfOpen = true;
  return { ok: true, socket: r.socket, address: ip.toString() };
}

function connectOnce(ip: IpAddress, port: number, timeoutMs: number, isCancelled: () => boolean, tunnel: boolean): Promise<DialResult> {
  return new Promise((resolve) => {
    const downstream = tunnel ? new Downstream() : undefined;
    const host = ip.toString();
    // A tunnel's upstream stays writable after the origin's FIN (a half-close), so what the
    // client still sends reaches the origin.
    const socket = net.connect(downstream ? { host, port, noDelay: true, allowHalfOpen: true, onread: downstream.onread } : { host, port, noDelay: true });
    downstream?.bind(socket);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, failure: classify(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }), target(ip, port)) });
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      if (isCancelled()) {
        socket.destroy();
        resolve({ ok: false, failure: CLIENT_WENT_AWAY });
        return;
      }
      resolve(downstream ? { ok: true, socket, address: host, downstream } : { ok: true, socket, address: host });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok: false, failure: classify(err, target(ip, port)) });
    });
  });
}

export interface DialOptions {
  /** Told how long a successful dial took (the upstream connect latency histogram). */
  readonly observeSeconds?: ((seconds: number) => void) | undefined;
  /** Dialling for a tunnel: the result carries a Downstream that relays without per-read garbage. */
  readonly tunnel?: boolean;
  /** A parent proxy to dial through, or null/absent to connect directly. */
  readonly via?: UpstreamProxy | null | undefined;
}

/**
 * Tries each address in order until one connects, within one overall deadline. The last
 * failure is reported, since that is the one the client would have hit.
 */
export function dial(
  addresses: readonly IpAddress[],
  port: number,
  timeoutMs: number,
  isCancelled: () => boolean,
  opts: DialOptions = {},
): Promise<DialResult> {
  const started = performance.now();
  const tunnel = opts.tunnel ?? false;
  const via = opts.via ?? null;
  // One direct address (every IP literal) is one attempt: no loop of awaits around it.
  const attempt =
    addresses.length === 1 && via === null && timeoutMs > 0 && !isCancelled()
      ? connectOnce(addresses[0]!, port, timeoutMs, isCancelled, tunnel)
      : dialFirst(addresses, port, timeoutMs, isCancelled, tunnel, via);
  const observe = opts.observeSeconds;
  if (!observe) return attempt;
  return attempt.then((result) => {
    if (result.ok) observe((performance.now() - started) / 1000);
    return result;
  });
}

async function dialFirst(
  addresses: readonly IpAddress[],
  port: number,
  timeoutMs: number,
  isCancelled: () => boolean,
  tunnel: boolean,
  via: UpstreamProxy | null,
): Promise<DialResult> {
  const deadline = Date.now() + timeoutMs;
  let last: DialResult = { ok: false, failure: { kind: 'unreachable', detail: 'no address to connect to' } };
  for (const ip of addresses) {
    const remaining = deadline - Date.now();
    if (remaining <= 0 || isCancelled()) break;
    last = via ? await connectOnceVia(via, ip, port, remaining, isCancelled, tunnel) : await connectOnce(ip, port, remaining, isCancelled, tunnel);
    if (last.ok) return last;
  }
  return last;
}
