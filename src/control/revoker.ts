// Live revocation: when access changes (a rule or session goes away, a newer session
// supersedes, learning mode ends, something expires), open connections are decided again
// and those no longer allowed are closed, with the reason recorded.
import type { Destination } from '../policy/host.js';
import ipaddr from 'ipaddr.js';
import { recheck, type GuardedOutcome, type Outcome } from '../policy/resolver.js';
import type { PolicyState } from '../policy/state.js';

export interface Revocable {
  readonly id: number;
  readonly container: string;
  readonly destination: Destination;
  readonly port: number;
  /** The address actually dialled. */
  readonly address: string;
}

export interface RevocableSet {
  open(): Iterable<Revocable>;
  close(id: number, reason: string): boolean;
}

function whyRevoked(c: Revocable, v: Outcome | GuardedOutcome): string {
  if ('guarded' in v) return `${c.address} is in the ${v.guarded} range, which only a rule naming it (not a wildcard or learning mode) reaches`;
  return v.rule ? `${v.layer} rule #${v.rule.id} (deny ${v.rule.destinationPattern})` : 'no rule allows it any more';
}

export class Revoker {
  private scheduled = false;
  revokedCount = 0;

  constructor(
    private readonly state: PolicyState,
    private readonly connections: RevocableSet,
    private readonly clock: () => number,
    private readonly onRevoked: (c: Revocable, why: string) => void,
  ) {}

  /** Coalesces bursts of changes (e.g. a session re-post) into one pass. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.sweep();
    });
  }

  /** Re-decides every open connection now. */
  sweep(): void {
    const now = this.clock();
    const doomed: Array<[Revocable, string]> = [];
    for (const c of this.connections.open()) {
      const v = recheck(this.state, c.container, c.destination, ipaddr.parse(c.address), c.port, now);
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
