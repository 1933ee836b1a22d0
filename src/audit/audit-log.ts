// The decision audit trail. The hot path only appends to in-memory queues; a timer writes
// them to SQLite in one transaction per batch, so a connection never waits on disk.
import type { Statement } from 'better-sqlite3';
import type { Db } from '../store/database.js';
import type { DecisionRecord } from '../proxy/gate.js';

/** The fields of a decision the audit trail stores. */
export type AuditDecision = Omit<DecisionRecord, 'learning' | 'wouldBe'>;

export interface ClosedStats {
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  readonly reason: string;
}

/** A learning-mode observation: what was reached and what would have happened otherwise. */
export interface LearnedHit {
  readonly container: string;
  readonly destination: string;
  readonly port: number;
  readonly time: number;
  readonly wouldBe: 'allow' | 'deny';
  readonly wouldBeLayer: string | null;
  readonly wouldBeRuleId: number | null;
}

export interface AuditOptions {
  readonly flushIntervalMs: number;
  readonly flushBatch: number;
  /** Queued operations beyond this are dropped (and counted) rather than growing memory. */
  readonly maxQueue: number;
  readonly retentionDays: number;
  readonly maxRows: number;
}

export interface DecisionQuery {
  readonly container?: string | undefined;
  readonly sessionId?: string | undefined;
  readonly decision?: 'allow' | 'deny' | undefined;
  readonly destination?: string | undefined;
  readonly since?: number | undefined;
  readonly until?: number | undefined;
  readonly limit: number;
  /** Return rows with id below this (the previous page's last id). */
  readonly before?: number | undefined;
}

export interface DecisionRow {
  id: number;
  time: number;
  container: string | null;
  session_id: string | null;
  protocol: string;
  client_address: string;
  destination: string;
  port: number;
  address: string | null;
  decision: 'allow' | 'deny';
  reason: string;
  layer: string | null;
  rule_id: number | null;
  error: string | null;
  bytes_up: number | null;
  bytes_down: number | null;
  duration_ms: number | null;
  close_reason: string | null;
}

export interface LearnedRow {
  container: string;
  destination: string;
  port: number;
  first_seen: number;
  last_seen: number;
  count: number;
  would_be: 'allow' | 'deny';
  would_be_layer: string | null;
  would_be_rule_id: number | null;
}

type Op =
  | { kind: 'decision'; d: AuditDecision }
  | { kind: 'failed'; id: number; error: string }
  | { kind: 'closed'; id: number; s: ClosedStats };

/** A decision row waiting for the end of its batch, with whatever outcome arrived meanwhile. */
interface PendingRow {
  d: AuditDecision;
  error: string | null;
  closed: ClosedStats | null;
}

interface OpStatements {
  readonly insert: Statement;
  readonly failed: Statement;
  readonly closed: Statement;
}

/** Writes one batch, folding each outcome into its decision's INSERT when both are in it. */
function writeOps(ops: readonly Op[], q: OpStatements): void {
  const pending = new Map<number, PendingRow>();
  for (const op of ops) {
    if (op.kind === 'decision') {
      pending.set(op.d.id, { d: op.d, error: null, closed: null });
      continue;
    }
    const row = pending.get(op.id);
    if (op.kind === 'failed') {
      if (row) row.error = op.error;
      else q.failed.run(op.error, op.id);
    } else if (row) {
      row.closed = op.s;
    } else {
      q.closed.run(op.s.bytesUp, op.s.bytesDown, op.s.durationMs, op.s.reason, op.id);
    }
  }
  for (const { d, error, closed } of pending.values()) {
    q.insert.run(
      d.id, d.time, d.container, d.sessionId, d.protocol, d.clientAddress, d.destination, d.port, d.address, d.decision, d.reason, d.layer, d.ruleId,
      error, closed?.bytesUp ?? null, closed?.bytesDown ?? null, closed?.durationMs ?? null, closed?.reason ?? null,
    );
  }
}

interface LearnedAcc {
  hit: LearnedHit;
  first: number;
  count: number;
}

