// POST /api/check (the proxy's decision without a connection) and the containers view
// (current session, learning state, rule counts).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { FakeClock, addRule, builtinRuleId, expectBlocked, expectReach, sessionRuleId } from '../helpers/api-helpers.js';

const clock = new FakeClock();
let s: TestSluice;
let o2: Origin;
before(async () => {
  o2 = await startOrigin('127.0.0.2');
  s = await startTestSluice({
    clock: clock.fn,
    config: { sessions: { sweep_interval_ms: 3_600_000 } },
    resolver: async (host) => (host.endsWith('.example.test') ? ['127.0.0.2'] : []),
  });
});
after(async () => {
  await s.close(true);
  await o2.close();
});

async function check(container: string, destination: string, port: number, resolve?: boolean): Promise<any> {
  const res = await s.api('POST', '/api/check', { container_name: container, destination, port, ...(resolve !== undefined && { resolve }) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

test('check: default deny, builtin allow, session and global rules, with the deciding rule', async () => {
  const none = await check('chk', '127.0.0.2', 80);
  assert.deepEqual(
    { decision: none.decision, layer: none.layer, rule: none.rule, reason: none.reason, session_id: none.session_id, destination: none.destination, port: none.port },
    { decision: 'deny', layer: null, rule: null, reason: 'default_deny', session_id: null, destination: '127.0.0.2', port: 80 },
  );
  assert.equal(typeof none.explanation, 'string');

  const loop = await check('chk', '0x7f.1', 22);
  assert.equal(loop.decision, 'allow');
  assert.equal(loop.layer, 'builtin');
  assert.equal(loop.rule.id, await builtinRuleId(s, '127.0.0.1'));
  assert.equal(loop.reason, 'rule');
  assert.equal(loop.destination, '127.0.0.1', 'the destination is reported canonical');

  await s.createSession({ session_id: 'chk-1', container_name: 'chk', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: '80' }] });
  const sr = await sessionRuleId(s, 'chk-1', '127.0.0.2');
  const allowed = await check('chk', '127.0.0.2', 80);
  assert.equal(allowed.decision, 'allow');
  assert.equal(allowed.layer, 'session');
  assert.equal(allowed.rule.id, sr);
  assert.equal(allowed.rule.layer, 'session');
  assert.equal(allowed.session_id, 'chk-1');
  assert.equal((await check('chk', '127.0.0.2', 81)).decision, 'deny');

  const g = await addRule(s, { container_pattern: 'chk', destination_pattern: '127.0.0.0/8', port_pattern: '80', action: 'deny' });
  const denied = await check('chk', '127.0.0.2', 80);
  assert.equal(denied.decision, 'deny');
  assert.equal(denied.layer, 'global');
  assert.equal(denied.rule.id, g);
  assert.equal(denied.reason, 'rule');
  assert.equal((await check('other', '127.0.0.2', 80)).layer, null, 'another container is not covered by the rule');
  await s.api('DELETE', `/api/rules/${g}`);
  await s.api('DELETE', '/api/sessions/chk-1');
});

test('check answers what the proxy does', async () => {
  const sess = await s.createSession({ session_id: 'same', container_name: 'same', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  const rule = await sessionRuleId(s, 'same', '127.0.0.2');
  assert.equal((await check('same', '127.0.0.2', o2.port)).decision, 'allow');
  await expectReach(sess.proxy.http, o2);
  const g = await addRule(s, { container_pattern: 'same', destination_pattern: '127.0.0.2', action: 'deny' });
  const c = await check('same', '127.0.0.2', o2.port);
  assert.deepEqual([c.decision, c.layer, c.rule.id], ['deny', 'global', g]);
  await expectBlocked(sess.proxy.http, o2, { layer: 'global', ruleId: g });
  await s.api('DELETE', `/api/rules/${g}`);
  assert.equal((await check('same', '127.0.0.2', o2.port)).rule.id, rule);
  await s.api('DELETE', '/api/sessions/same');
});

test('check with resolve applies address rules to what a hostname resolves to', async () => {
  await s.createSession({ session_id: 'res', container_name: 'res', network_rules: [{ destination_pattern: 'api.example.test' }, { destination_pattern: '127.0.0.0/24', action: 'deny' }] });
  const cidr = await sessionRuleId(s, 'res', '127.0.0.0/24');
  const host = await sessionRuleId(s, 'res', 'api.example.test');
  const plain = await check('res', 'api.example.test', 443);
  assert.deepEqual([plain.decision, plain.layer, plain.rule.id], ['allow', 'session', host], 'without resolve only the name is decided');
  const resolved = await check('res', 'API.example.test', 443, true);
  assert.deepEqual([resolved.decision, resolved.layer, resolved.rule.id, resolved.reason], ['deny', 'session', cidr, 'address_denied']);
  assert.equal(resolved.destination, 'api.example.test');
  await s.api('DELETE', '/api/sessions/res');
});

test('check in learning mode: allowed, with what it would have been', async () => {
  await s.createSession({ session_id: 'learn', container_name: 'learner', allow_all: true });
  const c = await check('learner', '127.0.0.3', 80);
  assert.equal(c.decision, 'allow');
  assert.equal(c.reason, 'learning');
  assert.equal(c.learning, 'session');
  assert.deepEqual(c.would_be, { decision: 'deny', layer: null, rule: null });
  await s.api('DELETE', '/api/sessions/learn');
});

test('containers: current session (newest), active sessions, learning state, rule counts', async () => {
  await s.createSession({ session_id: 'c-a', container_name: 'box', network_rules: [{ destination_pattern: 'a.example' }] });
  clock.advance(1);
  const b = await s.createSession({ session_id: 'c-b', container_name: 'box', ttl_seconds: 60, network_rules: [{ destination_pattern: 'b.example' }, { destination_pattern: 'c.example' }] });
  const g = await addRule(s, { container_pattern: 'bo?', destination_pattern: 'g.example', action: 'allow' });
  await addRule(s, { container_pattern: 'other', destination_pattern: 'o.example', action: 'allow' });

  const box = await s.api('GET', '/api/containers/box');
  assert.equal(box.status, 200);
  assert.equal(box.body.container_name, 'box');
  assert.equal(box.body.current_session.session_id, 'c-b');
  assert.equal(box.body.current_session.expires_at, b.expires_at);
  assert.equal(box.body.current_session.rule_count, 2);
  assert.deepEqual(box.body.active_sessions, ['c-b', 'c-a']);
  assert.deepEqual(box.body.learning, { active: false, source: null, operator_switch: { enabled: false, expires_at: null } });
  assert.deepEqual(box.body.rule_counts, { session: 2, global: 1 });

  const list = await s.api('GET', '/api/containers');
  assert.equal(list.status, 200);
  const names = list.body.containers.map((c: any) => c.container_name);
  assert.deepEqual(names, [...names].sort(), 'sorted by name');
  assert.deepEqual(list.body.containers.find((c: any) => c.container_name === 'box'), box.body);

  clock.advance(60); // c-b expires; c-a is current again
  const after = (await s.api('GET', '/api/containers/box')).body;
  assert.equal(after.current_session.session_id, 'c-a');
  assert.deepEqual(after.active_sessions, ['c-a']);
  assert.deepEqual(after.rule_counts, { session: 1, global: 1 });

  await s.api('DELETE', '/api/sessions/c-a');
  const empty = (await s.api('GET', '/api/containers/box')).body;
  assert.equal(empty.current_session, null);
  assert.deepEqual(empty.active_sessions, []);
  await s.api('DELETE', `/api/rules/${g}`);
});

test('containers: the operator learning switch, with and without ttl, and session allow_all', async () => {
  const on = await s.api('PUT', '/api/containers/lrn/learning', { enabled: true, ttl_seconds: 120 });
  assert.equal(on.status, 200);
  assert.deepEqual(on.body.learning, { active: true, source: 'operator', operator_switch: { enabled: true, expires_at: new Date(clock.now + 120_000).toISOString() } });
  assert.ok((await s.api('GET', '/api/containers')).body.containers.some((c: any) => c.container_name === 'lrn'), 'a switched container is listed without any session');
  clock.advance(120);
  assert.deepEqual((await s.api('GET', '/api/containers/lrn')).body.learning, { active: false, source: null, operator_switch: { enabled: false, expires_at: null } });

  const forever = await s.api('PUT', '/api/containers/lrn/learning', { enabled: true });
  assert.deepEqual(forever.body.learning.operator_switch, { enabled: true, expires_at: null });
  const off = await s.api('PUT', '/api/containers/lrn/learning', { enabled: false, ttl_seconds: 30 });
  assert.equal(off.status, 200);
  assert.equal(off.body.learning.active, false);

  await s.createSession({ session_id: 'lrn-s', container_name: 'lrn', allow_all: true });
  const viaSession = (await s.api('GET', '/api/containers/lrn')).body.learning;
  assert.deepEqual([viaSession.active, viaSession.source], [true, 'session']);
  await s.api('DELETE', '/api/sessions/lrn-s');
});

test('containers: a container sluice knows nothing about reads as empty (200), not 404', async () => {
  const res = await s.api('GET', '/api/containers/never-seen');
  assert.equal(res.status, 200);
  assert.equal(res.body.current_session, null);
  assert.deepEqual(res.body.active_sessions, []);
  assert.equal(res.body.learning.active, false);
});
