// sluice's heap growth setting, observed in fresh node processes (a V8 flag is process-wide,
// so the test runner's own heap is left alone): after a full collection, how far does the
// heap grow past what survived before the next one collects the garbage?
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MODULE = fileURLToPath(new URL('../../src/cli/heap-growth.js', import.meta.url));

// ~50 MiB stays alive; then 4 million objects go through a window of 300,000, so each
// lives long enough to be promoted to the old generation and dies there.
const CHURN = `
const how = process.argv[1];
const { limitHeapGrowth } = await import(${JSON.stringify(MODULE)});
const applied = how === 'tuned' ? limitHeapGrowth([]) : how === 'operator' ? limitHeapGrowth(['--heap-growing-percent=300']) : null;
const live = [];
for (let i = 0; i < 600000; i++) live.push({ a: i, b: 'k' + i, c: null });
globalThis.gc();
globalThis.gc();
const base = process.memoryUsage().heapUsed;
let peak = base;
const window = new Array(300000).fill(null);
for (let i = 0; i < 4000000; i++) {
  window[i % window.length] = { x: i, y: [i, i + 1], z: null };
  if ((i & 1023) === 0) peak = Math.max(peak, process.memoryUsage().heapUsed);
}
console.log(JSON.stringify({ applied, growth: (peak - base) / base, live: live.length }));
`;

function churn(how: 'default' | 'tuned' | 'operator'): { applied: boolean | null; growth: number } {
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', CHURN, how], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out) as { applied: boolean | null; growth: number };
}

test('with sluice heap growth the heap stays within 2x of what survived; without it, garbage piles up past that', () => {
  const untuned = churn('default');
  const tuned = churn('tuned');
  assert.equal(tuned.applied, true);
  assert.ok(tuned.growth < 2, `tuned heap grew ${tuned.growth.toFixed(2)}x past the live heap`);
  // The comparison that makes the bound above mean something on this node version.
  assert.ok(untuned.growth > 3, `untuned heap grew only ${untuned.growth.toFixed(2)}x: the workload no longer shows the difference`);
});

test("an operator's own --heap-growing-percent wins", () => {
  const r = churn('operator');
  assert.equal(r.applied, false);
  assert.ok(r.growth > 3, `heap grew only ${r.growth.toFixed(2)}x: sluice's setting replaced the operator's`);
});
