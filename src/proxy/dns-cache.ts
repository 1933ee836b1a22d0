// A bounded in-memory cache in front of a HostResolver, so a burst of requests to the same
// host pays one lookup instead of one each (dns.lookup runs getaddrinfo on libuv's small
// thread pool, where lookups queue behind each other and a slow resolver stalls them all).
//
// It caches the resolver's raw answer, not a decision: resolveHost() still parses every
// answer and the gate still checks every address against the rules and the special-range
// guard on every request, then dials exactly those addresses. A cached answer in a denied
// network is denied each time it is used.
//
// DNS rebinding: the protection is those per-request address checks, which hold with or
// without the cache. The cache adds that a name has one answer per TTL window for everyone,
// so a name that flips between a public and a private address on every query can no longer
// hand out a different answer to each request or each retry of a client.
//
// TTLs are ours, not the record's: dns.lookup (getaddrinfo) does not report record TTLs, so
// an answer is kept for a fixed, short time. That bounds how stale an answer can be when a
// record changes (failover, rotation) to `ttlMs`, whatever TTL the zone published.
//
// The cache is shared by every container. Which names are cached is observable to others
// only as latency, the same as with any shared resolver cache (nscd, systemd-resolved).
import ipaddr from 'ipaddr.js';
import type { HostResolver } from './dns.js';

export interface DnsCacheOptions {
  /** How long an answer with at least one address is reused. */
  readonly ttlMs: number;
  /** How long a definite failure (no such name, no addresses) is reused; 0 = not cached. */
  readonly negativeTtlMs: number;
  /** Most names kept; beyond it the least recently used is dropped. */
  readonly maxEntries: number;
  /**
   * A lookup in flight for longer than this (the DNS timeout) is not joined: its callers
   * have timed out already, so a new caller starts a fresh lookup instead of waiting on it.
   */
  readonly inFlightMs: number;
  readonly clock: () => number;
}

/** Lookups answered from the cache, joined to one in flight, or sent to the resolver. */
export interface DnsCacheStats {
  readonly hits: number;
  readonly shared: number;
  readonly misses: number;
}

interface Entry {
  /** When the lookup that produced it started (a late answer must not replace a newer one). */
  readonly asked: number;
  readonly expires: number;
  /** The resolver's answer as given (a negative entry holds an answer with no valid address). */
  readonly answer: readonly string[] | null;
  /** A definite failure, replayed with the same code so the error text does not change. */
  readonly error: { readonly message: string; readonly code: string } | null;
}

interface Flight {
  readonly started: number;
  readonly promise: Promise<readonly string[]>;
}

/**
 * Failures that say the name does not resolve, rather than that resolving failed this
 * time. dns.lookup reports NXDOMAIN and "no data" as ENOTFOUND; ENODATA comes from
 * dns.resolve*. EAI_AGAIN (what getaddrinfo returns when the DNS server times out or
 * answers SERVFAIL), ETIMEOUT, ECONNREFUSED and anything unknown are transient: like a
 * timeout, they are not cached, so the next request tries again.
 */
const DEFINITE_FAILURES: ReadonlySet<string> = new Set(['ENOTFOUND', 'ENODATA']);

