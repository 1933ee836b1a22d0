// A straightforward reference model of policy resolution, written from the SPEC text only
// (linear scans, explicit lexicographic comparison). It deliberately shares no matching or
// ranking code with src/policy; ipaddr.js is used only to turn IP text into bytes.
//
// Input is expected in canonical form (lowercase hostnames, canonical patterns), except that
// IPv4-mapped IPv6 query addresses are normalised here, as the spec requires.
import ipaddr from 'ipaddr.js';
import { isIP } from 'node:net';

export type RefAction = 'allow' | 'deny';
export type RefLayer = 'global' | 'session' | 'builtin';

export interface RefRule {
  readonly id: number;
  readonly containerPattern: string;
  readonly destinationPattern: string;
  readonly portPattern: string;
  readonly action: RefAction;
  readonly expiresAt: number | null;
}

export interface RefSession {
  readonly id: string;
  readonly container: string;
  readonly seq: number;
  readonly expiresAt: number;
  readonly allowAll: boolean;
  readonly rules: readonly RefRule[];
}

export interface RefLearningSwitch {
  readonly container: string;
  readonly expiresAt: number | null;
}

export interface RefWorld {
  readonly global: readonly RefRule[];
  readonly builtin: readonly RefRule[];
  /** Live (not deleted) sessions, any order. */
  readonly sessions: readonly RefSession[];
  /** Enabled operator switches, at most one per container. */
  readonly learning: readonly RefLearningSwitch[];
}

/**
 * Points where the SPEC is silent and the implementation refines it. With both false, the
 * reference follows the spec text literally: every container glob ranks the same, and
 * `*.x` / `**.x` rank the same (only the suffix length counts).
 */
export interface RefOptions {
  /** A container glob with more literal (non-`*`/`?`) characters ranks above one with fewer. */
  readonly globLiteralRank: boolean;
  /** `*.x` (excludes the apex) ranks above `**.x` with the same suffix. */
  readonly subdomainWildcardAboveApex: boolean;
}

export const STRICT_SPEC: RefOptions = { globLiteralRank: false, subdomainWildcardAboveApex: false };
export const IMPLEMENTATION_REFINEMENTS: RefOptions = { globLiteralRank: true, subdomainWildcardAboveApex: true };

export interface RefOutcome {
  readonly action: RefAction;
  readonly layer: RefLayer | null;
  /** Ids of every rule that may legitimately be reported as the deciding rule (ties). Empty for default deny. */
  readonly winners: readonly number[];
}

export type RefReason = 'rule' | 'default_deny' | 'learning' | 'rule_or_learning';

export interface RefVerdict extends RefOutcome {
  /**
   * 'rule_or_learning': in learning mode a rule already allows; the spec text says every
   * non-globally-denied request gets reason 'learning', the implementation reports the rule.
   */
  readonly reason: RefReason;
  readonly sessionId: string | null;
  readonly learning: 'session' | 'operator' | null;
  readonly wouldBe: RefOutcome | null;
}

// ---- destinations -------------------------------------------------------------------------

type RefDest = { kind: 'host'; host: string } | { kind: 'ip'; family: 4 | 6; bytes: number[] };

function ipBytes(text: string): { family: 4 | 6; bytes: number[] } {
  const bytes = ipaddr.parse(text).toByteArray();
  if (bytes.length === 16) {
    // IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4 address.
    const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
    if (mapped) return { family: 4, bytes: bytes.slice(12) };
    return { family: 6, bytes };
  }
  return { family: 4, bytes };
}

export function refDestination(text: string): RefDest {
  const t = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (isIP(t) !== 0) return { kind: 'ip', ...ipBytes(t) };
  return { kind: 'host', host: t };
}

type DestPattern =
  | { kind: 'any' }
  | { kind: 'host'; host: string }
  | { kind: 'suffix'; suffix: string; apex: boolean }
  | { kind: 'ip'; family: 4 | 6; bytes: number[] }
  | { kind: 'cidr'; family: 4 | 6; bytes: number[]; prefix: number };

