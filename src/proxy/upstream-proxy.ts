// Chaining to a parent SOCKS proxy (a corporate egress, say): every connection sluice has
// allowed is dialled through it instead of directly. The decision does not change: names
// are still resolved by sluice, every address is still checked against the policy, and the
// parent is asked for exactly an address that passed (never the name), so it cannot be
// steered somewhere the policy did not look.
import type net from 'node:net';
import { SocksClient, type SocksProxy } from 'socks';
import { z } from 'zod';
import ipaddr from 'ipaddr.js';
import { normaliseIp, type IpAddress } from '../policy/host.js';
import type { Failure } from './outcomes.js';
import type { SelfGuard } from './self-guard.js';

/** `socks5://[user:pass@]host[:port]` or `socks4://[user@]host[:port]` (port 1080 when left out). */
export const upstreamProxySchema = z
  .string()
  .transform((text, ctx) => {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'expected a URL such as socks5://10.0.0.1:1080' });
      return z.NEVER;
    }
    if (url.protocol === 'socks5h:' || url.protocol === 'socks4a:') {
      // Remote resolution would take the name past the address checks.
      ctx.addIssue({ code: 'custom', message: `${url.protocol}// asks the parent to resolve names; sluice resolves and checks them itself, so use socks5:// or socks4://` });
      return z.NEVER;
    }
    const type = url.protocol === 'socks5:' ? 5 : url.protocol === 'socks4:' ? 4 : null;
    if (type === null) {
      ctx.addIssue({ code: 'custom', message: `unsupported scheme ${url.protocol} (use socks5:// or socks4://)` });
      return z.NEVER;
    }
    if (url.pathname !== '' && url.pathname !== '/') {
      ctx.addIssue({ code: 'custom', message: 'an upstream proxy URL has no path' });
      return z.NEVER;
    }
    const userId = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    if (type === 4 && password !== '') {
      ctx.addIssue({ code: 'custom', message: 'SOCKS4 has no passwords (only a user id)' });
      return z.NEVER;
    }
    // RFC 1929 fields are one length byte each.
    if (Buffer.byteLength(userId) > 255 || Buffer.byteLength(password) > 255) {
      ctx.addIssue({ code: 'custom', message: 'user and password must be at most 255 bytes each' });
      return z.NEVER;
    }
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const proxy: SocksProxy = { host, port: url.port === '' ? 1080 : Number(url.port), type };
    if (userId !== '') proxy.userId = userId;
    if (password !== '') proxy.password = password;
    // What logs and error details show: never the credentials.
    const label = `socks${type}://${url.host}`;
    return { proxy, label } as const;
  });

export type UpstreamProxy = z.infer<typeof upstreamProxySchema>;

/**
 * Every allowed connection would come back in through sluice's own listener, and each of
 * those would be dialled through it again. Only a literal address can be caught here; a
 * name that resolves to sluice is not looked up at start.
 */
export function refuseProxyLoop(via: UpstreamProxy | undefined, self: SelfGuard): void {
  const host = via?.proxy.host;
  if (via === undefined || host === undefined || !ipaddr.isValid(host)) return;
  if (self.isSelf(normaliseIp(ipaddr.parse(host)), via.proxy.port)) {
    throw new Error(`upstream_proxy ${via.label} is one of this sluice's own listeners (a proxy loop)`);
  }
}

/** The parent's SOCKS5 reply names (as the socks package reports them) and what they mean here. */
const REPLY_FAILURES: Record<string, Failure['kind']> = {
  ConnectionRefused: 'connection_refused',
  HostUnreachable: 'unreachable',
  NetworkUnreachable: 'unreachable',
  TTLExpired: 'connection_timeout',
};

function failureOf(err: Error, via: UpstreamProxy, target: string): Failure {
  const message = err.message;
  // The socks package passes socket errors on as their message ("connect ECONNREFUSED ...").
  const code = (err as NodeJS.ErrnoException).code ?? /\b(E[A-Z]{3,})\b/.exec(message)?.[1];
  if (code !== undefined) return { kind: 'connect_error', detail: `upstream proxy ${via.label} is unreachable (${code})` };
  if (message.includes('timed out')) return { kind: 'connection_timeout', detail: `upstream proxy ${via.label} did not connect to ${target} in time` };
  // "Socks5 proxy rejected connection - ConnectionRefused"
  const reply = /rejected connection - (\w+)/.exec(message)?.[1];
  if (reply !== undefined) {
    const kind = REPLY_FAILURES[reply] ?? 'connect_error';
    return { kind, detail: `upstream proxy ${via.label} could not connect to ${target} (${reply})` };
  }
  if (message.includes('Authentication failed') || message.includes('no accepted authentication type')) {
    return { kind: 'connect_error', detail: `upstream proxy ${via.label} refused sluice's credentials` };
  }
  return { kind: 'connect_error', detail: `upstream proxy ${via.label} failed: ${message}` };
}

export type ViaResult = { ok: true; socket: net.Socket } | { ok: false; failure: Failure };

/**
 * Bytes the parent relayed in the same read as its CONNECT reply (a server that speaks
 * first: an SSH or SMTP banner, a short answer and FIN) wait in the socks package's own
 * buffer, which it re-emits a turn later with a bare 'data' event: by then the relay has
 * already passed on bytes read after them, out of order. Put back at the front of the
 * socket's stream instead, they are read first. (The package's receive buffer is private;
 * test/e2e/proxy-upstream.test.ts checks a server-first download end to end.)
 */
function keepEarlyBytesInOrder(client: SocksClient, socket: net.Socket): void {
  const pending = (client as unknown as { receiveBuffer?: { length: number; get(n: number): Buffer } }).receiveBuffer;
  if (pending !== undefined && pending.length > 0) socket.unshift(pending.get(pending.length));
}

/** Opens a connection to `ip:port` through the parent proxy, its handshake done, within `timeoutMs`. */
export function connectVia(via: UpstreamProxy, ip: IpAddress, port: number, timeoutMs: number, target: string): Promise<ViaResult> {
  return new Promise((resolve) => {
    const client = new SocksClient({
      proxy: via.proxy,
      command: 'connect',
      destination: { host: ip.toString(), port },
      timeout: Math.max(1, timeoutMs),
      set_tcp_nodelay: true,
    });
    client.once('established', ({ socket }: { socket: net.Socket }) => {
      client.removeAllListeners('error');
      keepEarlyBytesInOrder(client, socket);
      resolve({ ok: true, socket });
    });
    client.once('error', (err: Error) => {
      client.removeAllListeners('established');
      resolve({ ok: false, failure: failureOf(err, via, target) });
    });
    client.connect();
  });
}
