// Repository over the SQLite schema. Only the control plane calls it; the proxy's hot
// path reads the in-memory PolicyState that is kept in step with these writes.
import type { Action, Layer, RuleRecord } from '../policy/rules.js';
import type { LearningSwitch, SessionRecord } from '../policy/state.js';
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import { StoreUnavailableError, storeUnavailable, type Db } from './database.js';
import { GroupCommit } from './group-commit.js';

/** Below this much free space a store that failed to write is not considered recovered. */
const MIN_FREE_BYTES = 1024 * 1024;

function freeBytes(dir: string): number | null {
  try {
    const fs = statfsSync(dir);
    return fs.bavail * fs.bsize;
  } catch {
    return null;
  }
}

interface SessionRow {
  seq: number;
  id: string;
  container: string;
  created_at: number;
  updated_at: number;
  expires_at: number;
  ttl_seconds: number;
  allow_all: number;
  source_ips: string;
  metadata: string | null;
  limits: string | null;
  token_hash: string;
  token_nonce: string;
}

interface RuleRow {
  id: number;
  layer: Layer;
  session_id: string | null;
  container_pattern: string;
  destination_pattern: string;
  port_pattern: string;
  action: Action;
  expires_at: number | null;
  notes: string | null;
  created_at: number;
}

interface ContainerRow {
  name: string;
  learning_enabled: number;
  learning_expires_at: number | null;
}

export interface StoredSession extends SessionRecord {
  readonly tokenNonce: string;
}

/** A rule to insert; patterns must already be canonical. */
export type NewRule = Omit<RuleRecord, 'id' | 'createdAt'>;

export interface SessionWrite {
  readonly id: string;
  readonly container: string;
  readonly expiresAt: number;
  readonly ttlSeconds: number;
  readonly allowAll: boolean;
  readonly sourceIps: readonly string[];
  readonly metadata: Record<string, unknown> | null;
  readonly limits: SessionRecord['limits'] | null;
  /** Used only when the session is new; an existing session keeps its token. */
  readonly tokenHash: string;
  readonly tokenNonce: string;
  /** The id was generated for this write (a UUIDv7, 74 random bits): no row can have it yet, so it is not looked up. */
  readonly freshId?: boolean;
}

export interface RuleFilter {
  readonly layer?: Layer | undefined;
  readonly sessionId?: string | undefined;
}

export class SessionConflictError extends Error {}

export interface UpsertResult {
  readonly session: StoredSession;
  readonly rules: RuleRecord[];
  readonly created: boolean;
}

function toSession(r: SessionRow): StoredSession {
  return {
    id: r.id,
    container: r.container,
    seq: r.seq,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    ttlSeconds: r.ttl_seconds,
    allowAll: r.allow_all === 1,
    sourceIps: JSON.parse(r.source_ips) as string[],
    metadata: r.metadata === null ? null : (JSON.parse(r.metadata) as Record<string, unknown>),
    limits: r.limits === null ? null : (JSON.parse(r.limits) as SessionRecord['limits']),
    tokenHash: r.token_hash,
    tokenNonce: r.token_nonce,
  };
}

function toRule(r: RuleRow): RuleRecord {
  return {
    id: r.id,
    layer: r.layer,
    sessionId: r.session_id,
    containerPattern: r.container_pattern,
    destinationPattern: r.destination_pattern,
    portPattern: r.port_pattern,
    action: r.action,
    expiresAt: r.expires_at,
    notes: r.notes,
    createdAt: r.created_at,
  };
}

const RULE_COLUMNS = '(layer, session_id, container_pattern, destination_pattern, port_pattern, action, expires_at, notes, created_at, updated_at)';
const RULE_VALUES = '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
// A row of a session's rules: what all rows share is written once per statement (binding
// a value is a conversion from JS, and a 10-row insert would otherwise bind 100).
const SESSION_RULE_VALUES = "('session', @sessionId, ?, ?, ?, ?, ?, ?, @now, @now)";
/**
 * A session's rules are inserted by multi-row INSERTs of up to this many rows: per statement,
 * SQLite also reads and rewrites the AUTOINCREMENT counter, and each run is a call into
 * the driver, so ten single-row inserts cost a good deal more than one ten-row insert.
 */
const RULES_PER_INSERT = 32;

/**
 * The sweep of expired global rules. Its terms imply the WHERE of the partial index
 * rules_global_expiry (migration 004), which is what lets SQLite use that index: keep them.
 */
