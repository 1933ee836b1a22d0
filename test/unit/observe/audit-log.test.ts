import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openDatabase, type Db } from '../../../src/store/database.js';
import { AuditLog, type AuditDecision } from '../../../src/audit/audit-log.js';
import { tempDir } from '../../helpers/harness.js';

const count = (db: Db): number => (db.prepare('SELECT count(*) AS n FROM decisions').get() as { n: number }).n;
const OPTS = { flushIntervalMs: 100_000, flushBatch: 1_000_000, maxQueue: 1000, retentionDays: 30, maxRows: 1_000_000 };

function decision(log: AuditLog, over: Partial<AuditDecision> = {}): AuditDecision {
  const d: AuditDecision = {
    id: log.newDecisionId(),
    time: 1_000,
    protocol: 'connect',
    clientAddress: '127.0.0.1',
    container: 'c1',
    sessionId: 's1',
    destination: 'example.test',
    port: 443,
    address: '127.0.0.2',
    decision: 'allow',
    reason: 'rule',
    layer: 'session',
    ruleId: 7,
    ...over,
  };
  log.decision(d);
  return d;
}

test('decisions are written in batches, closes fill bytes and duration, and queries page newest first', () => {
  const db = openDatabase(tempDir());
  const log = new AuditLog(db, OPTS, (e) => assert.fail(String(e)));
  const a = decision(log, { time: 1000 });
  decision(log, { time: 2000, container: 'c2', decision: 'deny', reason: 'default_deny', ruleId: null, layer: null });
  const c = decision(log, { time: 3000 });
  log.closed(a.id, { bytesUp: 10, bytesDown: 20, durationMs: 30, reason: 'client_closed' });
  assert.equal(count(db), 0, 'nothing written before a flush');

  const page1 = log.query({ limit: 2 });
  assert.deepEqual(page1.map((r) => r.id), [c.id, c.id - 1]);
  const page2 = log.query({ limit: 2, before: page1[1]!.id });
  assert.deepEqual(page2.map((r) => r.id), [a.id]);
  assert.equal(page2[0]!.bytes_up, 10);
  assert.equal(page2[0]!.bytes_down, 20);
  assert.equal(page2[0]!.close_reason, 'client_closed');
  assert.deepEqual(log.query({ limit: 10, container: 'c2' }).map((r) => r.decision), ['deny']);
  assert.deepEqual(log.query({ limit: 10, decision: 'allow', since: 2500 }).map((r) => r.id), [c.id]);
  assert.equal(log.ruleUsage().get(7)?.hitCount, 2);
  assert.equal(log.ruleUsage().get(7)?.lastUsedAt, 3000);
  db.close();
});

test('ids continue after a restart and the queue is bounded, counting drops', () => {
  const dir = tempDir();
  let db = openDatabase(dir);
  let log = new AuditLog(db, { ...OPTS, maxQueue: 3 }, () => undefined);
  for (let i = 0; i < 5; i++) decision(log);
  assert.equal(log.dropped, 2);
  log.stop();
  db.close();
  db = openDatabase(dir);
  log = new AuditLog(db, OPTS, () => undefined);
  assert.equal(log.newDecisionId(), 4, 'ids continue after the last stored row');
  assert.equal(log.query({ limit: 10 }).length, 3);
  db.close();
});

test('a failed flush keeps the batch and marks the log unhealthy until a later flush succeeds', () => {
  const db = openDatabase(tempDir());
  const errors: unknown[] = [];
  const log = new AuditLog(db, OPTS, (e) => errors.push(e));
  decision(log);
  db.exec('PRAGMA query_only = ON');
  log.flush();
  assert.equal(log.healthy, false);
  assert.equal(errors.length, 1);
  assert.equal(log.queueDepth, 1);
  db.exec('PRAGMA query_only = OFF');
  log.flush();
  assert.equal(log.healthy, true);
  assert.equal(log.query({ limit: 5 }).length, 1);
  db.close();
});

test('an outage is reported once, however many flushes fail, and its end is reported too', () => {
  const db = openDatabase(tempDir());
  const errors: unknown[] = [];
  const recovered: number[] = [];
  const log = new AuditLog(db, OPTS, (e) => errors.push(e), (n) => recovered.push(n));
  decision(log);
  db.exec('PRAGMA query_only = ON');
  for (let i = 0; i < 5; i++) log.flush();
  assert.equal(errors.length, 1, 'one report for the whole outage');
  assert.equal(log.failedFlushes, 5);
  db.exec('PRAGMA query_only = OFF');
  log.flush();
  assert.deepEqual(recovered, [5]);
  db.exec('PRAGMA query_only = ON');
  decision(log);
  log.flush();
  assert.equal(errors.length, 2, 'a new outage is reported again');
  db.close();
});

test('a close or failure in a later batch than its decision updates the stored row', () => {
  const db = openDatabase(tempDir());
  const log = new AuditLog(db, OPTS, (e) => assert.fail(String(e)));
  const a = decision(log);
  const b = decision(log);
  log.failed(b.id, 'connect_error');
  log.flush();
  log.closed(a.id, { bytesUp: 1, bytesDown: 2, durationMs: 3, reason: 'upstream_closed' });
  const c = decision(log);
  log.failed(c.id, 'dns_error');
  log.closed(c.id, { bytesUp: 0, bytesDown: 0, durationMs: 4, reason: 'client_closed' });
  const rows = new Map(log.query({ limit: 10 }).map((r) => [r.id, r]));
  assert.equal(rows.get(a.id)!.close_reason, 'upstream_closed');
  assert.equal(rows.get(a.id)!.bytes_down, 2);
  assert.equal(rows.get(b.id)!.error, 'connect_error');
  assert.equal(rows.get(c.id)!.error, 'dns_error');
  assert.equal(rows.get(c.id)!.duration_ms, 4);
  assert.equal(rows.size, 3);
  db.close();
});

test('retention removes rows older than the age limit and beyond the row cap', () => {
  const db = openDatabase(tempDir());
  const log = new AuditLog(db, { ...OPTS, retentionDays: 1, maxRows: 1000, maxQueue: 10_000 }, () => undefined);
  const day = 86_400_000;
  decision(log, { time: 0 });
  for (let i = 0; i < 1500; i++) decision(log, { time: 2 * day });
  log.flush();
  log.enforceRetention(2 * day + 1);
  const ids = log.query({ limit: 1000 }).map((r) => r.id);
  assert.equal(count(db), 1000);
  assert.ok(!ids.includes(1), 'the old row went first');
  db.close();
});

test('learning hits aggregate per (container, destination, port)', () => {
  const db = openDatabase(tempDir());
  const log = new AuditLog(db, OPTS, () => undefined);
  const hit = { container: 'c', destination: 'a.test', port: 443, wouldBe: 'deny' as const, wouldBeLayer: null, wouldBeRuleId: null };
  log.learnedHit({ ...hit, time: 10 });
  log.learnedHit({ ...hit, time: 20 });
  log.flush();
  log.learnedHit({ ...hit, time: 30 });
  log.learnedHit({ ...hit, port: 80, time: 40 });
  const rows = log.learnedFor('c');
  assert.deepEqual(
    rows.map((r) => [r.destination, r.port, r.count, r.first_seen, r.last_seen]),
    [
      ['a.test', 80, 1, 40, 40],
      ['a.test', 443, 3, 10, 30],
    ],
  );
  db.close();
});
