// `npm run bench` is how users compare sluice with Squid, tinyproxy, Dante and microsocks;
// a bench that crashes, prints an empty table or writes a JSON nobody can read is a broken
// feature. This runs it end to end at the smallest sizes (sluice and direct only: the
// peers are not installed in CI) and checks what a user reads: the table, the targets
// block and the JSON file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../helpers/temp-dir.js';

const BENCH = fileURLToPath(new URL('../bench/run.js', import.meta.url));

interface BenchRow {
  workload: string;
  target: string;
  proxy: string;
  metrics: Record<string, number>;
  proxyCpuPct: number | null;
}

test('npm run bench runs every data-plane and control workload, prints the table and writes the JSON', { timeout: 150_000 }, async () => {
  const out = join(tempDir('sluice-bench-smoke-'), 'run.json');
  const args = ['--skip-peers', '--quick', '--repeat', '2', '--only', 'tunnel,bulk,forward,idle,control', '--duration', '1', '--bulk-mib', '4', '--idle', '100', '--rules', '500', '--out', out];
  const { stdout } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    execFile(process.execPath, [BENCH, ...args], { timeout: 140_000, maxBuffer: 16 << 20, env: { ...process.env, CI: 'true' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`bench failed: ${err.message}\n${stdout.slice(-3000)}\n${stderr.slice(-3000)}`));
      else resolve({ stdout, stderr });
    });
  });

  // The table: one line per sluice target and the direct baseline, with a rate in it.
  for (const line of [/tunnel\s+sluice CONNECT\s+[\d,]+ tunnels\/s/, /tunnel\s+sluice SOCKS5\s+[\d,]+ tunnels\/s/, /tunnel\s+direct\s+[\d,]+ tunnels\/s/, /bulk\s+sluice CONNECT\s+[\d,]+ MiB\/s/, /forward\s+sluice HTTP\s+[\d,]+ req\/s/, /idle\s+sluice CONNECT\s+[\d,]+ MiB RSS/, /control\s+session create \(10 rules\)\s+[\d,]+\/s/]) {
    assert.match(stdout, line);
  }
  assert.match(stdout, /medians of 2 runs/);
  assert.match(stdout, /targets \(issue 4\):/);
  assert.match(stdout, /squid skipped/);

  const report = JSON.parse(readFileSync(out, 'utf8')) as { results: BenchRow[]; repetitions: BenchRow[][]; targets: { target: string; met: boolean | null }[]; failures: string[] };
  assert.deepEqual(report.failures, []);
  assert.equal(report.repetitions.length, 2);
  const row = (workload: string, target: string): BenchRow => {
    const r = report.results.find((x) => x.workload === workload && x.target === target);
    assert.ok(r, `no ${workload} / ${target} row in ${JSON.stringify(report.results.map((x) => `${x.workload}/${x.target}`))}`);
    return r;
  };
  const metric = (workload: string, target: string, name: string): number => {
    const v = row(workload, target).metrics[name];
    assert.equal(typeof v, 'number', `${workload} / ${target}: no ${name}`);
    return v as number;
  };
  // Every tunnel succeeded through sluice's real decision path (identity on, 500 rules).
  for (const target of ['sluice CONNECT', 'sluice SOCKS5']) {
    assert.ok(metric('tunnel', target, 'rate') > 0, `${target} rate`);
    assert.equal(metric('tunnel', target, 'errors'), 0, `${target} errors`);
  }
  assert.ok(metric('bulk', 'sluice CONNECT', 'mibps') > 0);
  assert.ok(metric('forward', 'sluice HTTP', 'rate') > 0);
  assert.equal(metric('idle', 'sluice CONNECT', 'tunnels'), 100);
  assert.equal(typeof row('idle', 'sluice CONNECT').proxyCpuPct, 'number', 'the CPU it takes to hold idle tunnels');
  assert.ok(metric('control', 'session create (10 rules)', 'rate') > 0);
  // The targets block names every target of issue 4, met or not.
  assert.ok(report.targets.length >= 8, JSON.stringify(report.targets));
});
