// In-memory index over the rules of one layer (global, builtin, or one session).
// A lookup touches a bounded number of buckets (one exact key, one per label of the
// host, one per CIDR prefix length in use, the catch-all), so its cost does not grow
// with the number of rules.
import type ipaddr from 'ipaddr.js';
import type { Destination } from './host.js';
import { containerMatches, portMatches } from './patterns.js';
import { outranks, type CompiledRule } from './rules.js';

/** Rules sharing one destination key, split so exact container names are a map lookup. */
class Bucket {
  // Rules for exact container names. A session's rules all name its one container, so a
  // bucket usually holds a single name: kept inline, and a Map is made only for a second
  // name (an empty Map per bucket was most of a session's memory).
  private soleName: string | null = null;
  private soleList: CompiledRule[] | null = null;
  private byName: Map<string, CompiledRule[]> | null = null;
  /** Rules whose container pattern is `*` or a glob. */
  readonly patterned: CompiledRule[] = [];

  /** The exact-name rules for `container`, best first. */
  named(container: string): CompiledRule[] | undefined {
    if (this.byName !== null) return this.byName.get(container);
    return container === this.soleName ? this.soleList! : undefined;
  }

  add(rule: CompiledRule): void {
    const c = rule.container;
    if (c.kind !== 'exact') {
      insertRanked(this.patterned, rule);
      return;
    }
    let list = this.named(c.name);
    if (!list) {
      list = [];
      if (this.byName === null && this.soleName === null) {
        this.soleName = c.name;
        this.soleList = list;
      } else {
        if (this.byName === null) {
          this.byName = new Map([[this.soleName!, this.soleList!]]);
          this.soleName = null;
          this.soleList = null;
        }
        this.byName.set(c.name, list);
      }
    }
    insertRanked(list, rule);
  }

  remove(rule: CompiledRule): void {
    const c = rule.container;
    if (c.kind !== 'exact') {
      removeFrom(this.patterned, rule);
      return;
    }
    const list = this.named(c.name);
    if (!list) return;
    removeFrom(list, rule);
    if (list.length > 0) return;
    if (this.byName !== null) this.byName.delete(c.name);
    else this.clearNamed();
  }

  clear(): void {
    this.clearNamed();
    this.patterned.length = 0;
  }

  get empty(): boolean {
    return (this.byName === null ? this.soleName === null : this.byName.size === 0) && this.patterned.length === 0;
  }

  private clearNamed(): void {
    this.soleName = null;
    this.soleList = null;
    this.byName = null;
  }
}

function insertRanked(list: CompiledRule[], rule: CompiledRule): void {
  let i = list.length;
  while (i > 0 && outranks(rule, list[i - 1]!)) i--;
  list.splice(i, 0, rule);
}

function removeFrom(list: CompiledRule[], rule: CompiledRule): void {
  const i = list.indexOf(rule);
  if (i >= 0) list.splice(i, 1);
}

export interface LookupOptions {
  /** Only IP/CIDR rules (used to check the addresses a hostname resolved to). */
  readonly addressRulesOnly?: boolean;
}

export class RuleIndex {
  private readonly byId = new Map<number, CompiledRule>();
  private readonly exact = new Map<string, Bucket>();
  private readonly suffix = new Map<string, Bucket>();
  private readonly any = new Bucket();
  private readonly cidr4 = new Map<number, Map<number, Bucket>>();
  private readonly cidr6 = new Map<number, Map<string, Bucket>>();
  /** Prefix lengths in use, longest first, so lookups walk only what exists. */
  private prefixes4: number[] = [];
  private prefixes6: number[] = [];

  get size(): number {
    return this.byId.size;
  }

  rules(): IterableIterator<CompiledRule> {
    return this.byId.values();
  }

  get(id: number): CompiledRule | undefined {
    return this.byId.get(id);
  }

  add(rule: CompiledRule): void {
    this.remove(rule.record.id);
    this.byId.set(rule.record.id, rule);
    this.bucketFor(rule, true)!.add(rule);
  }

  remove(id: number): CompiledRule | undefined {
    const rule = this.byId.get(id);
    if (!rule) return undefined;
    this.byId.delete(id);
    const bucket = this.bucketFor(rule, false);
    if (bucket) {
      bucket.remove(rule);
      if (bucket.empty) this.dropBucket(rule);
    }
    return rule;
  }

  clear(): void {
    this.byId.clear();
    this.exact.clear();
    this.suffix.clear();
    this.any.clear();
    this.cidr4.clear();
    this.cidr6.clear();
    this.prefixes4 = [];
    this.prefixes6 = [];
  }