function destPattern(p: string): DestPattern {
  if (p === '*') return { kind: 'any' };
  if (p.startsWith('**.')) return { kind: 'suffix', suffix: p.slice(3), apex: true };
  if (p.startsWith('*.')) return { kind: 'suffix', suffix: p.slice(2), apex: false };
  const slash = p.indexOf('/');
  if (slash >= 0) {
    const ip = ipBytes(p.slice(0, slash));
    let prefix = Number(p.slice(slash + 1));
    if (ip.family === 4 && ipaddr.parse(p.slice(0, slash)).kind() === 'ipv6') prefix -= 96;
    if (prefix === ip.bytes.length * 8) return { kind: 'ip', ...ip };
    return { kind: 'cidr', ...ip, prefix };
  }
  if (isIP(p) !== 0) return { kind: 'ip', ...ipBytes(p) };
  return { kind: 'host', host: p };
}

function samePrefix(a: readonly number[], b: readonly number[], bits: number): boolean {
  for (let i = 0; i < bits; i++) {
    const byte = i >> 3;
    const mask = 0x80 >> (i & 7);
    if (((a[byte] ?? 0) & mask) !== ((b[byte] ?? 0) & mask)) return false;
  }
  return true;
}

function destMatches(p: DestPattern, d: RefDest): boolean {
  switch (p.kind) {
    case 'any':
      return true;
    case 'host':
      return d.kind === 'host' && d.host === p.host;
    case 'suffix':
      if (d.kind !== 'host') return false;
      if (d.host === p.suffix) return p.apex;
      return d.host.endsWith('.' + p.suffix);
    case 'ip':
      return d.kind === 'ip' && d.family === p.family && d.bytes.join('.') === p.bytes.join('.');
    case 'cidr':
      return d.kind === 'ip' && d.family === p.family && samePrefix(d.bytes, p.bytes, p.prefix);
  }
}

function isAddressPattern(p: DestPattern): boolean {
  return p.kind === 'ip' || p.kind === 'cidr';
}

// ---- containers and ports ------------------------------------------------------------------

function globMatches(pattern: string, name: string): boolean {
  if (pattern.length === 0) return name.length === 0;
  const [head, rest] = [pattern[0], pattern.slice(1)];
  if (head === '*') {
    for (let i = 0; i <= name.length; i++) if (globMatches(rest, name.slice(i))) return true;
    return false;
  }
  if (name.length === 0) return false;
  if (head === '?' || head === name[0]) return globMatches(rest, name.slice(1));
  return false;
}

function isGlob(p: string): boolean {
  return p.includes('*') || p.includes('?');
}

function isAnyContainer(p: string): boolean {
  return /^\*+$/.test(p);
}

function portMatchesRef(p: string, port: number): boolean {
  if (p === '*') return true;
  return p.split(',').some((item) => {
    const [lo, hi] = item.split('-');
    const l = Number(lo);
    const h = hi === undefined ? l : Number(hi);
    return port >= l && port <= h;
  });
}

// ---- specificity: (container, destination, port), compared lexicographically -----------------

function rank(r: RefRule, o: RefOptions): number[] {
  const c = r.containerPattern;
  const container = isAnyContainer(c) ? [0, 0] : isGlob(c) ? [1, o.globLiteralRank ? c.replace(/[*?]/g, '').length : 0] : [2, 0];
  const p = destPattern(r.destinationPattern);
  let dest: number[];
  switch (p.kind) {
    case 'any':
      dest = [0, 0, 0];
      break;
    case 'cidr':
      dest = [1, p.prefix, 0];
      break;
    case 'suffix':
      dest = [2, p.suffix.split('.').length, o.subdomainWildcardAboveApex && !p.apex ? 1 : 0];
      break;
    case 'host':
    case 'ip':
      dest = [3, 0, 0];
      break;
  }
  const port = r.portPattern === '*' ? 0 : /^[0-9]+$/.test(r.portPattern) ? 2 : 1;
  return [...container, ...dest, port];
}

