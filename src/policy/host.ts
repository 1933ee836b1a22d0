// Canonical form of a destination as the proxy receives it (CONNECT authority, SOCKS
// address, absolute URL host). Every spelling of the same address must come out
// identical, or an IP/CIDR rule could be walked around by writing the address another way.
import ipaddr from 'ipaddr.js';
import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;

export type Destination =
  | { readonly kind: 'host'; readonly host: string }
  | { readonly kind: 'ip'; readonly host: string; readonly ip: IpAddress };

export class HostError extends Error {}

const MAX_HOST_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;
// After IDN conversion a hostname is plain LDH; '_' is tolerated because real names use it.
const HOST_CHARS = /^[a-z0-9_.-]+$/;
// Bytes that can never be part of a host and would otherwise be silently dropped or
// rewritten by the WHATWG host parser.
const FORBIDDEN = /[\u0000-\u0020\u007f%/\\?#@:[\]<>^|]/;

/** Turns an IP (either family) into the form rules are matched against: IPv4-mapped IPv6 becomes IPv4. */
export function normaliseIp(ip: IpAddress): IpAddress {
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) {
    return (ip as ipaddr.IPv6).toIPv4Address();
  }
  return ip;
}

export function ipDestination(ip: IpAddress): Destination {
  const n = normaliseIp(ip);
  return { kind: 'ip', ip: n, host: n.toString() };
}

/**
 * Parses a host (no port). Accepts `[v6]`, bare v6, any IPv4 spelling the WHATWG URL
 * parser accepts (`127.1`, `0x7f.1`, `2130706433`), and hostnames (IDN converted to
 * punycode, lowercased, trailing dot removed). Throws HostError otherwise.
 */
export function parseHost(raw: string): Destination {
  if (raw.length === 0) throw new HostError('empty host');
  if (raw.length > MAX_HOST_LENGTH + 3) throw new HostError('host is too long');
  let text = raw;
  if (text.startsWith('[')) {
    if (!text.endsWith(']')) throw new HostError('unterminated IPv6 literal');
    return ipDestination(parseIpv6(text.slice(1, -1)));
  }
  if (text.includes(':')) return ipDestination(parseIpv6(text));
  // Fast path for the common case, a dotted-quad literal (already canonical: isIPv4 refuses
  // leading zeros and other spellings, which take the full path below).
  if (isIPv4(text)) return ipDestination(ipaddr.IPv4.parse(text));
  if (FORBIDDEN.test(text)) throw new HostError('host contains a forbidden character');
  // domainToASCII applies IDNA (punycode, case folding, full-width dots) and the WHATWG
  // IPv4 number parser; the trailing root dot is dropped only afterwards, whatever its spelling.
  let ascii = domainToASCII(text);
  if (ascii.endsWith('.')) ascii = ascii.slice(0, -1);
  if (ascii === '') throw new HostError('invalid host name');
  // isIPv4, not ipaddr's validator: that one throws (and catches) for every hostname, which
  // made name parsing the most expensive step of creating rules.
  if (isIPv4(ascii)) return ipDestination(ipaddr.IPv4.parse(ascii));
  if (ascii.length > MAX_HOST_LENGTH) throw new HostError('host is too long');
  if (!HOST_CHARS.test(ascii)) throw new HostError('host contains a forbidden character');
  const labels = ascii.split('.');
  for (const label of labels) {
    if (label.length === 0) throw new HostError('host has an empty label');
    if (label.length > MAX_LABEL_LENGTH) throw new HostError('host label is longer than 63 characters');
    if (label.startsWith('-') || label.endsWith('-')) throw new HostError('a host label cannot start or end with "-"');
  }
  // A final all-numeric label means the URL parser saw something IPv4-like it could not
  // fold into an address (e.g. `1.2.3.4.5`); never treat that as a name.
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) throw new HostError('invalid IPv4 address');
  return { kind: 'host', host: ascii };
}

/**
 * Strict IPv6 literal. ipaddr.js alone would read `::127.0.0.1` as IPv4-mapped and accept
 * hex/octal in an embedded IPv4 tail; the WHATWG URL parser implements the standard
 * grammar, so it canonicalises first and ipaddr.js parses its output.
 */
export function parseIpv6(text: string): ipaddr.IPv6 {
  if (text.includes('%')) throw new HostError('IPv6 zone ids are not allowed');
  if (!isIPv6(text)) throw new HostError('invalid IPv6 address');
  let canonical: string;
  try {
    canonical = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    throw new HostError('invalid IPv6 address');
  }
  return ipaddr.IPv6.parse(canonical);
}

/** Parses `host:port` or `[v6]:port` as used by CONNECT. */
export function parseAuthority(authority: string): { destination: Destination; port: number } {
  let hostPart: string;
  let portPart: string;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0 || authority[close + 1] !== ':') throw new HostError('expected [ipv6]:port');
    hostPart = authority.slice(0, close + 1);
    portPart = authority.slice(close + 2);
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon < 0) throw new HostError('expected host:port');
    hostPart = authority.slice(0, colon);
    if (hostPart.includes(':')) throw new HostError('an IPv6 address must be bracketed: [addr]:port');
    portPart = authority.slice(colon + 1);
  }
  return { destination: parseHost(hostPart), port: parsePort(portPart) };
}

export function parsePort(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) throw new HostError('invalid port');
  const port = Number(text);
  if (port < 1 || port > 65535) throw new HostError('port out of range 1-65535');
  return port;
}

/** How a destination is written back in messages and audit records (`[v6]` for IPv6). */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
