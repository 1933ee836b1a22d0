// Address ranges a sandbox must never reach by accident: cloud metadata, private networks,
// link-local, CGNAT, multicast... Only a rule that names the address (IP/CIDR) or the
// exact hostname opens them; wildcards, `*` and learning mode never do (SSRF defence).
import ipaddr from 'ipaddr.js';
import type { IpAddress } from './host.js';

// [network, prefix, name, enclosing block]: a block listed inside another shares its key,
// so a rule naming the enclosing block (240.0.0.0/4) also names the inner one.
const V4_RANGES: ReadonlyArray<readonly [string, number, string, string?]> = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'ietf-protocol'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['224.0.0.0', 4, 'multicast'],
  // Before 240.0.0.0/4, which contains it: the more specific name explains better.
  ['255.255.255.255', 32, 'broadcast', '240.0.0.0/4'],
  ['240.0.0.0', 4, 'reserved'],
];

const V6_RANGES: ReadonlyArray<readonly [string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['fe80::', 10, 'link-local'],
  ['fc00::', 7, 'unique-local'],
  ['ff00::', 8, 'multicast'],
  // fd00:ec2::254 (AWS IMDS over IPv6) is inside fc00::/7 already.
];

const v4 = V4_RANGES.map(([net, bits, name, within]) => [ipaddr.IPv4.parse(net), bits, name, within ?? `${net}/${bits}`] as const);
const v6 = V6_RANGES.map(([net, bits, name]) => [ipaddr.IPv6.parse(net), bits, name, `${net}/${bits}`] as const);

const NAT64 = ipaddr.IPv6.parse('64:ff9b::');
const NAT64_LOCAL = ipaddr.IPv6.parse('64:ff9b:1::');
const SIXTO4 = ipaddr.IPv6.parse('2002::');
const TEREDO = ipaddr.IPv6.parse('2001::');
const TRANSLATED = ipaddr.IPv6.parse('::ffff:0:0:0');
const COMPATIBLE = ipaddr.IPv6.parse('::');

type Embedding = 'mapped' | 'nat64' | 'nat64-local' | '6to4' | 'teredo' | 'translated' | 'compatible';

function v4Of(bytes: readonly number[]): ipaddr.IPv4 {
  return new ipaddr.IPv4([bytes[0]!, bytes[1]!, bytes[2]!, bytes[3]!]);
}

/** The IPv4 address an IPv6 address carries, and how it carries it, if it does. */
function embedded(ip: ipaddr.IPv6): { v4: ipaddr.IPv4; how: Embedding } | null {
  const b = ip.toByteArray();
  if (ip.isIPv4MappedAddress()) return { v4: ip.toIPv4Address(), how: 'mapped' };
  if (ip.match(NAT64, 96)) return { v4: v4Of(b.slice(12)), how: 'nat64' };
  // RFC 8215 local-use NAT64 prefix, /48 layout of RFC 6052: bits 64-71 (the "u" octet) skipped.
  if (ip.match(NAT64_LOCAL, 48)) return { v4: v4Of([b[6]!, b[7]!, b[9]!, b[10]!]), how: 'nat64-local' };
  if (ip.match(SIXTO4, 16)) return { v4: v4Of(b.slice(2, 6)), how: '6to4' };
  // Teredo stores the client's IPv4 inverted in the last 32 bits.
  if (ip.match(TEREDO, 32)) return { v4: v4Of(b.slice(12).map((x) => x ^ 0xff)), how: 'teredo' };
  // SIIT "IPv4-translated" (::ffff:0:a.b.c.d) and the deprecated "IPv4-compatible"
  // (::a.b.c.d) forms; `::` and `::1` are themselves, not IPv4.
  if (ip.match(TRANSLATED, 96)) return { v4: v4Of(b.slice(12)), how: 'translated' };
  if (ip.match(COMPATIBLE, 96) && !ip.match(COMPATIBLE, 127)) return { v4: v4Of(b.slice(12)), how: 'compatible' };
  return null;
}

/** The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo...), if any. */
export function embeddedIpv4(ip: ipaddr.IPv6): ipaddr.IPv4 | null {
  return embedded(ip)?.v4 ?? null;
}

/** A special range an address falls in: its name, and a key that tells blocks (and embeddings) apart. */
export interface SpecialBlock {
  readonly name: string;
  readonly key: string;
}

/** The special block `ip` falls in (checking embedded IPv4 too), or null. */
export function specialBlock(ip: IpAddress): SpecialBlock | null {
  if (ip.kind() === 'ipv4') {
    for (const [net, bits, name, key] of v4) if ((ip as ipaddr.IPv4).match(net, bits)) return { name, key };
    return null;
  }
  const six = ip as ipaddr.IPv6;
  for (const [net, bits, name, key] of v6) if (six.match(net, bits)) return { name, key };
  const inner = embedded(six);
  if (inner) {
    const b = specialBlock(inner.v4);
    return b ? { name: `${b.name} (embedded in IPv6)`, key: `${inner.how}:${b.key}` } : null;
  }
  return null;
}

/** The name of the special range `ip` falls in (checking embedded IPv4 too), or null. */
export function specialRange(ip: IpAddress): string | null {
  return specialBlock(ip)?.name ?? null;
}

/**
 * Whether the network `network/prefix` lies entirely inside the special block `block`. A
 * CIDR rule reaches a special address only then: `10.0.0.0/8` or `169.254.169.254/32`
 * name their range, `0.0.0.0/0` and `::/0` are wildcards in CIDR clothing. Special blocks
 * are contiguous, so checking the network's first and last address suffices.
 */
export function networkInsideBlock(network: IpAddress, prefix: number, block: SpecialBlock): boolean {
  const first = network.toByteArray();
  const last = first.map((byte, i) => {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    return byte | (0xff >> keep);
  });
  return specialBlock(ipaddr.fromByteArray(first))?.key === block.key && specialBlock(ipaddr.fromByteArray(last))?.key === block.key;
}
