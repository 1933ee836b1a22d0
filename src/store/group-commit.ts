// Group commit: writes that arrive in the same event-loop turn (concurrent API requests)
// share one SQLite transaction, so a burst of session creates, heartbeats or deletes pays
// for one commit instead of one each. Every caller is answered only after the transaction
// that holds its write has committed. When any write of the group fails (a conflict, a
// constraint, a full disk, an I/O error), the shared transaction is rolled back and every
// write of the group runs again in a transaction of its own: the failing write fails only
// its own caller, with the error it gets alone, and the outcome is exactly what one
// transaction per write gives. (A savepoint per write would avoid the re-run, but costs
// every write a statement journal; failures are rare, writes are not.)
import type { Db } from './database.js';

interface Job<W, R> {
  readonly write: () => W;
  readonly apply: (written: W) => R;
  readonly resolve: (result: R) => void;
  readonly reject: (err: unknown) => void;
}

type AnyJob = Job<unknown, unknown>;

/** Runs a storage write: the store's own wrapper (health tracking, error translation). */
export type WriteRunner = <T>(fn: () => T) => T;

export class GroupCommit {
  private queue: AnyJob[] = [];
  private scheduled = false;
  /** Transactions committed, and the writes they carried. */
  commits = 0;
  writes = 0;

  constructor(
    private readonly db: Db,
    private readonly runWrite: WriteRunner,
  ) {}

  /**
   * Queues `write` for the next group commit. `write` runs SQL only and may run twice (see
   * above), so it must change nothing outside the database. After the commit that holds it,
   * `apply` runs with its result, in submission order and before anything else can write,
   * and the promise settles with what `apply` returns (or throws). Memory changes belong in
   * `apply`: that way they only ever follow a successful commit.
   */
  submit<W, R>(write: () => W, apply: (written: W) => R): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ write, apply, resolve, reject } as AnyJob);
      if (this.scheduled) return;
      this.scheduled = true;
      // setImmediate runs after the poll phase: every request read in this loop turn joins.
      setImmediate(() => this.flush());
    });
  }

  /** Commits everything queued so far. */
  flush(): void {
    this.scheduled = false;
    const jobs = this.queue;
    if (jobs.length === 0) return;
    this.queue = [];
    if (jobs.length > 1 && this.together(jobs)) return;
    for (const job of jobs) this.alone(job);
  }

  /** All writes in one transaction; false, with nothing committed, if any of them failed. */
  private together(jobs: readonly AnyJob[]): boolean {
    let values: unknown[];
    try {
      values = this.runWrite(() => this.db.transaction(() => jobs.map((job) => job.write()))());
    } catch {
      return false;
    }
    this.commits++;
    this.writes += jobs.length;
    jobs.forEach((job, i) => settle(job, values[i]));
    return true;
  }

  private alone(job: AnyJob): void {
    let value: unknown;
    try {
      value = this.runWrite(() => this.db.transaction(job.write)());
    } catch (err) {
      job.reject(err);
      return;
    }
    this.commits++;
    this.writes++;
    settle(job, value);
  }
}

function settle(job: AnyJob, value: unknown): void {
  try {
    job.resolve(job.apply(value));
  } catch (err) {
    job.reject(err);
  }
}
