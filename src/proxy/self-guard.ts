// Connections to sluice's own listeners are always refused, whatever the rules say: a
// sandbox must not reach the control API (or loop the proxy into itself) through the proxy.
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import { normaliseIp, type IpAddress } from '../policy/host.js';

export class SelfGuard {
  /** Port -> every address that reaches a sluice listener on it. Keyed by port first, so
   *  the usual check (a destination port sluice does not listen on) builds no string. */
  private readonly endpoints = new Map<number, Set<string>>();

  /** Registers a bound listener; a wildcard bind covers every local address. */
  add(boundAddress: string, port: number): void {
    const bound = normaliseIp(ipaddr.parse(boundAddress));
    let addresses = this.endpoints.get(port);
    if (!addresses) this.endpoints.set(port, (addresses = new Set()));
    addresses.add(bound.toString());
    if (bound.range() !== 'unspecified') return;
    for (const addrs of Object.values(networkInterfaces())) {
      for (const a of addrs ?? []) addresses.add(normaliseIp(ipaddr.parse(a.address.split('%')[0]!)).toString());
    }
    addresses.add('127.0.0.1');
    addresses.add('::1');
  }

  isSelf(ip: IpAddress, port: number): boolean {
    const addresses = this.endpoints.get(port);
    if (!addresses) return false;
    return addresses.has(ip.toString()) || ip.range() === 'unspecified';
  }
}
