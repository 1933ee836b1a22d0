// The decision half of the hot path, shared by HTTP, CONNECT, SOCKS5 and SOCKS4:
// identify -> limit -> decide -> resolve -> check addresses. Reads only in-memory state.
import { HostError, parseHost, type Destination, type IpAddress } from '../policy/host.js';
import { addressDenial, decide, guardedRange, subjectFor, type Outcome, type Reason, type Subject, type Verdict } from '../policy/resolver.js';
import type { LearningSource, PolicyState } from '../policy/state.js';
import { identify, type Credentials, type Identity, type IdentityMode } from '../identity/identify.js';
import type { LimitSettings, Limiter } from '../limits/limiter.js';
import { DnsError, resolveHost, type HostResolver } from './dns.js';
import { denial, describeOutcome, identityFailure, type Failure } from './outcomes.js';
import type { SelfGuard } from './self-guard.js';

export type Protocol = 'http' | 'connect' | 'socks5' | 'socks4';

export type DecisionReason = Reason | 'identity_required' | 'self_connection' | 'address_guarded' | 'bad_request' | 'limit';

/** One connection attempt as it is logged, audited and published. */
export interface DecisionRecord {
  readonly id: number;
  readonly time: number;
  readonly protocol: Protocol;
  readonly clientAddress: string;
  readonly container: string | null;
  readonly sessionId: string | null;
  readonly destination: string;
  readonly port: number;
  /** The first address that passed the checks (the one dialled first). */
  readonly address: string | null;
  readonly decision: 'allow' | 'deny';
  readonly reason: DecisionReason;
  readonly layer: string | null;
  readonly ruleId: number | null;
  /** Set while the container is in learning mode, with what would have happened without it. */
  readonly learning: LearningSource | null;
  readonly wouldBe: Outcome | null;
}

export interface Admission {
  readonly container: string;
  readonly subject: Subject;
  readonly verdict: Verdict;
  readonly destination: Destination;
  readonly port: number;
  /** Addresses that passed every check, in the resolver's order. */
  readonly addresses: IpAddress[];
  readonly record: DecisionRecord;
  /** Frees the connection's limiter slot; call once when the connection ends. */
  readonly release: () => void;
}

/** What evaluate() concluded; `denied` carries the outcome that decided it. */
export type Evaluation =
  | { readonly kind: 'bad_request'; readonly detail: string }
  | {
      readonly kind: 'denied';
      readonly destination: Destination;
      readonly subject: Subject;
      readonly verdict: Verdict;
      readonly outcome: Outcome;
      readonly reason: DecisionReason;
      readonly address: string | null;
      readonly failure: Failure;
    }
  | { readonly kind: 'unresolved'; readonly destination: Destination; readonly subject: Subject; readonly verdict: Verdict; readonly failure: Failure }
  | { readonly kind: 'allowed'; readonly destination: Destination; readonly subject: Subject; readonly verdict: Verdict; readonly addresses: IpAddress[] };

/**
 * A destination as the audit trail stores it: canonical when it parses (so `[::1]`,
 * `EXAMPLE.test.` and `example.test` are one destination to query by), else as sent.
 */
function auditHost(raw: string | Destination): string {
  if (typeof raw !== 'string') return raw.host;
  try {
    return parseHost(raw).host;
  } catch {
    return raw;
  }
}

const NO_RULE_DENY: Outcome = Object.freeze({ action: 'deny', layer: null, rule: null });

export type AdmitResult = { ok: true; admission: Admission } | { ok: false; failure: Failure; record: DecisionRecord | null };

export interface GateOptions {
  readonly identityMode: IdentityMode;
  readonly dnsTimeoutMs: number;
  readonly clock: () => number;
  readonly resolver: HostResolver;
  readonly selfGuard: SelfGuard;
  /** Keep special ranges (private, link-local, metadata...) out of wildcard and learning reach. */
  readonly guardSpecialRanges: boolean;
  readonly limiter: Limiter;
  /** The configured limits, overridden per field by the current session's. */
  readonly defaultLimits: LimitSettings;
  readonly nextDecisionId: () => number;
  /** Receives every decision (audit, metrics, events, log). */
  readonly onDecision: (record: DecisionRecord) => void;
  /** An allowed connection that then failed upstream (DNS, refused, timeout...). */
  readonly onUpstreamFailure: (record: DecisionRecord, failure: Failure) => void;
  /** How long each admit() took, identity to verdict (the decision latency histogram). */
  readonly observeDecisionSeconds?: (seconds: number) => void;
}

