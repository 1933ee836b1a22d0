// The control plane: every change goes to SQLite first and then into the in-memory
// PolicyState, so the proxy sees it on its next decision without ever reading SQL.
import { ipDestination, parseHost, HostError } from '../policy/host.js';
import { PatternError } from '../policy/patterns.js';
import { canonicalisePatterns, type RuleRecord } from '../policy/rules.js';
import type { PolicyState, SessionEntry } from '../policy/state.js';
import { deriveToken, hashToken, newNonce } from '../identity/tokens.js';
import { SessionConflictError, type Store, type StoredSession } from '../store/store.js';
import { isoTime } from './iso-time.js';
import { newSessionId } from './session-ids.js';
import { prepareSessionRules } from './session-rules.js';
import type { LearningInput, RuleCreate, RuleListQuery, RulePatch, SessionCreate } from './schemas.js';

export class ControlError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
    readonly details: string[] = [],
  ) {
    super(message);
  }
}

/** Something that changed, for listeners that must react (audit, live revocation, events). */
export type ChangeEvent =
  | { type: 'session.created' | 'session.updated' | 'session.heartbeat' | 'session.deleted' | 'session.expired'; sessionId: string; container: string }
  | { type: 'rule.created' | 'rule.updated' | 'rule.deleted'; rule: RuleRecord }
  | { type: 'learning.changed'; container: string; enabled: boolean };

export interface ControlOptions {
  readonly defaultTtlSeconds: number;
  readonly maxRulesPerSession: number;
  readonly tokenSecret: Buffer;
  /** Proxy URLs with credentials embedded, as a launcher passes them to the sandbox. */
  readonly proxyUrls: (container: string, token: string) => { http: string; socks5: string };
}

export function ruleJson(r: RuleRecord) {
  return {
    id: r.id,
    layer: r.layer,
    session_id: r.sessionId,
    container_pattern: r.containerPattern,
    destination_pattern: r.destinationPattern,
    port_pattern: r.portPattern,
    action: r.action,
    expires_at: isoTime(r.expiresAt),
    notes: r.notes,
    created_at: isoTime(r.createdAt),
  };
}

function sessionJson(s: StoredSession | SessionEntry['record']) {
  return {
    session_id: s.id,
    container_name: s.container,
    created_at: isoTime(s.createdAt),
    expires_at: isoTime(s.expiresAt),
    ttl_seconds: s.ttlSeconds,
    allow_all: s.allowAll,
    source_ips: s.sourceIps,
    metadata: s.metadata,
    limits: s.limits ? { max_connections: s.limits.maxConnections ?? null, connections_per_second: s.limits.connectionsPerSecond ?? null } : null,
  };
}

export class Control {
  private readonly listeners: Array<(e: ChangeEvent) => void> = [];
  /** Session ids with a delete queued for the group commit (how many), not yet settled. */
  private readonly deleting = new Map<string, number>();

  constructor(
    private readonly store: Store,
    readonly state: PolicyState,
    private readonly clock: () => number,
    private readonly opts: ControlOptions,
  ) {}

  /** Fills the in-memory state from the store (start-up). */
  load(): void {
    for (const s of this.store.listSessions()) this.state.putSession(s, this.store.sessionRules(s.id));
    for (const r of this.store.listRules()) if (r.layer !== 'session') this.state.putRule(r);
    for (const sw of this.store.learningSwitches()) this.state.setLearning(sw);
  }

  onChange(listener: (e: ChangeEvent) => void): void {
    this.listeners.push(listener);
  }

  private emit(e: ChangeEvent): void {
    for (const l of this.listeners) l(e);
  }

  // ---- sessions ----

