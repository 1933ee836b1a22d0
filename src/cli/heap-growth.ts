// How far V8 lets the old generation grow past what the last full collection left alive.
// By default a machine with this much memory gets a factor of up to 4, so after a peak
// (12,000 sessions created at once, ten thousand tunnels opened) garbage piles up to several
// times the live heap before the next full collection, and its pages stay resident: with
// 10,000 idle tunnels (~105 MiB live) the bench read 265-360 MiB RSS, swinging by 100 MiB
// while the tunnels were held. A fixed 1.3 held it at 240-265 MiB. The price is more full
// collections while garbage is promoted (measured: a few percent more CPU per tunnel, within
// the machine's noise); V8 still grows the limit by at least 8 MiB per step, so a small heap
// is not collected over and over.
import { setFlagsFromString } from 'node:v8';

export const HEAP_GROWING_PERCENT = 30;

const FLAG = /^--heap[-_]growing[-_]percent(=|$)/;

/**
 * Applies sluice's heap growth setting, unless node was started with its own
 * `--heap-growing-percent` (an operator's choice wins). V8 reads the flag at every full
 * collection, so setting it after start-up takes effect from the next one.
 */
export function limitHeapGrowth(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((a) => FLAG.test(a))) return false;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}
