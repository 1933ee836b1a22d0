// Workload 1, tunnel rate: each client opens a tunnel (CONNECT or SOCKS5), fetches the
// 64-byte response with Connection: close, and starts over, for a fixed time. Measures
// whole-tunnel latency (TCP connect to the origin's close) and completed tunnels/s.
import { closingGet, openTunnel, sourceAddresses } from './clients.js';
import { targetLabel, type BenchContext } from './context.js';
import { share } from './pool.js';
import { sleep, withTreeCpu } from './procs.js';
import { Reservoir, summarise } from './stats.js';
import { ORIGIN_SMALL_PATH, SMALL_BODY_BYTES, type Dest, type Family, type Hop, type Row } from './targets.js';

export interface TunnelParams {
  readonly hop: Hop;
  readonly dest: Dest;
  readonly path: string;
  readonly connections: number;
  readonly durationMs: number;
  readonly sources: readonly string[];
  readonly timeoutMs: number;
}

export interface TunnelValue {
  readonly ok: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly latenciesMs: number[];
}

/** Worker side: `connections` independent open-fetch-close loops until the time is up. */
export function tunnelJob(p: TunnelParams): Promise<TunnelValue> {
  const endAt = Date.now() + p.durationMs;
  const latencies = new Reservoir(200_000);
  const request = closingGet(p.dest, p.path);
  let ok = 0;
  let errors = 0;
  let firstError: string | null = null;
  let src = 0;
  let running = p.connections;
  return new Promise((resolve) => {
    const loop = (): void => {
      if (Date.now() >= endAt) {
        if (--running === 0) resolve({ ok, errors, firstError, latenciesMs: latencies.samples });
        return;
      }
      const t0 = performance.now();
      let settled = false;
      const next = (err: Error | null): void => {
        if (settled) return;
        settled = true;
        if (err) {
          errors++;
          firstError ??= err.message;
          setTimeout(loop, 10); // a refusing proxy must not turn this into a busy loop
          return;
        }
        // Only tunnels completed inside the window count; the stragglers just finish.
        if (Date.now() <= endAt) {
          ok++;
          latencies.add(performance.now() - t0);
        }
        loop();
      };
      openTunnel(p.hop, p.dest, p.sources[src++ % p.sources.length], p.timeoutMs, (err, s) => {
        if (err || !s) return next(err ?? new Error('no socket'));
        let bytes = 0;
        let first: Buffer | null = null;
        s.setTimeout(p.timeoutMs, () => {
          s.destroy();
          next(new Error('response timeout'));
        });
        s.on('error', (e) => {
          s.destroy();
          next(e);
        });
        s.on('data', (c: Buffer) => {
          first ??= c;
          bytes += c.length;
        });
        s.on('end', () => {
          s.destroy();
          const good = first !== null && first.length >= 12 && first[9] === 0x32 && first[10] === 0x30 && first[11] === 0x30 && bytes > SMALL_BODY_BYTES;
          next(good ? null : new Error(`bad response: ${first?.toString('latin1', 0, 40).replace(/\s+/g, ' ') ?? 'nothing'}`));
        });
        s.on('close', () => next(new Error('closed before the response ended')));
        s.write(request);
      });
    };
    for (let c = 0; c < p.connections; c++) loop();
  });
}

interface Target {
  readonly label: string;
  readonly proxy: string | null;
  readonly pid: number | null;
  readonly family: Family;
  readonly hop: Hop;
}

/** Every proxy once per tunnel protocol it speaks, then the direct baseline. */
export function tunnelTargets(ctx: BenchContext): Target[] {
  const out: Target[] = [];
  for (const family of ['connect', 'socks5'] as const) {
    for (const p of ctx.proxies) {
      const hop = p[family];
      if (hop) out.push({ label: targetLabel(p.name, family === 'connect' ? 'CONNECT' : 'SOCKS5'), proxy: p.name, pid: p.pid, family, hop });
    }
  }
  out.push({ label: 'direct', proxy: null, pid: null, family: 'direct', hop: { kind: 'direct' } });
  return out;
}

export async function runTunnelRate(ctx: BenchContext): Promise<Row[]> {
  const rows: Row[] = [];
  const durationMs = ctx.opts.durationSec * 1000;
  const sources = sourceAddresses(16);
  for (const t of tunnelTargets(ctx)) {
    ctx.log(`tunnel rate: ${t.label} (${ctx.opts.connections} clients, ${ctx.opts.durationSec} s)`);
    const params = (i: number): TunnelParams => ({
      hop: t.hop,
      dest: ctx.origin!.dest,
      path: ORIGIN_SMALL_PATH,
      connections: share(ctx.opts.connections, ctx.pool.size, i),
      durationMs,
      sources,
      timeoutMs: 10_000,
    });
    const { value, cpuPct, sysPct, machinePct } = await withTreeCpu(t.pid, () => ctx.pool.runAll<TunnelValue>('tunnel', params, durationMs + 60_000));
    const ok = value.values.reduce((a, v) => a + v.ok, 0);
    const errors = value.values.reduce((a, v) => a + v.errors, 0);
    const lat = summarise(value.values.flatMap((v) => v.latenciesMs));
    const firstError = value.values.find((v) => v.firstError)?.firstError;
    rows.push({
      workload: 'tunnel',
      target: t.label,
      proxy: t.proxy,
      family: t.family,
      metrics: { rate: ok / (durationMs / 1000), p50_ms: lat.p50, p99_ms: lat.p99, errors },
      genCpuPct: value.genCpuPct,
      proxyCpuPct: cpuPct,
      proxySysPct: sysPct,
      machineCpuPct: machinePct,
      notes: errors > 0 ? [`${errors} errors, first: ${firstError}`] : [],
    });
    await sleep(500); // let connections in TIME_WAIT and CPU settle between targets
  }
  return rows;
}
