// Workload 2, bulk: one download of the large file through one tunnel per target; MiB/s
// from the request being written to the last byte (tunnel set-up excluded).
import { closingGet, openTunnel } from './clients.js';
import type { BenchContext } from './context.js';
import { sleep, withTreeCpu } from './procs.js';
import { ORIGIN_BULK_PATH, type Dest, type Hop, type Row } from './targets.js';
import { tunnelTargets } from './w-tunnel.js';

export interface BulkParams {
  readonly hop: Hop;
  readonly dest: Dest;
  readonly path: string;
  readonly expectBytes: number;
  readonly timeoutMs: number;
}

export interface BulkValue {
  readonly bytes: number;
  readonly ms: number;
  readonly error: string | null;
}

/** Worker side: counts bytes until the origin closes (Connection: close). */
export function bulkJob(p: BulkParams): Promise<BulkValue> {
  return new Promise((resolve) => {
    let bytes = 0;
    const count = (chunk: Buffer): void => void (bytes += chunk.length);
    openTunnel(p.hop, p.dest, undefined, p.timeoutMs, (err, s) => {
      if (err || !s) return resolve({ bytes: 0, ms: 0, error: err?.message ?? 'no socket' });
      let done = false;
      const t0 = performance.now();
      const finish = (error: string | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        s.destroy();
        resolve({ bytes, ms: performance.now() - t0, error });
      };
      const timer = setTimeout(() => finish(`timed out after ${bytes} bytes`), p.timeoutMs);
      s.on('end', () => finish(bytes >= p.expectBytes ? null : `short body: ${bytes} of ${p.expectBytes} bytes`));
      s.on('error', (e) => finish(e.message));
      s.write(closingGet(p.dest, p.path));
    }, count);
  });
}

export async function runBulk(ctx: BenchContext): Promise<Row[]> {
  const rows: Row[] = [];
  const origin = ctx.origin!;
  const mib = origin.bulkBytes / 1048576;
  // One untimed direct download first: reading the file the first time fills the page
  // cache (even for a sparse file), a cost that would otherwise fall on the first target.
  ctx.log(`bulk: warming the origin's page cache (${mib} MiB, direct)`);
  await ctx.pool.worker(0).run<BulkValue>('bulk', { hop: { kind: 'direct' }, dest: origin.dest, path: ORIGIN_BULK_PATH, expectBytes: origin.bulkBytes, timeoutMs: 300_000 }, 330_000);
  for (const t of tunnelTargets(ctx)) {
    ctx.log(`bulk: ${t.label} (${mib} MiB)`);
    const params: BulkParams = { hop: t.hop, dest: origin.dest, path: ORIGIN_BULK_PATH, expectBytes: origin.bulkBytes, timeoutMs: 300_000 };
    const { value: out, cpuPct, sysPct, machinePct } = await withTreeCpu(t.pid, () => ctx.pool.worker(0).run<BulkValue>('bulk', params, 330_000));
    const v = out.value;
    rows.push({
      workload: 'bulk',
      target: t.label,
      proxy: t.proxy,
      family: t.family,
      metrics: v.error ? { mibps: NaN, seconds: NaN } : { mibps: v.bytes / 1048576 / (v.ms / 1000), seconds: v.ms / 1000 },
      genCpuPct: out.wallMs > 0 ? (100 * out.cpuMs) / out.wallMs : null,
      proxyCpuPct: cpuPct,
      proxySysPct: sysPct,
      machineCpuPct: machinePct,
      notes: v.error ? [v.error] : [],
    });
    await sleep(300);
  }
  return rows;
}
