// Generated session ids are UUIDv7: the creation time, then random bits. They sort by
// creation time (which keeps the store's id indexes append-only) and never repeat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newSessionId } from '../../src/control/session-ids.js';

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const timeOf = (id: string) => parseInt(id.replace(/-/g, '').slice(0, 12), 16);

test('a generated session id is a UUIDv7 carrying the creation time', () => {
  for (const now of [0, 1, Date.parse('2026-11-21T10:00:00.123Z'), 2 ** 48 - 1]) {
    const id = newSessionId(now);
    assert.match(id, V7);
    assert.equal(timeOf(id), now);
  }
  // A clock with sub-millisecond precision (a test clock, performance-based) is floored.
  assert.equal(timeOf(newSessionId(1234.75)), 1234);
});

test('ids sort by creation time, and 100,000 of them (many per millisecond, across pool refills) are all different', () => {
  const start = Date.parse('2026-11-21T10:00:00Z');
  const ids: string[] = [];
  for (let i = 0; i < 100_000; i++) ids.push(newSessionId(start + Math.floor(i / 50)));
  assert.equal(new Set(ids).size, ids.length);
  for (let i = 50; i < ids.length; i += 50) assert.ok(ids[i - 1]! < ids[i]!, `an id of a later millisecond sorts after: ${ids[i - 1]} ${ids[i]}`);
  // The random part really varies: every hex digit of it takes many values.
  const randomHex = ids.slice(0, 1000).map((id) => id.replace(/-/g, '').slice(13));
  for (let d = 0; d < 19; d++) {
    if (d === 3) continue; // the variant bits
    assert.ok(new Set(randomHex.map((h) => h[d])).size >= 12, `hex digit ${d} of the random part`);
  }
});
