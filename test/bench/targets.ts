// What the workloads talk to: the origin, and each proxy with the protocols it speaks.
// Plain data, because it crosses the IPC channel to the load workers.

export interface Dest {
  readonly host: string;
  readonly port: number;
}

/** How a load client reaches the origin: directly, or through one proxy protocol. */
export type Hop =
  | { readonly kind: 'direct' }
  /** `auth` is the base64 of `user:pass` for Proxy-Authorization: Basic, or null. */
  | { readonly kind: 'connect'; readonly host: string; readonly port: number; readonly auth: string | null }
  | { readonly kind: 'socks5'; readonly host: string; readonly port: number; readonly user: string | null; readonly pass: string | null };

export interface ForwardHop {
  readonly host: string;
  readonly port: number;
  readonly auth: string | null;
}

export interface ProxyUnderTest {
  /** `sluice`, `squid`, `tinyproxy`, `dante`, `microsocks`. */
  readonly name: string;
  /** Root of its process tree, for CPU and memory. */
  readonly pid: number;
  readonly connect?: Hop;
  readonly socks5?: Hop;
  readonly forward?: ForwardHop;
}

export type Family = 'connect' | 'socks5' | 'http' | 'direct' | 'engine' | 'api';

/** One measured line of the report. */
export interface Row {
  readonly workload: string;
  /** e.g. `sluice CONNECT`, `squid`, `direct`. */
  readonly target: string;
  /** The proxy's name (null for direct/in-process rows); `sluice` rows are compared to the others. */
  readonly proxy: string | null;
  readonly family: Family;
  /** Numeric results; keys are described in report.ts. */
  readonly metrics: Record<string, number>;
  /** CPU of the load generator processes, % of one core (null when not measured). */
  readonly genCpuPct: number | null;
  /** CPU of the proxy's process tree, % of one core. */
  readonly proxyCpuPct: number | null;
  /** The kernel's share of proxyCpuPct (syscalls, and loopback TCP work done in them). */
  readonly proxySysPct: number | null;
  /** Busy CPU of the whole machine meanwhile, % of one core (cores x 100 = saturated). */
  readonly machineCpuPct: number | null;
  readonly notes: readonly string[];
}

export const ORIGIN_SMALL_PATH = '/small';
export const ORIGIN_BULK_PATH = '/bulk';
/** The small response body is exactly this long (the 64-byte response). */
export const SMALL_BODY_BYTES = 64;
