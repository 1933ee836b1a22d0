// The soak test, outside the default suite:
//
//   npm run build && node dist/test/soak/soak.js --minutes 10 [--workers 60]
//
// Runs sluice in this process for N minutes while `workers` containers churn sessions and
// open tunnels through it, then replays every audited decision against the reference
// resolver and compares handles, timers and memory with their values before the churn.
// Prints a JSON report; exits 1 when anything is off. (test/e2e/soak-short.test.ts runs a
// ~10 s version of the same thing in `npm test`.)
import { parseArgs } from 'node:util';
import { limitHeapGrowth } from '../../src/cli/heap-growth.js';
import { runSoak, verdict } from './soak-core.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '5' },
    workers: { type: 'string', default: '60' },
  },
});
const minutes = Number(values.minutes);
const workers = Number(values.workers);
if (!(minutes > 0) || !(workers > 0)) {
  console.error('usage: node dist/test/soak/soak.js --minutes N [--workers W]');
  process.exit(2);
}

// sluice runs in this process here; give it the heap setting `sluice serve` gives it.
limitHeapGrowth();
const report = await runSoak({ durationMs: minutes * 60_000, workers, log: (line) => console.error(`soak: ${line}`) });
// After warm-up the heap may wander with load, but not keep growing with time.
const problems = verdict(report, { maxHeapGrowthMiB: 48 });
const { mismatches, ...rest } = report;
console.log(JSON.stringify({ ...rest, mismatches: mismatches.length, verdict: problems.length === 0 ? 'pass' : 'fail', failures: problems }, null, 2));
process.exit(problems.length === 0 ? 0 : 1);
