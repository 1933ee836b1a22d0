// Group commit of session creates and heartbeats: concurrent writes share one transaction,
// every caller is answered only after the commit that holds its write, memory follows the
// store, and a write that fails (conflict, storage error) fails only its own caller.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openDatabase, StoreUnavailableError } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import { Control, ControlError } from '../../src/control/control.js';
import { PolicyState } from '../../src/policy/state.js';
import { compileRule } from '../../src/policy/rules.js';
import { tempDir } from '../helpers/harness.js';

const NOW = Date.parse('2026-11-21T10:00:00Z');

function setup(t: TestContext) {
  const dir = tempDir('sluice-group-');
  const db = openDatabase(dir);
  const store = new Store(db);
  const state = new PolicyState();
  let now = NOW;
  const control = new Control(store, state, () => now, {
    defaultTtlSeconds: 900,
    maxRulesPerSession: 1000,
    tokenSecret: Buffer.alloc(32, 7),
    proxyUrls: (c, token) => ({ http: `http://${c}:${token}@127.0.0.1:1`, socks5: `socks5h://${c}:${token}@127.0.0.1:2` }),
  });
  // A second connection sees only what was committed.
  const reader = new Database(join(dir, 'sluice.db'), { readonly: true });
  t.after(() => {
    reader.close();
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const committed = {
    sessions: () => (reader.prepare('SELECT id FROM sessions ORDER BY seq').all() as Array<{ id: string }>).map((r) => r.id),
    rules: (id: string) => (reader.prepare('SELECT count(*) AS n FROM rules WHERE session_id = ?').get(id) as { n: number }).n,
    expiresAt: (id: string) => (reader.prepare('SELECT expires_at FROM sessions WHERE id = ?').get(id) as { expires_at: number } | undefined)?.expires_at,
  };
  return { db, store, state, control, committed, advance: (ms: number) => (now += ms) };
}

const rules = (n: number, tag: string) => Array.from({ length: n }, (_, i) => ({ destination_pattern: `h${i}.${tag}.example`, port_pattern: i % 2 ? '80,443' : '443', action: 'allow' as const }));
const body = (id: string, container = `c-${id}`, n = 10) => ({ session_id: id, container_name: container, network_rules: rules(n, id), allow_all: false, source_ips: [] });

test('concurrent session creates share one commit; none is answered, or in memory, before it', async (t) => {
  const { store, state, control, committed } = setup(t);
  const before = store.group.commits;
  const ids = Array.from({ length: 40 }, (_, i) => `s${i}`);
  let answered = 0;
  const pending = ids.map((id) => control.createSession(body(id)).then((r) => (answered++, r)));
  // Queued, not yet written: nothing committed, nothing in memory, nobody answered.
  assert.deepEqual(committed.sessions(), []);
  assert.equal(state.session('s0'), undefined);
  await new Promise((r) => setImmediate(r));
  const results = await Promise.all(pending);
  assert.equal(answered, 40);
  assert.equal(store.group.commits - before, 1, 'one transaction for the whole burst');
  assert.deepEqual(committed.sessions(), ids);
  for (const [i, r] of results.entries()) {
    assert.equal(r.session_id, ids[i]);
    assert.equal(r.rules_created, 10);
    assert.equal(committed.rules(r.session_id), 10);
    const entry = state.session(r.session_id)!;
    assert.equal(entry.rules.size, 10);
    // What is in memory is exactly what a restart would load from the store.
    assert.deepEqual(entry.record, store.getSession(r.session_id), 'session record');
    const loaded = store.sessionRules(r.session_id).map(compileRule);
    assert.deepEqual([...entry.rules.rules()].sort((a, b) => a.record.id - b.record.id), loaded, 'compiled rules');
  }
});

test('concurrent heartbeats share one commit and are answered after it', async (t) => {
  const { store, state, control, committed, advance } = setup(t);
  await Promise.all(['a', 'b', 'c'].map((id) => control.createSession(body(id))));
  advance(60_000);
  const before = store.group.commits;
  const beats = ['a', 'b', 'c', 'a'].map((id) => control.heartbeat(id));
  assert.equal(committed.expiresAt('a'), NOW + 900_000, 'not yet committed');
  const answers = await Promise.all(beats);
  assert.equal(store.group.commits - before, 1);
  for (const a of answers) {
    assert.equal(a.expires_at, new Date(NOW + 60_000 + 900_000).toISOString());
    assert.equal(committed.expiresAt(a.session_id), NOW + 960_000);
    assert.equal(state.session(a.session_id)!.record.expiresAt, NOW + 960_000);
  }
});

test('a write that fails fails only its own request: conflicts and 404s beside successful writes in one group', async (t) => {
  const { state, control, committed } = setup(t);
  await control.createSession(body('known'));
  // Same tick: the two creates of `dup` both pass the in-memory check (neither is in memory
  // yet), so the store refuses the second inside the group.
  const results = await Promise.allSettled([
    control.createSession(body('ok-1')),
    control.createSession(body('dup', 'first')),
    control.heartbeat('known'),
    control.createSession(body('dup', 'second')),
    control.heartbeat('nope'),
    control.createSession(body('ok-2')),
  ]);
  const [ok1, dup1, beat, dup2, missing, ok2] = results;
  for (const r of [ok1, dup1, beat, ok2]) assert.equal(r.status, 'fulfilled', String((r as PromiseRejectedResult).reason));
  assert.equal(dup2.status, 'rejected');
  assert.ok((dup2 as PromiseRejectedResult).reason instanceof ControlError);
  assert.equal(((dup2 as PromiseRejectedResult).reason as ControlError).status, 409);
  assert.equal(missing.status, 'rejected');
  assert.equal(((missing as PromiseRejectedResult).reason as ControlError).status, 404);
  assert.deepEqual(committed.sessions(), ['known', 'ok-1', 'dup', 'ok-2']);
  assert.equal(state.session('dup')!.record.container, 'first', 'memory has the write that succeeded, not the refused one');
  assert.equal(committed.rules('dup'), 10);
  // Once in memory, a conflicting re-post is refused before it reaches the store.
  await assert.rejects(control.createSession(body('dup', 'third')), (e: unknown) => e instanceof ControlError && e.status === 409);
});

test('a storage failure in a group fails only the write that hit it (503 in the API); the rest of the group is committed', async (t) => {
  const { db, store, state, control, committed } = setup(t);
  const applied: string[] = [];
  const failing = store.group.submit(
    () => {
      // Writes something, then the disk "fills up": none of it may remain.
      db.prepare("INSERT INTO containers (name, learning_enabled, updated_at) VALUES ('half-written', 0, 0)").run();
      throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    },
    () => applied.push('failing'),
  );
  const creates = ['x1', 'x2', 'x3'].map((id) => control.createSession(body(id)));
  await assert.rejects(failing, (e: unknown) => e instanceof StoreUnavailableError && e.code === 'SQLITE_FULL');
  await Promise.all(creates);
  assert.deepEqual(applied, [], 'apply never runs for a failed write');
  assert.deepEqual(committed.sessions(), ['x1', 'x2', 'x3'], 'each session exactly once');
  for (const id of ['x1', 'x2', 'x3']) {
    assert.equal(committed.rules(id), 10, `${id}: rules written once, not again by the re-run`);
    assert.ok(state.session(id));
  }
  assert.equal(db.prepare("SELECT count(*) AS n FROM containers WHERE name = 'half-written'").pluck().get(), 0);
  assert.equal(store.healthy, true, 'the writes after the failing one succeeded');
});

test('writes submitted while a group commits (from its callbacks) go into the next group, in order', async (t) => {
  const { store, control, committed } = setup(t);
  const order: string[] = [];
  const first = control.createSession(body('p1')).then(async () => {
    order.push('p1');
    await control.createSession(body('p3'));
    order.push('p3');
  });
  const second = control.createSession(body('p2')).then(() => order.push('p2'));
  const before = store.group.commits;
  await Promise.all([first, second]);
  assert.deepEqual(order, ['p1', 'p2', 'p3']);
  assert.equal(store.group.commits - before, 2);
  assert.deepEqual(committed.sessions(), ['p1', 'p2', 'p3']);
});

test('concurrent session deletes share one commit; each session stays in memory, deciding, until that commit', async (t) => {
  const { store, state, control, committed } = setup(t);
  const ids = Array.from({ length: 30 }, (_, i) => `d${i}`);
  await Promise.all(ids.map((id) => control.createSession(body(id))));
  // The event goes out after the commit: a listener (live revocation) sees the store without the session.
  const seen: Array<{ id: string; container: string; inStore: boolean; inMemory: boolean }> = [];
  control.onChange((e) => {
    if (e.type === 'session.deleted') seen.push({ id: e.sessionId, container: e.container, inStore: committed.sessions().includes(e.sessionId), inMemory: state.session(e.sessionId) !== undefined });
  });
  const before = store.group.commits;
  const pending = ids.map((id) => control.deleteSession(id));
  // Queued, not yet written: still committed, still in memory (still deciding), no event.
  assert.deepEqual(committed.sessions(), ids);
  assert.ok(state.session('d0'));
  assert.equal(state.sessionByTokenHash(state.session('d0')!.record.tokenHash, NOW)?.record.id, 'd0', 'its token still authenticates');
  assert.deepEqual(seen, []);
  const answers = await Promise.all(pending);
  assert.equal(store.group.commits - before, 1, 'one transaction for the whole burst');
  assert.deepEqual(answers, ids.map((id) => ({ session_id: id, deleted: true })));
  assert.deepEqual(committed.sessions(), []);
  for (const id of ids) {
    assert.equal(committed.rules(id), 0, `${id}: its rules cascaded`);
    assert.equal(state.session(id), undefined);
  }
  assert.deepEqual(seen, ids.map((id) => ({ id, container: `c-${id}`, inStore: false, inMemory: false })));
});

test('a delete of a missing session in a group of real deletes is 404 alone; the group is not re-run', async (t) => {
  const { store, state, control, committed } = setup(t);
  await Promise.all(['k1', 'k2', 'k3'].map((id) => control.createSession(body(id))));
  const events: string[] = [];
  control.onChange((e) => events.push(`${e.type} ${'sessionId' in e ? e.sessionId : ''}`));
  const before = store.group.commits;
  const [k1, missing, k2, twice, beat] = await Promise.allSettled([
    control.deleteSession('k1'),
    control.deleteSession('never-was'),
    control.deleteSession('k2'),
    control.deleteSession('k2'), // the same session twice in one group: the second finds nothing
    control.heartbeat('k3'),
  ]);
  assert.deepEqual(k1, { status: 'fulfilled', value: { session_id: 'k1', deleted: true } });
  assert.deepEqual(k2, { status: 'fulfilled', value: { session_id: 'k2', deleted: true } });
  assert.equal(beat.status, 'fulfilled');
  for (const r of [missing, twice]) {
    assert.equal(r.status, 'rejected');
    const err = (r as PromiseRejectedResult).reason;
    assert.ok(err instanceof ControlError && err.status === 404 && err.message === 'session not found', String(err));
  }
  assert.equal(store.group.commits - before, 1, 'a 404 is no failed write: nothing rolled back or re-run');
  assert.deepEqual(committed.sessions(), ['k3']);
  assert.ok(state.session('k3'));
  assert.deepEqual(events, ['session.deleted k1', 'session.deleted k2', 'session.heartbeat k3'], 'one event per real delete, none for the 404s');
});

test('creates and deletes of one session in one group take effect in the order they were sent', async (t) => {
  const { store, state, control, committed } = setup(t);
  await control.createSession(body('cycle'));
  const oldToken = state.session('cycle')!.record.tokenHash;
  const before = store.group.commits;
  const [del, create, delAgain, recreate] = await Promise.allSettled([
    control.deleteSession('cycle'),
    control.createSession(body('cycle', 'other-container')),
    control.deleteSession('cycle'),
    control.createSession(body('cycle', 'last')),
  ]);
  for (const r of [del, create, delAgain, recreate]) assert.equal(r.status, 'fulfilled', String((r as PromiseRejectedResult).reason));
  assert.equal(store.group.commits - before, 1);
  assert.deepEqual(committed.sessions(), ['cycle']);
  const entry = state.session('cycle')!;
  assert.equal(entry.record.container, 'last');
  assert.notEqual(entry.record.tokenHash, oldToken, 'a new session, with a new token');
  assert.deepEqual(entry.record, store.getSession('cycle'), 'memory matches the store');
  assert.equal(entry.rules.size, 10);
  assert.equal(committed.rules('cycle'), 10);
});

test('a storage failure in a group of deletes fails only its own write; the deletes are committed once', async (t) => {
  const { db, store, state, control, committed } = setup(t);
  await Promise.all(['f1', 'f2', 'keep'].map((id) => control.createSession(body(id))));
  const failing = store.group.submit(
    () => {
      throw Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR_WRITE' });
    },
    () => undefined,
  );
  const deletes = Promise.all([control.deleteSession('f1'), control.deleteSession('f2')]);
  await assert.rejects(failing, (e: unknown) => e instanceof StoreUnavailableError);
  assert.deepEqual(await deletes, [
    { session_id: 'f1', deleted: true },
    { session_id: 'f2', deleted: true },
  ]);
  assert.deepEqual(committed.sessions(), ['keep']);
  assert.equal(state.session('f1'), undefined);
  assert.ok(state.session('keep'));
  assert.equal(db.prepare("SELECT count(*) FROM rules WHERE layer = 'session'").pluck().get(), 10);
});
