// Child processes of the bench (origin, sluice, peers, load workers): launched in their own
// process group with the open-file limit raised as far as the hard limit allows, and
// killed on every way out (normal end, error, SIGINT/SIGTERM), so no run leaves a proxy behind.
import { execFileSync, spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';

export interface Managed {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<string>;
  readonly alive: boolean;
  /** The last few KiB of its stdout+stderr, for error messages. */
  output(): string;
  /** SIGTERM (graceful: sluice writes its CPU profile then), SIGKILL to the group after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<Managed>();

/** The hard RLIMIT_NOFILE; children raise their soft limit to it (raising the hard one needs CAP_SYS_RESOURCE). */
export const hardNofile: number = (() => {
  try {
    const out = execFileSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
    return out === 'unlimited' ? 1_048_576 : Number(out) || 1024;
  } catch {
    return 1024;
  }
})();

// setpriv's parent-death signal kills a child even if the bench itself is SIGKILLed.
const setpriv = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--'] : [];

export interface SpawnOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  readonly nofile?: number;
  /** Adds an IPC channel (fd 3) for Node children. */
  readonly ipc?: boolean;
  /** Pass stdout/stderr through instead of capturing a tail. */
  readonly inherit?: boolean;
}

export function spawnManaged(name: string, cmd: string, args: readonly string[], opts: SpawnOptions = {}): Managed {
  const nofile = Math.min(opts.nofile ?? hardNofile, hardNofile);
  // bash raises the soft limit, then execs: the pid we hold is the program itself.
  const script = 'ulimit -n "$1" 2>/dev/null; shift; exec "$@"';
  const stdio: StdioOptions = opts.inherit ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'];
  if (opts.ipc) (stdio as unknown[]).push('ipc');
  const child = spawn('bash', ['-c', script, name, String(nofile), ...setpriv, cmd, ...args], {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio,
    detached: true,
  });
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-4096);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let alive = true;
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => {
      alive = false;
      live.delete(m);
      resolve(signal ?? String(code));
    });
    child.once('error', (err) => {
      alive = false;
      live.delete(m);
      tail += `\nspawn error: ${err.message}`;
      resolve('spawn-error');
    });
  });
  const m: Managed = {
    name,
    pid: child.pid ?? -1,
    child,
    exited,
    get alive() {
      return alive;
    },
    output: () => tail,
    async stop(graceMs = 3000) {
      if (!alive) return;
      signal(m, 'SIGTERM', false);
      const timer = new Promise<void>((r) => setTimeout(r, graceMs).unref());
      await Promise.race([exited, timer]);
      signal(m, 'SIGKILL', true);
      await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 1000).unref())]);
    },
  };
  live.add(m);
  return m;
}

function signal(m: Managed, sig: NodeJS.Signals, group: boolean): void {
  if (m.pid <= 0) return;
  try {
    process.kill(group ? -m.pid : m.pid, sig);
  } catch {
    /* already gone */
  }
}

/** Kills every child still running; synchronous so it also works from an 'exit' handler. */
export function killAll(): void {
  for (const m of [...live]) signal(m, 'SIGKILL', true);
}

let hooksInstalled = false;
let interruptedBy: NodeJS.Signals | null = null;

/** Set once SIGINT/SIGTERM arrived: the run stops at the next check and reports nothing. */
export function interrupted(): NodeJS.Signals | null {
  return interruptedBy;
}

