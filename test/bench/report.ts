// Turns rows into the report: medians over repetitions, a text table, sluice / best-peer
// ratios per workload and protocol, the issue's targets, and the JSON file.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { median } from './stats.js';
import { NODE_RELAY } from './peers.js';
import type { Family, Row } from './targets.js';

export interface Ratio {
  readonly workload: string;
  readonly family: Family;
  readonly metric: string;
  readonly higherIsBetter: boolean;
  readonly sluice: number;
  readonly best: number;
  readonly bestTarget: string;
  /** sluice / best peer. */
  readonly ratio: number;
}

export interface TargetCheck {
  readonly target: string;
  readonly measured: string;
  /** null: not measured in this run (workload skipped or no peer to compare with). */
  readonly met: boolean | null;
}

/** One row per workload+target: the median of every metric over the repetitions. */
export function medianRows(reps: readonly Row[][]): Row[] {
  const groups = new Map<string, Row[]>();
  for (const rows of reps) {
    for (const r of rows) {
      const key = `${r.workload}\u0000${r.target}`;
      const list = groups.get(key) ?? [];
      list.push(r);
      groups.set(key, list);
    }
  }
  return [...groups.values()].map((list) => {
    const first = list[0]!;
    const metrics: Record<string, number> = {};
    for (const k of Object.keys(first.metrics)) metrics[k] = median(list.map((r) => r.metrics[k] ?? NaN));
    const cpu = (f: (r: Row) => number | null): number | null => {
      const m = median(list.map((r) => f(r) ?? NaN));
      return Number.isFinite(m) ? m : null;
    };
    // A note repeated with other numbers in a later repetition is shown once (the JSON keeps every repetition).
    const notes = new Map<string, string>();
    for (const n of list.flatMap((r) => r.notes)) if (!notes.has(n.replace(/[\d.,]+/g, '#'))) notes.set(n.replace(/[\d.,]+/g, '#'), n);
    return {
      ...first,
      metrics,
      genCpuPct: cpu((r) => r.genCpuPct),
      proxyCpuPct: cpu((r) => r.proxyCpuPct),
      proxySysPct: cpu((r) => r.proxySysPct),
      machineCpuPct: cpu((r) => r.machineCpuPct),
      notes: [...notes.values()],
    };
  });
}

// ---- ratios ----------------------------------------------------------------

const COMPARED: ReadonlyArray<{ workload: string; metric: string; higherIsBetter: boolean }> = [
  { workload: 'tunnel', metric: 'rate', higherIsBetter: true },
  { workload: 'tunnel', metric: 'p99_ms', higherIsBetter: false },
  { workload: 'bulk', metric: 'mibps', higherIsBetter: true },
  { workload: 'forward', metric: 'rate', higherIsBetter: true },
  { workload: 'forward', metric: 'p99_ms', higherIsBetter: false },
  { workload: 'idle', metric: 'rss_mib', higherIsBetter: false },
];

/**
 * sluice / the best peer, per workload and protocol; or, with `against`, sluice / that one
 * proxy (the bare Node relay, which is never counted as a peer).
 */
export function ratios(rows: readonly Row[], against?: string): Ratio[] {
  const out: Ratio[] = [];
  const compared = (proxy: string | null): boolean => (against ? proxy === against : proxy !== null && proxy !== 'sluice' && proxy !== NODE_RELAY);
  for (const c of COMPARED) {
    const mine = rows.filter((r) => r.workload === c.workload && r.proxy === 'sluice');
    for (const s of mine) {
      // Idle memory compares every proxy (one protocol each); the others compare like with like.
      const peers = rows.filter(
        (r) => r.workload === c.workload && compared(r.proxy) && (c.workload === 'idle' || r.family === s.family) && Number.isFinite(r.metrics[c.metric]),
      );
      if (peers.length === 0 || !(s.metrics[c.metric]! > 0)) continue;
      const best = peers.reduce((a, b) => ((c.higherIsBetter ? b.metrics[c.metric]! > a.metrics[c.metric]! : b.metrics[c.metric]! < a.metrics[c.metric]!) ? b : a));
      if (!(best.metrics[c.metric]! > 0)) continue;
      out.push({
        workload: c.workload,
        family: s.family,
        metric: c.metric,
        higherIsBetter: c.higherIsBetter,
        sluice: s.metrics[c.metric]!,
        best: best.metrics[c.metric]!,
        bestTarget: best.target,
        ratio: s.metrics[c.metric]! / best.metrics[c.metric]!,
      });
    }
  }
  return out;
}

