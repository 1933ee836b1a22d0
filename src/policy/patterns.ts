// Rule patterns: parsing (rejecting anything ambiguous) and their specificity ranks.
import { isIPv4 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { HostError, normaliseIp, parseHost, parseIpv6, type Destination, type IpAddress } from './host.js';

export class PatternError extends Error {}

// ---- names -----------------------------------------------------------------

/** Container names and session ids: letters, digits, `.`, `_`, `-`; 1 to 128 characters. */
export const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;
const GLOB_RE = /^[A-Za-z0-9._\-*?]{1,128}$/;

export function isValidName(name: string): boolean {
  return NAME_RE.test(name);
}

// ---- container patterns -----------------------------------------------------

export type ContainerMatcher =
  | { readonly kind: 'any' }
  | { readonly kind: 'exact'; readonly name: string }
  | { readonly kind: 'glob'; readonly re: RegExp; readonly literals: number };

export function parseContainerPattern(pattern: string): ContainerMatcher {
  if (pattern === '*') return { kind: 'any' };
  if (NAME_RE.test(pattern)) return { kind: 'exact', name: pattern };
  if (!GLOB_RE.test(pattern)) {
    throw new PatternError('container_pattern may contain letters, digits, ".", "_", "-" and the globs "*" and "?" (1 to 128 characters)');
  }
  if (/^\*+$/.test(pattern)) return { kind: 'any' };
  const source = pattern.replace(/[.]/g, '\\.').replace(/\*+/g, '.*').replace(/\?/g, '.');
  return { kind: 'glob', re: new RegExp(`^${source}$`), literals: pattern.replace(/[*?]/g, '').length };
}

export function containerMatches(m: ContainerMatcher, name: string): boolean {
  switch (m.kind) {
    case 'any':
      return true;
    case 'exact':
      return m.name === name;
    case 'glob':
      return m.re.test(name);
  }
}

// ---- destination patterns ---------------------------------------------------

export type DestinationMatcher =
  | { readonly kind: 'any' }
  | { readonly kind: 'host'; readonly host: string }
  /** `*.suffix` (apex false) matches subdomains at any depth; `**.suffix` also the apex. */
  | { readonly kind: 'suffix'; readonly suffix: string; readonly apex: boolean; readonly labels: number }
  | { readonly kind: 'ip'; readonly ip: IpAddress; readonly text: string }
  | { readonly kind: 'cidr'; readonly network: IpAddress; readonly prefix: number };

export interface ParsedDestinationPattern {
  readonly matcher: DestinationMatcher;
  /** The pattern as stored and shown: lowercased, punycoded, canonical IP/CIDR text. */
  readonly canonical: string;
}

export function parseDestinationPattern(input: string): ParsedDestinationPattern {
  const pattern = input.trim();
  if (pattern !== input || pattern.length === 0) throw new PatternError('destination_pattern must be non-empty and without surrounding spaces');
  if (pattern === '*') return { matcher: { kind: 'any' }, canonical: '*' };
  if (pattern.includes('://')) throw new PatternError('destination_pattern is a host, IP or CIDR, not a URL (drop the scheme)');

  if (pattern.startsWith('*.') || pattern.startsWith('**.')) {
    const apex = pattern.startsWith('**.');
    const rest = pattern.slice(apex ? 3 : 2);
    if (rest.includes('*')) throw new PatternError('only one leading wildcard label is allowed (e.g. *.example.com)');
    const dest = parseHostOrThrow(rest);
    if (dest.kind !== 'host') throw new PatternError('a wildcard must be followed by a domain name, not an IP address');
    const labels = dest.host.split('.').length;
    if (labels < 2) throw new PatternError('wildcards over a bare top-level domain (like *.com) are not allowed');
    return {
      matcher: { kind: 'suffix', suffix: dest.host, apex, labels },
      canonical: `${apex ? '**' : '*'}.${dest.host}`,
    };
  }
  if (pattern.includes('*')) throw new PatternError('"*" is only allowed alone or as the leading label (*.example.com, **.example.com)');

  if (pattern.includes('/')) {
    const [addr, prefix] = parseCidr(pattern);
    const network = normaliseCidrNetwork(addr, prefix);
    if (network.prefix === (network.ip.kind() === 'ipv4' ? 32 : 128)) {
      const text = network.ip.toString();
      return { matcher: { kind: 'ip', ip: network.ip, text }, canonical: text };
    }
    return {
      matcher: { kind: 'cidr', network: network.ip, prefix: network.prefix },
      canonical: `${network.ip.toString()}/${network.prefix}`,
    };
  }

  const dest = parseHostOrThrow(pattern);
  if (dest.kind === 'ip') return { matcher: { kind: 'ip', ip: dest.ip, text: dest.host }, canonical: dest.host };
  return { matcher: { kind: 'host', host: dest.host }, canonical: dest.host };
}

function parseCidr(pattern: string): [IpAddress, number] {
  const bad = () => new PatternError('invalid CIDR (expected e.g. 10.0.0.0/8 or 2001:db8::/32)');
  const slash = pattern.indexOf('/');
  const addrText = pattern.slice(0, slash);
  const prefixText = pattern.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(prefixText)) throw bad();
  const prefix = Number(prefixText);
  // The same strict address grammar as destinations: dotted-quad IPv4 or a standard IPv6 literal.
  let addr: IpAddress;
  if (addrText.includes(':')) {
    try {
      addr = parseIpv6(addrText);
    } catch {
      throw bad();
    }
  } else if (isIPv4(addrText)) {
    addr = ipaddr.IPv4.parse(addrText);
  } else {
    throw bad();
  }
  if (prefix > (addr.kind() === 'ipv4' ? 32 : 128)) throw bad();
  return [addr, prefix];
}

