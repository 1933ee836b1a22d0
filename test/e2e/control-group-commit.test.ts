// Group commit end to end: a 200 means committed. Many clients creating and heartbeating
// sessions at once, then SIGKILL right after the last answer: every acknowledged create and
// heartbeat is there after the restart. And on a disk with room for small writes only, the
// one write that does not fit fails alone (503), while the writes committed with it do not.
// Disk faults use a small tmpfs this test mounts and removes (root only; skipped otherwise).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { startTestSluice, tempDir } from '../helpers/harness.js';
import { openDatabase, StoreUnavailableError } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import { Control } from '../../src/control/control.js';
import { PolicyState } from '../../src/policy/state.js';
import { call, fill, mountUnavailable, serve, tinyDisk } from '../helpers/store-faults.js';

const tenRules = (tag: string) => Array.from({ length: 10 }, (_, k) => ({ destination_pattern: `h${k}.${tag}.example`, port_pattern: k % 2 ? '80,443' : '443' }));

test('64 clients creating and heartbeating at once, SIGKILL right after an answer: every acknowledged write is there after the restart', async (t) => {
  const dataDir = tempDir('sluice-group-crash-');
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const first = await serve(t, dataDir);

  const created = new Map<string, number>(); // session id -> rules acknowledged
  const extended = new Map<string, number>(); // session id -> latest acknowledged expires_at
  let killed = false;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (!killed) {
      const id = `g-${next++}`;
      try {
        const r = await call(first, 'POST', '/api/sessions', { session_id: id, container_name: `c${next % 9}`, ttl_seconds: 3600, network_rules: tenRules(id) });
        if (killed) return;
        assert.equal(r.status, 200, JSON.stringify(r.body));
        created.set(id, r.body.rules_created);
        const h = await call(first, 'POST', `/api/sessions/${id}/heartbeat`);
        if (killed) return;
        assert.equal(h.status, 200, JSON.stringify(h.body));
        extended.set(id, Date.parse(h.body.expires_at));
      } catch (err) {
        if (killed) return; // the connection died with the process
        throw err;
      }
    }
  };
  const workers = Array.from({ length: 64 }, worker);
  const until = Date.now() + 20_000;
  while (created.size < 600 && Date.now() < until) await new Promise((r) => setTimeout(r, 2));
  // Kill on the spot: whatever was answered so far must have been committed.
  first.proc.kill('SIGKILL');
  const ackCreated = new Map(created);
  const ackExtended = new Map(extended);
  killed = true;
  await Promise.all(workers);
  assert.equal(await first.exited, null, 'killed by signal');
  assert.ok(ackCreated.size >= 600, `only ${ackCreated.size} creates were acknowledged`);

  const second = await serve(t, dataDir);
  const listed = (await call(second, 'GET', '/api/sessions')).body.sessions as Array<{ session_id: string; rule_count: number; expires_at: string }>;
  const byId = new Map(listed.map((x) => [x.session_id, x]));
  for (const [id, rules] of ackCreated) {
    const got = byId.get(id);
    assert.ok(got, `acknowledged session ${id} is missing after the crash`);
    assert.equal(got.rule_count, rules, `${id}: rules`);
  }
  for (const [id, expiresAt] of ackExtended) {
    assert.ok(Date.parse(byId.get(id)!.expires_at) >= expiresAt, `${id}: an acknowledged heartbeat was lost`);
  }
  // Unacknowledged creates happened completely or not at all.
  for (const x of listed) assert.equal(x.rule_count, 10, `${x.session_id} is half-written`);
  second.proc.kill('SIGTERM');
  assert.equal(await second.exited, 0);
  t.diagnostic(`acknowledged ${ackCreated.size} creates and ${ackExtended.size} heartbeats; ${listed.length} sessions after restart`);
});

const skipDisk = mountUnavailable();
const ROOM = 512 * 1024;
// 1,000 rules with 900-character notes: about a megabyte of rows, twice the room left (and
// still under the API's 1 MiB body limit).
const hugeRules = Array.from({ length: 1000 }, (_, k) => ({ destination_pattern: `h${k}.huge.example`, notes: 'n'.repeat(900) }));

