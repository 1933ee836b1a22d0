// Which layer decides, through the real proxy: global > session > builtin > default deny,
// deny over allow on ties, the loopback built-ins, and learning mode (session allow_all or
// the operator switch) that only a global deny can stop.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { FakeClock, addRule, builtinRuleId, expectBlocked, expectReach, sessionRuleId } from '../helpers/api-helpers.js';

const clock = new FakeClock();
let s: TestSluice;
let o1: Origin;
let o2: Origin;
let o3: Origin;
let o6: Origin;

before(async () => {
  [o1, o2, o3, o6] = await Promise.all([startOrigin('127.0.0.1'), startOrigin('127.0.0.2'), startOrigin('127.0.0.3'), startOrigin('::1')]);
  s = await startTestSluice({
    clock: clock.fn,
    config: { sessions: { sweep_interval_ms: 3_600_000 } },
    resolver: async (host) => {
      if (host === 'localhost') return ['127.0.0.1'];
      if (host === 'three.example.test') return ['127.0.0.3'];
      if (host.endsWith('.example.test')) return ['127.0.0.2'];
      return [];
    },
  });
});
after(async () => {
  await s.close(true);
  await Promise.all([o1.close(), o2.close(), o3.close(), o6.close()]);
});

/** A session for a fresh container; returns its proxy URL. */
async function session(container: string, body: Record<string, unknown> = {}): Promise<string> {
  return (await s.createSession({ session_id: container, container_name: container, ...body })).proxy.http;
}

test('no rule matches: default deny', async () => {
  const proxy = await session('dd');
  await expectBlocked(proxy, o2, null);
  await expectBlocked(proxy, o2, null, 'a.example.test');
  assert.equal(o2.requests.length, 0, 'a denied request never reaches the origin');
});

test('a global deny beats a more specific session allow', async () => {
  const proxy = await session('gd', { network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  await expectReach(proxy, o2);
  const g = await addRule(s, { container_pattern: 'gd', destination_pattern: '127.0.0.0/8', action: 'deny' });
  await expectBlocked(proxy, o2, { layer: 'global', ruleId: g });
  await s.api('DELETE', `/api/rules/${g}`);
  await expectReach(proxy, o2, undefined, 'session decides again once the global rule is gone');
});

test('a global allow beats a more specific session deny', async () => {
  const proxy = await session('ga', { network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port), action: 'deny' }] });
  const deny = await sessionRuleId(s, 'ga', '127.0.0.2');
  await expectBlocked(proxy, o2, { layer: 'session', ruleId: deny });
  const g = await addRule(s, { container_pattern: 'ga', destination_pattern: '*', action: 'allow' });
  await expectReach(proxy, o2);
  await s.api('DELETE', `/api/rules/${g}`);
});