// ---- targets (from the issue) ------------------------------------------------

const fx = (x: number): string => `${x.toFixed(2)}x`;

export function checkTargets(rows: readonly Row[], rs: readonly Ratio[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const find = (w: string, pred: (r: Row) => boolean): Row | undefined => rows.find((r) => r.workload === w && pred(r));
  const ratio = (w: string, f: Family, m: string): Ratio | undefined => rs.find((r) => r.workload === w && r.family === f && r.metric === m);

  for (const [family, peersText] of [
    ['connect', 'Squid/tinyproxy'],
    ['socks5', 'Dante/microsocks'],
  ] as const) {
    const rate = ratio('tunnel', family, 'rate');
    const p99 = ratio('tunnel', family, 'p99_ms');
    checks.push({
      target: `tunnel rate (${family === 'connect' ? 'CONNECT' : 'SOCKS5'}) >= best of ${peersText}, p99 <= theirs`,
      measured: rate && p99 ? `rate ${fx(rate.ratio)} of ${rate.bestTarget}; p99 ${fx(p99.ratio)} of ${p99.bestTarget}` : 'no peer measured',
      met: rate && p99 ? rate.ratio >= 1 && p99.ratio <= 1 : null,
    });
    const bulk = ratio('bulk', family, 'mibps');
    const mine = find('bulk', (r) => r.proxy === 'sluice' && r.family === family);
    const direct = find('bulk', (r) => r.family === 'direct');
    const vsDirect = mine && direct ? mine.metrics.mibps! / direct.metrics.mibps! : NaN;
    checks.push({
      target: `bulk (${family === 'connect' ? 'CONNECT' : 'SOCKS5'}) >= best peer and >= 0.7x direct`,
      measured: `${bulk ? `${fx(bulk.ratio)} of ${bulk.bestTarget}` : 'no peer measured'}; ${Number.isFinite(vsDirect) ? `${fx(vsDirect)} of direct` : 'direct not measured'}`,
      met: Number.isFinite(vsDirect) ? vsDirect >= 0.7 && (bulk ? bulk.ratio >= 1 : true) : null,
    });
  }

  const fwd = find('forward', (r) => r.proxy === 'sluice');
  const squid = find('forward', (r) => r.proxy === 'squid');
  checks.push({
    target: 'forwarding req/s >= Squid',
    measured: fwd && squid ? `${fx(fwd.metrics.rate! / squid.metrics.rate!)} of squid` : 'not measured',
    met: fwd && squid ? fwd.metrics.rate! >= squid.metrics.rate! : null,
  });

  const idle = find('idle', (r) => r.proxy === 'sluice');
  if (idle) {
    const at10k = idle.metrics.tunnels! >= 10_000 ? idle.metrics.rss_mib! : idle.metrics.rss_10k_mib!;
    checks.push({
      target: 'idle: 10k tunnels < 300 MiB RSS',
      measured: `${idle.metrics.rss_mib!.toFixed(0)} MiB at ${idle.metrics.tunnels} tunnels${idle.metrics.tunnels! < 10_000 ? `, ~${at10k.toFixed(0)} MiB projected at 10k` : ''}`,
      met: Number.isFinite(at10k) ? at10k < 300 : null,
    });
  } else checks.push({ target: 'idle: 10k tunnels < 300 MiB RSS', measured: 'not measured', met: null });

  const dec = rows.filter((r) => r.workload === 'decision').sort((a, b) => b.metrics.global_rules! - a.metrics.global_rules!);
  const big = dec[0];
  const small = dec[dec.length - 1];
  checks.push({
    target: 'decision p99 < 20 µs (100k global rules, 10k sessions)',
    measured: big ? `${big.metrics.p99_us!.toFixed(2)} µs` : 'not measured',
    met: big ? big.metrics.p99_us! < 20 : null,
  });
  if (big && small && big !== small) {
    const mean = big.metrics.mean_ns! / small.metrics.mean_ns!;
    const p99 = big.metrics.p99_us! / small.metrics.p99_us!;
    checks.push({ target: 'decision cost flat 1k -> 100k rules (within 2x)', measured: `mean ${fx(mean)}, p99 ${fx(p99)}`, met: mean <= 2 && p99 <= 2 });
  } else checks.push({ target: 'decision cost flat 1k -> 100k rules (within 2x)', measured: 'not measured', met: null });

  const creates = find('control', (r) => r.target.startsWith('session create'));
  checks.push({
    target: '>= 2,000 session creates/s (10 rules each)',
    measured: creates ? `${Math.round(creates.metrics.rate!).toLocaleString('en-US')}/s` : 'not measured',
    met: creates ? creates.metrics.rate! >= 2000 : null,
  });
  return checks;
}

// ---- text ------------------------------------------------------------------------

const int = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : Math.round(x).toLocaleString('en-US'));
const ms = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : `${x < 10 ? x.toFixed(2) : x.toFixed(1)} ms`);
const us = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : `${x.toFixed(2)} µs`);
const pct = (x: number | null): string => (x === null || !Number.isFinite(x) ? '-' : `${Math.round(x)}%`);

