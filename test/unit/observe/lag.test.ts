import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lagJudge } from '../../../src/events/lag.js';

test('a subscriber briefly behind is kept; one that stays behind past the grace, or falls far behind, is dropped', () => {
  let now = 0;
  const judge = lagJudge({ softBytes: 100, graceMs: 1000, hardBytes: 400 }, () => now);
  assert.equal(judge(50), true);
  assert.equal(judge(300), true, 'a burst over the soft limit is tolerated');
  now = 900;
  assert.equal(judge(250), true, 'still inside the grace period');
  assert.equal(judge(80), true, 'caught up: the clock restarts');
  now = 1500;
  assert.equal(judge(150), true);
  now = 2499;
  assert.equal(judge(150), true);
  now = 2500;
  assert.equal(judge(150), false, 'behind for the whole grace period');

  const fresh = lagJudge({ softBytes: 100, graceMs: 1000, hardBytes: 400 }, () => now);
  assert.equal(fresh(401), false, 'over the hard cap: dropped at once');
});
