// Property test: random small policies and queries, `decide`/`addressDenial` compared against
// the straightforward reference model in reference.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseHost } from '../../../src/policy/host.js';
import { addressDenial, decide, subjectFor, type Outcome } from '../../../src/policy/resolver.js';
import type { Action, Layer, RuleRecord } from '../../../src/policy/rules.js';
import { PolicyState, type SessionRecord } from '../../../src/policy/state.js';
import {
  IMPLEMENTATION_REFINEMENTS,
  refAddressDenial,
  refDecide,
  STRICT_SPEC,
  type RefOptions,
  type RefOutcome,
  type RefRule,
  type RefSession,
  type RefWorld,
} from './reference.js';

const NOW = 1_000_000;
const HOUR = 3_600_000;

const CONTAINERS = ['web', 'web-1', 'web-12', 'db'] as const;
const CONTAINER_PATTERNS = ['*', 'web', 'web-1', 'db', 'web-*', 'web-?', 'w*', '*-1', 'w?b-*'] as const;
// Glob pool whose members all have the same number of literal characters, so that the
// strict-spec reading (all globs rank equally) and the implementation agree.
const SAME_RANK_GLOBS = ['*', 'web', 'web-1', 'db', 'web-*', 'web-?', '*eb-1', 'w?b-1', 'web*1'] as const;
const DEST_PATTERNS = [
  '*',
  'example.com',
  'api.example.com',
  'a.b.example.com',
  'other.org',
  'localhost',
  '*.example.com',
  '**.example.com',
  '*.b.example.com',
  '**.b.example.com',
  '**.api.example.com',
  '**.other.org',
  '10.0.0.1',
  '10.1.2.3',
  '127.0.0.1',
  '::1',
  '2001:db8::1',
  '10.0.0.0/8',
  '10.0.0.0/24',
  '10.1.0.0/16',
  '0.0.0.0/0',
  '127.0.0.0/8',
  '2001:db8::/32',
  '2001:db8::/64',
  '::/0',
] as const;
// `**.x` patterns whose `*.x` twin is also in the pool are left out of the strict-spec run.
const NO_APEX_CLASH = DEST_PATTERNS.filter((p) => !(p.startsWith('**.') && (DEST_PATTERNS as readonly string[]).includes(p.slice(1))));
const PORT_PATTERNS = ['*', '443', '80', '80,443', '8000-8999', '22,443-444'] as const;
const QUERY_HOSTS = [
  'example.com',
  'api.example.com',
  'x.api.example.com',
  'a.b.example.com',
  'b.example.com',
  'x.a.b.example.com',
  'other.org',
  'www.other.org',
  'localhost',
  'evil.com',
] as const;
const QUERY_IPS = ['10.0.0.1', '10.0.0.2', '10.1.2.3', '10.2.0.1', '127.0.0.1', '::1', '2001:db8::1', '2001:db8:1::2', '192.168.1.1', '::ffff:10.0.0.1', '2001:db9::1'] as const;
const QUERY_PORTS = [22, 80, 443, 444, 8080, 8443] as const;
const EXPIRIES = [null, null, null, NOW - 1, NOW, NOW + 1] as const;
const SESSION_EXPIRIES = [NOW - 1, NOW, NOW + 1, NOW + HOUR, NOW + HOUR] as const;

interface Pools {
  readonly containers: readonly string[];
  readonly dests: readonly string[];
}

interface RuleShape {
  readonly container: string;
  readonly dest: string;
  readonly ports: string;
  readonly action: Action;
  readonly expiresAt: number | null;
}

interface GlobalShape {
  readonly rule: RuleShape;
  /** Written first under the same id, then replaced by `rule` (exercises index removal). */
  readonly previous: RuleShape | null;
  /** Written, then deleted. */
  readonly deleted: boolean;
}

interface SessionShape {
  readonly container: string;
  readonly seq: number;
  readonly expiresAt: number;
  readonly allowAll: boolean;
  readonly deleted: boolean;
  readonly rules: readonly RuleShape[];
}

interface SwitchShape {
  readonly container: string;
  readonly enabled: boolean;
  readonly expiresAt: number | null;
}

interface Scenario {
  readonly globals: readonly GlobalShape[];
  readonly builtinDefaults: boolean;
  readonly builtins: readonly RuleShape[];
  readonly sessions: readonly SessionShape[];
  readonly switches: readonly SwitchShape[];
  readonly queries: ReadonlyArray<{ container: string; dest: string; port: number; resolved: string }>;
}