  /**
   * Creates or re-posts a session. The write joins the store's group commit; the session
   * goes into memory (and the answer is given) only once that commit succeeded.
   */
  async createSession(input: SessionCreate) {
    const now = this.clock();
    if (input.network_rules.length > this.opts.maxRulesPerSession) {
      const limit = `a session may carry at most ${this.opts.maxRulesPerSession} rules (sessions.max_rules_per_session)`;
      throw new ControlError(400, limit, [`network_rules: ${input.network_rules.length} rules given; ${limit}`]);
    }
    const rules = prepareSessionRules(input.container_name, input.network_rules);
    const errors = [...rules.errors];
    const sourceIps = input.source_ips.map((ip, i) => {
      try {
        const d = parseHost(ip);
        if (d.kind === 'ip') return ipDestination(d.ip).host;
      } catch (err) {
        if (!(err instanceof HostError)) throw err;
      }
      errors.push(`source_ips.${i}: not an IP address`);
      return '';
    });
    if (errors.length > 0) throw new ControlError(400, 'invalid session', errors);

    const id = input.session_id ?? newSessionId(now);
    // The store refuses this too; checked here first (memory mirrors the store) so that a
    // refused re-post never costs the other writes of its group commit a re-run. Not while a
    // delete of this id waits for its commit: memory is about to lose the session, and the
    // store, which runs the writes in the order they came, decides.
    const current = input.session_id === undefined || this.deleting.has(id) ? undefined : this.state.session(id);
    if (current && current.record.expiresAt > now && current.record.container !== input.container_name) {
      throw new ControlError(409, `session ${id} belongs to container ${current.record.container}`);
    }
    const ttlSeconds = input.ttl_seconds ?? this.opts.defaultTtlSeconds;
    const nonce = newNonce();
    const newToken = deriveToken(this.opts.tokenSecret, id, nonce);
    const write = {
      id,
      container: input.container_name,
      expiresAt: now + ttlSeconds * 1000,
      ttlSeconds,
      allowAll: input.allow_all,
      sourceIps,
      metadata: input.metadata ?? null,
      limits: input.limits ? { maxConnections: input.limits.max_connections, connectionsPerSecond: input.limits.connections_per_second } : null,
      tokenHash: hashToken(newToken),
      tokenNonce: nonce,
      freshId: input.session_id === undefined,
    };
    try {
      return await this.store.queueUpsertSession(write, rules.rows, now, (result) => {
        const { session } = result;
        this.state.putCompiledSession(session, rules.compile(result.rules));
        this.emit({ type: result.created ? 'session.created' : 'session.updated', sessionId: id, container: session.container });
        // A re-posted session keeps the token it was created with.
        const token = session.tokenNonce === nonce ? newToken : deriveToken(this.opts.tokenSecret, session.id, session.tokenNonce);
        return {
          session_id: session.id,
          container_name: session.container,
          created_at: isoTime(session.createdAt),
          expires_at: isoTime(session.expiresAt),
          rules_created: result.rules.length,
          allow_all: session.allowAll,
          proxy_token: token,
          proxy: this.opts.proxyUrls(session.container, token),
        };
      });
    } catch (err) {
      if (err instanceof SessionConflictError) throw new ControlError(409, err.message);
      throw err;
    }
  }

  /** Extends a session by its TTL; like createSession, answered after the group commit. */
  async heartbeat(id: string) {
    const now = this.clock();
    const entry = this.state.session(id);
    if (!entry || entry.record.expiresAt <= now) throw new ControlError(404, 'session not found or expired');
    const expiresAt = now + entry.record.ttlSeconds * 1000;
    return this.store.queueTouchSession(id, expiresAt, now, (touched) => {
      if (!touched) throw new ControlError(404, 'session not found or expired');
      this.state.touchSession(id, expiresAt);
      this.emit({ type: 'session.heartbeat', sessionId: id, container: entry.record.container });
      return { session_id: id, expires_at: isoTime(expiresAt) };
    });
  }

