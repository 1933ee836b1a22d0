// Chaining to a parent SOCKS or HTTP proxy (a corporate egress, say): every connection sluice has
// allowed is dialled through it instead of directly. The decision does not change: names
// are still resolved by sluice, every address is still checked against the policy, and the
// parent is asked for exactly an address that passed (never the name), so it cannot be
// steered somewhere the policy did not look.
import type net from 'node:net';
import { SocksClient, type SocksProxy } from 'socks';
import { z } from 'zod';
import ipaddr from 'ipaddr.js';
import { formatHostPort, normaliseIp, type IpAddress } from '../policy/host.js';
import type { Failure } from './outcomes.js';
import type { SelfGuard } from './self-guard.js';
import { connectViaHttp, type HttpParent, type ViaResult } from './upstream-http.js';

/** A parent SOCKS proxy: the socks package does its handshake. */
export interface SocksParent {
  readonly kind: 'socks';
  readonly host: string;
  readonly port: number;
  readonly proxy: SocksProxy;
  readonly label: string;
}

export type UpstreamProxy = SocksParent | (HttpParent & { readonly kind: 'http' });

const DEFAULT_PORTS: Record<string, number> = { 'socks5:': 1080, 'socks4:': 1080, 'http:': 80 };

/**
 * `socks5://[user:pass@]host[:port]`, `socks4://[user@]host[:port]` (port 1080 when left
 * out) or `http://[user:pass@]host[:port]` (port 80 when left out, as for any http URL).
 */
export const upstreamProxySchema = z.string().transform((text, ctx): UpstreamProxy => {
  const refuse = (message: string): never => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return refuse('expected a URL such as socks5://10.0.0.1:1080 or http://10.0.0.1:3128');
  }
  if (url.protocol === 'socks5h:' || url.protocol === 'socks4a:') {
    // Remote resolution would take the name past the address checks.
    return refuse(`${url.protocol}// asks the parent to resolve names; sluice resolves and checks them itself, so use socks5:// or socks4://`);
  }
  if (url.protocol === 'https:') {
    return refuse('https:// parents (TLS to the parent proxy) are not supported; use http://, socks5:// or socks4://');
  }
  const defaultPort = DEFAULT_PORTS[url.protocol];
  if (defaultPort === undefined) return refuse(`unsupported scheme ${url.protocol} (use socks5://, socks4:// or http://)`);
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') return refuse('an upstream proxy URL has no path, query or fragment');
  const userId = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = url.port === '' ? defaultPort : Number(url.port);
  // What logs and error details show: never the credentials.
  const label = `${url.protocol}//${formatHostPort(host, port)}`;
  if (url.protocol === 'http:') {
    // RFC 7617: the user-id of Basic credentials cannot hold a colon.
    if (userId.includes(':')) return refuse('the user of an http:// upstream proxy cannot contain ":"');
    const authorization = userId === '' && password === '' ? null : `Basic ${Buffer.from(`${userId}:${password}`, 'utf8').toString('base64')}`;
    return { kind: 'http', host, port, authorization, label };
  }
  const type = url.protocol === 'socks5:' ? 5 : 4;
  if (type === 4 && password !== '') return refuse('SOCKS4 has no passwords (only a user id)');
  // RFC 1929 fields are one length byte each.
  if (Buffer.byteLength(userId) > 255 || Buffer.byteLength(password) > 255) return refuse('user and password must be at most 255 bytes each');
  const proxy: SocksProxy = { host, port, type };
  if (userId !== '') proxy.userId = userId;
  if (password !== '') proxy.password = password;
  return { kind: 'socks', host, port, proxy, label };
});


/**
 * Every allowed connection would come back in through sluice's own listener, and each of
 * those would be dialled through it again. Only a literal address can be caught here; a
 * name that resolves to sluice is not looked up at start.
 */
export function refuseProxyLoop(via: UpstreamProxy | undefined, self: SelfGuard): void {
  if (via === undefined || !ipaddr.isValid(via.host)) return;
  if (self.isSelf(normaliseIp(ipaddr.parse(via.host)), via.port)) {
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

function failureOf(err: Error, via: SocksParent, target: string): Failure {
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
  // `target` is the checked address, formatted for an authority: the parent never sees a name.
  if (via.kind === 'http') return connectViaHttp(via, target, timeoutMs);
  return connectViaSocks(via, ip, port, timeoutMs, target);
}

function connectViaSocks(via: SocksParent, ip: IpAddress, port: number, timeoutMs: number, target: string): Promise<ViaResult> {
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