export const EXPIRED_GLOBAL_RULES_SQL = "SELECT id FROM rules WHERE layer = 'global' AND expires_at IS NOT NULL AND expires_at <= ?";

function ruleRecord(id: number, rule: Omit<NewRule, 'layer' | 'sessionId'>, layer: Layer, sessionId: string | null, now: number): RuleRecord {
  return {
    id,
    layer,
    sessionId,
    containerPattern: rule.containerPattern,
    destinationPattern: rule.destinationPattern,
    portPattern: rule.portPattern,
    action: rule.action,
    expiresAt: rule.expiresAt,
    notes: rule.notes,
    createdAt: now,
  };
}

export class Store {
  private readonly q;
  /**
   * False once a write failed because the storage is unavailable (disk full, read-only,
   * I/O error), true again after the next write that succeeds (see probe()).
   */
  healthy = true;
  /** Session creates, heartbeats and deletes from concurrent requests share one transaction. */
  readonly group: GroupCommit;
  /** Multi-row rule INSERTs by row count, prepared when first needed. */
  private readonly ruleInserts: Array<Database.Statement<unknown[]> | undefined> = [];

  constructor(readonly db: Db) {
    this.group = new GroupCommit(db, (fn) => this.write(fn));
    this.q = {
      sessionById: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE id = ?'),
      sessions: db.prepare<[], SessionRow>('SELECT * FROM sessions ORDER BY seq'),
      insertSession: db.prepare(
        `INSERT INTO sessions (id, container, created_at, updated_at, expires_at, ttl_seconds, allow_all, source_ips, metadata, limits, token_hash, token_nonce)
         VALUES (@id, @container, @now, @now, @expiresAt, @ttlSeconds, @allowAll, @sourceIps, @metadata, @limits, @tokenHash, @tokenNonce)`,
      ),
      updateSession: db.prepare(
        `UPDATE sessions SET updated_at = @now, expires_at = @expiresAt, ttl_seconds = @ttlSeconds, allow_all = @allowAll,
           source_ips = @sourceIps, metadata = @metadata, limits = @limits WHERE id = @id`,
      ),
      touchSession: db.prepare('UPDATE sessions SET expires_at = ?, updated_at = ? WHERE id = ? AND expires_at > ?'),
      deleteSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
      expiredSessions: db.prepare<[number], { id: string }>('SELECT id FROM sessions WHERE expires_at <= ?'),
      ruleById: db.prepare<[number], RuleRow>('SELECT * FROM rules WHERE id = ?'),
      rulesOfSession: db.prepare<[string], RuleRow>('SELECT * FROM rules WHERE session_id = ? ORDER BY id'),
      allRules: db.prepare<[], RuleRow>('SELECT * FROM rules ORDER BY id'),
      // One global rule (a session's rules go in by insertSessionRuleRows). Positional
      // parameters: binding by name costs a property lookup per column.
      insertRule: db.prepare<[Layer, string | null, string, string, string, Action, number | null, string | null, number, number]>(
        `INSERT INTO rules ${RULE_COLUMNS} VALUES ${RULE_VALUES}`,
      ),
      updateRule: db.prepare(
        `UPDATE rules SET container_pattern = @containerPattern, destination_pattern = @destinationPattern, port_pattern = @portPattern,
           action = @action, expires_at = @expiresAt, notes = @notes, updated_at = @now WHERE id = @id`,
      ),
      deleteRulesOfSession: db.prepare('DELETE FROM rules WHERE session_id = ?'),
      deleteRule: db.prepare('DELETE FROM rules WHERE id = ?'),
      expiredRules: db.prepare<[number], { id: number }>(EXPIRED_GLOBAL_RULES_SQL),
      containers: db.prepare<[], ContainerRow>('SELECT name, learning_enabled, learning_expires_at FROM containers'),
      // Rewrites one row with itself: a real write (a WAL frame) that changes nothing.
      probe: db.prepare('UPDATE schema_migrations SET applied_at = applied_at WHERE version = (SELECT max(version) FROM schema_migrations)'),
      upsertContainer: db.prepare(
        `INSERT INTO containers (name, learning_enabled, learning_expires_at, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET learning_enabled = excluded.learning_enabled,
           learning_expires_at = excluded.learning_expires_at, updated_at = excluded.updated_at`,
      ),
    };
  }

  // ---- health ----

