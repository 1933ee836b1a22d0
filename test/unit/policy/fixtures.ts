// Test builders for the policy core: a small "world" that hands out unique rule ids and
// session seqs and turns terse rule specs into RuleRecords / SessionRecords.
import { parseHost, type Destination } from '../../../src/policy/host.js';
import { addressDenial, decide, subjectFor, type Outcome, type Verdict } from '../../../src/policy/resolver.js';
import type { Action, Layer, RuleRecord } from '../../../src/policy/rules.js';
import { PolicyState, type SessionRecord } from '../../../src/policy/state.js';

/** A fixed "now" (epoch ms) for tests that do not care about time. */
export const NOW = 1_700_000_000_000;
export const HOUR = 3_600_000;

export interface RuleSpec {
  readonly action: Action;
  readonly dest: string;
  readonly container?: string;
  readonly ports?: string;
  readonly expiresAt?: number | null;
}

type RuleOpts = Omit<RuleSpec, 'action' | 'dest'>;

export const allow = (dest: string, opts: RuleOpts = {}): RuleSpec => ({ action: 'allow', dest, ...opts });
export const deny = (dest: string, opts: RuleOpts = {}): RuleSpec => ({ action: 'deny', dest, ...opts });

export interface SessionOpts {
  readonly id?: string;
  /** Defaults to the next seq handed out by the world (i.e. creation order). */
  readonly seq?: number;
  readonly expiresAt?: number;
  readonly allowAll?: boolean;
  /** Defaults to NOW; tests of "seq, not timestamps" set it explicitly. */
  readonly createdAt?: number;
}

export interface BuiltSession {
  readonly record: SessionRecord;
  readonly rules: readonly RuleRecord[];
}

/** The built-in layer as the spec describes it: loopback + localhost, all ports, all containers. */
export const BUILTIN_SPECS: readonly RuleSpec[] = [allow('127.0.0.1'), allow('::1'), allow('localhost')];

export class World {
  readonly state = new PolicyState();
  private nextId = 1;
  private nextSeq = 1;

  record(layer: Layer, spec: RuleSpec, sessionId: string | null = null): RuleRecord {
    return {
      id: this.nextId++,
      layer,
      sessionId,
      containerPattern: spec.container ?? '*',
      destinationPattern: spec.dest,
      portPattern: spec.ports ?? '*',
      action: spec.action,
      expiresAt: spec.expiresAt ?? null,
      notes: null,
      createdAt: NOW,
    };
  }

  global(spec: RuleSpec): RuleRecord {
    const r = this.record('global', spec);
    this.state.putRule(r);
    return r;
  }

  builtin(spec: RuleSpec): RuleRecord {
    const r = this.record('builtin', spec);
    this.state.putRule(r);
    return r;
  }

  /** Installs the spec's built-in rules; returns them in BUILTIN_SPECS order. */
  builtins(): RuleRecord[] {
    return BUILTIN_SPECS.map((s) => this.builtin(s));
  }

  session(container: string, specs: readonly RuleSpec[] = [], opts: SessionOpts = {}): BuiltSession {
    const seq = opts.seq ?? this.nextSeq++;
    const id = opts.id ?? `s${seq}-${container}`;
    const record: SessionRecord = {
      id,
      container,
      seq,
      createdAt: opts.createdAt ?? NOW,
      expiresAt: opts.expiresAt ?? NOW + HOUR,
      ttlSeconds: 3600,
      allowAll: opts.allowAll ?? false,
      sourceIps: [],
      metadata: null,
      tokenHash: `hash-${id}`,
    };
    const rules = specs.map((s) => this.record('session', s, id));
    this.state.putSession(record, rules);
    return { record, rules };
  }

  decide(container: string, host: string, port: number, now: number = NOW): Verdict {
    return decide(this.state, subjectFor(this.state, container, now), parseHost(host), port, now);
  }

  addressDenial(container: string, ip: string, port: number, now: number = NOW): Outcome | null {
    const d: Destination = parseHost(ip);
    if (d.kind !== 'ip') throw new Error(`${ip} is not an IP literal`);
    return addressDenial(this.state, subjectFor(this.state, container, now), d.ip, port, now);
  }
}