export class Gate {
  /** Admissions being decided, plus admitted ones not yet released. */
  private busy = 0;
  private settledWaiters: Array<() => void> = [];

  constructor(
    readonly state: PolicyState,
    private readonly opts: GateOptions,
  ) {
    // Live revocation (recheck) must guard special ranges exactly as admission does.
    state.guardSpecialRanges = opts.guardSpecialRanges;
  }

  identify(creds: Credentials | null, clientAddress: string): Identity {
    return identify(this.state, this.opts.identityMode, creds, clientAddress, this.opts.clock());
  }

  /** Records and returns the failure for a connection whose identity was not established. */
  refuseIdentity(identity: Identity & { ok: false }, protocol: Protocol, clientAddress: string, host: string | Destination, port: number): Failure {
    this.note(protocol, clientAddress, null, null, auditHost(host), port, null, 'deny', 'identity_required', null);
    return identityFailure(identity.reason === 'missing' ? 'identity_required' : 'identity_invalid');
  }

  /** Reports an upstream failure after an allow, so the audit record says what happened. */
  upstreamFailed(admission: Admission, failure: Failure): void {
    admission.release();
    this.opts.onUpstreamFailure(admission.record, failure);
  }

  /**
   * Decides a destination the way the proxy does before dialling: policy on the name as
   * requested, then (for hostnames) resolution and address checks. Records nothing, so
   * the control API's check endpoint can call it too. `host` is as sent, or already parsed.
   */
  async evaluate(container: string, host: string | Destination, port: number, resolve = true, given?: Subject): Promise<Evaluation> {
    return this.evaluateNow(container, host, port, resolve, given);
  }

  /**
   * Identity is established; decides, records and (when allowed) reserves the connection.
   * Synchronous unless the destination needs DNS: an IP literal, and every denial by name,
   * is decided without a promise (the promise layers were the gate's largest cost per
   * tunnel). Every call observes one decision time and, unless admitted, goes idle once.
   */
  admit(container: string, protocol: Protocol, clientAddress: string, rawHost: string | Destination, port: number): AdmitResult | Promise<AdmitResult> {
    const started = performance.now();
    this.busy++;
    let result: AdmitResult | Promise<AdmitResult>;
    try {
      result = this.decideAdmission(container, protocol, clientAddress, rawHost, port);
    } catch (err) {
      this.admitted(started, undefined);
      throw err;
    }
    if (!(result instanceof Promise)) return this.admitted(started, result);
    return result.then(
      (r) => this.admitted(started, r),
      (err: unknown) => {
        this.admitted(started, undefined);
        throw err;
      },
    );
  }

