// Name resolution for the proxy: resolve once, hand back every address, and let the
// caller check and dial those exact addresses (never re-resolving in between).
// app.ts puts a cache in front of the resolver (dns-cache.ts); it hands back raw answers,
// so everything below, and every address check after it, runs on each request.
import { lookup } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';
import { normaliseIp, type IpAddress } from '../policy/host.js';

/** Injectable for tests (slow, failing or lying DNS). */
export type HostResolver = (hostname: string) => Promise<string[]>;

export const systemResolver: HostResolver = async (hostname) => {
  const found = await lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => a.address);
};

export class DnsError extends Error {
  constructor(
    readonly kind: 'dns_error' | 'dns_timeout',
    message: string,
  ) {
    super(message);
  }
}

export async function resolveHost(resolver: HostResolver, hostname: string, timeoutMs: number): Promise<IpAddress[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DnsError('dns_timeout', `resolving ${hostname} took longer than ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const raw = await Promise.race([resolver(hostname), timeout]);
    const out: IpAddress[] = [];
    for (const text of raw) if (ipaddr.isValid(text)) out.push(normaliseIp(ipaddr.parse(text)));
    if (out.length === 0) throw new DnsError('dns_error', `${hostname} has no addresses`);
    return out;
  } catch (err) {
    if (err instanceof DnsError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new DnsError('dns_error', `cannot resolve ${hostname} (${code})`);
  } finally {
    clearTimeout(timer);
  }
}
