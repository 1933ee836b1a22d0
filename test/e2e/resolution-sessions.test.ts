// Which session's rules count, through the real proxy: only the container's most recently
// created active session; an older one is current again once the newer one is deleted or
// expires; expiry without heartbeat, and heartbeat extending it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { FakeClock, expectBlocked, expectReach, originUrl, sessionRuleId, viaProxy } from '../helpers/api-helpers.js';

const clock = new FakeClock();
let s: TestSluice;
let o2: Origin;
let o3: Origin;

before(async () => {
  [o2, o3] = await Promise.all([startOrigin('127.0.0.2'), startOrigin('127.0.0.3')]);
  // No sweeps: expiry must act by itself, the moment it is reached.
  s = await startTestSluice({ clock: clock.fn, config: { sessions: { sweep_interval_ms: 3_600_000 } } });
});
after(async () => {
  await s.close(true);
  await Promise.all([o2.close(), o3.close()]);
});

const allow2 = { destination_pattern: '127.0.0.2' };
const allow3 = { destination_pattern: '127.0.0.3' };

test('only the newest session counts; its rules replace (not add to) the older one', async () => {
  const a = await s.createSession({ session_id: 'new-a', container_name: 'newest', network_rules: [allow2] });
  await expectReach(a.proxy.http, o2);
  clock.advance(1);
  const b = await s.createSession({ session_id: 'new-b', container_name: 'newest', network_rules: [allow3] });
  for (const proxy of [a.proxy.http, b.proxy.http]) {
    await expectReach(proxy, o3);
    const r = await expectBlocked(proxy, o2, null, undefined, 'new-a is shadowed');
    assert.match(r.body, /container: newest \(session new-b\)/);
  }
});

test('creation order is exact: sessions created in the same millisecond are still ordered', async () => {
  // The clock does not move between these: equal created_at, distinct creation order.
  const sessions = [];
  for (let i = 0; i < 5; i++) {
    sessions.push(await s.createSession({ session_id: `same-${i}`, container_name: 'same-ms', network_rules: [i % 2 === 0 ? allow2 : allow3] }));
  }
  assert.equal(new Set(sessions.map((x) => x.created_at)).size, 1);
  const proxy = sessions[0]!.proxy.http;
  await expectReach(proxy, o2, undefined, 'same-4 (allows .2) is current');
  await expectBlocked(proxy, o3, null);
  await s.api('DELETE', '/api/sessions/same-4');
  await expectReach(proxy, o3, undefined, 'then same-3');
  await expectBlocked(proxy, o2, null);
  // Deleting one in the middle changes nothing for the current one.
  await s.api('DELETE', '/api/sessions/same-1');
  await expectReach(proxy, o3);
  assert.equal((await s.api('GET', '/api/containers/same-ms')).body.current_session.session_id, 'same-3');
});

test('a newer session with no rules shadows an older one; deleting it makes the older current again', async () => {
  const old = await s.createSession({ session_id: 'sh-old', container_name: 'shadow', network_rules: [allow2] });
  const oldRule = await sessionRuleId(s, 'sh-old', '127.0.0.2');
  clock.advance(1);
  await s.createSession({ session_id: 'sh-new', container_name: 'shadow' });
  await expectBlocked(old.proxy.http, o2, null, undefined, 'an empty newer session still decides (default deny)');
  await s.api('DELETE', '/api/sessions/sh-new');
  await expectReach(old.proxy.http, o2);
  const check = (await s.api('POST', '/api/check', { container_name: 'shadow', destination: '127.0.0.2', port: o2.port })).body;
  assert.deepEqual([check.session_id, check.rule.id], ['sh-old', oldRule]);
});

test('when the newer session expires, the older one is current again at that moment', async () => {
  const old = await s.createSession({ session_id: 'ex-old', container_name: 'expiring', ttl_seconds: 3600, network_rules: [allow2] });
  clock.advance(1);
  const newer = await s.createSession({ session_id: 'ex-new', container_name: 'expiring', ttl_seconds: 60, network_rules: [{ destination_pattern: '127.0.0.2', action: 'deny' }] });
  const deny = await sessionRuleId(s, 'ex-new', '127.0.0.2');
  await expectBlocked(old.proxy.http, o2, { layer: 'session', ruleId: deny });
  clock.advance(59);
  await expectBlocked(old.proxy.http, o2, { layer: 'session', ruleId: deny }, undefined, 'one second before expiry');
  clock.advance(1);
  await expectReach(old.proxy.http, o2, undefined, 'at expiry the older session decides');
  const r = await viaProxy(newer.proxy.http, originUrl(o2));
  assert.equal(r.status, 407, 'the expired session token no longer authenticates');
});

test('a session expires without heartbeats: its token stops working and its rules stop counting', async () => {
  const sess = await s.createSession({ session_id: 'nohb', container_name: 'nohb', ttl_seconds: 30, network_rules: [allow2] });
  clock.advance(29);
  await expectReach(sess.proxy.http, o2);
  clock.advance(1);
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 407);
  const check = (await s.api('POST', '/api/check', { container_name: 'nohb', destination: '127.0.0.2', port: o2.port })).body;
  assert.deepEqual([check.decision, check.session_id, check.reason], ['deny', null, 'default_deny']);
});

test('heartbeats keep a session alive past its original expiry', async () => {
  const sess = await s.createSession({ session_id: 'hb', container_name: 'hb', ttl_seconds: 30, network_rules: [allow2] });
  for (let i = 0; i < 4; i++) {
    clock.advance(25);
    const hb = await s.api('POST', '/api/sessions/hb/heartbeat');
    assert.equal(hb.status, 200);
    assert.equal(hb.body.expires_at, new Date(clock.now + 30_000).toISOString());
    await expectReach(sess.proxy.http, o2, undefined, `after heartbeat ${i}`);
  }
  clock.advance(29);
  await expectReach(sess.proxy.http, o2, undefined, '100 s after creation, 29 s after the last heartbeat');
  clock.advance(1);
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 407);
  assert.equal((await s.api('POST', '/api/sessions/hb/heartbeat')).status, 404, 'too late to heartbeat');
});

test('deleting the only session leaves the container with no session rules', async () => {
  const a = await s.createSession({ session_id: 'only', container_name: 'only', network_rules: [allow2] });
  const b = await s.createSession({ session_id: 'only-2', container_name: 'only-peer', network_rules: [allow2] });
  await s.api('DELETE', '/api/sessions/only');
  assert.equal((await viaProxy(a.proxy.http, originUrl(o2))).status, 407);
  await expectReach(b.proxy.http, o2, undefined, 'another container is unaffected');
  const check = (await s.api('POST', '/api/check', { container_name: 'only', destination: '127.0.0.2', port: o2.port })).body;
  assert.equal(check.decision, 'deny');
});
