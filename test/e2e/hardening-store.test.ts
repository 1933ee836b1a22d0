// The store under faults: a SIGKILL in the middle of a burst of session creates, a data
// dir that is read-only or full at start, and a disk that fills up while sluice runs.
// Disk faults use a small tmpfs this test mounts and removes (root only; skipped with the
// reason otherwise).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { startTestSluice, tempDir } from '../helpers/harness.js';
import { StoreError } from '../../src/store/database.js';
import { basic, originFor, RawClient, sleep } from '../helpers/proxy-helpers.js';
import { call, fill, MAIN, mountUnavailable, serve, tinyDisk } from '../helpers/store-faults.js';

test('SIGKILL in the middle of a burst of session creates: the database reopens, every acknowledged session is there, whole', async (t) => {
  const dataDir = tempDir('sluice-crash-');
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const first = await serve(t, dataDir);

  const rulesFor = (i: number) => Array.from({ length: 1 + (i % 7) * 20 }, (_, k) => ({ destination_pattern: `h${k}.s${i}.example`, port_pattern: String(1 + (k % 9)) }));
  const acknowledged = new Map<string, number>(); // session id -> rule count
  const attempted = new Map<string, number>();
  let next = 0;
  let killed = false;
  const worker = async (): Promise<void> => {
    while (!killed) {
      const i = next++;
      const id = `burst-${i}`;
      const rules = rulesFor(i);
      attempted.set(id, rules.length);
      let r;
      try {
        r = await call(first, 'POST', '/api/sessions', { session_id: id, container_name: `c${i % 5}`, ttl_seconds: 3600, network_rules: rules, metadata: { i } });
      } catch {
        return; // the connection died with the process
      }
      assert.equal(r.status, 200, JSON.stringify(r.body));
      acknowledged.set(id, r.body.rules_created);
    }
  };
  const workers = Array.from({ length: 12 }, worker);
  const until = Date.now() + 15_000;
  while (acknowledged.size < 120 && Date.now() < until) await sleep(5);
  assert.equal(acknowledged.size >= 120, true, `only ${acknowledged.size} creates were acknowledged`);
  first.proc.kill('SIGKILL');
  killed = true;
  await Promise.all(workers);
  assert.equal(await first.exited, null, 'killed by signal');
  assert.ok(attempted.size > acknowledged.size, 'some creates were in flight at the kill');

  // The file is sound before anything else touches it.
  const db = new Database(join(dataDir, 'sluice.db'));
  assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
  assert.deepEqual(db.pragma('foreign_key_check'), []);
  db.close();

  const second = await serve(t, dataDir);
  const listed = (await call(second, 'GET', '/api/sessions')).body.sessions as Array<{ session_id: string; rule_count: number; metadata: { i: number } }>;
  const byId = new Map(listed.map((x) => [x.session_id, x]));
  for (const [id, count] of acknowledged) {
    const got = byId.get(id);
    assert.ok(got, `acknowledged session ${id} is missing after the crash`);
    assert.equal(got.rule_count, count, `${id}: rules`);
  }
  // Creates that were in flight either happened completely or not at all.
  for (const x of listed) {
    assert.equal(x.rule_count, attempted.get(x.session_id), `${x.session_id} is half-written`);
    assert.equal(`burst-${x.metadata.i}`, x.session_id);
  }
  const orphanRules = (await call(second, 'GET', '/api/rules?layer=session')).body.rules.filter((r: { session_id: string }) => !byId.has(r.session_id));
  assert.deepEqual(orphanRules, []);
  // And it keeps working: create, restart cleanly, still there.
  assert.equal((await call(second, 'POST', '/api/sessions', { session_id: 'after-crash', container_name: 'x' })).status, 200);
  second.proc.kill('SIGTERM');
  assert.equal(await second.exited, 0);
  t.diagnostic(`acknowledged ${acknowledged.size}, attempted ${attempted.size}, found after restart ${listed.length}`);
});

const skipDisk = mountUnavailable();

test('a read-only or full data dir at start: a clear error, and nothing left open', { skip: skipDisk && `needs root to mount a tmpfs: ${skipDisk}` }, async (t) => {
  const disk = tinyDisk(t, '4m');
  mkdirSync(join(disk, 'fresh'));
  const existing = join(disk, 'existing');
  const s = await startTestSluice({ dataDir: existing });
  await s.createSession({ container_name: 'c' });
  await s.close();

  assert.equal(spawnSync('mount', ['-o', 'remount,ro', disk]).status, 0);
  for (const d of ['fresh', 'existing', 'missing']) {
    await assert.rejects(startTestSluice({ dataDir: join(disk, d) }), (err: unknown) => {
      assert.ok(err instanceof StoreError, String(err));
      assert.match(err.message, /(cannot open|cannot create data dir) .*\(.* is on a read-only file system\)/, `${d}: ${err.message}`);
      return true;
    });
  }
  // The CLI says the same and exits 1.
  const cli = spawnSync(process.execPath, [MAIN, 'serve', '--data-dir', existing, '--listen-http', '127.0.0.1:0', '--listen-socks', '127.0.0.1:0', '--listen-api', '127.0.0.1:0'], {
    encoding: 'utf8',
    timeout: 15_000,
    env: { ...process.env, SLUICE_LOG_LEVEL: 'silent' },
  });
  assert.equal(cli.status, 1, cli.stderr);
  assert.match(cli.stderr, /^error: cannot start sluice: cannot open .*sluice\.db: .*is on a read-only file system/m);

  assert.equal(spawnSync('mount', ['-o', 'remount,rw', disk]).status, 0);
  fill(disk);
  await assert.rejects(startTestSluice({ dataDir: join(disk, 'fresh') }), (err: unknown) => {
    assert.ok(err instanceof StoreError, String(err));
    assert.match(err.message, /full/, err.message);
    return true;
  });
  // A failed start closed the database file: the file system unmounts (t.after) without -l.
  assert.equal(spawnSync('umount', [disk]).status, 0, 'the file system is still busy after a failed start');
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', disk]).status, 0);
});

