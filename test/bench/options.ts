// Command-line flags of `npm run bench` (after `--`).
import { parseArgs } from 'node:util';

export const WORKLOADS = ['tunnel', 'bulk', 'forward', 'idle', 'control', 'decision'] as const;
export type Workload = (typeof WORKLOADS)[number];

export interface Options {
  readonly quick: boolean;
  readonly repeat: number;
  readonly out: string;
  readonly only: ReadonlySet<Workload>;
  readonly skipPeers: boolean;
  /** Tunnel-rate and forwarding measurement time per target. */
  readonly durationSec: number;
  /** Control-plane measurement time per operation. */
  readonly controlSec: number;
  readonly bulkMiB: number;
  readonly idleTunnels: number;
  /** Global rules loaded into the sluice under test. */
  readonly sluiceRules: number;
  /** Concurrent clients for tunnel rate, forwarding and the control plane. */
  readonly connections: number;
  readonly workers: number;
  readonly decisionRules: number;
  readonly decisionSessions: number;
  /** Directory for sluice's --cpu-prof output, or null. */
  readonly profileDir: string | null;
}

export const USAGE = `usage: npm run bench -- [flags]
  --quick               3 s per target, 64 MiB bulk file, 2,000 idle tunnels
  --repeat N            run everything N times and report medians (default 1)
  --out FILE            JSON results (default bench-results/<timestamp>.json)
  --only w1,w2          workloads: ${WORKLOADS.join(', ')}
  --skip-peers          measure sluice (and direct) only
  --duration S          seconds per target for tunnel rate and forwarding (default 10)
  --bulk-mib N          size of the bulk file (default 1024)
  --idle N              idle tunnels to hold (default 10000)
  --rules N             global rules loaded into sluice (default 10000)
  --connections N       concurrent clients (default 32)
  --profile DIR         run sluice under node --cpu-prof, profiles written to DIR
`;

function positiveInt(name: string, text: string | undefined, def: number): number {
  if (text === undefined) return def;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
  return n;
}

export function parseOptions(argv: readonly string[]): Options | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean', default: false },
      repeat: { type: 'string' },
      out: { type: 'string' },
      only: { type: 'string' },
      'skip-peers': { type: 'boolean', default: false },
      duration: { type: 'string' },
      'bulk-mib': { type: 'string' },
      idle: { type: 'string' },
      rules: { type: 'string' },
      connections: { type: 'string' },
      profile: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return 'help';
  const quick = values.quick === true;
  const only = new Set<Workload>();
  for (const w of (values.only ?? WORKLOADS.join(',')).split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(WORKLOADS as readonly string[]).includes(w)) throw new Error(`--only: unknown workload ${w} (known: ${WORKLOADS.join(', ')})`);
    only.add(w as Workload);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return {
    quick,
    repeat: positiveInt('repeat', values.repeat, 1),
    out: values.out ?? `bench-results/${stamp}.json`,
    only,
    skipPeers: values['skip-peers'] === true,
    durationSec: positiveInt('duration', values.duration, quick ? 3 : 10),
    controlSec: quick ? 2 : 5,
    bulkMiB: positiveInt('bulk-mib', values['bulk-mib'], quick ? 64 : 1024),
    idleTunnels: positiveInt('idle', values.idle, quick ? 2000 : 10_000),
    sluiceRules: positiveInt('rules', values.rules, 10_000),
    connections: positiveInt('connections', values.connections, 32),
    workers: 2,
    decisionRules: 100_000,
    decisionSessions: 10_000,
    profileDir: values.profile ?? null,
  };
}
