// Workload 3, forwarding: plain http:// requests in absolute form over keep-alive client
// connections, the way HTTP_PROXY clients send them. wrk (C, event-driven) generates the
// load when installed, with a Lua script setting the absolute-form target and
// Proxy-Authorization; otherwise the Node keep-alive client in the load workers does.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { keepAliveLoop, sourceAddresses } from './clients.js';
import { targetLabel, type BenchContext } from './context.js';
import { share } from './pool.js';
import { sleep, spawnManaged, which, withTreeCpu } from './procs.js';
import { Reservoir, summarise } from './stats.js';
import { ORIGIN_SMALL_PATH, type ForwardHop, type Row } from './targets.js';

export interface ForwardParams {
  readonly host: string;
  readonly port: number;
  readonly request: string;
  readonly connections: number;
  readonly durationMs: number;
  readonly sources: readonly string[];
}

export interface ForwardValue {
  readonly ok: number;
  readonly bad: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly latenciesMs: number[];
}

/** Worker side (fallback when wrk is missing). */
export async function forwardJob(p: ForwardParams): Promise<ForwardValue> {
  const latencies = new Reservoir(200_000);
  const request = Buffer.from(p.request, 'latin1');
  const r = await keepAliveLoop(
    { host: p.host, port: p.port, connections: p.connections, endAt: Date.now() + p.durationMs, sources: p.sources, request: () => request },
    (ms) => latencies.add(ms),
  );
  return { ok: r.ok, bad: r.bad, errors: r.errors, firstError: r.firstError, latenciesMs: latencies.samples };
}

interface Measured {
  readonly rate: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  readonly genCpuPct: number | null;
  readonly note: string | null;
}

function requestFor(hop: ForwardHop | null, origin: string): string {
  const target = hop ? `http://${origin}${ORIGIN_SMALL_PATH}` : ORIGIN_SMALL_PATH;
  const auth = hop?.auth ? `Proxy-Authorization: Basic ${hop.auth}\r\n` : '';
  return `GET ${target} HTTP/1.1\r\nHost: ${origin}\r\nUser-Agent: sluice-bench\r\n${auth}\r\n`;
}

async function viaWrk(ctx: BenchContext, wrk: string, label: string, hop: ForwardHop | null): Promise<Measured> {
  const origin = `${ctx.origin!.dest.host}:${ctx.origin!.dest.port}`;
  const script = join(ctx.tmp, `wrk-${label.replace(/\W+/g, '-')}.lua`);
  const lua = (s: string): string => JSON.stringify(s); // a JSON string is a valid Lua string here
  writeFileSync(
    script,
    [
      `wrk.method = "GET"`,
      `wrk.path = ${lua(hop ? `http://${origin}${ORIGIN_SMALL_PATH}` : ORIGIN_SMALL_PATH)}`,
      `wrk.headers["Host"] = ${lua(origin)}`,
      hop?.auth ? `wrk.headers["Proxy-Authorization"] = ${lua(`Basic ${hop.auth}`)}` : '',
      `function done(summary, latency, requests)`,
      `  local e = summary.errors`,
      `  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d}\\n',`,
      `    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))`,
      `end`,
    ].join('\n'),
  );
  const url = hop ? `http://${hop.host}:${hop.port}/` : `http://${origin}/`;
  const args = ['-t', String(ctx.pool.size), '-c', String(ctx.opts.connections), '-d', `${ctx.opts.durationSec}s`, '--timeout', '5s', '-s', script, url];
  // bash's `times` prints the CPU its children (wrk) used: the generator's own cost.
  const m = spawnManaged(`wrk ${label}`, 'bash', ['-c', 'wrk "$@"; rc=$?; times 1>&2; exit $rc', 'wrk-run', ...args]);
  const t0 = performance.now();
  const how = await Promise.race([m.exited, sleep(ctx.opts.durationSec * 1000 + 30_000).then(() => 'timeout')]);
  const wall = (performance.now() - t0) / 1000;
  if (how === 'timeout') await m.stop(1000);
  const out = m.output();
  const json = /WRKJSON (\{.*\})/.exec(out);
  if (!json) throw new Error(`wrk gave no result (${how}): ${out.slice(-400)}`);
  const r = JSON.parse(json[1]!) as { requests: number; duration_us: number; socket_errors: number; status_errors: number; p50_us: number; p99_us: number };
  const times = [...out.matchAll(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/g)].pop();
  const cpu = times ? Number(times[1]) * 60 + Number(times[2]) + Number(times[3]) * 60 + Number(times[4]) : NaN;
  const good = r.requests - r.status_errors;
  const errors = r.socket_errors + r.status_errors;
  return {
    rate: good / (r.duration_us / 1e6),
    p50: r.p50_us / 1000,
    p99: r.p99_us / 1000,
    errors,
    genCpuPct: Number.isFinite(cpu) ? (100 * cpu) / wall : null,
    // wrk counts a connection the server closes after a response as a read error: a proxy
    // without client keep-alive shows up here with about one error per request.
    note: errors > 0 ? `${r.socket_errors} socket errors (incl. connections closed after a response), ${r.status_errors} non-2xx/3xx` : null,
  };
}

