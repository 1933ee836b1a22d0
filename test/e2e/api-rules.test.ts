// Global rules through the API: create, read, patch, delete, list filters, expiry, and the
// session/builtin rules that /api/rules must not change.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { eventually, startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { FakeClock, addRule, builtinRuleId, expectBlocked, expectReach, sessionRuleId, snapshot } from '../helpers/api-helpers.js';

const clock = new FakeClock();
let s: TestSluice;
let o2: Origin;
before(async () => {
  o2 = await startOrigin('127.0.0.2');
  // No sweeps: expiry must hold on its own, not through the sweeper deleting rows.
  s = await startTestSluice({ clock: clock.fn, config: { sessions: { sweep_interval_ms: 3_600_000 } } });
});
after(async () => {
  await s.close(true);
  await o2.close();
});

const ids = (res: { body: { rules: Array<{ id: number }> } }): number[] => res.body.rules.map((r) => r.id).sort((a, b) => a - b);

test('create, read, patch and delete a global rule', async () => {
  const created = await s.api('POST', '/api/rules', { destination_pattern: 'API.Example.com.', port_pattern: '443,80', action: 'allow', notes: 'first' });
  assert.equal(created.status, 200);
  const r = created.body;
  assert.deepEqual(Object.keys(r).sort(), ['action', 'container_pattern', 'created_at', 'destination_pattern', 'expires_at', 'hit_count', 'id', 'last_used_at', 'layer', 'notes', 'port_pattern', 'session_id']);
  assert.deepEqual(
    { ...r, id: 0 },
    {
      id: 0,
      layer: 'global',
      session_id: null,
      container_pattern: '*',
      destination_pattern: 'api.example.com',
      port_pattern: '80,443',
      action: 'allow',
      expires_at: null,
      notes: 'first',
      created_at: new Date(clock.now).toISOString(),
      hit_count: 0,
      last_used_at: null,
    },
  );
  assert.deepEqual((await s.api('GET', `/api/rules/${r.id}`)).body, r);

  const patched = await s.api('PATCH', `/api/rules/${r.id}`, { action: 'deny', notes: null, container_pattern: 'web-*' });
  assert.equal(patched.status, 200);
  assert.deepEqual(patched.body, { ...r, action: 'deny', notes: null, container_pattern: 'web-*' });
  const moved = await s.api('PATCH', `/api/rules/${r.id}`, { destination_pattern: '**.EXAMPLE.com', port_pattern: '8000-8999' });
  assert.equal(moved.body.destination_pattern, '**.example.com');
  assert.equal(moved.body.port_pattern, '8000-8999');
  assert.equal(moved.body.action, 'deny', 'fields not in the patch are kept');
  assert.deepEqual((await s.api('GET', `/api/rules/${r.id}`)).body, moved.body);

  const del = await s.api('DELETE', `/api/rules/${r.id}`);
  assert.equal(del.status, 200);
  assert.deepEqual(del.body, { id: r.id, deleted: true });
  for (const [method, body] of [['GET'], ['PATCH', { action: 'allow' }], ['DELETE']] as const) {
    const res = await s.api(method, `/api/rules/${r.id}`, body);
    assert.equal(res.status, 404, `${method} after delete`);
    assert.equal(res.body.error, 'rule not found');
  }
  assert.equal((await s.api('GET', '/api/rules/999999')).status, 404);
});

