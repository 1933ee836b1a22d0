// Percentiles and medians for the bench. Latency samples are kept raw (bounded per
// worker) rather than bucketed, so p99 is exact for the samples taken.

/** Nearest-rank percentile of `sorted` (ascending); NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function sortNumbers(values: Iterable<number>): Float64Array {
  return Float64Array.from(values).sort();
}

/** Median of finite values; NaN when none (a failed repetition does not drag the median). */
export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return NaN;
  const mid = finite.length >> 1;
  return finite.length % 2 === 1 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2;
}

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export function summarise(samples: ArrayLike<number> & Iterable<number>): LatencySummary {
  const s = sortNumbers(samples);
  return { count: s.length, p50: percentile(s, 50), p99: percentile(s, 99), p999: percentile(s, 99.9), max: s.length ? s[s.length - 1]! : NaN };
}

/**
 * Keeps at most `cap` samples with uniform probability (reservoir sampling), so a long,
 * fast run cannot grow a worker's memory without bound yet its percentiles stay unbiased.
 */
export class Reservoir {
  readonly samples: number[] = [];
  private seen = 0;

  constructor(private readonly cap = 200_000) {}

  add(v: number): void {
    this.seen++;
    if (this.samples.length < this.cap) {
      this.samples.push(v);
      return;
    }
    const j = Math.floor(Math.random() * this.seen);
    if (j < this.cap) this.samples[j] = v;
  }
}