test('the disk fills up while sluice runs: decisions continue from memory, /healthz says degraded, API writes get 503, and it all recovers', { skip: skipDisk && `needs root to mount a tmpfs: ${skipDisk}` }, async (t) => {
  const disk = tinyDisk(t, '4m');
  const origin = await originFor(t, '127.0.0.2');
  const s = await startTestSluice({ dataDir: join(disk, 'data'), config: { sessions: { sweep_interval_ms: 100 }, audit: { flush_interval_ms: 50 } } });
  t.after(() => s.close());
  const sess = await s.createSession({
    session_id: 'alive',
    container_name: 'web',
    network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(origin.port) }, { destination_pattern: 'blocked.example', action: 'deny' }],
  });
  const request = async (host: string): Promise<number> => {
    const c = await RawClient.connect(t, s.sluice.http.port);
    c.write(`GET http://${host}/x HTTP/1.1\r\nHost: ${host}\r\nProxy-Authorization: ${basic('web', sess.proxy_token)}\r\nConnection: close\r\n\r\n`);
    const st = (await c.takeResponse(3000)).status;
    c.close();
    return st;
  };
  assert.equal(await request(origin.authority), 200);
  const before = (await s.api('GET', '/api/decisions?container=web&limit=1000')).body.decisions.length;

  const filler = fill(disk);
  // The proxy keeps deciding from memory, both ways.
  for (let i = 0; i < 20; i++) {
    assert.equal(await request(origin.authority), 200);
    assert.equal(await request('blocked.example'), 403);
  }
  const deadline = Date.now() + 5000;
  let health = (await s.api('GET', '/healthz')).body;
  while (health.store !== 'degraded' && Date.now() < deadline) {
    await sleep(50);
    health = (await s.api('GET', '/healthz')).body;
  }
  assert.equal(health.store, 'degraded', JSON.stringify(health));

  // Writes are refused with a clear 503; nothing changes, in the store or in memory.
  const writes: Array<[string, string, unknown]> = [
    ['POST', '/api/sessions', { container_name: 'new', network_rules: Array.from({ length: 50 }, (_, i) => ({ destination_pattern: `h${i}.example` })) }],
    ['POST', '/api/rules', { destination_pattern: 'x.example', action: 'deny', notes: 'n'.repeat(900) }],
    ['POST', '/api/sessions/alive/heartbeat', undefined],
    ['DELETE', '/api/sessions/alive', undefined],
    ['PUT', '/api/containers/web/learning', { enabled: true }],
  ];
  for (const [method, path, body] of writes) {
    const r = await s.api(method, path, body);
    assert.equal(r.status, 503, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error, 'store unavailable');
    assert.ok(r.body.details.length > 0);
    assert.equal(r.headers.get('retry-after'), '5');
  }
  assert.equal((await s.api('GET', '/api/sessions/alive')).status, 200, 'the refused DELETE deleted nothing');
  assert.equal(await request(origin.authority), 200, 'and the session still works');
  assert.equal((await s.api('GET', '/api/containers/web')).body.learning.active, false, 'the refused learning switch changed nothing');
  assert.equal((await s.api('GET', '/api/containers/new')).body.current_session, null);

  // Space again: everything recovers by itself, and the decisions made meanwhile were kept.
  rmSync(filler);
  const back = Date.now() + 5000;
  while ((await s.api('GET', '/healthz')).body.store !== 'ok' && Date.now() < back) await sleep(50);
  assert.equal((await s.api('GET', '/healthz')).body.store, 'ok');
  const after = (await s.api('GET', '/api/decisions?container=web&limit=1000')).body.decisions.length;
  assert.ok(after >= before + 41, `decisions made while the disk was full were lost: ${before} before, ${after} after`);
  assert.equal((await s.api('POST', '/api/sessions', { container_name: 'new' })).status, 200);
  assert.equal((await s.api('POST', '/api/sessions/alive/heartbeat')).status, 200);
});

test('with no proxy traffic, a refused API write alone marks the store degraded, and a probe write notices the recovery', { skip: skipDisk && `needs root to mount a tmpfs: ${skipDisk}` }, async (t) => {
  const disk = tinyDisk(t, '4m');
  const s = await startTestSluice({ dataDir: join(disk, 'data'), config: { sessions: { sweep_interval_ms: 100 } } });
  t.after(() => s.close());
  const health = async (): Promise<string> => (await s.api('GET', '/healthz')).body.store;
  const becomes = async (want: string): Promise<void> => {
    const deadline = Date.now() + 3000;
    while ((await health()) !== want && Date.now() < deadline) await sleep(50);
    assert.equal(await health(), want);
  };
  await becomes('ok');
  const filler = fill(disk);
  const r = await s.api('POST', '/api/sessions', { container_name: 'quiet', network_rules: Array.from({ length: 50 }, (_, i) => ({ destination_pattern: `h${i}.example` })) });
  assert.equal(r.status, 503);
  await becomes('degraded');
  rmSync(filler);
  await becomes('ok');
  assert.equal((await s.api('POST', '/api/sessions', { container_name: 'quiet' })).status, 200);
});