test('the highest layer with a matching rule decides; a global rule that does not match leaves it to the session', async () => {
  const proxy = await session('fall', { network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const other = await addRule(s, { container_pattern: 'fall', destination_pattern: '127.0.0.2', port_pattern: String(o2.port + 1), action: 'deny' });
  const otherContainer = await addRule(s, { container_pattern: 'fall-not', destination_pattern: '127.0.0.2', action: 'deny' });
  const expired = await addRule(s, { container_pattern: 'fall', destination_pattern: '127.0.0.2', action: 'deny', expires_in_seconds: 5 });
  await expectBlocked(proxy, o2, { layer: 'global', ruleId: expired });
  clock.advance(5);
  await expectReach(proxy, o2, undefined, 'other port, other container, expired: none of them match');
  for (const id of [other, otherContainer]) await s.api('DELETE', `/api/rules/${id}`);
});

test('deny beats allow at equal specificity, in the session and in the global layer', async () => {
  const port = String(o2.port);
  const proxy = await session('tie', {
    network_rules: [
      { destination_pattern: '127.0.0.2', port_pattern: port, action: 'allow' },
      { destination_pattern: '127.0.0.2', port_pattern: port, action: 'deny' },
      { destination_pattern: '127.0.0.3', port_pattern: String(o3.port), action: 'allow' },
    ],
  });
  const rules = (await s.api('GET', '/api/sessions/tie')).body.rules;
  const denyId = rules.find((r: any) => r.destination_pattern === '127.0.0.2' && r.action === 'deny').id;
  await expectBlocked(proxy, o2, { layer: 'session', ruleId: denyId });

  // The global pair is created deny-first and allow-first: order does not matter.
  const ga = await addRule(s, { container_pattern: 'tie', destination_pattern: '127.0.0.3', action: 'allow' });
  const gd = await addRule(s, { container_pattern: 'tie', destination_pattern: '127.0.0.3', action: 'deny' });
  await expectBlocked(proxy, o3, { layer: 'global', ruleId: gd });
  await s.api('DELETE', `/api/rules/${ga}`);
  await s.api('DELETE', `/api/rules/${gd}`);
  await expectReach(proxy, o3);
});

test('built-ins: loopback (127.0.0.1, ::1, localhost) is reachable with no rules; a session deny blocks it', async () => {
  const open = await session('loop');
  await expectReach(open, o1);
  await expectReach(open, o1, 'localhost');
  await expectReach(open, o6);

  const closed = await session('loop-deny', {
    network_rules: [
      { destination_pattern: '127.0.0.1', action: 'deny' },
      { destination_pattern: '::1', port_pattern: String(o6.port), action: 'deny' },
    ],
  });
  const d4 = await sessionRuleId(s, 'loop-deny', '127.0.0.1');
  const d6 = await sessionRuleId(s, 'loop-deny', '::1');
  await expectBlocked(closed, o1, { layer: 'session', ruleId: d4 });
  await expectBlocked(closed, o6, { layer: 'session', ruleId: d6 });
  // localhost is allowed by name, but it resolves to 127.0.0.1, which this session denies.
  await expectBlocked(closed, o1, { layer: 'session', ruleId: d4 }, 'localhost');
  // A global deny also overrides the built-in for every container it names.
  const g = await addRule(s, { container_pattern: 'loop', destination_pattern: '127.0.0.1', action: 'deny' });
  await expectBlocked(open, o1, { layer: 'global', ruleId: g });
  await s.api('DELETE', `/api/rules/${g}`);
  await expectReach(open, o1);
  assert.ok((await builtinRuleId(s, 'localhost')) > 0);
});

test('learning mode via session allow_all: anything not denied globally is allowed, session denies included', async () => {
  const proxy = await session('learn-s', { allow_all: true, network_rules: [{ destination_pattern: '127.0.0.3', action: 'deny' }] });
  await expectReach(proxy, o2);
  await expectReach(proxy, o2, 'anything.example.test');
  await expectReach(proxy, o3, undefined, 'a session deny does not stop learning mode');
  const g = await addRule(s, { container_pattern: 'learn-s', destination_pattern: '127.0.0.3', action: 'deny' });
  await expectBlocked(proxy, o3, { layer: 'global', ruleId: g }, undefined, 'a global deny holds in learning mode');
  // ...also when the denied address is reached through a hostname.
  await expectBlocked(proxy, o3, { layer: 'global', ruleId: g }, 'three.example.test');
  await expectReach(proxy, o2);
  await s.api('DELETE', `/api/rules/${g}`);
});

test('learning mode follows the current session: a newer session without allow_all ends it', async () => {
  const learning = await session('learn-n', { allow_all: true });
  await expectReach(learning, o2);
  clock.advance(1);
  await s.createSession({ session_id: 'learn-n-2', container_name: 'learn-n' });
  await expectBlocked(learning, o2, null);
  await s.api('DELETE', '/api/sessions/learn-n-2');
  await expectReach(learning, o2);
});

test('learning mode via the operator switch, until its ttl runs out or it is switched off', async () => {
  const proxy = await session('learn-o', { network_rules: [{ destination_pattern: '127.0.0.2', action: 'deny' }] });
  const deny = await sessionRuleId(s, 'learn-o', '127.0.0.2');
  await expectBlocked(proxy, o2, { layer: 'session', ruleId: deny });
  assert.equal((await s.api('PUT', '/api/containers/learn-o/learning', { enabled: true, ttl_seconds: 60 })).status, 200);
  await expectReach(proxy, o2);
  const g = await addRule(s, { container_pattern: 'learn-*', destination_pattern: '127.0.0.2', port_pattern: String(o2.port), action: 'deny' });
  await expectBlocked(proxy, o2, { layer: 'global', ruleId: g });
  await s.api('DELETE', `/api/rules/${g}`);
  await expectReach(proxy, o3);
  clock.advance(59);
  await expectReach(proxy, o2);
  clock.advance(1);
  await expectBlocked(proxy, o2, { layer: 'session', ruleId: deny }, undefined, 'switch expired');
  await expectBlocked(proxy, o3, null);

  await s.api('PUT', '/api/containers/learn-o/learning', { enabled: true });
  await expectReach(proxy, o3);
  await s.api('PUT', '/api/containers/learn-o/learning', { enabled: false });
  await expectBlocked(proxy, o3, null, undefined, 'switched off');
});
