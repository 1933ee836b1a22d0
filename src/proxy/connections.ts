// The registry of open connections: tunnels (CONNECT, SOCKS, upgraded WebSockets) and
// in-flight forwarded HTTP requests. Everything that must see or end them goes through
// here: graceful shutdown, the idle timer, the API's list/close, and live revocation.
import type http from 'node:http';
import type net from 'node:net';
import type { Admission, Protocol } from './gate.js';
import type { Downstream } from './downstream.js';

export interface ConnectionInfo {
  readonly id: number;
  readonly kind: 'tunnel' | 'forward';
  readonly protocol: Protocol;
  readonly admission: Admission;
  /** The address actually dialled. */
  readonly address: string;
  readonly since: number;
}

export interface ConnectionClosed {
  readonly info: ConnectionInfo;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  readonly reason: string;
}

/**
 * The size of a request head as it is forwarded: request line, headers, blank line. Node
 * reads and writes heads as latin1, one byte per character, so string lengths are bytes.
 */
export function requestHeadBytes(req: http.IncomingMessage): number {
  // `METHOD URL HTTP/x.y\r\n` and the closing `\r\n`.
  let n = (req.method ?? 'GET').length + (req.url ?? '/').length + req.httpVersion.length + 11;
  const headers = req.headers;
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    // `name: value\r\n` per line; a repeated field is one line per value.
    if (typeof value === 'string') n += name.length + value.length + 4;
    else for (const v of value) n += name.length + v.length + 4;
  }
  return n;
}

/** What Node's client adds to every request it sends over the (keep-alive) upstream pool. */
const FORWARDED_CONNECTION_FIELD = 'Connection: keep-alive\r\n';

interface Entry {
  readonly info: ConnectionInfo;
  close(reason: string): void;
  bytes(): { up: number; down: number };
}

/** How long one side of a tunnel may take to finish after the other has closed. */
const LINGER_MS = 10_000;

export class Connections {
  private readonly open = new Map<number, Entry>();
  private nextId = 1;
  private drainWaiters: Array<() => void> = [];
  /** Set by closeAll(): later registrations are closed at once with this reason. */
  private closedFor: string | null = null;

  constructor(
    private readonly clock: () => number,
    private readonly idleMs: number,
    private readonly onClosed: (closed: ConnectionClosed) => void,
  ) {}

  get size(): number {
    return this.open.size;
  }

  entries(): Array<ConnectionInfo & { bytesUp: number; bytesDown: number }> {
    return [...this.open.values()].map((e) => {
      const b = e.bytes();
      return { ...e.info, bytesUp: b.up, bytesDown: b.down };
    });
  }

  *infos(): IterableIterator<ConnectionInfo> {
    for (const e of this.open.values()) yield e.info;
  }

  /**
   * Relays bytes both ways until both sides are done. A half-close is passed on (each FIN
   * ends the other side's writable) and the other direction keeps flowing, so a client may
   * keep sending after the origin finished, and the other way round.
   */
  relay(client: net.Socket, upstream: net.Socket, protocol: Protocol, admission: Admission, address: string, downstream?: Downstream): ConnectionInfo {
    const info = this.register(client, upstream, protocol, admission, address);
    client.pipe(upstream);
    if (downstream) downstream.attach(client);
    else upstream.pipe(client);
    client.resume();
    return info;
  }