export class AuditLog {
  private queue: Op[] = [];
  private usage = new Map<number, { hits: number; last: number }>();
  private learned = new Map<string, LearnedAcc>();
  private nextDecisionId: number;
  private timer: NodeJS.Timeout | null = null;
  private flushScheduled = false;
  /** Counters for metrics and health. */
  dropped = 0;
  failedFlushes = 0;
  healthy = true;
  private failedStreak = 0;
  private readonly q;

  constructor(
    private readonly db: Db,
    private readonly opts: AuditOptions,
    /** Told once when writes start failing (not on every retry while they keep failing). */
    private readonly onError: (err: unknown) => void,
    /** Told when writes succeed again, with how many flushes failed meanwhile. */
    private readonly onRecovered: (failedFlushes: number) => void = () => undefined,
  ) {
    const max = db.prepare<[], { id: number | null }>('SELECT max(id) AS id FROM decisions').get();
    this.nextDecisionId = (max?.id ?? 0) + 1;
    this.q = {
      // Positional, with the outcome columns: a short connection's close usually arrives in
      // the same batch as its decision, and then one INSERT carries both (no UPDATE).
      insert: db.prepare(
        `INSERT INTO decisions (id, time, container, session_id, protocol, client_address, destination, port, address, decision, reason, layer, rule_id,
                                error, bytes_up, bytes_down, duration_ms, close_reason)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      failed: db.prepare('UPDATE decisions SET error = ? WHERE id = ?'),
      closed: db.prepare('UPDATE decisions SET bytes_up = ?, bytes_down = ?, duration_ms = ?, close_reason = ? WHERE id = ?'),
      usage: db.prepare(
        `INSERT INTO rule_usage (rule_id, hit_count, last_used_at) VALUES (?, ?, ?)
         ON CONFLICT (rule_id) DO UPDATE SET hit_count = hit_count + excluded.hit_count, last_used_at = max(coalesce(last_used_at, 0), excluded.last_used_at)`,
      ),
      learned: db.prepare(
        `INSERT INTO learned (container, destination, port, first_seen, last_seen, count, would_be, would_be_layer, would_be_rule_id)
         VALUES (@container, @destination, @port, @first, @last, @count, @wouldBe, @wouldBeLayer, @wouldBeRuleId)
         ON CONFLICT (container, destination, port) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen), count = count + excluded.count,
           would_be = excluded.would_be, would_be_layer = excluded.would_be_layer, would_be_rule_id = excluded.would_be_rule_id`,
      ),
      expireOld: db.prepare('DELETE FROM decisions WHERE id IN (SELECT id FROM decisions WHERE time < ? ORDER BY id LIMIT 5000)'),
      trimTo: db.prepare('DELETE FROM decisions WHERE id IN (SELECT id FROM decisions WHERE id <= ? ORDER BY id LIMIT 5000)'),
    };
  }

  start(): void {
    this.timer = setInterval(() => this.flush(), this.opts.flushIntervalMs);
    this.timer.unref();
  }

  /** Reserves the id a decision will be stored under (so its close can refer to it). */
  newDecisionId(): number {
    return this.nextDecisionId++;
  }

  get queueDepth(): number {
    return this.queue.length;
  }

  // ---- hot path: append only ----

  decision(d: AuditDecision): void {
    this.push({ kind: 'decision', d });
    if (d.ruleId !== null) {
      const u = this.usage.get(d.ruleId);
      if (u) {
        u.hits++;
        u.last = d.time;
      } else {
        this.usage.set(d.ruleId, { hits: 1, last: d.time });
      }
    }
  }

  failed(id: number, error: string): void {
    this.push({ kind: 'failed', id, error });
  }

  closed(id: number, s: ClosedStats): void {
    this.push({ kind: 'closed', id, s });
  }

  learnedHit(hit: LearnedHit): void {
    const key = `${hit.container}\u0000${hit.destination}\u0000${hit.port}`;
    const acc = this.learned.get(key);
    if (acc) {
      acc.count++;
      acc.hit = hit;
    } else {
      this.learned.set(key, { hit, first: hit.time, count: 1 });
    }
  }

  private push(op: Op): void {
    if (this.queue.length >= this.opts.maxQueue) {
      this.dropped++;
      return;
    }
    this.queue.push(op);
    if (this.queue.length >= this.opts.flushBatch && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  // ---- writer ----

  /** Writes everything queued in one transaction. On failure the batch stays queued. */
  flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0 && this.usage.size === 0 && this.learned.size === 0) return;
    const ops = this.queue;
    const usage = this.usage;
    const learned = this.learned;
    try {
      this.db.transaction(() => {
        writeOps(ops, this.q);
        for (const [ruleId, u] of usage) this.q.usage.run(ruleId, u.hits, u.last);
        for (const acc of learned.values()) {
          const h = acc.hit;
          this.q.learned.run({
            container: h.container,
            destination: h.destination,
            port: h.port,
            first: acc.first,
            last: h.time,
            count: acc.count,
            wouldBe: h.wouldBe,
            wouldBeLayer: h.wouldBeLayer,
            wouldBeRuleId: h.wouldBeRuleId,
          });
        }
      })();
      this.queue = [];
      this.usage = new Map();
      this.learned = new Map();
      if (!this.healthy) this.onRecovered(this.failedStreak);
      this.healthy = true;
      this.failedStreak = 0;
    } catch (err) {
      // Keep the batch (bounded by maxQueue) and try again on the next tick: the proxy
      // keeps deciding from memory while the disk is unwritable. A full disk fails every
      // tick; one report per outage is enough.
      this.failedFlushes++;
      this.failedStreak++;
      if (this.healthy) this.onError(err);
      this.healthy = false;
    }
  }

  /** Drops rows past the age and count limits, a chunk at a time so writers never stall long. */
  enforceRetention(now: number): void {
    try {
      this.q.expireOld.run(now - this.opts.retentionDays * 86_400_000);
      const keepAbove = this.nextDecisionId - 1 - this.opts.maxRows;
      if (keepAbove > 0) this.q.trimTo.run(keepAbove);
    } catch (err) {
      this.onError(err);
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.flush();
  }

  // ---- reads (control plane) ----

  query(q: DecisionQuery): DecisionRow[] {
    this.flush();
    const where: string[] = [];
    const params: Record<string, string | number> = { limit: q.limit };
    const add = (sql: string, name: string, value: string | number | undefined): void => {
      if (value === undefined) return;
      where.push(sql);
      params[name] = value;
    };
    add('container = @container', 'container', q.container);
    add('session_id = @sessionId', 'sessionId', q.sessionId);
    add('decision = @decision', 'decision', q.decision);
    add('destination = @destination', 'destination', q.destination);
    add('time >= @since', 'since', q.since);
    add('time < @until', 'until', q.until);
    add('id < @before', 'before', q.before);
    const sql = `SELECT * FROM decisions ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT @limit`;
    return this.db.prepare<Record<string, string | number>, DecisionRow>(sql).all(params);
  }

  /** Rows with id above `after`, oldest first (for `sluice log --follow`). */
  since(after: number, limit: number): DecisionRow[] {
    this.flush();
    return this.db.prepare<[number, number], DecisionRow>('SELECT * FROM decisions WHERE id > ? ORDER BY id LIMIT ?').all(after, limit);
  }

  ruleUsage(): Map<number, { hitCount: number; lastUsedAt: number | null }> {
    this.flush();
    const rows = this.db.prepare<[], { rule_id: number; hit_count: number; last_used_at: number | null }>('SELECT * FROM rule_usage').all();
    return new Map(rows.map((r) => [r.rule_id, { hitCount: r.hit_count, lastUsedAt: r.last_used_at }]));
  }

  learnedFor(container: string): LearnedRow[] {
    this.flush();
    return this.db.prepare<[string], LearnedRow>('SELECT * FROM learned WHERE container = ? ORDER BY destination, port').all(container);
  }
}
