// Workload 6, control plane: session creates (10 rules each), heartbeats and deletes through
// the API, from concurrent keep-alive HTTP clients, as a busy sandbox launcher would send
// them. The deletes also leave sluice as the workload found it: sessions kept from one
// repetition would otherwise be in memory (and in the figures) for the next.
import { keepAliveLoop, sourceAddresses } from './clients.js';
import type { BenchContext } from './context.js';
import { share } from './pool.js';
import { sleep, withTreeCpu } from './procs.js';
import { Reservoir, summarise } from './stats.js';
import type { Row } from './targets.js';

export interface ControlParams {
  readonly phase: 'create' | 'heartbeat' | 'delete';
  readonly host: string;
  readonly port: number;
  readonly token: string;
  readonly worker: number;
  readonly connections: number;
  readonly durationMs: number;
}

export interface ControlValue {
  readonly ok: number;
  readonly bad: number;
  readonly errors: number;
  readonly firstError: string | null;
  readonly latenciesMs: number[];
  readonly elapsedMs: number;
}

// Worker-side: sessions this worker created, heartbeated in the second phase.
const created: string[] = [];

function createBody(name: string, seq: number): string {
  const rules: string[] = [];
  for (let j = 0; j < 10; j++) {
    const dest =
      j < 5 ? `pkg-${j}.registry-${seq % 997}.example.io` : j < 8 ? `**.mirror-${j}-${seq % 89}.example.org` : `10.${seq % 256}.${j}.0/24`;
    rules.push(`{"destination_pattern":"${dest}","port_pattern":"${j % 2 === 0 ? '443' : '80,443'}","action":"${j === 9 ? 'deny' : 'allow'}"}`);
  }
  return `{"container_name":"${name}","ttl_seconds":900,"network_rules":[${rules.join(',')}]}`;
}

export async function controlJob(p: ControlParams): Promise<ControlValue> {
  const latencies = new Reservoir(200_000);
  const started = performance.now();
  const auth = `Authorization: Bearer ${p.token}\r\n`;
  const host = `Host: ${p.host}:${p.port}\r\n`;
  let seq = 0;
  let hb = 0;
  const requests = {
    create: (conn: number): Buffer => {
      const body = createBody(`cp-${p.worker}-${conn}-${seq}`, seq++);
      return Buffer.from(`POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    },
    heartbeat: (): Buffer => Buffer.from(`POST /api/sessions/${created[hb++ % created.length]}/heartbeat HTTP/1.1\r\n${host}${auth}Content-Length: 0\r\n\r\n`),
    // Until every session this worker created is gone.
    delete: (): Buffer | null => {
      const id = created.pop();
      return id === undefined ? null : Buffer.from(`DELETE /api/sessions/${id} HTTP/1.1\r\n${host}${auth}Content-Length: 0\r\n\r\n`);
    },
  };
  const request = requests[p.phase];
  if (p.phase === 'heartbeat' && created.length === 0) throw new Error('no sessions to heartbeat (the create phase made none)');
  const r = await keepAliveLoop(
    {
      host: p.host,
      port: p.port,
      connections: p.connections,
      endAt: Date.now() + p.durationMs,
      sources: sourceAddresses(4),
      request,
      wantBody: p.phase === 'create',
      onResponse: (_c, status, body) => {
        if (p.phase !== 'create' || status !== 200 || !body) return;
        const id = /"session_id":"([^"]+)"/.exec(body.toString('utf8'))?.[1];
        if (id) created.push(id);
      },
    },
    (ms) => latencies.add(ms),
  );
  return { ok: r.ok, bad: r.bad, errors: r.errors, firstError: r.firstError, latenciesMs: latencies.samples, elapsedMs: performance.now() - started };
}

export async function runControl(ctx: BenchContext): Promise<Row[]> {
  const s = ctx.sluice!;
  const durationMs = ctx.opts.controlSec * 1000;
  const rows: Row[] = [];
  const labels = { create: 'session create (10 rules)', heartbeat: 'session heartbeat', delete: 'session delete' };
  for (const phase of ['create', 'heartbeat', 'delete'] as const) {
    const label = labels[phase];
    ctx.log(`control plane: ${label} (${ctx.opts.connections} clients, ${phase === 'delete' ? 'every session created' : `${ctx.opts.controlSec} s`})`);
    const params = (i: number): ControlParams => ({
      phase,
      host: s.api.host,
      port: s.api.port,
      token: s.api.token,
      worker: i,
      connections: share(ctx.opts.connections, ctx.pool.size, i),
      // Deletes run until every session is gone (bounded by the job's timeout).
      durationMs: phase === 'delete' ? 120_000 : durationMs,
    });
    const { value, cpuPct, sysPct, machinePct } = await withTreeCpu(s.managed.pid, () => ctx.pool.runAll<ControlValue>('control', params, (phase === 'delete' ? 120_000 : durationMs) + 60_000));
    const ok = value.values.reduce((a, v) => a + v.ok, 0);
    const errors = value.values.reduce((a, v) => a + v.errors + v.bad, 0);
    const lat = summarise(value.values.flatMap((v) => v.latenciesMs));
    const first = value.values.find((v) => v.firstError)?.firstError;
    rows.push({
      workload: 'control',
      target: label,
      proxy: 'sluice',
      family: 'api',
      metrics: { rate: ok / (Math.max(...value.values.map((v) => v.elapsedMs)) / 1000), p50_ms: lat.p50, p99_ms: lat.p99, errors },
      genCpuPct: value.genCpuPct,
      proxyCpuPct: cpuPct,
      proxySysPct: sysPct,
      machineCpuPct: machinePct,
      notes: errors > 0 ? [`${errors} errors/non-200, first: ${first ?? 'non-200 status'}`] : [],
    });
    await sleep(500);
  }
  return rows;
}