function parseHostOrThrow(text: string): Destination {
  try {
    return parseHost(text);
  } catch (err) {
    if (err instanceof HostError) throw new PatternError(`invalid destination_pattern: ${err.message}`);
    throw err;
  }
}

/** IPv4-mapped IPv6 CIDRs become IPv4 CIDRs, and host bits are cleared, so equal networks compare equal. */
function normaliseCidrNetwork(addr: IpAddress, prefix: number): { ip: IpAddress; prefix: number } {
  let ip = addr;
  let bits = prefix;
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    ip = normaliseIp(ip);
    bits -= 96;
  }
  const bytes = ip.toByteArray();
  maskBytes(bytes, bits);
  return { ip: ipaddr.fromByteArray(bytes), prefix: bits };
}

export function maskBytes(bytes: number[], prefix: number): void {
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    bytes[i] = (bytes[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
}

/** Host rules match hostnames; IP/CIDR rules match IP literals (and resolved addresses). */
export function destinationMatches(m: DestinationMatcher, d: Destination): boolean {
  switch (m.kind) {
    case 'any':
      return true;
    case 'host':
      return d.kind === 'host' && d.host === m.host;
    case 'suffix':
      if (d.kind !== 'host') return false;
      if (d.host === m.suffix) return m.apex;
      return d.host.length > m.suffix.length && d.host.endsWith(m.suffix) && d.host.charCodeAt(d.host.length - m.suffix.length - 1) === 46;
    case 'ip':
      return d.kind === 'ip' && d.host === m.text;
    case 'cidr':
      return d.kind === 'ip' && d.ip.kind() === m.network.kind() && d.ip.match(m.network, m.prefix);
  }
}

// ---- port patterns ----------------------------------------------------------

export type PortMatcher =
  | { readonly kind: 'any' }
  | { readonly kind: 'exact'; readonly port: number }
  | { readonly kind: 'set'; readonly ranges: ReadonlyArray<readonly [number, number]> };

const MAX_PORT_ITEMS = 64;

export function parsePortPattern(input: string): { matcher: PortMatcher; canonical: string } {
  const pattern = input.replace(/\s+/g, '');
  if (pattern === '*') return { matcher: { kind: 'any' }, canonical: '*' };
  const items = pattern.split(',');
  if (items.length > MAX_PORT_ITEMS) throw new PatternError(`port_pattern may list at most ${MAX_PORT_ITEMS} items`);
  const ranges: Array<[number, number]> = [];
  for (const item of items) {
    const m = /^([0-9]{1,5})(?:-([0-9]{1,5}))?$/.exec(item);
    if (!m) throw new PatternError('port_pattern must be "*", a port, a list (80,443) or a range (8000-8999)');
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo < 1 || hi > 65535 || lo > hi) throw new PatternError('ports must be within 1-65535 and ranges ascending');
    ranges.push([lo, hi]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const canonical = ranges.map(([lo, hi]) => (lo === hi ? `${lo}` : `${lo}-${hi}`)).join(',');
  const first = ranges[0];
  if (ranges.length === 1 && first && first[0] === first[1]) return { matcher: { kind: 'exact', port: first[0] }, canonical };
  return { matcher: { kind: 'set', ranges }, canonical };
}

export function portMatches(m: PortMatcher, port: number): boolean {
  switch (m.kind) {
    case 'any':
      return true;
    case 'exact':
      return m.port === port;
    case 'set':
      for (const [lo, hi] of m.ranges) if (port >= lo && port <= hi) return true;
      return false;
  }
}

// ---- specificity ------------------------------------------------------------

// Specificity compares container first, then destination, then port (the order the
// rule semantics are documented in). Packing the three ranks into one number lets the
// index compare candidates with a single subtraction.
const DEST_SCALE = 4; // port rank < 4
const CONTAINER_SCALE = 4096 * DEST_SCALE; // destination rank < 4096

export function containerRank(m: ContainerMatcher): number {
  switch (m.kind) {
    case 'any':
      return 0;
    case 'glob':
      return 1 + m.literals; // <= 129: more literal characters = narrower glob
    case 'exact':
      return 200;
  }
}

export function destinationRank(m: DestinationMatcher): number {
  switch (m.kind) {
    case 'any':
      return 0;
    case 'cidr':
      return 1 + m.prefix; // <= 129
    case 'suffix':
      return 200 + m.labels * 2 + (m.apex ? 0 : 1); // `*.x` excludes the apex, so it is narrower than `**.x`
    case 'host':
    case 'ip':
      return 1000;
  }
}

export function portRank(m: PortMatcher): number {
  return m.kind === 'any' ? 0 : m.kind === 'set' ? 1 : 2;
}

export function specificity(c: ContainerMatcher, d: DestinationMatcher, p: PortMatcher): number {
  return containerRank(c) * CONTAINER_SCALE + destinationRank(d) * DEST_SCALE + portRank(p);
}