test('destination and port patterns are stored canonical', async () => {
  const cases: Array<[string, string]> = [
    ['Example.COM.', 'example.com'],
    ['**.Example.com', '**.example.com'],
    ['*.Sub.Example.com', '*.sub.example.com'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['*.BÜCHER.example', '*.xn--bcher-kva.example'],
    ['[::1]', '::1'],
    ['2001:DB8:0:0::1', '2001:db8::1'],
    ['::ffff:127.0.0.2', '127.0.0.2'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['2001:DB8::1/32', '2001:db8::/32'],
    ['127.0.0.2/32', '127.0.0.2'],
    ['*', '*'],
  ];
  const made: number[] = [];
  for (const [input, canonical] of cases) {
    const res = await s.api('POST', '/api/rules', { destination_pattern: input, action: 'deny', container_pattern: 'canon' });
    assert.equal(res.status, 200, `${input}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.destination_pattern, canonical, input);
    made.push(res.body.id);
  }
  for (const [input, canonical] of [['443, 80', '80,443'], ['8000-8999', '8000-8999'], ['443-443', '443'], ['1,65535', '1,65535'], ['*', '*']]) {
    const res = await s.api('POST', '/api/rules', { destination_pattern: 'a.example', port_pattern: input, action: 'deny', container_pattern: 'canon' });
    assert.equal(res.body.port_pattern, canonical, input);
    made.push(res.body.id);
  }
  for (const id of made) assert.equal((await s.api('DELETE', `/api/rules/${id}`)).status, 200);
});

test('list filters: layer, session_id, and container (what applies to it now)', async () => {
  const any = await addRule(s, { destination_pattern: 'any.example', action: 'allow' });
  const webGlob = await addRule(s, { container_pattern: 'web*', destination_pattern: 'glob.example', action: 'allow' });
  const db = await addRule(s, { container_pattern: 'db', destination_pattern: 'db.example', action: 'deny' });
  await s.createSession({ session_id: 'f-old', container_name: 'web', network_rules: [{ destination_pattern: 'old.example' }] });
  clock.advance(1);
  await s.createSession({ session_id: 'f-new', container_name: 'web', network_rules: [{ destination_pattern: 'new.example' }, { destination_pattern: 'new2.example', action: 'deny' }] });
  await s.createSession({ session_id: 'f-db', container_name: 'db', network_rules: [{ destination_pattern: 'dbs.example' }] });
  const old = await sessionRuleId(s, 'f-old', 'old.example');
  const n1 = await sessionRuleId(s, 'f-new', 'new.example');
  const n2 = await sessionRuleId(s, 'f-new', 'new2.example');
  const dbs = await sessionRuleId(s, 'f-db', 'dbs.example');
  const builtins = ids(await s.api('GET', '/api/rules?layer=builtin'));
  assert.equal(builtins.length, 3);

  assert.deepEqual(ids(await s.api('GET', '/api/rules?layer=global')), [any, webGlob, db]);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?layer=session')), [old, n1, n2, dbs]);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?session_id=f-old')), [old]);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?session_id=f-new&layer=session')), [n1, n2]);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?session_id=f-new&layer=global')), []);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?session_id=nobody')), []);
  // Only the current session's rules apply to a container; f-old is shadowed by f-new.
  assert.deepEqual(ids(await s.api('GET', '/api/rules?container=web')), [...builtins, any, webGlob, n1, n2].sort((a, b) => a - b));
  assert.deepEqual(ids(await s.api('GET', '/api/rules?container=web&layer=global')), [any, webGlob]);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?container=webby&layer=global')), [any, webGlob]);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?container=db')), [...builtins, any, db, dbs].sort((a, b) => a - b));
  assert.deepEqual(ids(await s.api('GET', '/api/rules?container=nobody')), [...builtins, any]);
  const all = ids(await s.api('GET', '/api/rules'));
  for (const id of [...builtins, any, webGlob, db, old, n1, n2, dbs]) assert.ok(all.includes(id));

  const c = (await s.api('GET', '/api/containers/web')).body;
  assert.deepEqual(c.rule_counts, { session: 2, global: 2 });

  for (const sid of ['f-old', 'f-new', 'f-db']) await s.api('DELETE', `/api/sessions/${sid}`);
  for (const id of [any, webGlob, db]) await s.api('DELETE', `/api/rules/${id}`);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?layer=session')), []);
});

test('session and builtin rules cannot be changed through /api/rules (409), and stay as they are', async () => {
  await s.createSession({ session_id: 'ro', container_name: 'ro', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const sessionRule = await sessionRuleId(s, 'ro', '127.0.0.2');
  const builtin = await builtinRuleId(s, '127.0.0.1');
  const before = await snapshot(s);
  for (const id of [sessionRule, builtin]) {
    const patch = await s.api('PATCH', `/api/rules/${id}`, { action: 'deny' });
    assert.equal(patch.status, 409, `PATCH ${id}`);
    assert.equal(typeof patch.body.error, 'string');
    assert.ok(Array.isArray(patch.body.details));
    const del = await s.api('DELETE', `/api/rules/${id}`);
    assert.equal(del.status, 409, `DELETE ${id}`);
  }
  assert.match((await s.api('PATCH', `/api/rules/${sessionRule}`, { action: 'deny' })).body.error, /re-post the session/);
  assert.match((await s.api('DELETE', `/api/rules/${builtin}`)).body.error, /built-in/);
  assert.deepEqual(await snapshot(s), before);
  const got = await s.api('GET', `/api/rules/${sessionRule}`);
  assert.equal(got.body.layer, 'session');
  assert.equal(got.body.session_id, 'ro');
  await s.api('DELETE', '/api/sessions/ro');
});

test('expires_in_seconds: the rule decides until then, and is gone from every view the moment it expires', async () => {
  const sess = await s.createSession({ session_id: 'ex', container_name: 'ex', ttl_seconds: 3600 });
  await expectBlocked(sess.proxy.http, o2, null);
  const id = await addRule(s, { container_pattern: 'ex', destination_pattern: '127.0.0.2', action: 'allow', expires_in_seconds: 60 });
  const rule = (await s.api('GET', `/api/rules/${id}`)).body;
  assert.equal(rule.expires_at, new Date(clock.now + 60_000).toISOString());
  await expectReach(sess.proxy.http, o2);
  clock.advance(59);
  await expectReach(sess.proxy.http, o2);
  clock.advance(1);
  await expectBlocked(sess.proxy.http, o2, null, undefined, 'expired rule');
  assert.equal(ids(await s.api('GET', '/api/rules?layer=global')).includes(id), false);
  // Not readable or revivable either (the sweeper has not run: these answer from expiry alone).
  assert.equal((await s.api('GET', `/api/rules/${id}`)).status, 404);
  assert.equal((await s.api('PATCH', `/api/rules/${id}`, { expires_in_seconds: null })).status, 404);
  await expectBlocked(sess.proxy.http, o2, null);
  assert.equal((await s.api('GET', '/api/containers/ex')).body.rule_counts.global, 0);
  await s.api('DELETE', '/api/sessions/ex');
});

test('PATCH expires_in_seconds sets an expiry from now, and null clears it', async () => {
  const sess = await s.createSession({ session_id: 'ex2', container_name: 'ex2', ttl_seconds: 3600 });
  const id = await addRule(s, { container_pattern: 'ex2', destination_pattern: '127.0.0.2', action: 'allow' });
  const set = await s.api('PATCH', `/api/rules/${id}`, { expires_in_seconds: 30 });
  assert.equal(set.body.expires_at, new Date(clock.now + 30_000).toISOString());
  clock.advance(20);
  const cleared = await s.api('PATCH', `/api/rules/${id}`, { expires_in_seconds: null });
  assert.equal(cleared.body.expires_at, null);
  clock.advance(20);
  await expectReach(sess.proxy.http, o2, undefined, 'the cleared expiry no longer applies');
  await s.api('DELETE', `/api/rules/${id}`);
  await s.api('DELETE', '/api/sessions/ex2');
});

test('the rules of an expired session disappear from listings at once, before any sweep', async () => {
  await s.createSession({ session_id: 'gone', container_name: 'gone', ttl_seconds: 10, network_rules: [{ destination_pattern: 'x.example' }] });
  const rule = await sessionRuleId(s, 'gone', 'x.example');
  clock.advance(10);
  assert.deepEqual(ids(await s.api('GET', '/api/rules?session_id=gone')), []);
  assert.equal(ids(await s.api('GET', '/api/rules')).includes(rule), false);
  assert.equal((await s.api('GET', `/api/rules/${rule}`)).status, 404);
});

test('the sweeper deletes expired sessions (with their rules) and expired rules from the store', async () => {
  const c = new FakeClock();
  const t = await startTestSluice({ clock: c.fn, config: { sessions: { sweep_interval_ms: 50 } } });
  try {
    await t.createSession({ session_id: 'sw', container_name: 'sw', ttl_seconds: 10, network_rules: [{ destination_pattern: 'a.example' }] });
    await t.createSession({ session_id: 'stay', container_name: 'sw', ttl_seconds: 100 });
    const id = await addRule(t, { destination_pattern: 'b.example', action: 'deny', expires_in_seconds: 10 });
    const keep = await addRule(t, { destination_pattern: 'c.example', action: 'deny' });
    const db = new Database(join(t.dataDir, 'sluice.db'), { readonly: true });
    try {
      const count = (sql: string): number => (db.prepare(sql).get() as { n: number }).n;
      assert.equal(count("SELECT count(*) AS n FROM sessions WHERE id = 'sw'"), 1);
      c.advance(11);
      await eventually(() => count("SELECT count(*) AS n FROM sessions WHERE id = 'sw'") === 0, 3000, 'expired session swept');
      await eventually(() => count(`SELECT count(*) AS n FROM rules WHERE id = ${id}`) === 0, 3000, 'expired rule swept');
      assert.equal(count("SELECT count(*) AS n FROM rules WHERE session_id = 'sw'"), 0, 'session rules cascade');
      assert.equal(count("SELECT count(*) AS n FROM sessions WHERE id = 'stay'"), 1);
      assert.equal(count(`SELECT count(*) AS n FROM rules WHERE id = ${keep}`), 1);
      assert.equal(count("SELECT count(*) AS n FROM rules WHERE layer = 'builtin'"), 3);
    } finally {
      db.close();
    }
  } finally {
    await t.close(true);
  }
});
