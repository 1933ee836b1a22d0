// Live revocation: when access changes (a rule or session goes away, a newer session
// supersedes, learning mode ends, something expires), open connections are decided again
// and those no longer allowed are closed, with the reason recorded.
import type { Destination } from '../policy/host.js';
import ipaddr from 'ipaddr.js';
import { recheck, type GuardedOutcome, type Outcome } from '../policy/resolver.js';
import type { PolicyState } from '../policy/state.js';

export interface Revocable {
  readonly id: number;
  readonly admission: { readonly container: string; readonly destination: Destination; readonly port: number };
  /** The address actually dialled. */
  readonly address: string;
  /** When it was registered (clock ms). */
  readonly since: number;
}

export interface RevocableSet {
  open(): Iterable<Revocable>;
  close(id: number, reason: string): boolean;
}

function whyRevoked(c: Revocable, v: Outcome | GuardedOutcome): string {
  if ('guarded' in v) return `${c.address} is in the ${v.guarded} range, which only a rule naming it (not a wildcard or learning mode) reaches`;
  return v.rule ? `${v.layer} rule #${v.rule.id} (deny ${v.rule.destinationPattern})` : 'no rule allows it any more';
}

/**
 * Which connections to re-decide: every one, those of some containers (a session or
 * learning change touches only its container), or those registered since a time.
 */
type Scope = { readonly all: true } | { readonly containers: ReadonlySet<string> } | { readonly since: number };

export class Revoker {
  /** Changes waiting for the next pass: null when none, 'all' once one can touch every container. */
  private pending: Set<string> | 'all' | null = null;
  private lastTick: number | null = null;
  revokedCount = 0;

  constructor(
    private readonly state: PolicyState,
    private readonly connections: RevocableSet,
    private readonly clock: () => number,
    private readonly onRevoked: (c: Revocable, why: string) => void,
  ) {}

  /**
   * A change that may take access away: re-decides the open connections of `container` (of
   * every container when null) on the next turn, coalescing a burst of changes into one pass.
   */
  schedule(container: string | null = null): void {
    const first = this.pending === null;
    if (container === null) this.pending = 'all';
    else if (this.pending === null) this.pending = new Set([container]);
    else if (this.pending !== 'all') this.pending.add(container);
    if (!first) return;
    setImmediate(() => {
      const pending = this.pending;
      this.pending = null;
      if (pending !== null) this.sweep(pending === 'all' ? { all: true } : { containers: pending });
    });
  }

  /**
   * The periodic tick. Changes re-decide what they touch as they happen (every expiry the
   * store sweep deletes is one), so the tick only has to catch a connection admitted before
   * a change but registered after its pass (still dialling, say): one registered since the
   * previous tick. Re-deciding all of them every second cost ~17% of a core with 10,000
   * idle tunnels. `everything` is for when expiries could not be announced (the store
   * sweep failed): decisions already treat what expired as gone, and so must the open
   * connections.
   */
  tick(everything = false): void {
    const now = this.clock();
    const since = this.lastTick;
    this.lastTick = now;
    this.sweep(everything || since === null ? { all: true } : { since });
  }

  /** Re-decides every open connection now. */
  sweep(scope: Scope = { all: true }): void {
    const now = this.clock();
    const doomed: Array<[Revocable, string]> = [];
    for (const c of this.connections.open()) {
      if ('containers' in scope ? !scope.containers.has(c.admission.container) : 'since' in scope && c.since < scope.since) continue;
      const a = c.admission;
      const v = recheck(this.state, a.container, a.destination, ipaddr.parse(c.address), a.port, now);
      if (v.action === 'deny') doomed.push([c, whyRevoked(c, v)]);
    }
    for (const [c, why] of doomed) {
      if (this.connections.close(c.id, 'revoked')) {
        this.revokedCount++;
        this.onRevoked(c, why);
      }
    }
  }
}