function scenarioArb(pools: Pools): fc.Arbitrary<Scenario> {
  const rule: fc.Arbitrary<RuleShape> = fc.record({
    container: fc.constantFrom(...pools.containers),
    dest: fc.constantFrom(...pools.dests),
    ports: fc.constantFrom(...PORT_PATTERNS),
    action: fc.constantFrom<Action>('allow', 'deny'),
    expiresAt: fc.constantFrom(...EXPIRIES),
  });
  const oneIn = (n: number): fc.Arbitrary<boolean> => fc.integer({ min: 1, max: n }).map((k) => k === 1);
  return fc.record({
    globals: fc.array(fc.record({ rule, previous: fc.option(rule, { freq: 5 }), deleted: oneIn(8) }), { maxLength: 8 }),
    builtinDefaults: fc.boolean(),
    builtins: fc.array(rule, { maxLength: 3 }),
    sessions: fc.uniqueArray(
      fc.record({
        container: fc.constantFrom('web', 'web-1', 'db'),
        seq: fc.integer({ min: 1, max: 50 }),
        expiresAt: fc.constantFrom(...SESSION_EXPIRIES),
        allowAll: oneIn(6),
        deleted: oneIn(6),
        rules: fc.array(rule, { maxLength: 6 }),
      }),
      { maxLength: 3, selector: (x) => x.seq },
    ),
    switches: fc.array(
      fc.record({
        container: fc.constantFrom('web', 'web-1', 'db'),
        enabled: fc.boolean(),
        expiresAt: fc.constantFrom(null, NOW - 1, NOW, NOW + 1),
      }),
      { maxLength: 2 },
    ),
    queries: fc.array(
      fc.record({
        container: fc.constantFrom(...CONTAINERS),
        dest: fc.constantFrom(...QUERY_HOSTS, ...QUERY_IPS),
        port: fc.constantFrom(...QUERY_PORTS),
        resolved: fc.constantFrom(...QUERY_IPS),
      }),
      { minLength: 1, maxLength: 8 },
    ),
  });
}

interface Built {
  readonly state: PolicyState;
  readonly ref: RefWorld;
}

function build(s: Scenario): Built {
  const state = new PolicyState();
  let nextId = 1;
  const record = (layer: Layer, r: RuleShape, sessionId: string | null, id = nextId++): RuleRecord => ({
    id,
    layer,
    sessionId,
    containerPattern: r.container,
    destinationPattern: r.dest,
    portPattern: r.ports,
    action: r.action,
    expiresAt: r.expiresAt,
    notes: null,
    createdAt: NOW,
  });
  const toRef = (r: RuleRecord): RefRule => ({
    id: r.id,
    containerPattern: r.containerPattern,
    destinationPattern: r.destinationPattern,
    portPattern: r.portPattern,
    action: r.action,
    expiresAt: r.expiresAt,
  });

  const refGlobal: RefRule[] = [];
  for (const g of s.globals) {
    const id = nextId++;
    if (g.previous) state.putRule(record('global', g.previous, null, id));
    const r = record('global', g.rule, null, id);
    state.putRule(r);
    if (g.deleted) state.deleteRule(id);
    else refGlobal.push(toRef(r));
  }

  const refBuiltin: RefRule[] = [];
  const builtinShapes: RuleShape[] = [...s.builtins];
  if (s.builtinDefaults) {
    for (const dest of ['127.0.0.1', '::1', 'localhost']) builtinShapes.push({ container: '*', dest, ports: '*', action: 'allow', expiresAt: null });
  }
  for (const b of builtinShapes) {
    const r = record('builtin', b, null);
    state.putRule(r);
    refBuiltin.push(toRef(r));
  }

  const refSessions: RefSession[] = [];
  for (const sh of s.sessions) {
    const id = `sess-${sh.seq}`;
    const rules = sh.rules.map((r) => record('session', r, id));
    const rec: SessionRecord = {
      id,
      container: sh.container,
      seq: sh.seq,
      createdAt: NOW - sh.seq, // deliberately inverse to seq: creation order must come from seq
      expiresAt: sh.expiresAt,
      ttlSeconds: 3600,
      allowAll: sh.allowAll,
      sourceIps: [],
      metadata: null,
      tokenHash: `hash-${id}`,
    };
    state.putSession(rec, rules);
    if (sh.deleted) state.deleteSession(id);
    else refSessions.push({ id, container: sh.container, seq: sh.seq, expiresAt: sh.expiresAt, allowAll: sh.allowAll, rules: rules.map(toRef) });
  }

  const switches = new Map<string, { container: string; expiresAt: number | null }>();
  for (const sw of s.switches) {
    state.setLearning({ container: sw.container, enabled: sw.enabled, expiresAt: sw.expiresAt });
    if (sw.enabled) switches.set(sw.container, { container: sw.container, expiresAt: sw.expiresAt });
    else switches.delete(sw.container);
  }

  return { state, ref: { global: refGlobal, builtin: refBuiltin, sessions: refSessions, learning: [...switches.values()] } };
}