  /**
   * Finds out whether the storage takes writes again: enough free space (a tiny write can
   * still fit in space a failed transaction left in the WAL, so that alone proves little)
   * and a real write that changes nothing.
   */
  probe(): void {
    const free = freeBytes(dirname(this.db.name));
    if (free !== null && free < MIN_FREE_BYTES) {
      this.healthy = false;
      throw new StoreUnavailableError(`the file system holding the database is full (${free} bytes free)`, 'SQLITE_FULL');
    }
    this.write(() => this.q.probe.run());
  }

  /** Runs a write; a storage failure becomes StoreUnavailableError and marks the store unhealthy. */
  private write<T>(fn: () => T): T {
    let result: T;
    try {
      result = fn();
    } catch (err) {
      const unavailable = storeUnavailable(err);
      if (!unavailable) throw err;
      this.healthy = false;
      throw unavailable;
    }
    this.healthy = true;
    return result;
  }

  // ---- sessions ----

  getSession(id: string): StoredSession | null {
    const row = this.q.sessionById.get(id);
    return row ? toSession(row) : null;
  }

  listSessions(): StoredSession[] {
    return this.q.sessions.all().map(toSession);
  }

  sessionRules(id: string): RuleRecord[] {
    return this.q.rulesOfSession.all(id).map(toRule);
  }

  /**
   * Creates a session, or updates an unexpired one with the same id in place: it keeps its
   * creation order and token, and its rules are replaced. All or nothing, through the group
   * commit: `then` runs right after the commit that holds it (the place to update memory),
   * and the promise settles with its result.
   */
  queueUpsertSession<R>(s: SessionWrite, rules: readonly Omit<NewRule, 'layer' | 'sessionId'>[], now: number, then: (r: UpsertResult) => R): Promise<R> {
    return this.group.submit(() => this.upsertSessionRows(s, rules, now), then);
  }

  /** The statements of an upsert; the caller supplies the transaction. */
  private upsertSessionRows(s: SessionWrite, rules: readonly Omit<NewRule, 'layer' | 'sessionId'>[], now: number): UpsertResult {
    let existing = s.freshId ? undefined : this.q.sessionById.get(s.id);
    // An expired session is over even if the sweeper has not deleted it yet: its id starts
    // a new session (new creation order, new token), as it would after the sweep.
    if (existing && existing.expires_at <= now) {
      this.q.deleteSession.run(s.id);
      existing = undefined;
    }
    const row: SessionRow = {
      seq: existing?.seq ?? 0,
      id: s.id,
      container: s.container,
      created_at: existing?.created_at ?? now,
      updated_at: now,
      expires_at: s.expiresAt,
      ttl_seconds: s.ttlSeconds,
      allow_all: s.allowAll ? 1 : 0,
      source_ips: JSON.stringify(s.sourceIps),
      metadata: s.metadata === null ? null : JSON.stringify(s.metadata),
      limits: s.limits === null ? null : JSON.stringify(s.limits),
      token_hash: existing?.token_hash ?? s.tokenHash,
      token_nonce: existing?.token_nonce ?? s.tokenNonce,
    };
    const params = {
      id: row.id,
      container: row.container,
      now,
      expiresAt: row.expires_at,
      ttlSeconds: row.ttl_seconds,
      allowAll: row.allow_all,
      sourceIps: row.source_ips,
      metadata: row.metadata,
      limits: row.limits,
      tokenHash: row.token_hash,
      tokenNonce: row.token_nonce,
    };
    if (existing) {
      if (existing.container !== s.container) {
        throw new SessionConflictError(`session ${s.id} belongs to container ${existing.container}`);
      }
      this.q.updateSession.run(params);
      this.q.deleteRulesOfSession.run(s.id);
    } else {
      row.seq = Number(this.q.insertSession.run(params).lastInsertRowid);
    }
    const inserted = this.insertSessionRuleRows(s.id, rules, now);
    // Built from what was written rather than read back: the same values a restart loads
    // (toSession parses the JSON columns exactly as it would from the row).
    return { session: toSession(row), rules: inserted, created: !existing };
  }

  /**
   * Extends an unexpired session, through the group commit; `then` gets whether it was
   * extended (false when it does not exist or has already expired).
   */
  queueTouchSession<R>(id: string, expiresAt: number, now: number, then: (touched: boolean) => R): Promise<R> {
    return this.group.submit(() => this.touchSessionRow(id, expiresAt, now), then);
  }

  private touchSessionRow(id: string, expiresAt: number, now: number): boolean {
    return this.q.touchSession.run(expiresAt, now, id, now).changes === 1;
  }

