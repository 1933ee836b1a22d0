// Load generator processes. The clients run in separate Node processes (never in the
// bench's own loop, never in sluice's), and each job reports the CPU its process used, so
// every result can show whether the generator, rather than the proxy, was the limit.
import { fileURLToPath } from 'node:url';
import { spawnManaged, type Managed } from './procs.js';

export interface JobOutput<T> {
  readonly value: T;
  /** user+system CPU of the worker process during the job. */
  readonly cpuMs: number;
  readonly wallMs: number;
}

interface Reply {
  readonly id: number;
  readonly ok: boolean;
  readonly value?: unknown;
  readonly error?: string;
  readonly cpuMs: number;
  readonly wallMs: number;
}

const WORKER = fileURLToPath(new URL('./load-worker.js', import.meta.url));

export class LoadWorker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void }>();

  private constructor(readonly managed: Managed) {
    managed.child.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      p.resolve(m);
    });
    void managed.exited.then((how) => {
      for (const [id, p] of this.pending) p.resolve({ id, ok: false, error: `load worker exited (${how}): ${managed.output()}`, cpuMs: 0, wallMs: 0 });
      this.pending.clear();
    });
  }

  static start(index: number, execArgv: readonly string[] = []): LoadWorker {
    return new LoadWorker(spawnManaged(`load-${index}`, process.execPath, [...execArgv, WORKER], { ipc: true, inherit: true }));
  }

  /** Runs one job; rejects if it throws or does not answer within `timeoutMs`. */
  run<T>(kind: string, params: unknown, timeoutMs: number): Promise<JobOutput<T>> {
    const id = this.nextId++;
    return new Promise<JobOutput<T>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${kind} job timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          if (r.ok) resolve({ value: r.value as T, cpuMs: r.cpuMs, wallMs: r.wallMs });
          else reject(new Error(r.error ?? `${kind} job failed`));
        },
      });
      this.managed.child.send({ id, kind, params });
    });
  }

  stop(): Promise<void> {
    return this.managed.stop(2000);
  }
}

export class Pool {
  private constructor(readonly workers: LoadWorker[]) {}

  static start(n: number): Pool {
    return new Pool(Array.from({ length: n }, (_, i) => LoadWorker.start(i)));
  }

  /** Replaces workers that died (a crashed job must not poison the workloads after it). */
  private revive(): void {
    this.workers.forEach((w, i) => {
      if (!w.managed.alive) this.workers[i] = LoadWorker.start(i);
    });
  }

  /** Worker `i`, restarted first if it died. */
  worker(i: number): LoadWorker {
    this.revive();
    return this.workers[i]!;
  }

  get size(): number {
    return this.workers.length;
  }

  /**
   * Runs a job on every worker at once. `genCpuPct` is the workers' CPU over the longest
   * wall time, in % of one core (200% = both cores of a 2-core machine).
   */
  async runAll<T>(kind: string, params: (i: number) => unknown, timeoutMs: number): Promise<{ values: T[]; genCpuPct: number }> {
    this.revive();
    const outs = await Promise.all(this.workers.map((w, i) => w.run<T>(kind, params(i), timeoutMs)));
    const cpu = outs.reduce((a, o) => a + o.cpuMs, 0);
    const wall = Math.max(...outs.map((o) => o.wallMs));
    return { values: outs.map((o) => o.value), genCpuPct: wall > 0 ? (100 * cpu) / wall : 0 };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}

/** Splits `total` as evenly as possible into `parts` (first parts get the remainder). */
export function share(total: number, parts: number, i: number): number {
  return Math.floor(total / parts) + (i < total % parts ? 1 : 0);
}
