// What survives a restart on the same data dir (sessions with their order and tokens,
// global rules, learning switches), and the migration checksum guard.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { appendFileSync, cpSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startOrigin, startTestSluice, tempDir, type TestSluice } from '../helpers/harness.js';
import { FakeClock, addRule, expectBlocked, expectReach, snapshot } from '../helpers/api-helpers.js';
import { MIGRATIONS_DIR, StoreError, openDatabase } from '../../src/store/database.js';

/** The same credentials on the proxy's new port (port 0 binds anew on every start). */
function onPort(proxyUrl: string, port: number): string {
  const u = new URL(proxyUrl);
  u.port = String(port);
  return u.href.replace(/\/$/, '');
}

test('sessions (order, rules, tokens), global rules and learning switches survive a restart', async (t) => {
  const [o2, o3] = await Promise.all([startOrigin('127.0.0.2'), startOrigin('127.0.0.3')]);
  const clock = new FakeClock();
  const dataDir = tempDir();
  let second: TestSluice | undefined;
  t.after(async () => {
    await second?.close();
    await Promise.all([o2.close(), o3.close()]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  const first = await startTestSluice({ dataDir, clock: clock.fn });
  const older = await first.createSession({ session_id: 'p-old', container_name: 'persist', ttl_seconds: 3600, network_rules: [{ destination_pattern: '127.0.0.2' }] });
  clock.advance(1);
  const newer = await first.createSession({
    session_id: 'p-new',
    container_name: 'persist',
    ttl_seconds: 600,
    network_rules: [{ destination_pattern: '127.0.0.3' }, { destination_pattern: '**.example.test', port_pattern: '443,8000-8999', action: 'deny', notes: 'kept' }],
    source_ips: ['127.0.0.9'],
    metadata: { build: 7 },
  });
  const learner = await first.createSession({ session_id: 'p-learn', container_name: 'learner', allow_all: true });
  const switched = await first.createSession({ session_id: 'p-switch', container_name: 'switched', ttl_seconds: 86_400 });
  const g = await addRule(first, { container_pattern: 'persist', destination_pattern: '127.0.0.3', port_pattern: String(o3.port + 1), action: 'deny', notes: 'global' });
  const gLearn = await addRule(first, { container_pattern: 'learner', destination_pattern: '127.0.0.3', action: 'deny' });
  await addRule(first, { destination_pattern: 'x.example', action: 'allow', expires_in_seconds: 7200 });
  await first.api('PUT', '/api/containers/switched/learning', { enabled: true, ttl_seconds: 3600 });
  await first.api('PUT', '/api/containers/forever/learning', { enabled: true });
  const before = await snapshot(first);
  const apiToken = first.sluice.apiToken;
  await first.close();

  // Only hashes of proxy tokens are stored.
  const dbBytes = ['sluice.db', 'sluice.db-wal']
    .map((f) => join(dataDir, f))
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f).toString('latin1'))
    .join('');
  for (const sess of [older, newer, learner, switched]) assert.equal(dbBytes.includes(sess.proxy_token), false, 'a proxy token is in the database');
  const db = new Database(join(dataDir, 'sluice.db'), { readonly: true });
  const row = db.prepare("SELECT token_hash FROM sessions WHERE id = 'p-old'").get() as { token_hash: string };
  db.close();
  assert.equal(row.token_hash, createHash('sha256').update(older.proxy_token).digest('hex'));

  clock.advance(1);
  second = await startTestSluice({ dataDir, clock: clock.fn });
  assert.equal(second.sluice.apiToken, apiToken, 'same API token');
  assert.deepEqual(await snapshot(second), before, 'sessions, rules and containers read back identical');

  const port = second.sluice.http.port;
  // The old credentials still authenticate; p-new (created later) is still current.
  const oldUrl = onPort(older.proxy.http, port);
  await expectReach(oldUrl, o3);
  await expectBlocked(oldUrl, o2, null, undefined, 'p-old is still shadowed by p-new');
  await expectReach(onPort(newer.proxy.http, port), o3);
  // Learning mode: from the session's allow_all, and from the operator switch; global deny still holds.
  await expectReach(onPort(learner.proxy.http, port), o2);
  await expectBlocked(onPort(learner.proxy.http, port), o3, { layer: 'global', ruleId: gLearn });
  await expectReach(onPort(switched.proxy.http, port), o2);
  // Re-posting after the restart still hands back the same token.
  const again = await second.createSession({ session_id: 'p-old', container_name: 'persist', ttl_seconds: 3600, network_rules: [{ destination_pattern: '127.0.0.2' }] });
  assert.equal(again.proxy_token, older.proxy_token);
  assert.equal((await second.api('GET', `/api/rules/${g}`)).body.notes, 'global');

  // The learning switch keeps its expiry across the restart.
  clock.advance(3600);
  await expectBlocked(onPort(switched.proxy.http, port), o2, null);
});

test('migrations are applied in order once, and an edited applied migration is refused with a clear error', () => {
  const migrations = tempDir('sluice-migrations-');
  const dataDir = tempDir();
  try {
    cpSync(MIGRATIONS_DIR, migrations, { recursive: true });
    const files = readdirSync(migrations).filter((f) => f.endsWith('.sql')).sort();
    assert.ok(files[0]?.startsWith('001_'));

    let db = openDatabase(dataDir, migrations);
    const versions = (db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as Array<{ version: number }>).map((r) => r.version);
    assert.deepEqual(versions, files.map((f) => Number(f.slice(0, 3))));
    db.close();

    // A new migration is applied on the next open, after the others.
    writeFileSync(join(migrations, '900_later.sql'), 'CREATE TABLE later_table (x INTEGER);\n');
    db = openDatabase(dataDir, migrations);
    assert.equal((db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'later_table'").get() as { n: number }).n, 1);
    assert.equal((db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as { v: number }).v, 900);
    db.close();

    // Editing an applied migration (even a comment) stops start-up.
    const first = join(migrations, files[0]!);
    const original = readFileSync(first, 'utf8');
    appendFileSync(first, '\n-- an innocent-looking edit\n');
    assert.throws(
      () => openDatabase(dataDir, migrations),
      (err: unknown) => err instanceof StoreError && /migration 001_init\.sql was edited after it was applied \(checksum mismatch\)/.test(err.message),
    );
    // Restoring the file makes the store open again (the refusal changed nothing).
    writeFileSync(first, original);
    openDatabase(dataDir, migrations).close();
  } finally {
    rmSync(migrations, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('sluice refuses to start on a data dir whose applied migration no longer matches', async () => {
  const dataDir = tempDir();
  try {
    const s = await startTestSluice({ dataDir });
    await s.createSession({ session_id: 'survivor', container_name: 'c' });
    await s.close();
    // As if migrations/001_init.sql had been edited since it was applied to this database.
    const db = new Database(join(dataDir, 'sluice.db'));
    db.prepare("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1").run();
    db.close();
    await assert.rejects(startTestSluice({ dataDir }), /001_init\.sql was edited after it was applied/);
    // Nothing was touched: restoring the recorded checksum brings everything back.
    const sql = readFileSync(join(MIGRATIONS_DIR, '001_init.sql'), 'utf8');
    const fix = new Database(join(dataDir, 'sluice.db'));
    fix.prepare('UPDATE schema_migrations SET checksum = ? WHERE version = 1').run(createHash('sha256').update(sql).digest('hex'));
    fix.close();
    const again = await startTestSluice({ dataDir });
    try {
      assert.equal((await again.api('GET', '/api/sessions/survivor')).status, 200);
    } finally {
      await again.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