  /**
   * Deletes a session (its rules cascade), through the group commit; `then` gets whether it
   * existed. A missing session is not a failed write: it changes nothing and costs the rest
   * of its group nothing.
   */
  queueDeleteSession<R>(id: string, then: (deleted: boolean) => R): Promise<R> {
    return this.group.submit(() => this.q.deleteSession.run(id).changes === 1, then);
  }

  /** Deletes expired sessions (their rules cascade) and returns their ids. */
  deleteExpiredSessions(now: number): string[] {
    return this.write(() => this.db.transaction(() => {
      const ids = this.q.expiredSessions.all(now).map((r) => r.id);
      for (const id of ids) this.q.deleteSession.run(id);
      return ids;
    })());
  }

  // ---- rules ----

  getRule(id: number): RuleRecord | null {
    const row = this.q.ruleById.get(id);
    return row ? toRule(row) : null;
  }

  listRules(filter: RuleFilter = {}): RuleRecord[] {
    return this.q.allRules
      .all()
      .map(toRule)
      .filter((r) => (filter.layer === undefined || r.layer === filter.layer) && (filter.sessionId === undefined || r.sessionId === filter.sessionId));
  }

  insertRule(rule: NewRule, now: number): RuleRecord {
    return this.write(() => this.insertRuleRow(rule, rule.layer, rule.sessionId, now));
  }

  updateRule(rule: RuleRecord, now: number): RuleRecord {
    this.write(() => this.q.updateRule.run({ ...rule, now }));
    return this.getRule(rule.id)!;
  }

  deleteRule(id: number): boolean {
    return this.write(() => this.q.deleteRule.run(id).changes === 1);
  }

  /** Deletes expired global rules and returns their ids. */
  deleteExpiredRules(now: number): number[] {
    return this.write(() => this.db.transaction(() => {
      const ids = this.q.expiredRules.all(now).map((r) => r.id);
      for (const id of ids) this.q.deleteRule.run(id);
      return ids;
    })());
  }

  /** Inserts a session's rules, in order, and returns their records (no read-back). */
  private insertSessionRuleRows(sessionId: string, rules: readonly Omit<NewRule, 'layer' | 'sessionId'>[], now: number): RuleRecord[] {
    const records: RuleRecord[] = [];
    for (let start = 0; start < rules.length; start += RULES_PER_INSERT) {
      const end = Math.min(start + RULES_PER_INSERT, rules.length);
      const params: unknown[] = [];
      for (let i = start; i < end; i++) {
        const r = rules[i]!;
        params.push(r.containerPattern, r.destinationPattern, r.portPattern, r.action, r.expiresAt, r.notes);
      }
      const info = this.rulesInsert(end - start).run(params, { sessionId, now });
      // AUTOINCREMENT gives each new row one more than the largest id the table ever had,
      // and nothing else writes during the statement: its rows got consecutive ids, in
      // VALUES order, ending at lastInsertRowid.
      const first = Number(info.lastInsertRowid) - (end - start) + 1;
      for (let i = start; i < end; i++) records.push(ruleRecord(first + i - start, rules[i]!, 'session', sessionId, now));
    }
    return records;
  }

  private rulesInsert(rows: number): Database.Statement<unknown[]> {
    let statement = this.ruleInserts[rows];
    if (!statement) {
      statement = this.db.prepare<unknown[]>(`INSERT INTO rules ${RULE_COLUMNS} VALUES ${Array(rows).fill(SESSION_RULE_VALUES).join(', ')}`);
      this.ruleInserts[rows] = statement;
    }
    return statement;
  }

  /** Inserts a rule and returns its record, built from what was written (no read-back). */
  private insertRuleRow(rule: Omit<NewRule, 'layer' | 'sessionId'>, layer: Layer, sessionId: string | null, now: number): RuleRecord {
    const info = this.q.insertRule.run(
      layer,
      sessionId,
      rule.containerPattern,
      rule.destinationPattern,
      rule.portPattern,
      rule.action,
      rule.expiresAt,
      rule.notes,
      now,
      now,
    );
    return ruleRecord(Number(info.lastInsertRowid), rule, layer, sessionId, now);
  }

  // ---- containers ----

  setLearning(sw: LearningSwitch, now: number): void {
    this.write(() => this.q.upsertContainer.run(sw.container, sw.enabled ? 1 : 0, sw.expiresAt, now));
  }

  learningSwitches(): LearningSwitch[] {
    return this.q.containers.all().map((r) => ({ container: r.name, enabled: r.learning_enabled === 1, expiresAt: r.learning_expires_at }));
  }
}
