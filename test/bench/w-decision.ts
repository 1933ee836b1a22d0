// Workload 5, decision engine, in-process (no sockets): PolicyState filled with N global
// rules (exact hosts, wildcards, CIDRs) and 10,000 sessions of 20 rules, queried with a
// mix of matching and non-matching destinations through subjectFor + decide, as the gate
// does per connection. Run at 1,000 and 100,000 global rules: the cost must stay flat.
import { parseHost, type Destination } from '../../src/policy/host.js';
import { decide, subjectFor } from '../../src/policy/resolver.js';
import type { RuleRecord } from '../../src/policy/rules.js';
import { PolicyState, type SessionRecord } from '../../src/policy/state.js';
import type { BenchContext } from './context.js';
import { addressInside, globalRules, prng, sessionRules, type RuleSpec } from './policy-gen.js';
import { LoadWorker } from './pool.js';
import { summarise } from './stats.js';
import type { Row } from './targets.js';

export interface DecisionParams {
  readonly sizes: readonly number[];
  readonly sessions: number;
  readonly rulesPerSession: number;
  readonly queries: number;
  readonly throughputMs: number;
  readonly latencySamples: number;
}

export interface DecisionResult {
  readonly globalRules: number;
  readonly buildMs: number;
  readonly heapMiB: number;
  readonly rate: number;
  readonly meanNs: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly p999Us: number;
  readonly allowPct: number;
}

interface Query {
  readonly container: string;
  readonly dest: Destination;
  readonly port: number;
}

interface Built {
  readonly state: PolicyState;
  readonly queries: Query[];
  readonly buildMs: number;
  readonly heapMiB: number;
}

const gc = (): void => (globalThis as { gc?: () => void }).gc?.();

function build(nGlobal: number, p: DecisionParams): Built {
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const now = Date.now();
  let id = 1;
  const record = (r: RuleSpec, layer: 'global' | 'session', sessionId: string | null): RuleRecord => ({
    id: id++,
    layer,
    sessionId,
    containerPattern: r.container,
    destinationPattern: r.destination,
    portPattern: r.port,
    action: r.action,
    expiresAt: null,
    notes: null,
    createdAt: now,
  });
  const state = new PolicyState();
  const globals = globalRules(nGlobal);
  for (const g of globals) state.putRule(record(g, 'global', null));
  const containers: string[] = [];
  const perContainer: RuleSpec[][] = [];
  for (let s = 0; s < p.sessions; s++) {
    const container = `sbx-${s}`;
    const rules = sessionRules(container, p.rulesPerSession, 1000 + s);
    const session: SessionRecord = {
      id: `s-${s}`,
      container,
      seq: s + 1,
      createdAt: now,
      expiresAt: now + 86_400_000,
      ttlSeconds: 86_400,
      allowAll: false,
      sourceIps: [],
      metadata: null,
      tokenHash: `hash-${s}`,
    };
    state.putSession(session, rules.map((r) => record(r, 'session', session.id)));
    containers.push(container);
    perContainer.push(rules);
  }
  const buildMs = performance.now() - t0;
  gc();
  const heapMiB = (process.memoryUsage().heapUsed - heap0) / 1048576;
  return { state, queries: queryMix(globals, containers, perContainer, p.queries), buildMs, heapMiB };
}

/**
 * 20% exact global hosts, 15% names under global wildcards, 15% addresses inside global
 * CIDRs, 20% the container's own session rules, 20% unknown names (a full suffix walk to
 * default deny), 10% unknown addresses (every CIDR prefix length probed).
 */
function queryMix(globals: readonly RuleSpec[], containers: readonly string[], perContainer: readonly RuleSpec[][], n: number): Query[] {
  const rnd = prng(99);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  const hosts = globals.filter((r) => !r.destination.includes('*') && !r.destination.includes('/') && !/^[\d.:]+$/.test(r.destination));
  const wild = globals.filter((r) => r.destination.startsWith('*'));
  const cidrs = globals.filter((r) => r.destination.includes('/') && !r.destination.includes(':'));
  const ports = [443, 443, 443, 80, 8080, 22];
  const out: Query[] = [];
  for (let i = 0; i < n; i++) {
    const c = Math.floor(rnd() * containers.length);
    const k = rnd();
    let host: string;
    if (k < 0.2) host = pick(hosts).destination;
    else if (k < 0.35) host = `a${i}.b.${pick(wild).destination.replace(/^\*+\./, '')}`;
    else if (k < 0.5) host = addressInside(pick(cidrs).destination, rnd);
    else if (k < 0.7) host = pick(perContainer[c]!).destination.replace(/^\*\*\./, 'x.');
    else if (k < 0.9) host = `host-${i}.nowhere-${i % 1000}.example.xyz`;
    else host = `100.${64 + (i % 64)}.${Math.floor(rnd() * 256)}.${1 + Math.floor(rnd() * 254)}`;
    // CIDR session rules make some picks a network, not a host: use an address inside it.
    if (host.includes('/')) host = addressInside(host, rnd);
    out.push({ container: containers[c]!, dest: parseHost(host), port: pick(ports) });
  }
  return out;
}