  /**
   * Resolves once no admission is being decided and none admitted is still open or dialling
   * (or after `timeoutMs`): shutdown waits for this, after closing everything, so that a
   * decision still waiting for DNS, and the close of what it admitted, are recorded before
   * the audit trail closes.
   */
  settled(timeoutMs: number): Promise<void> {
    if (this.busy === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      this.settledWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private idle(): void {
    if (--this.busy === 0) for (const wake of this.settledWaiters.splice(0)) wake();
  }

  /** The end of every admit(): observes the decision time; a gate not admitting goes idle. */
  private admitted(started: number, result: AdmitResult | undefined): AdmitResult {
    this.opts.observeDecisionSeconds?.((performance.now() - started) / 1000);
    if (!result?.ok) this.idle();
    return result!;
  }

  /** evaluate() without a promise when none is needed (see admit). */
  private evaluateNow(container: string, host: string | Destination, port: number, resolve: boolean, given?: Subject): Evaluation | Promise<Evaluation> {
    let destination: Destination;
    if (typeof host !== 'string') {
      destination = host;
    } else {
      try {
        destination = parseHost(host);
      } catch (err) {
        if (!(err instanceof HostError)) throw err;
        return { kind: 'bad_request', detail: `invalid destination host: ${err.message}` };
      }
    }
    const now = this.opts.clock();
    const subject = given ?? subjectFor(this.state, container, now);
    const verdict = decide(this.state, subject, destination, port, now);
    if (verdict.action === 'deny') {
      const failure = denial({ container, host: destination.host, port }, verdict);
      return { kind: 'denied', destination, subject, verdict, outcome: verdict, reason: verdict.reason, address: null, failure };
    }
    if (!resolve) return { kind: 'allowed', destination, subject, verdict, addresses: [] };
    if (destination.kind === 'ip') return this.checkAddresses(container, destination, port, subject, verdict, [destination.ip]);
    return this.resolveAndCheck(container, destination, port, subject, verdict);
  }

  private async resolveAndCheck(container: string, destination: Destination, port: number, subject: Subject, verdict: Verdict): Promise<Evaluation> {
    let candidates: IpAddress[];
    try {
      candidates = await resolveHost(this.opts.resolver, destination.host, this.opts.dnsTimeoutMs);
    } catch (err) {
      if (!(err instanceof DnsError)) throw err;
      return { kind: 'unresolved', destination, subject, verdict, failure: { kind: err.kind, detail: err.message } };
    }
    return this.checkAddresses(container, destination, port, subject, verdict, candidates);
  }

  /**
   * Hostname answers are checked against address rules, resolved in the same layers, so
   * DNS can never lead into a network the rules deny by address.
   */
  private checkAddresses(container: string, destination: Destination, port: number, subject: Subject, verdict: Verdict, candidates: IpAddress[]): Evaluation {
    const later = this.opts.clock();
    let denied: Outcome | null = null;
    let why = '';
    let reason: DecisionReason = 'address_denied';
    const addresses: IpAddress[] = [];
    for (const ip of candidates) {
      if (ip.range() === 'unspecified') {
        // 0.0.0.0 and :: connect to the proxy host itself; never a destination.
        why ||= `${ip.toString()} is the unspecified address, which reaches the proxy host itself`;
        continue;
      }
      if (this.opts.selfGuard.isSelf(ip, port)) {
        reason = 'self_connection';
        why = "the destination is sluice's own listener or API (always denied)";
        continue;
      }
      if (destination.kind === 'host') {
        const d = addressDenial(this.state, subject, ip, port, later);
        if (d) {
          denied ??= d;
          continue;
        }
      }
      const guarded = this.opts.guardSpecialRanges ? guardedRange(this.state, subject, verdict, destination, ip, port, later) : null;
      if (guarded !== null) {
        if (reason === 'address_denied' && !denied) {
          reason = 'address_guarded';
          why = `${destination.host === ip.toString() ? ip.toString() : `${destination.host} resolves to ${ip.toString()}, which`} is in the ${guarded} range: only a rule naming that address, a network inside that range, or the exact hostname reaches it (wildcards, 0.0.0.0/0, ::/0 and learning mode do not)`;
        }
        continue;
      }
      addresses.push(ip);
    }
    if (addresses.length === 0) {
      const outcome: Outcome = denied && reason === 'address_denied' ? denied : NO_RULE_DENY;
      if (denied && reason === 'address_denied') {
        why = `${destination.host} resolves to ${candidates.map((c) => c.toString()).join(', ')}, denied by ${describeOutcome(denied)}`;
      }
      const failure = denial({ container, host: destination.host, port }, { ...outcome, sessionId: verdict.sessionId }, why);
      return { kind: 'denied', destination, subject, verdict, outcome, reason, address: candidates[0]?.toString() ?? null, failure };
    }
    return { kind: 'allowed', destination, subject, verdict, addresses };
  }

  private decideAdmission(container: string, protocol: Protocol, clientAddress: string, rawHost: string | Destination, port: number): AdmitResult | Promise<AdmitResult> {
    const now = this.opts.clock();
    const subject = subjectFor(this.state, container, now);
    const sessionId = subject.session?.record.id ?? null;
    // Limits count attempts, denied ones included: hammering denied destinations is load too.
    const slot = this.opts.limiter.acquire(container, this.limitsFor(subject));
    if (!slot.ok) {
      const record = this.note(protocol, clientAddress, container, sessionId, auditHost(rawHost), port, null, 'deny', 'limit', null);
      const detail = slot.why === 'keys' ? 'too many distinct containers are connecting; refusing new ones' : `container ${container} is over its ${slot.why === 'rate' ? 'new-connection rate' : 'concurrent-connection'} limit`;
      return { ok: false, failure: { kind: 'limited', detail, retryAfterSeconds: slot.retryAfterSeconds }, record };
    }
    const e = this.evaluateNow(container, rawHost, port, true, subject);
    if (e instanceof Promise) return e.then((ev) => this.concludeAdmission(ev, slot.release, container, protocol, clientAddress, sessionId, rawHost, port));
    return this.concludeAdmission(e, slot.release, container, protocol, clientAddress, sessionId, rawHost, port);
  }

  private concludeAdmission(
    e: Evaluation,
    releaseSlot: () => void,
    container: string,
    protocol: Protocol,
    clientAddress: string,
    sessionId: string | null,
    rawHost: string | Destination,
    port: number,
  ): AdmitResult {
    if (e.kind !== 'allowed') releaseSlot();
    switch (e.kind) {
      case 'bad_request': {
        const record = this.note(protocol, clientAddress, container, sessionId, auditHost(rawHost), port, null, 'deny', 'bad_request', null, null);
        return { ok: false, failure: { kind: 'bad_request', detail: e.detail }, record };
      }
      case 'denied':
        return { ok: false, failure: e.failure, record: this.note(protocol, clientAddress, container, sessionId, e.destination.host, port, e.address, 'deny', e.reason, e.outcome, e.verdict) };
      case 'unresolved': {
        const record = this.note(protocol, clientAddress, container, sessionId, e.destination.host, port, null, 'allow', e.verdict.reason, e.verdict, e.verdict);
        this.opts.onUpstreamFailure(record, e.failure);
        return { ok: false, failure: e.failure, record };
      }
      case 'allowed': {
        const record = this.note(protocol, clientAddress, container, sessionId, e.destination.host, port, e.addresses[0]!.toString(), 'allow', e.verdict.reason, e.verdict, e.verdict);
        // Admitted, the gate stays busy until the connection is released (closed or failed):
        // the limiter slot's release is idempotent, the gate's idle() must run once.
        let released = false;
        const release = (): void => {
          releaseSlot();
          if (released) return;
          released = true;
          this.idle();
        };
        return { ok: true, admission: { container, subject: e.subject, verdict: e.verdict, destination: e.destination, port, addresses: e.addresses, record, release } };
      }
    }
  }

  private limitsFor(subject: Subject): LimitSettings {
    const own = subject.session?.record.limits;
    if (!own) return this.opts.defaultLimits;
    return {
      maxConnections: own.maxConnections ?? this.opts.defaultLimits.maxConnections,
      connectionsPerSecond: own.connectionsPerSecond ?? this.opts.defaultLimits.connectionsPerSecond,
    };
  }

  /** Builds a decision's record and hands it to the sinks (the audit trail, metrics, events). */
  private note(
    protocol: Protocol,
    clientAddress: string,
    container: string | null,
    sessionId: string | null,
    destination: string,
    port: number,
    address: string | null,
    decision: 'allow' | 'deny',
    reason: DecisionReason,
    outcome: Outcome | null,
    verdict: Verdict | null = null,
  ): DecisionRecord {
    const record: DecisionRecord = {
      id: this.opts.nextDecisionId(),
      time: this.opts.clock(),
      protocol,
      clientAddress,
      container,
      sessionId,
      destination,
      port,
      address,
      decision,
      reason,
      layer: outcome?.layer ?? null,
      ruleId: outcome?.rule?.id ?? null,
      learning: verdict?.learning ?? null,
      wouldBe: verdict?.wouldBe ?? null,
    };
    this.opts.onDecision(record);
    return record;
  }
}
