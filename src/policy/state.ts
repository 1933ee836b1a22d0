// The in-memory policy state every decision reads. The store writes SQLite first and then
// applies the same change here, so decisions never touch SQL. Nothing in this file reads
// the clock: callers hand in `now` (epoch ms).
import { compileRule, type CompiledRule, type RuleRecord } from './rules.js';
import { RuleIndex } from './rule-index.js';

export interface SessionRecord {
  readonly id: string;
  readonly container: string;
  /** Creation order (monotonic, from the store); "most recent session" compares this, never timestamps. */
  readonly seq: number;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly ttlSeconds: number;
  readonly allowAll: boolean;
  readonly sourceIps: readonly string[];
  readonly metadata: Readonly<Record<string, unknown>> | null;
  /** Per-session overrides of the connection limits (unset fields fall back to config). */
  readonly limits?: { readonly maxConnections?: number | undefined; readonly connectionsPerSecond?: number | undefined } | null;
  readonly tokenHash: string;
}

export interface SessionEntry {
  readonly record: SessionRecord;
  readonly rules: RuleIndex;
}

export interface LearningSwitch {
  readonly container: string;
  readonly enabled: boolean;
  readonly expiresAt: number | null;
}

export type LearningSource = 'session' | 'operator';

export class PolicyState {
  readonly global = new RuleIndex();
  readonly builtin = new RuleIndex();
  private readonly sessions = new Map<string, SessionEntry>();
  /** Sessions of each container in creation order (ascending seq). */
  private readonly byContainer = new Map<string, SessionEntry[]>();
  private readonly byTokenHash = new Map<string, SessionEntry>();
  private readonly bySourceIp = new Map<string, SessionEntry[]>();
  private readonly learning = new Map<string, LearningSwitch>();
  /**
   * Config `guard_special_ranges`, set by the gate: live revocation re-applies the guard
   * (recheck) the same way admission does.
   */
  guardSpecialRanges = true;

  // ---- writes (mirroring the store) ----

  /** Adds or replaces a session together with its full rule set. */
  putSession(record: SessionRecord, rules: readonly RuleRecord[]): void {
    this.putCompiledSession(record, rules.map(compileRule));
  }

  /**
   * putSession for rules the caller has already compiled (the control plane parses each
   * pattern once, to validate and canonicalise it, and keeps the matchers it got).
   */
  putCompiledSession(record: SessionRecord, rules: readonly CompiledRule[]): void {
    this.deleteSession(record.id);
    const index = new RuleIndex();
    for (const r of rules) index.add(r);
    const entry: SessionEntry = { record, rules: index };
    this.sessions.set(record.id, entry);
    const list = this.byContainer.get(record.container) ?? [];
    insertBySeq(list, entry);
    this.byContainer.set(record.container, list);
    this.byTokenHash.set(record.tokenHash, entry);
    for (const ip of record.sourceIps) {
      const owners = this.bySourceIp.get(ip) ?? [];
      insertBySeq(owners, entry);
      this.bySourceIp.set(ip, owners);
    }
  }

  /** Updates only the expiry of a session (heartbeat); cheaper than putSession. */
  touchSession(id: string, expiresAt: number): boolean {
    const entry = this.sessions.get(id);
    if (!entry) return false;
    const record = { ...entry.record, expiresAt };
    const updated: SessionEntry = { record, rules: entry.rules };
    this.sessions.set(id, updated);
    replaceIn(this.byContainer.get(record.container), entry, updated);
    this.byTokenHash.set(record.tokenHash, updated);
    for (const ip of record.sourceIps) replaceIn(this.bySourceIp.get(ip), entry, updated);
    return true;
  }

  deleteSession(id: string): SessionEntry | undefined {
    const entry = this.sessions.get(id);
    if (!entry) return undefined;
    this.sessions.delete(id);
    removeFromKeyed(this.byContainer, entry.record.container, entry);
    this.byTokenHash.delete(entry.record.tokenHash);
    for (const ip of entry.record.sourceIps) removeFromKeyed(this.bySourceIp, ip, entry);
    return entry;
  }

