import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventBus } from '../../../src/events/bus.js';
import { Limiter } from '../../../src/limits/limiter.js';
import { proposeRules } from '../../../src/policy/promote.js';

test('the event bus filters by type and container and drops a subscriber that cannot keep up', () => {
  const bus = new EventBus(() => 5);
  const got: string[] = [];
  let dropped = false;
  bus.subscribe({ types: new Set(['decision'] as const), container: 'a' }, (e) => (got.push(`${e.type}:${e.container}`), true));
  bus.subscribe({}, () => false, () => (dropped = true));
  assert.equal(bus.wants('rule.created'), true);
  bus.publish('decision', 'a', {});
  bus.publish('decision', 'b', {});
  bus.publish('rule.created', 'a', {});
  assert.deepEqual(got, ['decision:a']);
  assert.equal(dropped, true);
  assert.equal(bus.droppedSubscribers, 1);
  assert.equal(bus.subscriberCount, 1);
  assert.equal(bus.wants('rule.created'), false, 'only the decision subscriber is left');
});

test('the limiter enforces concurrency and a per-second rate, and recovers', () => {
  let now = 0;
  const limiter = new Limiter(10, () => now);
  const limits = { maxConnections: 2, connectionsPerSecond: 3 };
  const a = limiter.acquire('c', limits);
  const b = limiter.acquire('c', limits);
  assert.ok(a.ok && b.ok);
  const c = limiter.acquire('c', limits);
  assert.deepEqual(c.ok ? null : c.why, 'concurrency');
  a.release();
  a.release(); // releasing twice must not free two slots
  assert.ok(limiter.acquire('c', limits).ok);
  const rated = limiter.acquire('c', { maxConnections: 0, connectionsPerSecond: 3 });
  assert.equal(rated.ok ? null : rated.why, 'rate');
  now += 1000;
  assert.ok(limiter.acquire('c', { maxConnections: 0, connectionsPerSecond: 3 }).ok, 'tokens refill with time');
});

test('the limiter key table is bounded and fails closed at the bound', () => {
  let now = 0;
  const limiter = new Limiter(2, () => now);
  const limits = { maxConnections: 1, connectionsPerSecond: 0 };
  assert.ok(limiter.acquire('a', limits).ok);
  assert.ok(limiter.acquire('b', limits).ok);
  const third = limiter.acquire('c', limits);
  assert.equal(third.ok ? null : third.why, 'keys');
  assert.equal(limiter.keysRejected, 1);
  assert.ok(limiter.acquire('a', { maxConnections: 0, connectionsPerSecond: 0 }).ok, 'unlimited settings never touch the table');
});

test('promotion groups ports per destination and collapses siblings, never over a public suffix', () => {
  const t = (destination: string, port: number) => ({ destination, port });
  const plain = proposeRules([t('a.cdn.example.com', 443), t('a.cdn.example.com', 80), t('b.cdn.example.com', 443)], false);
  assert.deepEqual(
    plain.map((r) => [r.destinationPattern, r.portPattern]),
    [
      ['a.cdn.example.com', '80,443'],
      ['b.cdn.example.com', '443'],
    ],
  );
  const collapsed = proposeRules([t('a.cdn.example.com', 443), t('b.cdn.example.com', 443), t('x.co.uk', 443), t('y.co.uk', 443), t('me.github.io', 443), t('you.github.io', 443), t('127.0.0.2', 8080)], true);
  assert.deepEqual(
    collapsed.map((r) => r.destinationPattern),
    ['*.cdn.example.com', '127.0.0.2', 'me.github.io', 'x.co.uk', 'y.co.uk', 'you.github.io'],
  );
});
