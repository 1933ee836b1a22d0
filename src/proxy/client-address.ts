import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { normaliseIp } from '../policy/host.js';

/** The client's IP in the canonical form source_ips are stored in (IPv4-mapped IPv6 unwrapped). */
export function clientAddress(socket: net.Socket): string {
  const raw = socket.remoteAddress;
  if (!raw) return '';
  // The kernel already writes IPv4 peers in canonical dotted-quad form; only IPv6 (mapped
  // IPv4 among it) needs parsing, and this runs once per connection.
  if (net.isIPv4(raw)) return raw;
  if (!ipaddr.isValid(raw)) return '';
  return normaliseIp(ipaddr.parse(raw)).toString();
}
