// Prometheus metrics. Labels are deliberately low-cardinality (no container names), so a
// flood of sandboxes cannot blow up the scrape or the process's memory.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface MetricSources {
  readonly sessionsActive: () => number;
  readonly rulesByLayer: () => Record<string, number>;
  readonly openConnections: () => number;
  readonly auditQueueDepth: () => number;
  readonly auditDropped: () => number;
  readonly eventSubscribers: () => number;
  readonly eventSubscribersDropped: () => number;
  readonly limiterKeys: () => number;
  readonly limiterKeysRejected: () => number;
  /** Absent when the DNS cache is off. */
  readonly dnsCache?: () => { readonly hits: number; readonly shared: number; readonly misses: number; readonly entries: number };
}

export class Metrics {
  readonly registry = new Registry();
  private readonly decisions: Counter<'decision' | 'layer' | 'reason'>;
  private readonly bytes: Counter<'direction'>;
  // Counted per connection on the hot path as plain numbers, and folded into the
  // prom-client counters only when scraped: a labelled inc() hashes its labels every call.
  private readonly pendingDecisions = new Map<string, number>();
  private readonly pendingBytes = { up: 0, down: 0 };
  readonly connectSeconds: Histogram;
  readonly decisionSeconds: Histogram;
  readonly revoked: Counter;
  readonly forwardRetries: Counter;

  constructor(sources: MetricSources) {
    const r = this.registry;
    // Node's own names already start with process_ or nodejs_ (sluice_process_cpu_seconds_total...).
    collectDefaultMetrics({ register: r, prefix: 'sluice_' });
    const pendingDecisions = this.pendingDecisions;
    this.decisions = new Counter({
      name: 'sluice_decisions_total',
      help: 'Connection attempts decided, by decision, deciding layer and reason',
      labelNames: ['decision', 'layer', 'reason'],
      registers: [r],
      collect() {
        for (const [key, n] of pendingDecisions) {
          const [decision, layer, reason] = key.split('\u0000') as [string, string, string];
          this.inc({ decision, layer, reason }, n);
        }
        pendingDecisions.clear();
      },
    });
    const pendingBytes = this.pendingBytes;
    this.bytes = new Counter({
      name: 'sluice_bytes_relayed_total',
      help: 'Bytes relayed through tunnels',
      labelNames: ['direction'],
      registers: [r],
      collect() {
        this.inc({ direction: 'up' }, pendingBytes.up);
        this.inc({ direction: 'down' }, pendingBytes.down);
        pendingBytes.up = 0;
        pendingBytes.down = 0;
      },
    });
    this.connectSeconds = new Histogram({
      name: 'sluice_upstream_connect_seconds',
      help: 'Time to connect to the upstream after the decision',
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
      registers: [r],
    });
    this.decisionSeconds = new Histogram({
      name: 'sluice_decision_seconds',
      help: 'Time to decide a connection attempt (identity, policy, DNS, address checks)',
      buckets: [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.05, 0.5, 5],
      registers: [r],
    });
    this.revoked = new Counter({ name: 'sluice_connections_revoked_total', help: 'Open connections closed because access was withdrawn', registers: [r] });
    this.forwardRetries = new Counter({
      name: 'sluice_forward_retries_total',
      help: 'Forwarded requests sent again on a new connection because the origin closed the reused one before answering',
      registers: [r],
    });
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(read());
        },
      });
    };
    gauge('sluice_sessions_active', 'Unexpired sessions', sources.sessionsActive);
    gauge('sluice_connections_open', 'Open tunnels and in-flight forwarded requests', sources.openConnections);
    gauge('sluice_audit_queue_depth', 'Audit operations waiting to be written', sources.auditQueueDepth);
    gauge('sluice_audit_dropped', 'Audit operations dropped because the queue was full', sources.auditDropped);
    gauge('sluice_event_subscribers', 'Connected event subscribers', sources.eventSubscribers);
    gauge('sluice_event_subscribers_dropped', 'Event subscribers cut off for falling behind', sources.eventSubscribersDropped);
    gauge('sluice_limiter_keys', 'Containers tracked by the connection limiter', sources.limiterKeys);
    gauge('sluice_limiter_keys_rejected', 'Connections refused because the limiter key table was full', sources.limiterKeysRejected);
    const dnsCache = sources.dnsCache;
    if (dnsCache) {
      // The cache counts as plain numbers; the counter catches up with them at scrape time.
      const seen = { hits: 0, shared: 0, misses: 0 };
      new Counter({
        name: 'sluice_dns_cache_lookups_total',
        help: 'Hostname lookups by result: hit (answered from the cache), shared (joined a lookup in flight), miss (asked the resolver)',
        labelNames: ['result'],
        registers: [r],
        collect() {
          const now = dnsCache();
          for (const [result, key] of [['hit', 'hits'], ['shared', 'shared'], ['miss', 'misses']] as const) {
            this.inc({ result }, now[key] - seen[key]);
            seen[key] = now[key];
          }
        },
      });
      gauge('sluice_dns_cache_entries', 'Names in the DNS cache (answers and failures)', () => dnsCache().entries);
    }
    new Gauge({
      name: 'sluice_rules',
      help: 'Rules by layer',
      labelNames: ['layer'],
      registers: [r],
      collect() {
        for (const [layer, n] of Object.entries(sources.rulesByLayer())) this.set({ layer }, n);
      },
    });
  }

  countDecision(decision: string, layer: string, reason: string): void {
    const key = `${decision}\u0000${layer}\u0000${reason}`;
    this.pendingDecisions.set(key, (this.pendingDecisions.get(key) ?? 0) + 1);
  }

  addBytes(up: number, down: number): void {
    this.pendingBytes.up += up;
    this.pendingBytes.down += down;
  }
}