function cells(r: Row): [string, string, string, string] {
  const m = r.metrics;
  const errs = m.errors ? `${int(m.errors)} errors` : '';
  switch (r.workload) {
    case 'tunnel':
      return [`${int(m.rate)} tunnels/s`, ms(m.p50_ms), ms(m.p99_ms), errs];
    case 'bulk':
      return [Number.isFinite(m.mibps) ? `${int(m.mibps)} MiB/s` : 'failed', '', '', Number.isFinite(m.seconds) ? `${m.seconds!.toFixed(2)} s` : ''];
    case 'forward':
      return [`${int(m.rate)} req/s`, ms(m.p50_ms), ms(m.p99_ms), errs];
    case 'idle':
      return [
        `${int(m.rss_mib)} MiB RSS`,
        '',
        '',
        `${int(m.tunnels)} tunnels, PSS ${int(m.pss_mib)} MiB, ${m.kib_per_tunnel!.toFixed(1)} KiB/tunnel, ~${int(m.rss_10k_mib)} MiB @10k, ${int(m.rss_before_mib)} MiB before`,
      ];
    case 'control':
      return [`${int(m.rate)}/s`, ms(m.p50_ms), ms(m.p99_ms), errs];
    case 'decision':
      return [`${int(m.rate)} decisions/s`, us(m.p50_us), us(m.p99_us), `mean ${int(m.mean_ns)} ns, p99.9 ${us(m.p999_us)}, ${m.allow_pct!.toFixed(0)}% allow`];
    default:
      return ['', '', '', ''];
  }
}

function table(header: string[], body: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (row: string[]): string => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function ratioLines(rs: readonly Ratio[]): string[] {
  return rs.map((r) => {
    const fmt = r.metric === 'p99_ms' ? ms : r.metric === 'rss_mib' ? (x: number) => `${int(x)} MiB` : int;
    return `  ${`${r.workload} ${r.family} ${r.metric}`.padEnd(26)} ${fx(r.ratio).padStart(7)}   sluice ${fmt(r.sluice)} vs ${r.bestTarget} ${fmt(r.best)}`;
  });
}

export function renderText(rows: readonly Row[], rs: readonly Ratio[], checks: readonly TargetCheck[], heading: string[], floor: readonly Ratio[] = []): string {
  const out: string[] = [...heading, ''];
  out.push(
    table(
      ['workload', 'target', 'result', 'p50', 'p99', 'details', 'gen CPU', 'proxy CPU (sys)', 'machine CPU'],
      rows.map((r) => [r.workload, r.target, ...cells(r), pct(r.genCpuPct), r.proxyCpuPct === null ? '-' : `${pct(r.proxyCpuPct)} (${pct(r.proxySysPct)})`, pct(r.machineCpuPct)]),
    ),
  );
  const notes = rows.flatMap((r) => r.notes.map((n) => `  ${r.workload} / ${r.target}: ${n}`));
  if (notes.length > 0) out.push('', 'notes:', ...notes);
  out.push('', 'sluice / best peer (same run, same protocol; > 1 is better for rates, < 1 for p99 and memory):');
  if (rs.length === 0) out.push('  (no peer measured)');
  out.push(...ratioLines(rs));
  if (floor.length > 0) {
    out.push('', `sluice / ${NODE_RELAY} (a bare Node.js relay: no identity, policy or audit; what Node itself costs):`);
    out.push(...ratioLines(floor));
  }
  out.push('', 'targets (issue 4):');
  for (const c of checks) out.push(`  [${c.met === null ? ' -- ' : c.met ? ' ok ' : 'MISS'}] ${c.target}: ${c.measured}`);
  return out.join('\n');
}

export function writeJson(file: string, data: unknown): void {
  mkdirSync(dirname(file), { recursive: true });
  // NaN is not JSON: failed measurements become null.
  writeFileSync(file, JSON.stringify(data, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
}