function compareRank(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

// ---- resolution ----------------------------------------------------------------------------------

interface Query {
  readonly container: string;
  readonly dest: RefDest;
  readonly port: number;
  readonly now: number;
}

/** The deciding outcome of one layer, or null when none of its live rules matches. */
function layerOutcome(
  rules: readonly RefRule[],
  layer: RefLayer,
  q: Query,
  o: RefOptions,
  only: (p: DestPattern) => boolean = () => true,
): RefOutcome | null {
  const matching = rules.filter((r) => {
    if (r.expiresAt !== null && r.expiresAt <= q.now) return false;
    const c = r.containerPattern;
    const containerOk = isAnyContainer(c) || (isGlob(c) ? globMatches(c, q.container) : c === q.container);
    const p = destPattern(r.destinationPattern);
    return containerOk && only(p) && destMatches(p, q.dest) && portMatchesRef(r.portPattern, q.port);
  });
  if (matching.length === 0) return null;
  let best = rank(matching[0]!, o);
  for (const r of matching) if (compareRank(rank(r, o), best) > 0) best = rank(r, o);
  const top = matching.filter((r) => compareRank(rank(r, o), best) === 0);
  const action: RefAction = top.some((r) => r.action === 'deny') ? 'deny' : 'allow';
  return { action, layer, winners: top.filter((r) => r.action === action).map((r) => r.id) };
}

export function refCurrentSession(w: RefWorld, container: string, now: number): RefSession | null {
  let cur: RefSession | null = null;
  for (const s of w.sessions) {
    if (s.container !== container || s.expiresAt <= now) continue;
    if (cur === null || s.seq > cur.seq) cur = s;
  }
  return cur;
}

export function refLearning(w: RefWorld, container: string, now: number): 'session' | 'operator' | null {
  if (refCurrentSession(w, container, now)?.allowAll) return 'session';
  const sw = w.learning.find((l) => l.container === container);
  return sw && (sw.expiresAt === null || sw.expiresAt > now) ? 'operator' : null;
}

const REF_DEFAULT_DENY: RefOutcome = { action: 'deny', layer: null, winners: [] };

export function refResolve(w: RefWorld, container: string, dest: string, port: number, now: number, o: RefOptions): RefOutcome {
  const q: Query = { container, dest: refDestination(dest), port, now };
  const session = refCurrentSession(w, container, now);
  return (
    layerOutcome(w.global, 'global', q, o) ??
    (session ? layerOutcome(session.rules, 'session', q, o) : null) ??
    layerOutcome(w.builtin, 'builtin', q, o) ??
    REF_DEFAULT_DENY
  );
}

export function refDecide(w: RefWorld, container: string, dest: string, port: number, now: number, o: RefOptions): RefVerdict {
  const base = refResolve(w, container, dest, port, now, o);
  const learning = refLearning(w, container, now);
  const sessionId = refCurrentSession(w, container, now)?.id ?? null;
  const plain = { sessionId, learning };
  if (learning === null) return { ...base, ...plain, reason: base.layer === null ? 'default_deny' : 'rule', wouldBe: null };
  if (base.action === 'deny' && base.layer === 'global') return { ...base, ...plain, reason: 'rule', wouldBe: null };
  if (base.action === 'allow') return { ...base, ...plain, reason: 'rule_or_learning', wouldBe: base };
  return { action: 'allow', layer: null, winners: [], ...plain, reason: 'learning', wouldBe: base };
}

/**
 * Whether an address a hostname resolved to is denied: resolved in layers like an IP literal,
 * but using only IP/CIDR rules; in learning mode only the global layer can deny.
 */
export function refAddressDenial(w: RefWorld, container: string, ip: string, port: number, now: number, o: RefOptions): RefOutcome | null {
  const q: Query = { container, dest: refDestination(ip), port, now };
  const session = refCurrentSession(w, container, now);
  const learning = refLearning(w, container, now);
  const layers: Array<[readonly RefRule[], RefLayer]> = [[w.global, 'global']];
  if (learning === null) {
    if (session) layers.push([session.rules, 'session']);
    layers.push([w.builtin, 'builtin']);
  }
  for (const [rules, layer] of layers) {
    const out = layerOutcome(rules, layer, q, o, isAddressPattern);
    if (out) return out.action === 'deny' ? out : null;
  }
  return null;
}
