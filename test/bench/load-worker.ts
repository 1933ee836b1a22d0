// Entry of a load generator process: runs the jobs the bench sends over IPC, one at a
// time, and reports each job's result with the CPU this process spent on it.
import { bulkJob } from './w-bulk.js';
import { controlJob } from './w-control.js';
import { decisionJob } from './w-decision.js';
import { forwardJob } from './w-forward.js';
import { idleCloseJob, idleOpenJob } from './w-idle.js';
import { tunnelJob } from './w-tunnel.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const JOBS: Record<string, (params: any) => Promise<unknown>> = {
  tunnel: tunnelJob,
  bulk: bulkJob,
  forward: forwardJob,
  'idle-open': idleOpenJob,
  'idle-close': idleCloseJob,
  control: controlJob,
  decision: decisionJob,
};

interface Job {
  readonly id: number;
  readonly kind: string;
  readonly params: unknown;
}

let queue: Promise<void> = Promise.resolve();

process.on('message', (job: Job) => {
  queue = queue.then(async () => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let reply;
    try {
      const run = JOBS[job.kind];
      if (!run) throw new Error(`unknown job ${job.kind}`);
      const value = await run(job.params);
      reply = { id: job.id, ok: true, value };
    } catch (err) {
      reply = { id: job.id, ok: false, error: (err as Error).stack ?? String(err) };
    }
    const c = process.cpuUsage(c0);
    process.send!({ ...reply, cpuMs: (c.user + c.system) / 1000, wallMs: performance.now() - t0 });
  });
});

// The bench went away: nothing left to do.
process.on('disconnect', () => process.exit(0));