export class DnsCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Flight>();
  private counts = { hits: 0, shared: 0, misses: 0 };

  constructor(
    private readonly resolver: HostResolver,
    private readonly opts: DnsCacheOptions,
  ) {}

  /** The cached resolver, in HostResolver's shape (what the gate is given). */
  readonly resolve: HostResolver = (hostname) => {
    const now = this.opts.clock();
    const entry = this.entries.get(hostname);
    if (entry !== undefined) {
      if (entry.expires > now) {
        this.counts.hits++;
        // Most recently used goes to the back of the Map's insertion order.
        this.entries.delete(hostname);
        this.entries.set(hostname, entry);
        if (entry.error !== null) return Promise.reject(Object.assign(new Error(entry.error.message), { code: entry.error.code }));
        // A copy each: a caller that changed the array must not change what others are given.
        return Promise.resolve((entry.answer ?? []).slice());
      }
      this.entries.delete(hostname);
    }
    const flight = this.inFlight.get(hostname);
    if (flight !== undefined && now - flight.started < this.opts.inFlightMs) {
      this.counts.shared++;
      return flight.promise.then((answer) => answer.slice());
    }
    this.counts.misses++;
    return this.start(hostname, now).then((answer) => answer.slice());
  };

  get size(): number {
    return this.entries.size;
  }

  get stats(): DnsCacheStats {
    return { ...this.counts };
  }

  private start(hostname: string, now: number): Promise<readonly string[]> {
    let raw: Promise<string[]>;
    try {
      raw = Promise.resolve(this.resolver(hostname));
    } catch (err) {
      raw = Promise.reject(err);
    }
    const promise = raw.then(
      (answer) => {
        this.settle(hostname, flight);
        const usable = answer.some((text) => ipaddr.isValid(text));
        this.store(hostname, { asked: now, expires: this.opts.clock() + (usable ? this.opts.ttlMs : this.opts.negativeTtlMs), answer: [...answer], error: null }, usable);
        return answer;
      },
      (err: unknown) => {
        this.settle(hostname, flight);
        const code = (err as NodeJS.ErrnoException | null)?.code;
        if (typeof code === 'string' && DEFINITE_FAILURES.has(code)) {
          const message = err instanceof Error ? err.message : String(err);
          this.store(hostname, { asked: now, expires: this.opts.clock() + this.opts.negativeTtlMs, answer: null, error: { message, code } }, false);
        }
        throw err;
      },
    );
    const flight: Flight = { started: now, promise };
    // A stale flight of this name is replaced at the back, keeping the Map in start order.
    this.inFlight.delete(hostname);
    this.pruneFlights(now);
    // Callers are bounded by the open connections, but a resolver that never answers would
    // otherwise leave one flight per name behind; past the cap, lookups are not shared.
    if (this.inFlight.size < this.opts.maxEntries) this.inFlight.set(hostname, flight);
    return promise;
  }

  /** The flight is done; forget it unless a newer lookup of the name replaced it. */
  private settle(hostname: string, flight: Flight): void {
    if (this.inFlight.get(hostname) === flight) this.inFlight.delete(hostname);
  }

  private store(hostname: string, entry: Entry, positive: boolean): void {
    if ((positive ? this.opts.ttlMs : this.opts.negativeTtlMs) <= 0) return;
    const current = this.entries.get(hostname);
    if (current !== undefined && current.asked > entry.asked) return;
    this.entries.delete(hostname);
    // Full: drop the least recently used (the Map's first key). Expired entries are dropped
    // when next looked up, or here in their turn; either way the Map never exceeds the cap.
    while (this.entries.size >= this.opts.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(hostname, entry);
  }

  /** Flights are in start order: drop those older than the DNS timeout from the front. */
  private pruneFlights(now: number): void {
    for (const [hostname, flight] of this.inFlight) {
      if (now - flight.started < this.opts.inFlightMs) break;
      this.inFlight.delete(hostname);
    }
  }
}

export interface DnsCacheSettings {
  readonly cache_ttl_ms: number;
  readonly negative_ttl_ms: number;
  readonly cache_size: number;
}

/**
 * The resolver the proxy uses: `resolver` behind a cache, or `resolver` itself when
 * `cache_ttl_ms` is 0 (every request resolves, nothing shared, as without a cache).
 */
export function cachedResolver(resolver: HostResolver, settings: DnsCacheSettings, dnsTimeoutMs: number, clock: () => number): { resolver: HostResolver; cache: DnsCache | null } {
  if (settings.cache_ttl_ms <= 0) return { resolver, cache: null };
  const cache = new DnsCache(resolver, { ttlMs: settings.cache_ttl_ms, negativeTtlMs: settings.negative_ttl_ms, maxEntries: settings.cache_size, inFlightMs: dnsTimeoutMs, clock });
  return { resolver: cache.resolve, cache };
}
