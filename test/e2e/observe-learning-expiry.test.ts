import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, startTestSluice } from '../helpers/harness.js';

test('an operator learning switch that runs out is announced (learning.changed) and shows as off', async (t) => {
  let now = Date.now();
  const s = await startTestSluice({ clock: () => now, config: { sessions: { sweep_interval_ms: 50 } } });
  t.after(() => s.close(true));
  const changes: Array<{ container: string; enabled: boolean }> = [];
  s.sluice.control.onChange((e) => {
    if (e.type === 'learning.changed') changes.push({ container: e.container, enabled: e.enabled });
  });
  const on = await s.api('PUT', '/api/containers/c1/learning', { enabled: true, ttl_seconds: 60 });
  assert.equal(on.status, 200);
  assert.equal(on.body.learning.active, true);
  now += 61_000;
  await eventually(() => changes.length === 2, 2000, 'the expiry to be announced');
  assert.deepEqual(changes, [
    { container: 'c1', enabled: true },
    { container: 'c1', enabled: false },
  ]);
  const after = await s.api('GET', '/api/containers/c1');
  assert.equal(after.body.learning.active, false);
  assert.equal(after.body.learning.operator_switch.enabled, false);
});