  /** The deciding rule of this layer for the query, or null when no unexpired rule matches. */
  lookup(container: string, dest: Destination, port: number, now: number, opts?: LookupOptions): CompiledRule | null {
    let best: CompiledRule | null = null;
    const consider = (bucket: Bucket | undefined, apex = false): void => {
      if (!bucket) return;
      const named = bucket.named(container);
      if (named) best = pick(best, named, container, dest, port, now, apex);
      if (bucket.patterned.length > 0) best = pick(best, bucket.patterned, container, dest, port, now, apex);
    };
    if (dest.kind === 'host') {
      if (opts?.addressRulesOnly) return null;
      consider(this.exact.get(dest.host));
      // Walk the name's suffixes: a.b.example.com -> b.example.com -> example.com -> com,
      // plus the name itself for `**.` rules (which match the apex).
      let host = dest.host;
      for (;;) {
        consider(this.suffix.get(host), host === dest.host);
        const dot = host.indexOf('.');
        if (dot < 0) break;
        host = host.slice(dot + 1);
      }
    } else {
      consider(this.exact.get(dest.host));
      if (dest.ip.kind() === 'ipv4') {
        if (this.prefixes4.length > 0) {
          const n = ipv4ToInt(dest.ip as ipaddr.IPv4);
          for (const prefix of this.prefixes4) consider(this.cidr4.get(prefix)?.get(maskIpv4(n, prefix)));
        }
      } else if (this.prefixes6.length > 0) {
        const parts = (dest.ip as ipaddr.IPv6).parts;
        for (const prefix of this.prefixes6) consider(this.cidr6.get(prefix)?.get(ipv6Key(parts, prefix)));
      }
    }
    if (!opts?.addressRulesOnly) consider(this.any);
    return best;
  }

  private bucketFor(rule: CompiledRule, create: boolean): Bucket | undefined {
    const d = rule.destination;
    switch (d.kind) {
      case 'any':
        return this.any;
      case 'host':
        return getOrCreate(this.exact, d.host, create);
      case 'ip':
        return getOrCreate(this.exact, d.text, create);
      case 'suffix': {
        // `*.x` and `**.x` share the bucket under key "x"; pick() keeps `*.x` off the apex.
        return getOrCreate(this.suffix, d.suffix, create);
      }
      case 'cidr': {
        if (d.network.kind() === 'ipv4') {
          let byNet = this.cidr4.get(d.prefix);
          if (!byNet) {
            if (!create) return undefined;
            this.cidr4.set(d.prefix, (byNet = new Map()));
            this.prefixes4 = [...this.cidr4.keys()].sort((a, b) => b - a);
          }
          return getOrCreate(byNet, maskIpv4(ipv4ToInt(d.network as ipaddr.IPv4), d.prefix), create);
        }
        let byNet = this.cidr6.get(d.prefix);
        if (!byNet) {
          if (!create) return undefined;
          this.cidr6.set(d.prefix, (byNet = new Map()));
          this.prefixes6 = [...this.cidr6.keys()].sort((a, b) => b - a);
        }
        return getOrCreate(byNet, ipv6Key((d.network as ipaddr.IPv6).parts, d.prefix), create);
      }
    }
  }

  private dropBucket(rule: CompiledRule): void {
    const d = rule.destination;
    switch (d.kind) {
      case 'any':
        return;
      case 'host':
        this.exact.delete(d.host);
        return;
      case 'ip':
        this.exact.delete(d.text);
        return;
      case 'suffix':
        this.suffix.delete(d.suffix);
        return;
      case 'cidr':
        if (d.network.kind() === 'ipv4') {
          const byNet = this.cidr4.get(d.prefix);
          byNet?.delete(maskIpv4(ipv4ToInt(d.network as ipaddr.IPv4), d.prefix));
          if (byNet && byNet.size === 0) {
            this.cidr4.delete(d.prefix);
            this.prefixes4 = this.prefixes4.filter((p) => p !== d.prefix);
          }
        } else {
          const byNet = this.cidr6.get(d.prefix);
          byNet?.delete(ipv6Key((d.network as ipaddr.IPv6).parts, d.prefix));
          if (byNet && byNet.size === 0) {
            this.cidr6.delete(d.prefix);
            this.prefixes6 = this.prefixes6.filter((p) => p !== d.prefix);
          }
        }
    }
  }
}

/** First rule of a ranked list that applies, if it outranks the current best. */
function pick(
  best: CompiledRule | null,
  list: readonly CompiledRule[],
  container: string,
  dest: Destination,
  port: number,
  now: number,
  apex: boolean,
): CompiledRule | null {
  for (const rule of list) {
    if (best && !outranks(rule, best)) return best; // the list is ranked: nothing later can win
    const exp = rule.record.expiresAt;
    if (exp !== null && exp <= now) continue;
    if (!portMatches(rule.ports, port)) continue;
    if (rule.container.kind === 'glob' && !containerMatches(rule.container, container)) continue;
    const d = rule.destination;
    if (apex && d.kind === 'suffix' && !d.apex) continue;
    // The bucket key already encodes the masked network; ipaddr.js confirms the match.
    if (d.kind === 'cidr' && (dest.kind !== 'ip' || !dest.ip.match(d.network, d.prefix))) continue;
    return rule;
  }
  return best;
}

function getOrCreate<K, V extends Bucket>(map: Map<K, V>, key: K, create: boolean): V | undefined {
  let b = map.get(key);
  if (!b && create) map.set(key, (b = new Bucket() as V));
  return b;
}

function ipv4ToInt(ip: ipaddr.IPv4): number {
  const o = ip.octets;
  return ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
}

function maskIpv4(n: number, prefix: number): number {
  return prefix === 0 ? 0 : (n & (0xffffffff << (32 - prefix))) >>> 0;
}

function ipv6Key(parts: readonly number[], prefix: number): string {
  let key = '';
  for (let i = 0; i < 8; i++) {
    const keep = Math.max(0, Math.min(16, prefix - i * 16));
    const mask = keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
    key += ((parts[i] ?? 0) & mask).toString(16) + ':';
  }
  return key;
}