function sameOutcome(actual: Outcome, expected: RefOutcome, what: string): void {
  assert.equal(actual.action, expected.action, `${what}: action`);
  assert.equal(actual.layer, expected.layer, `${what}: layer`);
  if (expected.winners.length === 0) assert.equal(actual.rule, null, `${what}: no rule`);
  else assert.ok(actual.rule !== null && expected.winners.includes(actual.rule.id), `${what}: rule ${actual.rule?.id} not among ${JSON.stringify(expected.winners)}`);
}

function check(s: Scenario, o: RefOptions): void {
  const { state, ref } = build(s);
  for (const q of s.queries) {
    const what = `${q.container} -> ${q.dest}:${q.port}`;
    const subject = subjectFor(state, q.container, NOW);
    const v = decide(state, subject, parseHost(q.dest), q.port, NOW);
    const r = refDecide(ref, q.container, q.dest, q.port, NOW, o);
    assert.equal(v.sessionId, r.sessionId, `${what}: sessionId`);
    assert.equal(v.learning, r.learning, `${what}: learning`);
    assert.equal(v.action, r.action, `${what}: action`);
    if (r.reason === 'rule_or_learning') {
      // Learning mode and a rule allows anyway: accept either reporting style (see report).
      if (v.reason === 'learning') {
        assert.equal(v.layer, null, `${what}: layer`);
        sameOutcome(v.wouldBe ?? { action: 'deny', layer: null, rule: null }, r, `${what} wouldBe`);
      } else {
        assert.equal(v.reason, 'rule', `${what}: reason`);
        sameOutcome(v, r, what);
      }
    } else {
      assert.equal(v.reason, r.reason, `${what}: reason`);
      sameOutcome(v, r, what);
      if (r.wouldBe) sameOutcome(v.wouldBe ?? { action: 'allow', layer: null, rule: null }, r.wouldBe, `${what} wouldBe`);
      else assert.equal(v.wouldBe, null, `${what}: wouldBe`);
    }

    const ip = parseHost(q.resolved);
    assert.equal(ip.kind, 'ip');
    if (ip.kind !== 'ip') continue;
    const a = addressDenial(state, subject, ip.ip, q.port, NOW);
    const ra = refAddressDenial(ref, q.container, q.resolved, q.port, NOW, o);
    const awhat = `${q.container} resolved ${q.resolved}:${q.port}`;
    if (ra === null) assert.equal(a, null, `${awhat}: expected no address denial, got ${JSON.stringify(a && { layer: a.layer, rule: a.rule?.id })}`);
    else {
      assert.ok(a !== null, `${awhat}: expected an address denial`);
      sameOutcome(a, ra, awhat);
    }
  }
}

const RUNS = Number(process.env.POLICY_PROPERTY_RUNS ?? 300);

test('property: decide and addressDenial agree with the reference model (implementation refinements)', () => {
  fc.assert(
    fc.property(scenarioArb({ containers: CONTAINER_PATTERNS, dests: DEST_PATTERNS }), (s) => check(s, IMPLEMENTATION_REFINEMENTS)),
    { numRuns: RUNS },
  );
});

test('property: strict spec reading agrees where the spec is unambiguous (equal-rank globs, no **. patterns)', () => {
  fc.assert(
    fc.property(scenarioArb({ containers: SAME_RANK_GLOBS, dests: NO_APEX_CLASH }), (s) => check(s, STRICT_SPEC)),
    { numRuns: RUNS },
  );
});