  /**
   * Deletes a session; like createSession, through the group commit. Until that commit the
   * session stays in memory and keeps deciding; right after it, it leaves memory and the
   * `session.deleted` event (which re-decides its open connections) goes out.
   */
  async deleteSession(id: string) {
    this.deleting.set(id, (this.deleting.get(id) ?? 0) + 1);
    try {
      return await this.store.queueDeleteSession(id, (deleted) => {
        const entry = this.state.deleteSession(id);
        if (!deleted) throw new ControlError(404, 'session not found');
        this.emit({ type: 'session.deleted', sessionId: id, container: entry?.record.container ?? '' });
        return { session_id: id, deleted: true as const };
      });
    } finally {
      const n = this.deleting.get(id)! - 1;
      if (n === 0) this.deleting.delete(id);
      else this.deleting.set(id, n);
    }
  }

  listSessions() {
    const now = this.clock();
    const sessions = [...this.state.allSessions()]
      .filter((e) => e.record.expiresAt > now)
      .sort((a, b) => a.record.seq - b.record.seq)
      .map((e) => ({ ...sessionJson(e.record), rule_count: e.rules.size }));
    return { sessions };
  }

  getSession(id: string) {
    const entry = this.state.session(id);
    if (!entry || entry.record.expiresAt <= this.clock()) throw new ControlError(404, 'session not found or expired');
    const rules = [...entry.rules.rules()].map((r) => ruleJson(r.record)).sort((a, b) => a.id - b.id);
    return { ...sessionJson(entry.record), rules };
  }

  // ---- rules ----

  createRule(input: RuleCreate) {
    const now = this.clock();
    const patterns = this.canonical(input.container_pattern, input.destination_pattern, input.port_pattern);
    const rule = this.store.insertRule(
      {
        layer: 'global',
        sessionId: null,
        ...patterns,
        action: input.action,
        expiresAt: input.expires_in_seconds === undefined ? null : now + input.expires_in_seconds * 1000,
        notes: input.notes ?? null,
      },
      now,
    );
    this.state.putRule(rule);
    this.emit({ type: 'rule.created', rule });
    return ruleJson(rule);
  }

  updateRule(id: number, patch: RulePatch) {
    const now = this.clock();
    const current = this.editableRule(id, now);
    const patterns = this.canonical(
      patch.container_pattern ?? current.containerPattern,
      patch.destination_pattern ?? current.destinationPattern,
      patch.port_pattern ?? current.portPattern,
    );
    const expiresAt =
      patch.expires_in_seconds === undefined ? current.expiresAt : patch.expires_in_seconds === null ? null : now + patch.expires_in_seconds * 1000;
    const notes = patch.notes === undefined ? current.notes : patch.notes;
    const rule = this.store.updateRule({ ...current, ...patterns, action: patch.action ?? current.action, expiresAt, notes }, now);
    this.state.putRule(rule);
    this.emit({ type: 'rule.updated', rule });
    return ruleJson(rule);
  }

  deleteRule(id: number) {
    const rule = this.editableRule(id, this.clock());
    this.store.deleteRule(id);
    this.state.deleteRule(id);
    this.emit({ type: 'rule.deleted', rule });
    return { id, deleted: true };
  }

  getRule(id: number) {
    const rule = this.liveRule(id, this.clock());
    if (!rule) throw new ControlError(404, 'rule not found');
    return ruleJson(rule);
  }

  listRules(q: RuleListQuery) {
    const now = this.clock();
    const rules = this.store
      .listRules({ layer: q.layer, sessionId: q.session_id })
      .filter((r) => this.isLive(r, now))
      .filter((r) => q.container === undefined || this.ruleAppliesTo(r, q.container, now));
    return { rules: rules.map(ruleJson) };
  }

  /** Session rules change only through their session; built-ins are fixed by migration. */
  private editableRule(id: number, now: number): RuleRecord {
    const rule = this.liveRule(id, now);
    if (!rule) throw new ControlError(404, 'rule not found');
    if (rule.layer === 'session') throw new ControlError(409, 'session rules change with their session: re-post the session instead');
    if (rule.layer === 'builtin') throw new ControlError(409, 'built-in rules cannot be changed; add a global rule to override them');
    return rule;
  }

