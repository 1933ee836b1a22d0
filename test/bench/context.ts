// What every workload gets: the options, the origin, the proxies that are up, the load
// workers, and a progress logger (stderr, so stdout stays the report).
import type { Options } from './options.js';
import { NODE_RELAY } from './peers.js';
import type { Origin } from './origin.js';
import type { Pool } from './pool.js';
import type { SluiceUnderTest } from './sluice.js';
import type { ProxyUnderTest, Row } from './targets.js';

export interface BenchContext {
  readonly opts: Options;
  readonly origin: Origin | null;
  /** sluice first, then the peers that started. */
  readonly proxies: readonly ProxyUnderTest[];
  readonly sluice: SluiceUnderTest | null;
  readonly pool: Pool;
  /** Scratch directory of this run (configs, scripts). */
  readonly tmp: string;
  log(line: string): void;
}

export type WorkloadRunner = (ctx: BenchContext) => Promise<Row[]>;

/** Proxies that speak both tunnel protocols are labelled with the protocol; the peers speak one. */
const BOTH_PROTOCOLS = new Set(['sluice', NODE_RELAY]);

/** `sluice CONNECT` / `sluice SOCKS5` for sluice (it speaks both), the bare name for peers. */
export function targetLabel(proxy: string, protocol: 'CONNECT' | 'SOCKS5' | 'HTTP'): string {
  return BOTH_PROTOCOLS.has(proxy) ? `${proxy} ${protocol}` : proxy;
}
