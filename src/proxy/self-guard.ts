// Connections to sluice's own listeners are always refused, whatever the rules say: a
// sandbox must not reach the control API (or loop the proxy into itself) through the proxy.
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import { normaliseIp, type IpAddress } from '../policy/host.js';

export class SelfGuard {
  /** "address|port" of every endpoint that reaches a sluice listener. */
  private readonly endpoints = new Set<string>();

  /** Registers a bound listener; a wildcard bind covers every local address. */
  add(boundAddress: string, port: number): void {
    const bound = normaliseIp(ipaddr.parse(boundAddress));
    const unspecified = bound.range() === 'unspecified';
    if (!unspecified) {
      this.endpoints.add(`${bound.toString()}|${port}`);
      return;
    }
    for (const addrs of Object.values(networkInterfaces())) {
      for (const a of addrs ?? []) {
        const ip = ipaddr.parse(a.address.split('%')[0]!);
        this.endpoints.add(`${normaliseIp(ip).toString()}|${port}`);
      }
    }
    this.endpoints.add(`127.0.0.1|${port}`);
    this.endpoints.add(`::1|${port}`);
    this.endpoints.add(`${bound.toString()}|${port}`);
  }

  isSelf(ip: IpAddress, port: number): boolean {
    if (this.endpoints.size === 0) return false;
    return this.endpoints.has(`${ip.toString()}|${port}`) || (ip.range() === 'unspecified' && this.hasPort(port));
  }

  private hasPort(port: number): boolean {
    for (const e of this.endpoints) if (e.endsWith(`|${port}`)) return true;
    return false;
  }
}
