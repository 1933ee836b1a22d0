// Address ranges a sandbox must never reach by accident: cloud metadata, private networks,
// link-local, CGNAT, multicast... Only a rule that names the address (IP/CIDR) or the
// exact hostname opens them; wildcards, `*` and learning mode never do (SSRF defence).
import ipaddr from 'ipaddr.js';
import type { IpAddress } from './host.js';

const V4_RANGES: ReadonlyArray<readonly [string, number, string]> = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'ietf-protocol'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
  ['255.255.255.255', 32, 'broadcast'],
];

const V6_RANGES: ReadonlyArray<readonly [string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['fe80::', 10, 'link-local'],
  ['fc00::', 7, 'unique-local'],
  ['ff00::', 8, 'multicast'],
  // fd00:ec2::254 (AWS IMDS over IPv6) is inside fc00::/7 already.
];

const v4 = V4_RANGES.map(([net, bits, name]) => [ipaddr.IPv4.parse(net), bits, name] as const);
const v6 = V6_RANGES.map(([net, bits, name]) => [ipaddr.IPv6.parse(net), bits, name] as const);

const NAT64 = ipaddr.IPv6.parse('64:ff9b::');
const SIXTO4 = ipaddr.IPv6.parse('2002::');
const TEREDO = ipaddr.IPv6.parse('2001::');

/** The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any. */
export function embeddedIpv4(ip: ipaddr.IPv6): ipaddr.IPv4 | null {
  const p = ip.parts;
  if (ip.isIPv4MappedAddress()) return ip.toIPv4Address();
  if (ip.match(NAT64, 96)) return ipaddr.fromByteArray(ip.toByteArray().slice(12)) as ipaddr.IPv4;
  if (ip.match(SIXTO4, 16)) return new ipaddr.IPv4([p[1]! >> 8, p[1]! & 0xff, p[2]! >> 8, p[2]! & 0xff]);
  // Teredo stores the client's IPv4 inverted in the last 32 bits.
  if (ip.match(TEREDO, 32)) return new ipaddr.IPv4([(p[6]! >> 8) ^ 0xff, (p[6]! & 0xff) ^ 0xff, (p[7]! >> 8) ^ 0xff, (p[7]! & 0xff) ^ 0xff]);
  return null;
}

/** The name of the special range `ip` falls in (checking embedded IPv4 too), or null. */
export function specialRange(ip: IpAddress): string | null {
  if (ip.kind() === 'ipv4') {
    for (const [net, bits, name] of v4) if ((ip as ipaddr.IPv4).match(net, bits)) return name;
    return null;
  }
  const six = ip as ipaddr.IPv6;
  for (const [net, bits, name] of v6) if (six.match(net, bits)) return name;
  const inner = embeddedIpv4(six);
  if (inner) {
    const name = specialRange(inner);
    return name ? `${name} (embedded in IPv6)` : null;
  }
  return null;
}
