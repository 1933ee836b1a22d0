// Byte relay between a client and its upstream, and the registry of open tunnels (for
// graceful shutdown, and so access can later be re-checked on open connections).
import type net from 'node:net';
import type { Admission, Protocol } from './gate.js';

export interface TunnelInfo {
  readonly id: number;
  readonly protocol: Protocol;
  readonly admission: Admission;
  /** The address actually dialled. */
  readonly address: string;
  readonly since: number;
}

export interface TunnelClosed {
  readonly info: TunnelInfo;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  readonly reason: string;
}

interface Tunnel {
  readonly info: TunnelInfo;
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  close(reason: string): void;
}

export class Tunnels {
  private readonly open = new Map<number, Tunnel>();
  private nextId = 1;
  private drainWaiters: Array<() => void> = [];

  constructor(
    private readonly clock: () => number,
    private readonly idleMs: number,
    private readonly onClosed: (closed: TunnelClosed) => void,
  ) {}

  get size(): number {
    return this.open.size;
  }

  list(): TunnelInfo[] {
    return [...this.open.values()].map((t) => t.info);
  }

  /**
   * Relays bytes both ways until either side closes. Half-close is propagated (pipe ends
   * the other side's writable), so request/response protocols over a tunnel work.
   */
  relay(client: net.Socket, upstream: net.Socket, protocol: Protocol, admission: Admission, address: string): TunnelInfo {
    const info = this.register(client, upstream, protocol, admission, address);
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
    return info;
  }

  /**
   * Tracks a pair that something else relays (an upgraded WebSocket, piped by http-proxy):
   * it still counts for drain, shutdown, idle timeout and revocation like any tunnel.
   */
  register(client: net.Socket, upstream: net.Socket, protocol: Protocol, admission: Admission, address: string): TunnelInfo {
    const info: TunnelInfo = { id: this.nextId++, protocol, admission, address, since: this.clock() };
    let closed = false;
    const close = (reason: string): void => {
      if (closed) return;
      closed = true;
      client.destroy();
      upstream.destroy();
      this.open.delete(info.id);
      this.onClosed({
        info,
        bytesUp: upstream.bytesWritten,
        bytesDown: upstream.bytesRead,
        durationMs: this.clock() - info.since,
        reason,
      });
      if (this.open.size === 0) this.wakeDrainWaiters();
    };
    this.open.set(info.id, { info, client, upstream, close });

    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('error', () => close('client_error'));
    upstream.on('error', () => close('upstream_error'));
    client.on('close', () => close('client_closed'));
    upstream.on('close', () => close('upstream_closed'));
    if (this.idleMs > 0) {
      // The client socket sees traffic in both directions, so its timer is the tunnel's.
      client.setTimeout(this.idleMs, () => close('idle_timeout'));
    }
    return info;
  }

  close(id: number, reason: string): boolean {
    const t = this.open.get(id);
    if (!t) return false;
    t.close(reason);
    return true;
  }

  closeAll(reason: string): void {
    for (const t of [...this.open.values()]) t.close(reason);
  }

  /** Resolves when every tunnel has closed, or after `graceMs`, whichever comes first. */
  drain(graceMs: number): Promise<void> {
    if (this.open.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, graceMs);
      timer.unref();
      const self = this;
      function done(): void {
        clearTimeout(timer);
        self.drainWaiters = self.drainWaiters.filter((w) => w !== done);
        resolve();
      }
      this.drainWaiters.push(done);
    });
  }

  private wakeDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