  /**
   * Tracks a pair that something else relays (an upgraded WebSocket, piped by http-proxy):
   * it still counts for drain, shutdown, idle timeout and revocation like any tunnel.
   */
  register(client: net.Socket, upstream: net.Socket, protocol: Protocol, admission: Admission, address: string): ConnectionInfo {
    const info: ConnectionInfo = { id: this.nextId++, kind: 'tunnel', protocol, admission, address, since: this.clock() };
    const bytes = () => ({ up: upstream.bytesWritten, down: upstream.bytesRead });
    let linger: NodeJS.Timeout | null = null;
    const close = this.add(info, bytes, () => {
      if (linger) clearTimeout(linger);
      client.destroy();
      upstream.destroy();
    });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('error', () => close('client_error'));
    upstream.on('error', () => close('upstream_error'));
    // On a clean end the reason names the side that finished first (sent the first FIN).
    let firstEnd: string | null = null;
    client.once('end', () => void (firstEnd ??= 'client_closed'));
    upstream.once('end', () => void (firstEnd ??= 'upstream_closed'));
    const sideClosed = (other: net.Socket, reason: string) => (): void => {
      if (other.destroyed) return close(firstEnd ?? reason);
      // The other side may still be writing out what this one sent before finishing;
      // destroying it now would drop those bytes. It ends on its own, within a bound.
      other.end();
      linger ??= setTimeout(() => close(firstEnd ?? reason), LINGER_MS);
    };
    client.on('close', sideClosed(upstream, 'client_closed'));
    upstream.on('close', sideClosed(client, 'upstream_closed'));
    // A side that went away while the connection was being decided and dialled will never
    // emit 'close' again: without this the entry (and its limiter slot) would stay forever.
    if (client.destroyed) close('client_closed');
    else if (upstream.destroyed) close('upstream_closed');
    if (this.idleMs > 0) {
      // The client socket sees traffic in both directions, so its timer is the tunnel's.
      client.setTimeout(this.idleMs, () => close('idle_timeout'));
    }
    return info;
  }

  /**
   * Tracks one forwarded request until its response is done. The client connection is
   * keep-alive and shared by requests, so bytes are counted as the socket's growth.
   */
  trackForward(req: http.IncomingMessage, res: http.ServerResponse, admission: Admission, address: string): ConnectionInfo {
    const info: ConnectionInfo = { id: this.nextId++, kind: 'forward', protocol: 'http', admission, address, since: this.clock() };
    const readAtStart = req.socket.bytesRead;
    const writtenAtStart = req.socket.bytesWritten;
    // The head was read before tracking began; count it as forwarded, so a GET is not "0 bytes up".
    // Its Connection field is gone (hop-by-hop); the keep-alive pool's client writes its own.
    const head = requestHeadBytes(req) + FORWARDED_CONNECTION_FIELD.length;
    // The entry reaches the response (and through it the whole request: parsers, streams,
    // the upstream request) only through `live`, emptied when the response closes, and no
    // closure here captures `res` or `req` itself (closures of one call share what they
    // capture). Measured under keep-alive load: while entries in the registry's Map could
    // reach their requests, every scavenge copied and promoted ~2 MB of finished requests
    // (3-15 ms pauses, old-space garbage); without that path, ~0.5 MB and ~2 ms.
    let live: { res: http.ServerResponse; socket: net.Socket } | null = { res, socket: req.socket };
    const bytes = () => (live ? { up: head + live.socket.bytesRead - readAtStart, down: live.socket.bytesWritten - writtenAtStart } : { up: head, down: 0 });
    const close = this.add(info, bytes, () => live?.res.destroy());
    res.on('close', function (this: http.ServerResponse) {
      close(this.writableFinished ? 'completed' : 'client_closed');
      live = null;
    });
    return info;
  }

  close(id: number, reason: string): boolean {
    const e = this.open.get(id);
    if (!e) return false;
    e.close(reason);
    return true;
  }

  /**
   * Closes everything open, and (shutdown) everything registered from now on: an admission
   * still in flight when the proxy stops must not leave a tunnel that holds close() open.
   */
  closeAll(reason: string): void {
    this.closedFor = reason;
    for (const e of [...this.open.values()]) e.close(reason);
  }

  /** Resolves when every connection has closed, or after `graceMs`, whichever comes first. */
  drain(graceMs: number): Promise<void> {
    if (this.open.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.drainWaiters = this.drainWaiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, graceMs);
      timer.unref();
      this.drainWaiters.push(done);
    });
  }

  /** Registers an entry; the returned function closes it once (later calls are no-ops). */
  private add(info: ConnectionInfo, bytes: Entry['bytes'], teardown: () => void): (reason: string) => void {
    let closed = false;
    const close = (reason: string): void => {
      if (closed) return;
      closed = true;
      // Read the counters before teardown: a destroyed socket keeps them, but be explicit.
      const b = bytes();
      teardown();
      this.open.delete(info.id);
      this.onClosed({ info, bytesUp: b.up, bytesDown: b.down, durationMs: this.clock() - info.since, reason });
      if (this.open.size === 0) this.wakeDrainWaiters();
    };
    this.open.set(info.id, { info, close, bytes });
    if (this.closedFor !== null) close(this.closedFor);
    return close;
  }

  private wakeDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