function measure(b: Built, p: DecisionParams): Omit<DecisionResult, 'globalRules' | 'buildMs' | 'heapMiB'> {
  const { state, queries } = b;
  const now = Date.now();
  const q = queries.length;
  let allows = 0;
  // Throughput: back-to-back decisions for a fixed time, clock read every 4096.
  let count = 0;
  const t0 = performance.now();
  const until = t0 + p.throughputMs;
  for (;;) {
    for (let i = 0; i < 4096; i++, count++) {
      const x = queries[count % q]!;
      if (decide(state, subjectFor(state, x.container, now), x.dest, x.port, now).action === 'allow') allows++;
    }
    if (performance.now() >= until) break;
  }
  const elapsed = performance.now() - t0;
  // Latency: each decision timed on its own (includes ~30-50 ns of timer overhead).
  const samples = new Float64Array(p.latencySamples);
  for (let i = 0; i < p.latencySamples; i++) {
    const x = queries[i % q]!;
    const s = process.hrtime.bigint();
    decide(state, subjectFor(state, x.container, now), x.dest, x.port, now);
    samples[i] = Number(process.hrtime.bigint() - s) / 1000;
  }
  const lat = summarise(samples);
  return { rate: count / (elapsed / 1000), meanNs: (elapsed * 1e6) / count, p50Us: lat.p50, p99Us: lat.p99, p999Us: lat.p999, allowPct: (100 * allows) / count };
}

/** Worker side: builds every size, then measures them alternately (3 rounds, median), so JIT warm-up and GC drift hit all sizes alike. */
export async function decisionJob(p: DecisionParams): Promise<DecisionResult[]> {
  const built = p.sizes.map((n) => build(n, p));
  const rounds: Array<Array<ReturnType<typeof measure>>> = p.sizes.map(() => []);
  for (let r = 0; r < 3; r++) {
    built.forEach((b, i) => rounds[i]!.push(measure(b, p)));
  }
  const mid = <K extends keyof ReturnType<typeof measure>>(i: number, k: K): number => rounds[i]!.map((m) => m[k]).sort((a, b) => a - b)[1]!;
  return p.sizes.map((n, i) => ({
    globalRules: n,
    buildMs: built[i]!.buildMs,
    heapMiB: built[i]!.heapMiB,
    rate: mid(i, 'rate'),
    meanNs: mid(i, 'meanNs'),
    p50Us: mid(i, 'p50Us'),
    p99Us: mid(i, 'p99Us'),
    p999Us: mid(i, 'p999Us'),
    allowPct: mid(i, 'allowPct'),
  }));
}

export async function runDecision(ctx: BenchContext): Promise<Row[]> {
  const sizes = [ctx.opts.decisionRules, 1000];
  ctx.log(`decision engine: ${sizes.join(' and ')} global rules, ${ctx.opts.decisionSessions} sessions x 20 rules`);
  // Its own process with room for the large policy; the CPU it uses is the engine itself.
  const worker = LoadWorker.start(99, ['--max-old-space-size=8192', '--expose-gc']);
  try {
    const params: DecisionParams = {
      sizes,
      sessions: ctx.opts.decisionSessions,
      rulesPerSession: 20,
      queries: 100_000,
      throughputMs: ctx.opts.quick ? 500 : 2000,
      latencySamples: ctx.opts.quick ? 100_000 : 300_000,
    };
    const out = await worker.run<DecisionResult[]>('decision', params, 600_000);
    return out.value.map((r) => ({
      workload: 'decision',
      target: `${r.globalRules.toLocaleString('en-US')} global rules`,
      proxy: 'sluice',
      family: 'engine',
      metrics: {
        global_rules: r.globalRules,
        rate: r.rate,
        mean_ns: r.meanNs,
        p50_us: r.p50Us,
        p99_us: r.p99Us,
        p999_us: r.p999Us,
        build_s: r.buildMs / 1000,
        heap_mib: r.heapMiB,
        allow_pct: r.allowPct,
      },
      genCpuPct: null,
      proxyCpuPct: null,
      proxySysPct: null,
      machineCpuPct: null,
      notes: [`${ctx.opts.decisionSessions.toLocaleString('en-US')} sessions x 20 rules; policy heap ${r.heapMiB.toFixed(0)} MiB, built in ${(r.buildMs / 1000).toFixed(1)} s`],
    }));
  } finally {
    await worker.stop();
  }
}
