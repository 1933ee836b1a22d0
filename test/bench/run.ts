// `npm run bench`: sluice side by side with Squid, tinyproxy, Dante and microsocks, all on
// loopback. Starts the origin, sluice (child process, 10k-rule policy, identity on) and
// whichever peers are installed, drives each workload from separate load-generator
// processes, and prints a table plus ratios and the issue's targets; JSON goes to --out.
// Every child is killed on the way out, including on errors and Ctrl-C.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem, release } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchContext, WorkloadRunner } from './context.js';
import { parseOptions, USAGE, WORKLOADS, type Options, type Workload } from './options.js';
import { startOrigin, type Origin } from './origin.js';
import { NODE_RELAY, startPeers, type PeerStatus } from './peers.js';
import { Pool } from './pool.js';
import { hardNofile, installExitHooks, interrupted, type Managed } from './procs.js';
import { checkTargets, medianRows, ratios, renderText, writeJson } from './report.js';
import { startSluiceUnderTest, type SluiceUnderTest } from './sluice.js';
import type { ProxyUnderTest, Row } from './targets.js';
import { runBulk } from './w-bulk.js';
import { runControl } from './w-control.js';
import { runDecision } from './w-decision.js';
import { runForward } from './w-forward.js';
import { idleCapacity, runIdle } from './w-idle.js';
import { runTunnelRate } from './w-tunnel.js';

const RUNNERS: Record<Workload, WorkloadRunner> = {
  tunnel: runTunnelRate,
  bulk: runBulk,
  forward: runForward,
  idle: runIdle,
  control: runControl,
  decision: runDecision,
};

const log = (line: string): void => void process.stderr.write(`bench: ${line}\n`);

