// A session's rules are written by multi-row INSERTs and their records (ids included) are
// built from what was written, not read back. Whatever the number of rules, the order, the
// ids already used (deleted rules, re-posts) or the other sessions in the same commit, the
// records in memory must be exactly the rows a restart would load.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { openDatabase } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import { Control } from '../../src/control/control.js';
import { PolicyState } from '../../src/policy/state.js';
import { compileRule } from '../../src/policy/rules.js';
import { tempDir } from '../helpers/harness.js';

const NOW = Date.parse('2026-11-21T10:00:00Z');

function setup(t: TestContext) {
  const dir = tempDir('sluice-rule-ids-');
  const db = openDatabase(dir);
  const store = new Store(db);
  const state = new PolicyState();
  const control = new Control(store, state, () => NOW, {
    defaultTtlSeconds: 900,
    maxRulesPerSession: 1000,
    tokenSecret: Buffer.alloc(32, 9),
    proxyUrls: () => ({ http: 'http://x', socks5: 'socks5h://x' }),
  });
  t.after(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { db, store, state, control };
}

const rules = (n: number, tag: string) =>
  Array.from({ length: n }, (_, i) => ({
    destination_pattern: i % 3 === 0 ? `10.${i % 256}.0.0/16` : `h${i}.${tag}.example`,
    port_pattern: i % 2 ? '80,443' : '443',
    action: i % 5 === 0 ? ('deny' as const) : ('allow' as const),
    ...(i % 4 === 0 ? { notes: `rule ${i} of ${tag}` } : {}),
  }));
const session = (id: string, n: number) => ({ session_id: id, container_name: `c-${id}`, network_rules: rules(n, id), allow_all: false, source_ips: [] });

/** Memory holds exactly what the store holds for the session, rule for rule, in the order given. */
function assertMatchesStore(store: Store, state: PolicyState, id: string, n: number): void {
  const stored = store.sessionRules(id);
  assert.equal(stored.length, n, `${id}: rows`);
  const given = rules(n, id);
  stored.forEach((r, i) => assert.equal(r.notes, given[i]!.notes ?? null, `${id}: rule ${i} stored in the order given`));
  const inMemory = [...state.session(id)!.rules.rules()].sort((a, b) => a.record.id - b.record.id);
  assert.deepEqual(inMemory, stored.map(compileRule), `${id}: compiled rules equal the stored rows`);
}

test('sessions of 0 to 100 rules in one commit: every rule id in memory is the id of its row', async (t) => {
  const { store, state, control } = setup(t);
  const sizes = [0, 1, 10, 31, 32, 33, 64, 65, 100, 7];
  const before = store.group.commits;
  await Promise.all(sizes.map((n, i) => control.createSession(session(`s${i}`, n))));
  assert.equal(store.group.commits - before, 1);
  sizes.forEach((n, i) => assertMatchesStore(store, state, `s${i}`, n));
});

test('ids after deleted rules and re-posts: new rules never reuse an id, and memory still matches the rows', async (t) => {
  const { db, store, state, control } = setup(t);
  await control.createSession(session('a', 40));
  const global = control.createRule({ container_pattern: '*', destination_pattern: 'g.example', port_pattern: '*', action: 'allow' });
  const highest = global.id;
  control.deleteRule(global.id); // the largest id is gone; AUTOINCREMENT still counts it
  await control.deleteSession('a');
  const [b] = await Promise.all([control.createSession(session('b', 12)), control.createSession(session('a', 3))]);
  assert.equal(b.rules_created, 12);
  assertMatchesStore(store, state, 'b', 12);
  assertMatchesStore(store, state, 'a', 3);
  assert.ok(store.sessionRules('b')[0]!.id > highest, 'no id is reused');
  // A re-post replaces the rules with new rows.
  await control.createSession(session('b', 35));
  assertMatchesStore(store, state, 'b', 35);
  assert.equal(db.prepare("SELECT count(*) FROM rules WHERE layer = 'session'").pluck().get(), 38);
});
