// Per-container connection limits: concurrent connections and a token bucket for new
// connections per second. The key space is bounded: a flood of distinct container names
// cannot grow memory, and at the bound new keys fail closed.

export interface LimitSettings {
  /** 0 = unlimited. */
  readonly maxConnections: number;
  /** New connections per second; 0 = unlimited. Bursts up to one second's worth. */
  readonly connectionsPerSecond: number;
}

export type Acquire =
  | { readonly ok: true; readonly release: () => void }
  | { readonly ok: false; readonly why: 'concurrency' | 'rate' | 'keys'; readonly retryAfterSeconds: number };

interface Slot {
  active: number;
  tokens: number;
  refilledAt: number;
  /** The rate last applied to this key (limits can differ per session). */
  rate: number;
}

const NOOP = (): void => undefined;

/**
 * The bucket's size: one second's worth, but at least one connection, so that a rate
 * below 1/s (0.5 = one every two seconds) still admits anything at all.
 */
const burst = (rate: number): number => Math.max(1, rate);
const UNLIMITED: Acquire = Object.freeze({ ok: true, release: NOOP });

export class Limiter {
  private readonly slots = new Map<string, Slot>();
  private lastEviction = 0;
  /** Keys refused because the key table was full. */
  keysRejected = 0;

  constructor(
    private readonly maxKeys: number,
    private readonly clock: () => number,
  ) {}

  get keyCount(): number {
    return this.slots.size;
  }

  acquire(key: string, limits: LimitSettings): Acquire {
    if (limits.maxConnections === 0 && limits.connectionsPerSecond === 0) return UNLIMITED;
    const now = this.clock();
    let slot = this.slots.get(key);
    if (!slot) {
      // At the bound, scan for idle keys at most once a second, so a flood of new names
      // cannot turn every connection into a full scan.
      if (this.slots.size >= this.maxKeys && now - this.lastEviction >= 1000) this.evictIdle(now);
      if (this.slots.size >= this.maxKeys) {
        this.keysRejected++;
        return { ok: false, why: 'keys', retryAfterSeconds: 1 };
      }
      slot = { active: 0, tokens: burst(limits.connectionsPerSecond), refilledAt: now, rate: limits.connectionsPerSecond };
      this.slots.set(key, slot);
    }
    if (limits.maxConnections > 0 && slot.active >= limits.maxConnections) {
      return { ok: false, why: 'concurrency', retryAfterSeconds: 1 };
    }
    if (limits.connectionsPerSecond > 0) {
      const rate = limits.connectionsPerSecond;
      slot.rate = rate;
      slot.tokens = Math.min(burst(rate), slot.tokens + ((now - slot.refilledAt) / 1000) * rate);
      slot.refilledAt = now;
      if (slot.tokens < 1) {
        return { ok: false, why: 'rate', retryAfterSeconds: Math.max(1, Math.ceil((1 - slot.tokens) / rate)) };
      }
      slot.tokens -= 1;
    }
    slot.active++;
    let released = false;
    const s = slot;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        s.active--;
      },
    };
  }

  /** Forgets keys with no open connection whose bucket has refilled (they hold no state worth keeping). */
  evictIdle(now: number): void {
    this.lastEviction = now;
    for (const [key, slot] of this.slots) {
      if (slot.active > 0) continue;
      if (slot.rate === 0 || slot.tokens + ((now - slot.refilledAt) / 1000) * slot.rate >= burst(slot.rate)) this.slots.delete(key);
    }
  }
}