/** The sluice revision measured: commit, plus how many files differ from it. */
function revision(): string {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  const git = (args: string[]): string => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const dirty = git(['status', '--porcelain', '--untracked-files=no', '--', 'src']).split('\n').filter(Boolean).length;
    return `${git(['rev-parse', '--short', 'HEAD'])}${dirty > 0 ? ` + ${dirty} changed files in src/` : ''}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

async function main(): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const o = opts;
  const tmp = mkdtempSync(join(tmpdir(), 'sluice-bench-'));
  // Peers and nginx workers drop root privileges; they must be able to enter it.
  chmodSync(tmp, 0o755);
  const children: Managed[] = [];
  let pool: Pool | null = null;
  // One cleanup however many ways out call it (signal handler, normal end, finally).
  let cleaning: Promise<void> | null = null;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      await pool?.close();
      // sluice gets a graceful SIGTERM so --cpu-prof can write its profile.
      await Promise.all(children.reverse().map((m) => m.stop(m.name === 'sluice' ? 15_000 : 3000)));
      rmSync(tmp, { recursive: true, force: true });
    })());
  installExitHooks(cleanup);

  const started = new Date();
  const failures: string[] = [];
  let origin: Origin | null = null;
  let sluice: SluiceUnderTest | null = null;
  let peerStatuses: PeerStatus[] = [];
  try {
    const wants = (ws: Workload[]): boolean => ws.some((w) => o.only.has(w));
    const dataPlane = wants(['tunnel', 'bulk', 'forward', 'idle']);
    if (dataPlane) {
      log(`starting origin (bulk file ${o.bulkMiB} MiB)`);
      origin = await startOrigin(join(tmp, 'origin'), o.bulkMiB * 1048576);
      children.push(origin.managed);
      log(`origin: ${origin.kind} on ${origin.dest.host}:${origin.dest.port}`);
    }
    if (dataPlane || wants(['control'])) {
      log(`starting sluice (${o.sluiceRules.toLocaleString('en-US')} global rules${o.profileDir ? ', --cpu-prof' : ''})`);
      sluice = await startSluiceUnderTest({ dir: join(tmp, 'sluice'), origin: origin?.dest ?? null, globalRules: o.sluiceRules, profileDir: o.profileDir ? resolve(o.profileDir) : null });
      children.push(sluice.managed);
    }
    const proxies: ProxyUnderTest[] = sluice ? [sluice.proxy] : [];
    if (dataPlane) {
      const peers = await startPeers(join(tmp, 'peers'), o.skipPeers);
      children.push(...peers.managed);
      proxies.push(...peers.proxies);
      peerStatuses = peers.statuses;
      for (const s of peers.statuses) log(`peer ${s.name}: ${s.status}${s.version ? ` (${s.version})` : ''}${s.note ? ` — ${s.note}` : ''}`);
    }
    pool = Pool.start(o.workers);
    const ctx: BenchContext = { opts: o, origin, proxies, sluice, pool, tmp, log };

    const reps: Row[][] = [];
    for (let rep = 1; rep <= o.repeat; rep++) {
      if (o.repeat > 1) log(`repetition ${rep} of ${o.repeat}`);
      const rows: Row[] = [];
      for (const w of WORKLOADS) {
        if (!o.only.has(w)) continue;
        try {
          rows.push(...(await RUNNERS[w](ctx)));
          if (interrupted()) throw new Error(`interrupted by ${interrupted()}`);
        } catch (err) {
          if (interrupted()) throw new Error(`interrupted by ${interrupted()}`);
          const msg = `${w} (repetition ${rep}) failed: ${(err as Error).message}`;
          log(msg);
          failures.push(msg);
        }
        if (sluice && !sluice.managed.alive) {
          const msg = `sluice exited during ${w}: ${sluice.managed.output().slice(-600)}`;
          log(msg);
          failures.push(msg);
          throw new Error(msg);
        }
      }
      reps.push(rows);
    }

    const rows = medianRows(reps);
    const rs = ratios(rows);
    const checks = checkTargets(rows, rs);
    const cpu = cpus();
    const heading = [
      `sluice bench — ${started.toISOString()}${o.repeat > 1 ? ` — medians of ${o.repeat} runs` : ''}${o.quick ? ' — QUICK' : ''}`,
      `machine: ${cpu.length} x ${cpu[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}, open-file limit ${hardNofile}`,
      `origin: ${origin ? `${origin.kind}, 64 B /small, ${o.bulkMiB} MiB /bulk` : 'not started'}`,
      `sluice ${revision()}: child process, ${sluice ? `${sluice.rules.toLocaleString('en-US')} global rules` : 'not started'}, identity on (session credentials), log level warn, decisions not logged`,
      `peers: ${peerStatuses.map((s) => `${s.name} ${s.status}${s.version ? ` ${s.version}` : ''}`).join(', ') || 'none'} (peers: no auth, allow all; node-relay is the bench's bare Node.js relay, not a peer)`,
      `load: ${o.workers} generator processes, ${o.connections} clients, ${o.durationSec} s per tunnel/forwarding target, idle ${idleCapacity(o.idleTunnels).toLocaleString('en-US')} tunnels; CPU columns in % of one core (machine CPU = every process on the box; ${cpus().length * 100}% = saturated)`,
    ];
    const floor = ratios(rows, NODE_RELAY);
    process.stdout.write(renderText(rows, rs, checks, heading, floor) + '\n');
    if (failures.length > 0) process.stdout.write(`\nfailures:\n${failures.map((f) => `  ${f}`).join('\n')}\n`);

    await cleanup(); // stops sluice, so a --cpu-prof profile exists before we report it
    const profiles = o.profileDir ? readdirSync(resolve(o.profileDir)).filter((f) => f.endsWith('.cpuprofile')) : [];
    writeJson(o.out, {
      version: 1,
      started: started.toISOString(),
      finished: new Date().toISOString(),
      revision: revision(),
      machine: { cpus: cpu.length, model: cpu[0]?.model, memGiB: totalmem() / 2 ** 30, kernel: release(), node: process.version, nofile: hardNofile },
      options: { ...o, only: [...o.only] },
      origin: origin ? { kind: origin.kind, bulkBytes: origin.bulkBytes } : null,
      sluice: sluice ? { globalRules: sluice.rules, identity: 'credentials' } : null,
      peers: peerStatuses,
      results: rows,
      ratios: rs,
      node_relay_ratios: floor,
      targets: checks,
      repetitions: reps,
      failures,
    });
    log(`results written to ${o.out}`);
    if (o.profileDir) log(`cpu profiles in ${resolve(o.profileDir)}: ${profiles.join(', ') || 'none written'}`);
    return failures.length > 0 ? 1 : 0;
  } catch (err) {
    log(`failed: ${interrupted() ? (err as Error).message : ((err as Error).stack ?? String(err))}`);
    return 1;
  } finally {
    await cleanup();
  }
}

process.exitCode = await main();
// Load workers hold IPC channels; everything is stopped, so leave now.
process.exit();
