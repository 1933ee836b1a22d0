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

/** The size of a request head as it is forwarded: request line, headers, blank line. */
function requestHeadBytes(req: http.IncomingMessage): number {
  let n = Buffer.byteLength(`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}\r\n\r\n`);
  for (const [name, value] of Object.entries(req.headers)) {
    for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined) n += Buffer.byteLength(`${name}: ${v}\r\n`);
  }
  return n;
}

interface Entry {
  readonly info: ConnectionInfo;
  close(reason: string): void;
  bytes(): { up: number; down: number };
}

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
   * Relays bytes both ways until either side closes. Half-close is propagated (pipe ends
   * the other side's writable), so request/response protocols over a tunnel work.
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
    const close = this.add(info, bytes, () => {
      client.destroy();
      upstream.destroy();
    });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('error', () => close('client_error'));
    upstream.on('error', () => close('upstream_error'));
    client.on('close', () => close('client_closed'));
    upstream.on('close', () => close('upstream_closed'));
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
    const socket = req.socket;
    const readAtStart = socket.bytesRead;
    const writtenAtStart = socket.bytesWritten;
    // The head was read before tracking began; count it as forwarded, so a GET is not "0 bytes up".
    const head = requestHeadBytes(req);
    const bytes = () => ({ up: head + socket.bytesRead - readAtStart, down: socket.bytesWritten - writtenAtStart });
    const close = this.add(info, bytes, () => res.destroy());
    res.once('close', () => close(res.writableFinished ? 'completed' : 'client_closed'));
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
