// When a live subscriber counts as unable to keep up. Judging the unsent bytes at a single
// moment cut off healthy readers that a burst of events had momentarily put behind; a
// reader is dropped only once it has stayed behind for a while, or falls far behind at once.

export interface LagLimits {
  /** Unsent bytes a subscriber may hold while catching up. */
  readonly softBytes: number;
  /** How long it may stay over softBytes before being cut off. */
  readonly graceMs: number;
  /** Over this many unsent bytes it is cut off at once (memory stays bounded). */
  readonly hardBytes: number;
}

export function lagLimits(softBytes: number): LagLimits {
  return { softBytes, graceMs: 5_000, hardBytes: softBytes * 4 };
}

/** Returns a judge: given the bytes still unsent now, whether the subscriber may stay. */
export function lagJudge(limits: LagLimits, clock: () => number): (unsentBytes: number) => boolean {
  let behindSince: number | null = null;
  return (unsent) => {
    if (unsent > limits.hardBytes) return false;
    if (unsent <= limits.softBytes) {
      behindSince = null;
      return true;
    }
    const now = clock();
    behindSince ??= now;
    return now - behindSince < limits.graceMs;
  };
}
