// Layered resolution: global > session > builtin > default deny. Inside a layer the most
// specific rule wins and deny beats allow at equal specificity (see RuleIndex/outranks).
import { ipDestination, type Destination, type IpAddress } from './host.js';
import { parseDestinationPattern, type DestinationMatcher } from './patterns.js';
import type { Action, CompiledRule, Layer, RuleRecord } from './rules.js';
import { networkInsideBlock, specialBlock, type SpecialBlock } from './special-ranges.js';
import type { LearningSource, PolicyState, SessionEntry } from './state.js';

export type Reason = 'rule' | 'default_deny' | 'learning' | 'address_denied';

export interface Outcome {
  readonly action: Action;
  readonly layer: Layer | null;
  readonly rule: RuleRecord | null;
}

export interface Verdict extends Outcome {
  readonly reason: Reason;
  /** The container's current session (the one whose rules counted), if any. */
  readonly sessionId: string | null;
  readonly learning: LearningSource | null;
  /** In learning mode, what the decision would have been without it. */
  readonly wouldBe: Outcome | null;
}

/** Who is asking, resolved once per connection attempt. */
export interface Subject {
  readonly container: string;
  readonly session: SessionEntry | null;
  readonly learning: LearningSource | null;
}

const DEFAULT_DENY: Outcome = Object.freeze({ action: 'deny', layer: null, rule: null });

export function subjectFor(state: PolicyState, container: string, now: number): Subject {
  const session = state.currentSession(container, now);
  return { container, session, learning: state.learningSource(container, session, now) };
}

function outcome(rule: CompiledRule, layer: Layer): Outcome {
  return { action: rule.record.action, layer, rule: rule.record };
}

/** The layered outcome ignoring learning mode. */
export function resolve(state: PolicyState, subject: Subject, dest: Destination, port: number, now: number): Outcome {
  const c = subject.container;
  const g = state.global.lookup(c, dest, port, now);
  if (g) return outcome(g, 'global');
  const s = subject.session?.rules.lookup(c, dest, port, now);
  if (s) return outcome(s, 'session');
  const b = state.builtin.lookup(c, dest, port, now);
  if (b) return outcome(b, 'builtin');
  return DEFAULT_DENY;
}

/** The decision for a destination as requested (hostname or IP literal). */
export function decide(state: PolicyState, subject: Subject, dest: Destination, port: number, now: number): Verdict {
  const base = resolve(state, subject, dest, port, now);
  const sessionId = subject.session?.record.id ?? null;
  if (subject.learning === null || base.action === 'allow' || base.layer === 'global') {
    // Outside learning mode, or learning changes nothing: an allow stands, and a global
    // deny is the operator's guardrail that learning mode never lifts.
    return {
      ...base,
      reason: base.rule ? 'rule' : 'default_deny',
      sessionId,
      learning: subject.learning,
      wouldBe: null,
    };
  }
  return { action: 'allow', layer: null, rule: null, reason: 'learning', sessionId, learning: subject.learning, wouldBe: base };
}

/**
 * The layered outcome for an address using only IP/CIDR rules (as a request for that IP
 * literal would be decided, minus `*` rules), or null when no address rule matches. In
 * learning mode only global rules count.
 */
export function addressOutcome(state: PolicyState, subject: Subject, ip: IpAddress, port: number, now: number): Outcome | null {
  const dest = ipDestination(ip);
  const c = subject.container;
  const opts = { addressRulesOnly: true } as const;
  const g = state.global.lookup(c, dest, port, now, opts);
  if (g) return outcome(g, 'global');
  if (subject.learning !== null) return null;
  const s = subject.session?.rules.lookup(c, dest, port, now, opts);
  if (s) return outcome(s, 'session');
  const b = state.builtin.lookup(c, dest, port, now, opts);
  return b ? outcome(b, 'builtin') : null;
}

/**
 * Whether an address a hostname resolved to is blocked by an IP/CIDR rule, resolved in
 * layers like a request for that IP literal would be (so a hostname can never reach a
 * network the rules deny by address). Returns the denying outcome, or null if it may be dialled.
 */
export function addressDenial(state: PolicyState, subject: Subject, ip: IpAddress, port: number, now: number): Outcome | null {
  const o = addressOutcome(state, subject, ip, port, now);
  return o?.action === 'deny' ? o : null;
}

// The guard asks on every admitted connection to a special-range address (loopback, private
// networks...) what the deciding rule's destination is; records are immutable, so each is
// parsed once. Weak: a removed rule's entry goes with it.
const destinationMatchers = new WeakMap<RuleRecord, DestinationMatcher>();

function destinationMatcher(rule: RuleRecord): DestinationMatcher {
  let m = destinationMatchers.get(rule);
  if (m === undefined) {
    m = parseDestinationPattern(rule.destinationPattern).matcher;
    destinationMatchers.set(rule, m);
  }
  return m;
}

/** Whether a rule's destination names a special block: the address itself, or a network inside the block. */
function namesBlock(rule: RuleRecord, block: SpecialBlock): boolean {
  const m = destinationMatcher(rule);
  if (m.kind === 'ip') return true;
  return m.kind === 'cidr' && networkInsideBlock(m.network, m.prefix, block);
}

/**
 * The special range that keeps `ip` out of reach, or null. A special-range address (see
 * special-ranges.ts) is reachable only when the allowing rule names it: for an IP literal,
 * an IP rule or a CIDR inside that special range; for a hostname, an exact-hostname rule,
 * or such an IP/CIDR rule allowing that address. Wildcards, `*`, learning mode and CIDRs
 * wider than the range (`0.0.0.0/0`, `::/0`) never reach it.
 */
export function guardedRange(state: PolicyState, subject: Subject, verdict: Verdict, dest: Destination, ip: IpAddress, port: number, now: number): string | null {
  const block = specialBlock(ip);
  if (block === null) return null;
  if (verdict.reason === 'learning' || !verdict.rule) return block.name;
  if (dest.kind === 'ip') return namesBlock(verdict.rule, block) ? null : block.name;
  if (destinationMatcher(verdict.rule).kind === 'host') return null;
  const byAddress = addressOutcome(state, subject, ip, port, now);
  return byAddress?.action === 'allow' && byAddress.rule && namesBlock(byAddress.rule, block) ? null : block.name;
}

/** What recheck() answers for a connection the special-range guard no longer lets through. */
export interface GuardedOutcome extends Outcome {
  /** The special range the dialled address is in. */
  readonly guarded: string;
}

/**
 * Whether an open connection would still be admitted now: the destination as requested
 * and the address actually dialled must both still pass, special-range guard included
 * (a tunnel to a private address opened by an exact rule ends when only a wildcard is
 * left). Used for live revocation.
 */
export function recheck(state: PolicyState, container: string, dest: Destination, dialled: IpAddress, port: number, now: number): Verdict | Outcome | GuardedOutcome {
  const subject = subjectFor(state, container, now);
  const verdict = decide(state, subject, dest, port, now);
  if (verdict.action === 'deny') return verdict;
  if (dest.kind === 'host') {
    const denied = addressDenial(state, subject, dialled, port, now);
    if (denied) return denied;
  }
  const guarded = state.guardSpecialRanges ? guardedRange(state, subject, verdict, dest, dialled, port, now) : null;
  if (guarded !== null) return { action: 'deny', layer: null, rule: null, guarded };
  return verdict;
}
