// Session lifecycle through the API: create, read, heartbeat, re-post, delete, and the
// proxy token handed out with them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { FakeClock, expectBlocked, expectReach, snapshot, viaProxy, originUrl } from '../helpers/api-helpers.js';

const clock = new FakeClock();
let s: TestSluice;
let o2: Origin;
let o3: Origin;
let o4: Origin;
before(async () => {
  [o2, o3, o4] = await Promise.all([startOrigin('127.0.0.2'), startOrigin('127.0.0.3'), startOrigin('127.0.0.4')]);
  // No sweeps during these tests: expiry must act on its own, not through the sweeper.
  s = await startTestSluice({ clock: clock.fn, config: { sessions: { sweep_interval_ms: 3_600_000 } } });
});
after(async () => {
  await s.close(true);
  await Promise.all([o2.close(), o3.close(), o4.close()]);
});

test('create returns exactly the documented fields, and the session reads back with its rules', async () => {
  const created = await s.api('POST', '/api/sessions', {
    session_id: 'life-1',
    container_name: 'life',
    ttl_seconds: 120,
    network_rules: [
      { destination_pattern: 'API.Example.COM.', port_pattern: '443, 80', notes: 'api' },
      { destination_pattern: '10.1.2.3/8', action: 'deny' },
    ],
    source_ips: ['::ffff:127.0.0.9'],
    metadata: { job: 42 },
  });
  assert.equal(created.status, 200);
  const b = created.body;
  assert.deepEqual(Object.keys(b).sort(), ['allow_all', 'container_name', 'created_at', 'expires_at', 'proxy', 'proxy_token', 'rules_created', 'session_id']);
  assert.equal(b.session_id, 'life-1');
  assert.equal(b.container_name, 'life');
  assert.equal(b.created_at, new Date(clock.now).toISOString());
  assert.equal(b.expires_at, new Date(clock.now + 120_000).toISOString());
  assert.equal(b.rules_created, 2);
  assert.equal(b.allow_all, false);
  assert.match(b.proxy_token, /^[A-Za-z0-9_-]{40,}$/);
  assert.equal(b.proxy.http, `http://life:${b.proxy_token}@127.0.0.1:${s.sluice.http.port}`);
  assert.equal(b.proxy.socks5, `socks5h://life:${b.proxy_token}@127.0.0.1:${s.sluice.socks.port}`);

  const one = await s.api('GET', '/api/sessions/life-1');
  assert.equal(one.status, 200);
  assert.equal(one.body.session_id, 'life-1');
  assert.equal(one.body.ttl_seconds, 120);
  assert.deepEqual(one.body.source_ips, ['127.0.0.9'], 'source IPs are stored canonical');
  assert.deepEqual(one.body.metadata, { job: 42 });
  assert.equal(one.body.proxy_token, undefined, 'the token is not readable afterwards');
  const rules = one.body.rules.map((r: any) => [r.layer, r.session_id, r.container_pattern, r.destination_pattern, r.port_pattern, r.action, r.notes]);
  assert.deepEqual(rules, [
    ['session', 'life-1', 'life', 'api.example.com', '80,443', 'allow', 'api'],
    ['session', 'life-1', 'life', '10.0.0.0/8', '*', 'deny', null],
  ]);

  const list = await s.api('GET', '/api/sessions');
  const row = list.body.sessions.find((x: any) => x.session_id === 'life-1');
  assert.equal(row.rule_count, 2);
  assert.equal(row.container_name, 'life');
  assert.doesNotMatch(JSON.stringify(list.body), /token/, 'no token or token hash in listings');
  assert.doesNotMatch(JSON.stringify(one.body), /token/);
  await s.api('DELETE', '/api/sessions/life-1');
});