  putRule(rule: RuleRecord): void {
    if (rule.layer === 'session') throw new Error('session rules are written with their session');
    this.indexFor(rule.layer).add(compileRule(rule));
  }

  deleteRule(id: number): RuleRecord | undefined {
    return (this.global.remove(id) ?? this.builtin.remove(id))?.record;
  }

  setLearning(sw: LearningSwitch): void {
    if (sw.enabled) this.learning.set(sw.container, sw);
    else this.learning.delete(sw.container);
  }

  // ---- reads ----

  session(id: string): SessionEntry | undefined {
    return this.sessions.get(id);
  }

  allSessions(): IterableIterator<SessionEntry> {
    return this.sessions.values();
  }

  containerNames(): Set<string> {
    return new Set([...this.byContainer.keys(), ...this.learning.keys()]);
  }

  /** The container's most recently created session that has not expired. */
  currentSession(container: string, now: number): SessionEntry | null {
    return newestActive(this.byContainer.get(container), now);
  }

  /** All unexpired sessions of a container, newest first. */
  activeSessions(container: string, now: number): SessionEntry[] {
    const list = this.byContainer.get(container) ?? [];
    return list.filter((e) => e.record.expiresAt > now).reverse();
  }

  sessionByTokenHash(hash: string, now: number): SessionEntry | null {
    const entry = this.byTokenHash.get(hash);
    return entry && entry.record.expiresAt > now ? entry : null;
  }

  /** The newest active session listing this source address, if any. */
  sessionBySourceIp(ip: string, now: number): SessionEntry | null {
    return newestActive(this.bySourceIp.get(ip), now);
  }

  learningSwitch(container: string, now: number): LearningSwitch | null {
    const sw = this.learning.get(container);
    if (!sw || (sw.expiresAt !== null && sw.expiresAt <= now)) return null;
    return sw;
  }

  /** Why a container is in learning mode right now, or null when it is not. */
  learningSource(container: string, current: SessionEntry | null, now: number): LearningSource | null {
    if (current?.record.allowAll) return 'session';
    return this.learningSwitch(container, now) ? 'operator' : null;
  }

  /** Operator learning switches whose TTL has run out; they are removed here. */
  takeExpiredLearning(now: number): string[] {
    const out: string[] = [];
    for (const [container, sw] of this.learning) {
      if (sw.expiresAt !== null && sw.expiresAt <= now) {
        this.learning.delete(container);
        out.push(container);
      }
    }
    return out;
  }

  /** Sessions whose expiry has passed (for the sweeper, which deletes them from the store too). */
  expiredSessions(now: number): SessionEntry[] {
    const out: SessionEntry[] = [];
    for (const e of this.sessions.values()) if (e.record.expiresAt <= now) out.push(e);
    return out;
  }

  private indexFor(layer: 'global' | 'builtin'): RuleIndex {
    return layer === 'global' ? this.global : this.builtin;
  }
}

function newestActive(list: readonly SessionEntry[] | undefined, now: number): SessionEntry | null {
  if (!list) return null;
  for (let i = list.length - 1; i >= 0; i--) {
    const e = list[i]!;
    if (e.record.expiresAt > now) return e;
  }
  return null;
}

function insertBySeq(list: SessionEntry[], entry: SessionEntry): void {
  let i = list.length;
  while (i > 0 && list[i - 1]!.record.seq > entry.record.seq) i--;
  list.splice(i, 0, entry);
}

function replaceIn(list: SessionEntry[] | undefined, from: SessionEntry, to: SessionEntry): void {
  if (!list) return;
  const i = list.indexOf(from);
  if (i >= 0) list[i] = to;
}

function removeFromKeyed(map: Map<string, SessionEntry[]>, key: string, entry: SessionEntry): void {
  const list = map.get(key);
  if (!list) return;
  const i = list.indexOf(entry);
  if (i >= 0) list.splice(i, 1);
  if (list.length === 0) map.delete(key);
}
