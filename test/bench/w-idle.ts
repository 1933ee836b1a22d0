// Workload 4, idle scale: hold thousands of open, silent tunnels and read the proxy's
// memory from /proc (VmRSS; PSS too, which is fairer to multi-process Dante). Each tunnel
// costs the proxy two descriptors, so the count is capped by the hard open-file limit
// (which an unprivileged container cannot raise); the per-tunnel cost then projects 10k.
import type net from 'node:net';
import { openTunnel, sourceAddresses } from './clients.js';
import { targetLabel, type BenchContext } from './context.js';
import { share } from './pool.js';
import { hardNofile, sleep, treeMemory, withTreeCpu } from './procs.js';
import type { Dest, Hop, Row } from './targets.js';

export interface IdleOpenParams {
  readonly hop: Hop;
  readonly dest: Dest;
  readonly count: number;
  readonly concurrency: number;
  readonly sources: readonly string[];
  readonly timeoutMs: number;
}

export interface IdleOpenValue {
  readonly opened: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly ms: number;
}

// Worker-side state between idle-open and idle-close.
let held: net.Socket[] = [];
let dropped = 0;

export function idleOpenJob(p: IdleOpenParams): Promise<IdleOpenValue> {
  const t0 = performance.now();
  const before = held.length;
  let started = 0;
  let finished = 0;
  let errors = 0;
  let firstError: string | null = null;
  return new Promise((resolve) => {
    if (p.count === 0) return resolve({ opened: 0, errors: 0, firstError: null, ms: 0 });
    const startOne = (): void => {
      if (started >= p.count) return;
      started++;
      openTunnel(p.hop, p.dest, p.sources[started % p.sources.length], p.timeoutMs, (err, s) => {
        if (err || !s) {
          errors++;
          firstError ??= err?.message ?? 'no socket';
        } else {
          s.on('error', () => undefined);
          s.on('close', () => dropped++);
          held.push(s);
        }
        if (++finished === p.count) resolve({ opened: held.length - before, errors, firstError, ms: performance.now() - t0 });
        else startOne();
      });
    };
    for (let i = 0; i < Math.min(p.concurrency, p.count); i++) startOne();
  });
}

export async function idleCloseJob(): Promise<{ closed: number; dropped: number }> {
  const closed = held.length;
  const lost = dropped;
  for (const s of held) {
    s.removeAllListeners('close'); // closing them ourselves is not a drop
    s.destroy();
  }
  held = [];
  dropped = 0;
  return { closed, dropped: lost };
}

/** Tunnels a single proxy process can hold: two descriptors each, plus headroom. */
export function idleCapacity(requested: number): number {
  return Math.min(requested, Math.floor((hardNofile - 256) / 2));
}

export async function runIdle(ctx: BenchContext): Promise<Row[]> {
  const rows: Row[] = [];
  const n = idleCapacity(ctx.opts.idleTunnels);
  const capped = n < ctx.opts.idleTunnels;
  for (const p of ctx.proxies) {
    const hop = p.connect ?? p.socks5!;
    const label = targetLabel(p.name, hop.kind === 'connect' ? 'CONNECT' : 'SOCKS5');
    ctx.log(`idle: ${label} (${n} tunnels)`);
    // Two steps: the per-tunnel cost is the slope between n/2 and n held tunnels, which a
    // garbage-collected heap left over from earlier workloads cannot distort as it would a
    // "before" baseline.
    const open = async (count: number): Promise<{ opened: number; errors: number; ms: number; firstError: string | null; genCpuPct: number }> => {
      const r = await ctx.pool.runAll<IdleOpenValue>(
        'idle-open',
        (i) => ({ hop, dest: ctx.origin!.dest, count: share(count, ctx.pool.size, i), concurrency: 64, sources: sourceAddresses(16), timeoutMs: 20_000 }),
        180_000,
      );
      await sleep(2000); // let the proxy finish allocating for the last connections
      return {
        opened: r.values.reduce((a, v) => a + v.opened, 0),
        errors: r.values.reduce((a, v) => a + v.errors, 0),
        ms: Math.max(...r.values.map((v) => v.ms)),
        firstError: r.values.find((v) => v.firstError)?.firstError ?? null,
        genCpuPct: r.genCpuPct,
      };
    };
    await sleep(1000);
    // What the earlier workloads left resident in this same process (the control plane's
    // peak of ~12,000 sessions from the previous repetition among them), before any tunnel.
    const before = treeMemory(p.pid);
    const first = await open(Math.floor(n / 2));
    const half = treeMemory(p.pid);
    const second = await open(n - Math.floor(n / 2));
    const mem = treeMemory(p.pid);
    // What holding them costs: the proxy's CPU while every tunnel is silent (its timers and
    // periodic sweeps over open connections are all that runs).
    const idleCpu = await withTreeCpu(p.pid, () => sleep(ctx.opts.quick ? 2000 : 5000));
    const closed = await ctx.pool.runAll<{ closed: number; dropped: number }>('idle-close', () => null, 30_000);
    const opened = first.opened + second.opened;
    const errors = first.errors + second.errors;
    const droppedCount = closed.values.reduce((a, v) => a + v.dropped, 0);
    const perTunnelKiB = second.opened > 0 ? ((mem.rssMiB - half.rssMiB) * 1024) / second.opened : NaN;
    const held = opened - droppedCount;
    const notes: string[] = [];
    if (capped) notes.push(`capped at ${n} by the hard open-file limit (${hardNofile}); rss_10k projects 10,000 from the per-tunnel cost`);
    if (errors > 0) notes.push(`${errors} tunnels failed to open, first: ${first.firstError ?? second.firstError}`);
    if (droppedCount > 0) notes.push(`${droppedCount} tunnels were closed by the proxy or origin while held`);
    if (mem.processes > 1 || mem.threads > 32) notes.push(`${mem.processes} processes, ${mem.threads} threads`);
    rows.push({
      workload: 'idle',
      target: label,
      proxy: p.name,
      family: hop.kind,
      metrics: {
        tunnels: held,
        rss_mib: mem.rssMiB,
        rss_before_mib: before.rssMiB,
        pss_mib: mem.pssMiB,
        kib_per_tunnel: perTunnelKiB,
        rss_10k_mib: mem.rssMiB + (perTunnelKiB * Math.max(0, 10_000 - held)) / 1024,
        open_rate: opened / ((first.ms + second.ms) / 1000),
      },
      genCpuPct: Math.max(first.genCpuPct, second.genCpuPct),
      proxyCpuPct: idleCpu.cpuPct,
      proxySysPct: idleCpu.sysPct,
      machineCpuPct: idleCpu.machinePct,
      notes,
    });
    await sleep(1000);
  }
  return rows;
}
