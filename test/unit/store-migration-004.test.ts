// Migration 004 replaces rules_by_layer with a partial index for the one query that used it
// (the sweep of expired global rules). On a database made by 001-003 with data in it, it
// keeps every row, and the sweep still finds exactly the expired global rules, through an index.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MIGRATIONS_DIR, openDatabase, type Db } from '../../src/store/database.js';
import { EXPIRED_GLOBAL_RULES_SQL, Store } from '../../src/store/store.js';
import { Control } from '../../src/control/control.js';
import { PolicyState } from '../../src/policy/state.js';
import { tempDir } from '../helpers/harness.js';

const NOW = Date.parse('2026-11-21T10:00:00Z');

const indexes = (db: Db) => db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rules' AND sql IS NOT NULL ORDER BY name").pluck().all();
const dump = (db: Db) => ({
  sessions: db.prepare('SELECT * FROM sessions ORDER BY seq').all(),
  rules: db.prepare('SELECT * FROM rules ORDER BY id').all(),
  decisions: db.prepare('SELECT * FROM decisions ORDER BY id').all(),
  containers: db.prepare('SELECT * FROM containers ORDER BY name').all(),
  sequences: db.prepare('SELECT * FROM sqlite_sequence ORDER BY name').all(),
});

test('migration 004 on a database made by 001-003: every row kept, rules_by_layer replaced, the sweep deletes exactly the expired global rules', async (t) => {
  const dir = tempDir('sluice-mig004-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // The migrations as they were before 004 landed.
  const old = join(dir, 'migrations-003');
  mkdirSync(old);
  for (const f of readdirSync(MIGRATIONS_DIR).filter((f) => /^00[1-3]_.*\.sql$/.test(f))) cpSync(join(MIGRATIONS_DIR, f), join(old, f));
  assert.equal(readdirSync(old).length, 3);

  const data = join(dir, 'data');
  const clock = { now: NOW };
  const opts = { defaultTtlSeconds: 900, maxRulesPerSession: 100, tokenSecret: Buffer.alloc(32, 3), proxyUrls: () => ({ http: 'http://x', socks5: 'socks5h://x' }) };
  let db = openDatabase(data, old);
  assert.ok(indexes(db).includes('rules_by_layer'));
  let control = new Control(new Store(db), new PolicyState(), () => clock.now, opts);
  for (const id of ['m1', 'm2']) {
    await control.createSession({ session_id: id, container_name: `c-${id}`, network_rules: [{ destination_pattern: `${id}.example`, port_pattern: '443', action: 'allow' }, { destination_pattern: '10.0.0.0/8', port_pattern: '*', action: 'deny' }], allow_all: false, source_ips: [] });
  }
  const soon = control.createRule({ container_pattern: '*', destination_pattern: 'soon.example', port_pattern: '*', action: 'allow', expires_in_seconds: 60 }).id;
  const later = control.createRule({ container_pattern: '*', destination_pattern: 'later.example', port_pattern: '*', action: 'deny', expires_in_seconds: 3600 }).id;
  const forever = control.createRule({ container_pattern: 'c-*', destination_pattern: 'forever.example', port_pattern: '80', action: 'allow' }).id;
  control.setLearning('c-m1', { enabled: true, ttl_seconds: 600 });
  db.prepare("INSERT INTO decisions (id, time, container, protocol, client_address, destination, port, decision, reason) VALUES (1, ?, 'c-m1', 'connect', '127.0.0.1', 'm1.example', 443, 'allow', 'rule')").run(NOW);
  const before = dump(db);
  assert.equal(before.rules.length, 3 + 4 + 3, 'built-ins, session rules, global rules');
  db.close();

  db = openDatabase(data); // every migration: 004 is applied now
  t.after(() => db.close());
  assert.equal(db.prepare('SELECT max(version) FROM schema_migrations').pluck().get(), 4);
  assert.deepEqual(dump(db), before, 'no row changed');
  assert.deepEqual(indexes(db), ['rules_by_session', 'rules_global_expiry']);
  const plan = db.prepare<[number], { detail: string }>(`EXPLAIN QUERY PLAN ${EXPIRED_GLOBAL_RULES_SQL}`).all(NOW).map((r) => r.detail).join('; ');
  assert.match(plan, /USING (COVERING )?INDEX rules_global_expiry/, plan);

  // The state loads as before, and the sweep removes the expired global rule only.
  const state = new PolicyState();
  control = new Control(new Store(db), state, () => clock.now, opts);
  control.load();
  assert.equal(state.session('m1')?.rules.size, 2);
  assert.equal(state.global.size, 3);
  clock.now += 120_000;
  const deleted: number[] = [];
  control.onChange((e) => e.type === 'rule.deleted' && deleted.push(e.rule.id));
  control.sweep();
  assert.deepEqual(deleted, [soon]);
  assert.deepEqual(db.prepare("SELECT id FROM rules WHERE layer = 'global' ORDER BY id").pluck().all(), [later, forever]);
  assert.equal(db.prepare("SELECT count(*) FROM rules WHERE layer = 'session'").pluck().get(), 4);
  clock.now += 3600_000;
  control.sweep();
  assert.deepEqual(deleted, [soon, later]);
  assert.deepEqual(db.prepare("SELECT id FROM rules WHERE layer = 'global' ORDER BY id").pluck().all(), [forever]);
});