/** Ensures children die with the bench; `cleanup` runs first on SIGINT/SIGTERM. */
export function installExitHooks(cleanup: () => Promise<void>): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAll);
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interruptedBy) return;
    interruptedBy = sig;
    process.stderr.write(`\nbench: ${sig}, stopping children\n`);
    const hard = setTimeout(() => process.exit(130), 5000);
    void cleanup().finally(() => {
      clearTimeout(hard);
      killAll();
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A port that was free a moment ago on `host` (peers need ports written into configs). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Waits until `host:port` accepts connections; throws (with the child's output) if it died or took too long. */
export async function waitForPort(m: Managed, host: string, port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!m.alive) throw new Error(`${m.name} exited before listening: ${m.output().trim().slice(-600)}`);
    if (await canConnect(host, port)) return;
    await sleep(50);
  }
  throw new Error(`${m.name} did not listen on ${host}:${port} within ${timeoutMs} ms: ${m.output().trim().slice(-600)}`);
}

// ---- /proc accounting -------------------------------------------------------

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface StatLine {
  readonly pid: number;
  readonly ppid: number;
  /** utime+cutime and stime+cstime in seconds (reaped children count too: Dante forks workers). */
  readonly userSec: number;
  readonly sysSec: number;
}

function readStat(pid: number): StatLine | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const n = (i: number): number => Number(f[i - 3]);
    return { pid, ppid: n(4), userSec: (n(14) + n(16)) / CLK_TCK, sysSec: (n(15) + n(17)) / CLK_TCK };
  } catch {
    return null;
  }
}

/** The pid and all its descendants. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const s = readStat(pid);
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(pid);
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(root);
  return out;
}

/** CPU seconds used so far by a process tree, user and kernel. */
export function treeCpuSeconds(root: number): { user: number; sys: number } {
  let user = 0;
  let sys = 0;
  for (const pid of processTree(root)) {
    const s = readStat(pid);
    user += s?.userSec ?? 0;
    sys += s?.sysSec ?? 0;
  }
  return { user, sys };
}

function statusKiB(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export interface Memory {
  /** VmRSS summed over the tree (overcounts pages that forked children share). */
  readonly rssMiB: number;
  /** Proportional set size summed over the tree: shared pages split between sharers. */
  readonly pssMiB: number;
  readonly processes: number;
  readonly threads: number;
}

export function treeMemory(root: number): Memory {
  const pids = processTree(root);
  let rss = 0;
  let pss = 0;
  let threads = 0;
  for (const pid of pids) {
    rss += statusKiB(pid, 'VmRSS');
    pss += pssKiB(pid);
    try {
      threads += Number(/^Threads:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1] ?? 0);
    } catch {
      /* gone */
    }
  }
  return { rssMiB: rss / 1024, pssMiB: pss / 1024, processes: pids.length, threads };
}

/** Busy CPU seconds of the whole machine (all cores) so far, from /proc/stat. */
function machineBusySeconds(): number {
  try {
    const f = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    const busy = f.slice(0, 8).reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0);
    return busy / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Measures the CPU a process tree uses while `work` runs, as % of one core, and the whole
 * machine's busy CPU over the same time: on a shared machine the difference between it
 * and proxy + generator + origin is somebody else's load, i.e. noise in the result.
 */
export async function withTreeCpu<T>(
  pid: number | null,
  work: () => Promise<T>,
): Promise<{ value: T; cpuPct: number | null; sysPct: number | null; machinePct: number }> {
  const before = pid ? treeCpuSeconds(pid) : null;
  const machine0 = machineBusySeconds();
  const t0 = performance.now();
  const value = await work();
  const wall = (performance.now() - t0) / 1000;
  const machinePct = (100 * (machineBusySeconds() - machine0)) / wall;
  if (!pid || !before) return { value, cpuPct: null, sysPct: null, machinePct };
  const after = treeCpuSeconds(pid);
  const sys = after.sys - before.sys;
  return { value, cpuPct: (100 * (after.user - before.user + sys)) / wall, sysPct: (100 * sys) / wall, machinePct };
}

export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = `${dir}/${cmd}`;
    if (existsSync(p)) return p;
  }
  return null;
}

/** First line a program prints for its version flag (stdout or stderr), or its name. */
export function versionOf(bin: string, args: readonly string[], pattern = /\d+\.\d+(\.\d+)?/): string {
  const out = spawnSync(bin, args, { encoding: 'utf8', timeout: 5000 });
  const text = `${out.stdout ?? ''}\n${out.stderr ?? ''}`;
  return pattern.exec(text)?.[0] ?? 'unknown version';
}
