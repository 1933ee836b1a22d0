// A short soak (about 10 s) in the default suite; the long one is test/soak/soak.ts.
// Session churn with tunnels through them, every decision replayed against the reference
// resolver, and no sockets, timers or memory left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak, verdict } from '../soak/soak-core.js';

test('short soak: sessions churn under tunnel traffic; decisions match the reference; nothing leaks', async (t) => {
  const report = await runSoak({ durationMs: Number(process.env.SLUICE_SOAK_MS ?? 6000), workers: 30 });
  const { handles, mismatches, ...figures } = report;
  t.diagnostic(JSON.stringify({ ...figures, mismatches: mismatches.length, handlesBaseline: handles.baseline, handlesEnd: handles.end }));
  const problems = verdict(report, { maxHeapGrowthMiB: 24 });
  assert.deepEqual(problems, []);
  assert.ok(report.sessionsCreated >= 100, `only ${report.sessionsCreated} sessions churned`);
  assert.ok(report.sessionsExpired > 0 && report.sessionsDeleted > 0, 'both ways of ending a session were exercised');
  assert.ok(report.tunnels >= 200, `only ${report.tunnels} tunnels`);
});