test('defaults: a generated (time-ordered) session id, ttl 900 s, no rules, allow_all false', async () => {
  const b = await s.createSession({ container_name: 'defaults' });
  // A UUIDv7 carrying the creation time: ids generated later sort later.
  assert.match(b.session_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(parseInt(b.session_id.replace(/-/g, '').slice(0, 12), 16), Date.parse(b.created_at as string));
  clock.advance(0.001);
  const later = await s.createSession({ container_name: 'defaults-2' });
  assert.ok(later.session_id > b.session_id, `${later.session_id} sorts after ${b.session_id}`);
  await s.api('DELETE', `/api/sessions/${later.session_id}`);
  assert.equal(Date.parse(b.expires_at as string) - Date.parse(b.created_at as string), 900_000);
  assert.equal(b.rules_created, 0);
  assert.equal(b.allow_all, false);
  await s.api('DELETE', `/api/sessions/${b.session_id}`);
});

test('heartbeat extends by the session ttl from now; delete ends it and its token', async () => {
  const b = await s.createSession({ session_id: 'hb-1', container_name: 'hb', ttl_seconds: 60, network_rules: [{ destination_pattern: '127.0.0.2' }] });
  await expectReach(b.proxy.http, o2);
  clock.advance(50);
  const hb = await s.api('POST', '/api/sessions/hb-1/heartbeat');
  assert.equal(hb.status, 200);
  assert.deepEqual(hb.body, { session_id: 'hb-1', expires_at: new Date(clock.now + 60_000).toISOString() });
  assert.equal((await s.api('GET', '/api/sessions/hb-1')).body.expires_at, hb.body.expires_at);

  const del = await s.api('DELETE', '/api/sessions/hb-1');
  assert.equal(del.status, 200);
  assert.deepEqual(del.body, { session_id: 'hb-1', deleted: true });
  const r = await viaProxy(b.proxy.http, originUrl(o2));
  assert.equal(r.status, 407, 'the token of a deleted session no longer authenticates');
  assert.equal((await s.api('GET', '/api/sessions/hb-1')).status, 404);
  const again = await s.api('POST', '/api/sessions/hb-1/heartbeat');
  assert.equal(again.status, 404);
  assert.equal(again.body.error, 'session not found or expired');
  assert.equal((await s.api('DELETE', '/api/sessions/hb-1')).status, 404);
  const rules = await s.api('GET', '/api/rules?session_id=hb-1');
  assert.deepEqual(rules.body.rules, [], 'its rules went with it');
});

test('unknown sessions are 404 on every session route', async () => {
  for (const [method, path] of [
    ['GET', '/api/sessions/nope'],
    ['POST', '/api/sessions/nope/heartbeat'],
    ['DELETE', '/api/sessions/nope'],
  ] as const) {
    const res = await s.api(method, path);
    assert.equal(res.status, 404, `${method} ${path}`);
    assert.equal(typeof res.body.error, 'string');
    assert.ok(Array.isArray(res.body.details));
  }
  assert.equal((await s.api('POST', '/api/sessions/nope/heartbeat')).body.error, 'session not found or expired');
});

test('re-posting a session updates it in place: same token, rules replaced, creation order kept', async () => {
  const a = await s.createSession({ session_id: 'rp-a', container_name: 'rp', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const oldRules = (await s.api('GET', '/api/sessions/rp-a')).body.rules.map((r: any) => r.id);
  clock.advance(1);
  const b = await s.createSession({ session_id: 'rp-b', container_name: 'rp', network_rules: [{ destination_pattern: '127.0.0.3' }] });
  clock.advance(1);
  const again = await s.createSession({ session_id: 'rp-a', container_name: 'rp', ttl_seconds: 300, network_rules: [{ destination_pattern: '127.0.0.4' }] });
  assert.equal(again.proxy_token, a.proxy_token, 'the same token comes back');
  assert.equal(again.proxy.http, a.proxy.http);
  assert.equal(again.created_at, a.created_at, 'created_at is the original creation');
  assert.equal(again.expires_at, new Date(clock.now + 300_000).toISOString(), 'expiry follows the new ttl');
  assert.equal(again.rules_created, 1);
  const detail = (await s.api('GET', '/api/sessions/rp-a')).body;
  assert.deepEqual(detail.rules.map((r: any) => r.destination_pattern), ['127.0.0.4'], 'rules replaced');
  for (const id of oldRules) assert.equal((await s.api('GET', `/api/rules/${id}`)).status, 404, 'old rule rows are gone');
  assert.equal(detail.ttl_seconds, 300);

  // rp-b was created after rp-a and stays the container's current session.
  const container = (await s.api('GET', '/api/containers/rp')).body;
  assert.equal(container.current_session.session_id, 'rp-b');
  assert.deepEqual(container.active_sessions, ['rp-b', 'rp-a']);
  const listed = (await s.api('GET', '/api/sessions')).body.sessions.filter((x: any) => x.container_name === 'rp').map((x: any) => x.session_id);
  assert.deepEqual(listed, ['rp-a', 'rp-b'], 'listed in creation order');

  // The token authenticates only under its own container name.
  assert.equal((await viaProxy(a.proxy.http.replace('//rp:', '//rp-other:'), originUrl(o3))).status, 407);

  // rp-a's original URL still authenticates; the container's decisions follow rp-b.
  await expectReach(a.proxy.http, o3, undefined, 'rp-b (current) allows .3');
  await expectBlocked(a.proxy.http, o4, null, undefined, 'rp-a is not current, so its new rule does not count');
  await expectBlocked(a.proxy.http, o2, null);
  await expectReach(b.proxy.http, o3);

  // Once rp-b ends, rp-a (with its replaced rules) is current again.
  await s.api('DELETE', '/api/sessions/rp-b');
  await expectReach(a.proxy.http, o4, undefined, 'rp-a current again, new rule');
  await expectBlocked(a.proxy.http, o2, null, undefined, 'rp-a old rule was replaced');
  await expectBlocked(a.proxy.http, o3, null);
  await s.api('DELETE', '/api/sessions/rp-a');
});

test('re-posting a session id under another container is 409 and changes nothing', async () => {
  const a = await s.createSession({ session_id: 'own-1', container_name: 'owner', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const before = await snapshot(s);
  const res = await s.api('POST', '/api/sessions', { session_id: 'own-1', container_name: 'thief', network_rules: [{ destination_pattern: '*' }] });
  assert.equal(res.status, 409);
  assert.match(res.body.error, /own-1 belongs to container owner/);
  assert.ok(Array.isArray(res.body.details));
  assert.deepEqual(await snapshot(s), before);
  await expectReach(a.proxy.http, o2);
  await s.api('DELETE', '/api/sessions/own-1');
});

test('an expired session is gone: 404 on read and heartbeat, its token refused, missing from lists', async () => {
  const b = await s.createSession({ session_id: 'exp-1', container_name: 'exp', ttl_seconds: 30, network_rules: [{ destination_pattern: '127.0.0.2' }] });
  clock.advance(30);
  assert.equal((await s.api('GET', '/api/sessions/exp-1')).status, 404);
  const hb = await s.api('POST', '/api/sessions/exp-1/heartbeat');
  assert.equal(hb.status, 404);
  assert.equal(hb.body.error, 'session not found or expired');
  assert.equal((await s.api('GET', '/api/sessions')).body.sessions.some((x: any) => x.session_id === 'exp-1'), false);
  assert.equal((await viaProxy(b.proxy.http, originUrl(o2))).status, 407);
});

test('re-posting an expired session id starts a new session, as it would once the sweeper ran', async () => {
  // Otherwise the outcome would depend on sweeper timing: before a sweep the old row (old
  // creation order, maybe another container) would be revived; after it, a new one created.
  const old = await s.createSession({ session_id: 'rev-1', container_name: 'rev', ttl_seconds: 30 });
  clock.advance(1);
  await s.createSession({ session_id: 'rev-2', container_name: 'rev', ttl_seconds: 600 });
  clock.advance(60); // rev-1 expired; the sweeper has not run
  const renewed = await s.createSession({ session_id: 'rev-1', container_name: 'rev', ttl_seconds: 600, network_rules: [{ destination_pattern: '127.0.0.2' }] });
  assert.notEqual(renewed.proxy_token, old.proxy_token, 'a new session gets a new token');
  assert.equal(renewed.created_at, new Date(clock.now).toISOString());
  const c = (await s.api('GET', '/api/containers/rev')).body;
  assert.equal(c.current_session.session_id, 'rev-1', 'created after rev-2, so it is current');
  await expectReach(renewed.proxy.http, o2);
  assert.equal((await viaProxy(old.proxy.http, originUrl(o2))).status, 407, 'the expired token stays dead');

  // Another container may take over an id that has expired.
  await s.createSession({ session_id: 'rev-3', container_name: 'rev', ttl_seconds: 30 });
  clock.advance(31);
  const other = await s.api('POST', '/api/sessions', { session_id: 'rev-3', container_name: 'elsewhere' });
  assert.equal(other.status, 200, JSON.stringify(other.body));
  await s.api('DELETE', '/api/sessions/rev-1');
  await s.api('DELETE', '/api/sessions/rev-2');
  await s.api('DELETE', '/api/sessions/rev-3');
});