async function viaWorkers(ctx: BenchContext, hop: ForwardHop | null): Promise<Measured> {
  const dest = ctx.origin!.dest;
  const origin = `${dest.host}:${dest.port}`;
  const durationMs = ctx.opts.durationSec * 1000;
  const params = (i: number): ForwardParams => ({
    host: hop ? hop.host : dest.host,
    port: hop ? hop.port : dest.port,
    request: requestFor(hop, origin),
    connections: share(ctx.opts.connections, ctx.pool.size, i),
    durationMs,
    sources: sourceAddresses(16),
  });
  const r = await ctx.pool.runAll<ForwardValue>('forward', params, durationMs + 60_000);
  const ok = r.values.reduce((a, v) => a + v.ok, 0);
  const errors = r.values.reduce((a, v) => a + v.errors + v.bad, 0);
  const lat = summarise(r.values.flatMap((v) => v.latenciesMs));
  const first = r.values.find((v) => v.firstError)?.firstError;
  return { rate: ok / (durationMs / 1000), p50: lat.p50, p99: lat.p99, errors, genCpuPct: r.genCpuPct, note: errors > 0 ? `${errors} errors, first: ${first}` : null };
}

export async function runForward(ctx: BenchContext): Promise<Row[]> {
  const wrk = which('wrk');
  const targets: Array<{ label: string; proxy: string | null; pid: number | null; hop: ForwardHop | null }> = [];
  for (const p of ctx.proxies) if (p.forward) targets.push({ label: targetLabel(p.name, 'HTTP'), proxy: p.name, pid: p.pid, hop: p.forward });
  targets.push({ label: 'direct', proxy: null, pid: null, hop: null });
  const rows: Row[] = [];
  for (const t of targets) {
    ctx.log(`forwarding: ${t.label} (${wrk ? 'wrk' : 'node workers'}, ${ctx.opts.connections} keep-alive connections, ${ctx.opts.durationSec} s)`);
    let m: Measured;
    let cpuPct: number | null = null;
    let sysPct: number | null = null;
    let machinePct: number | null = null;
    try {
      ({ value: m, cpuPct, sysPct, machinePct } = await withTreeCpu(t.pid, () => (wrk ? viaWrk(ctx, wrk, t.label, t.hop) : viaWorkers(ctx, t.hop))));
    } catch (err) {
      m = { rate: NaN, p50: NaN, p99: NaN, errors: NaN, genCpuPct: null, note: (err as Error).message };
    }
    rows.push({
      workload: 'forward',
      target: t.label,
      proxy: t.proxy,
      family: t.proxy ? 'http' : 'direct',
      metrics: { rate: m.rate, p50_ms: m.p50, p99_ms: m.p99, errors: m.errors },
      genCpuPct: m.genCpuPct,
      proxyCpuPct: cpuPct,
      proxySysPct: sysPct,
      machineCpuPct: machinePct,
      notes: [wrk ? 'generator: wrk' : 'generator: node workers (wrk not installed)', ...(m.note ? [m.note] : [])],
    });
    await sleep(500);
  }
  return rows;
}