  private liveRule(id: number, now: number): RuleRecord | null {
    const rule = this.store.getRule(id);
    return rule && this.isLive(rule, now) ? rule : null;
  }

  /**
   * Expired rules, and the rules of expired sessions, are gone the moment they expire, as
   * for matching: the API must not show them (or let a PATCH revive them) until the sweep.
   */
  private isLive(r: RuleRecord, now: number): boolean {
    if (r.expiresAt !== null && r.expiresAt <= now) return false;
    if (r.layer !== 'session') return true;
    const session = r.sessionId === null ? undefined : this.state.session(r.sessionId);
    return session !== undefined && session.record.expiresAt > now;
  }

  private ruleAppliesTo(r: RuleRecord, container: string, now: number): boolean {
    if (r.layer === 'session') return this.state.currentSession(container, now)?.record.id === r.sessionId;
    const compiled = (r.layer === 'global' ? this.state.global : this.state.builtin).get(r.id);
    if (!compiled) return false;
    const c = compiled.container;
    return c.kind === 'any' || (c.kind === 'exact' ? c.name === container : c.re.test(container));
  }

  private canonical(containerPattern: string, destinationPattern: string, portPattern: string) {
    try {
      return canonicalisePatterns({ containerPattern, destinationPattern, portPattern });
    } catch (err) {
      if (err instanceof PatternError) throw new ControlError(400, 'invalid rule', [err.message]);
      throw err;
    }
  }

  // ---- containers ----

  setLearning(container: string, input: LearningInput) {
    const now = this.clock();
    const sw = { container, enabled: input.enabled, expiresAt: input.enabled && input.ttl_seconds ? now + input.ttl_seconds * 1000 : null };
    this.store.setLearning(sw, now);
    this.state.setLearning(sw);
    this.emit({ type: 'learning.changed', container, enabled: sw.enabled });
    return this.container(container);
  }

  containers() {
    return { containers: [...this.state.containerNames()].sort().map((name) => this.container(name)) };
  }

  container(name: string) {
    const now = this.clock();
    const current = this.state.currentSession(name, now);
    const active = this.state.activeSessions(name, now);
    const sw = this.state.learningSwitch(name, now);
    const learning = this.state.learningSource(name, current, now);
    return {
      container_name: name,
      current_session: current ? { ...sessionJson(current.record), rule_count: current.rules.size } : null,
      active_sessions: active.map((e) => e.record.id),
      learning: {
        active: learning !== null,
        source: learning,
        operator_switch: sw ? { enabled: true, expires_at: isoTime(sw.expiresAt) } : { enabled: false, expires_at: null },
      },
      rule_counts: {
        session: current?.rules.size ?? 0,
        global: this.countGlobalRulesFor(name, now),
      },
    };
  }

  private countGlobalRulesFor(name: string, now: number): number {
    let n = 0;
    for (const r of this.state.global.rules()) if (this.ruleAppliesTo(r.record, name, now) && (r.record.expiresAt === null || r.record.expiresAt > now)) n++;
    return n;
  }

  // ---- maintenance ----

  /** Deletes expired sessions and global rules from store and memory. */
  sweep(): void {
    const now = this.clock();
    // After a failed write, find out whether the store takes writes again; while it does
    // not this throws, and the caller reports the store as degraded.
    if (!this.store.healthy) this.store.probe();
    for (const id of this.store.deleteExpiredSessions(now)) {
      const entry = this.state.deleteSession(id);
      this.emit({ type: 'session.expired', sessionId: id, container: entry?.record.container ?? '' });
    }
    for (const id of this.store.deleteExpiredRules(now)) {
      const rule = this.state.deleteRule(id);
      if (rule) this.emit({ type: 'rule.deleted', rule });
    }
    // A learning switch stops counting the moment its TTL passes; this announces it.
    for (const container of this.state.takeExpiredLearning(now)) {
      this.store.setLearning({ container, enabled: false, expiresAt: null }, now);
      this.emit({ type: 'learning.changed', container, enabled: false });
    }
  }
}