test('one group on a nearly full disk: the create that does not fit fails alone; the others of its group are committed and in memory', { skip: skipDisk && `needs root to mount a tmpfs: ${skipDisk}` }, async (t) => {
  const disk = tinyDisk(t, '8m');
  const db = openDatabase(join(disk, 'data'));
  t.after(() => db.close());
  const store = new Store(db);
  const state = new PolicyState();
  const control = new Control(store, state, Date.now, {
    defaultTtlSeconds: 900,
    maxRulesPerSession: 1000,
    tokenSecret: Buffer.alloc(32, 1),
    proxyUrls: () => ({ http: 'http://x', socks5: 'socks5h://x' }),
  });
  const session = (id: string, rules: Array<{ destination_pattern: string; notes?: string }>) =>
    control.createSession({ session_id: id, container_name: id, network_rules: rules.map((r) => ({ port_pattern: '*', action: 'allow' as const, ...r })), allow_all: false, source_ips: [] });
  await session('before', tenRules('before'));
  const filler = fill(disk, ROOM);

  const commitsBefore = store.group.commits;
  // Submitted in one turn of the event loop: one group.
  const results = await Promise.allSettled([session('small-1', tenRules('s1')), session('huge', hugeRules), session('small-2', tenRules('s2')), control.heartbeat('before')]);
  const [small1, huge, small2, beat] = results;
  assert.equal(huge.status, 'rejected');
  assert.ok((huge as PromiseRejectedResult).reason instanceof StoreUnavailableError, String((huge as PromiseRejectedResult).reason));
  for (const r of [small1, small2, beat]) assert.equal(r.status, 'fulfilled', String((r as PromiseRejectedResult).reason));
  assert.equal(store.group.commits - commitsBefore, 3, 'the group was rolled back and its writes committed one by one');
  assert.equal(state.session('huge'), undefined, 'memory changes only after a successful write');
  assert.equal(store.getSession('huge'), null);
  for (const id of ['small-1', 'small-2']) {
    assert.equal(state.session(id)?.rules.size, 10);
    assert.equal(store.sessionRules(id).length, 10);
  }

  rmSync(filler);
  await session('huge', hugeRules);
  assert.equal(store.sessionRules('huge').length, 1000);
});

test('through the API on a nearly full disk: concurrent small creates get 200 while the one that does not fit gets the 503 error shape', { skip: skipDisk && `needs root to mount a tmpfs: ${skipDisk}` }, async (t) => {
  const disk = tinyDisk(t, '8m');
  const dataDir = join(disk, 'data');
  const s = await startTestSluice({ dataDir, config: { sessions: { sweep_interval_ms: 3_600_000 } } });
  let open = true;
  t.after(() => open && s.close());
  await s.createSession({ container_name: 'warm-up' });
  const filler = fill(disk, ROOM);

  const smalls = Array.from({ length: 7 }, (_, i) => `api-small-${i}`);
  const [huge, ...small] = await Promise.all([
    s.api('POST', '/api/sessions', { session_id: 'api-huge', container_name: 'api-huge', network_rules: hugeRules }),
    ...smalls.map((id) => s.api('POST', '/api/sessions', { session_id: id, container_name: id, network_rules: tenRules(id) })),
  ]);
  assert.equal(huge!.status, 503, JSON.stringify(huge!.body));
  assert.equal(huge!.body.error, 'store unavailable');
  assert.ok(huge!.body.details.length > 0);
  assert.equal(huge!.headers.get('retry-after'), '5');
  for (const r of small) assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal((await s.api('GET', '/api/sessions/api-huge')).status, 404);

  rmSync(filler);
  await s.close();
  open = false;
  const again = await startTestSluice({ dataDir, config: { sessions: { sweep_interval_ms: 3_600_000 } } });
  t.after(() => again.close());
  for (const id of smalls) {
    const r = await again.api('GET', `/api/sessions/${id}`);
    assert.equal(r.status, 200, id);
    assert.equal(r.body.rules.length, 10);
  }
});
