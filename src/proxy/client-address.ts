import type net from 'node:net';
import ipaddr from 'ipaddr.js';
import { normaliseIp } from '../policy/host.js';

/** The client's IP in the canonical form source_ips are stored in (IPv4-mapped IPv6 unwrapped). */
export function clientAddress(socket: net.Socket): string {
  const raw = socket.remoteAddress;
  if (!raw || !ipaddr.isValid(raw)) return '';
  return normaliseIp(ipaddr.parse(raw)).toString();
}
