// Proxy-level special-range guard scenarios. NOT a test file of its own: hardening-guard.test.ts
// runs it with `unshare --net` in a fresh network namespace that has only a loopback
// interface. There, 169.254.169.254, 10.20.30.40 and fd00:ec2::254 are put on that
// namespace's `lo`, so even a guard bug could only ever reach servers started here.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { startTestSluice, type TestSluice } from '../helpers/harness.js';
import { basic, RawClient, socks4, socks5, socks5Raw } from '../helpers/proxy-helpers.js';

function assertIsolated(): void {
  if (process.env.SLUICE_NETNS_SCENARIOS !== '1') throw new Error('run only through hardening-guard.test.ts (inside a fresh network namespace)');
  const links = execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }).trim().split('\n');
  if (links.length !== 1 || !/^\d+: lo:/.test(links[0]!)) throw new Error(`refusing to run outside an isolated namespace; links: ${links.join(' | ')}`);
}

assertIsolated();
execFileSync('ip', ['link', 'set', 'lo', 'up']);
execFileSync('ip', ['addr', 'add', '169.254.169.254/32', 'dev', 'lo']);
execFileSync('ip', ['addr', 'add', '10.20.30.40/32', 'dev', 'lo']);
execFileSync('ip', ['-6', 'addr', 'add', 'fd00:ec2::254/128', 'dev', 'lo', 'nodad']);

interface CountingServer {
  port: number;
  connections: number;
  close(): Promise<void>;
}

async function httpServer(host: string, body: string): Promise<CountingServer> {
  const server = http.createServer((_req, res) => res.end(body));
  const srv: CountingServer = { port: 0, connections: 0, close: () => new Promise((r) => (server.closeAllConnections(), server.close(() => r()))) };
  server.on('connection', () => srv.connections++);
  await new Promise<void>((r) => server.listen(0, host, r));
  srv.port = (server.address() as net.AddressInfo).port;
  return srv;
}

async function echoServer(host: string): Promise<CountingServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    sock.pipe(sock);
  });
  const srv: CountingServer = {
    port: 0,
    connections: 0,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  server.on('connection', () => srv.connections++);
  await new Promise<void>((r) => server.listen(0, host, r));
  srv.port = (server.address() as net.AddressInfo).port;
  return srv;
}

const DNS: Record<string, string[]> = {
  'metadata.corp.test': ['169.254.169.254'],
  'imds6.corp.test': ['fd00:ec2::254'],
  'db.corp.test': ['10.20.30.40'],
  'mixed.corp.test': ['10.20.30.40', '127.0.0.2'],
};

let s: TestSluice;
let metadata: CountingServer;
let metadata6: CountingServer;
let db: CountingServer;
let dbEcho: CountingServer;
let pub: CountingServer;

before(async () => {
  metadata = await httpServer('169.254.169.254', 'fake-metadata');
  metadata6 = await httpServer('fd00:ec2::254', 'fake-metadata-v6');
  db = await httpServer('10.20.30.40', 'private-db');
  dbEcho = await echoServer('10.20.30.40');
  pub = await httpServer('127.0.0.2', 'public-origin');
  s = await startTestSluice({ resolver: async (h) => DNS[h] ?? [], config: { sessions: { sweep_interval_ms: 100 } } });
});
after(async () => {
  await s.close(true);
  for (const x of [metadata, metadata6, db, dbEcho, pub]) await x.close();
});

interface Reply {
  kind: 'http' | 'socks5' | 'socks4';
  code: number;
  proxyStatus?: string;
  body?: string;
}

async function viaHttp(container: string, token: string, authority: string, connect: boolean): Promise<Reply> {
  const c = await RawClient.connect(null, s.sluice.http.port);
  try {
    c.write(
      connect
        ? `CONNECT ${authority} HTTP/1.1\r\nProxy-Authorization: ${basic(container, token)}\r\n\r\n`
        : `GET http://${authority}/latest/meta-data/ HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${basic(container, token)}\r\nConnection: close\r\n\r\n`,
    );
    const res = await c.takeResponse(4000);
    return { kind: 'http', code: res.status, proxyStatus: res.headers['proxy-status'], body: res.body };
  } finally {
    c.close();
  }
}

async function viaSocks5(container: string, token: string, host: string, port: number): Promise<Reply> {
  const request = net.isIPv4(host) ? socks5.ipv4(host, port) : socks5.domain(host, port);
  const { c, rep } = await socks5Raw(null as never, s.sluice.socks.port, container, token, request);
  c.close();
  return { kind: 'socks5', code: rep };
}

async function viaSocks4a(container: string, token: string, host: string, port: number): Promise<Reply> {
  const c = await RawClient.connect(null, s.sluice.socks.port);
  try {
    c.write(socks4.connect4a(host, port, `${container}:${token}`));
    return { kind: 'socks4', code: (await c.take(8, 4000))[1]! };
  } finally {
    c.close();
  }
}

/** Every protocol to `host:port` (a name or an IP literal); IPv6 literals skip SOCKS4a. */
async function allProtocols(container: string, token: string, host: string, port: number): Promise<Reply[]> {
  const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const out = [await viaHttp(container, token, authority, false), await viaHttp(container, token, authority, true), await viaSocks5(container, token, host, port)];
  if (!host.includes(':')) out.push(await viaSocks4a(container, token, host, port));
  return out;
}

function assertGuarded(replies: Reply[], what: string): void {
  for (const r of replies) {
    if (r.kind === 'http') {
      assert.equal(r.code, 403, `${what} (${r.kind}): ${r.body}`);
      assert.match(r.proxyStatus ?? '', /^sluice; error=http_request_denied; details=".*is in the [a-z-]+( \(embedded in IPv6\))? range: only a rule naming/, what);
      assert.match(r.body ?? '', /^Blocked by sluice egress policy/, what);
    } else if (r.kind === 'socks5') {
      assert.equal(r.code, 0x02, `${what}: SOCKS5 reply`);
    } else {
      assert.equal(r.code, 0x5b, `${what}: SOCKS4 reply`);
    }
  }
}

test('a wildcard session: every protocol is refused with the guard explanation, and the special servers see no connection', async () => {
  const wild = await s.createSession({ container_name: 'wild', network_rules: [{ destination_pattern: '*' }] });
  const cidr = await s.createSession({ container_name: 'cidr', network_rules: [{ destination_pattern: '**.corp.test' }, { destination_pattern: '0.0.0.0/0' }, { destination_pattern: '::/0' }] });
  const learner = await s.createSession({ container_name: 'learner', allow_all: true });
  for (const sess of [wild, cidr, learner]) {
    const c = sess.container_name;
    assertGuarded(await allProtocols(c, sess.proxy_token, 'metadata.corp.test', metadata.port), `${c} metadata.corp.test`);
    assertGuarded(await allProtocols(c, sess.proxy_token, '169.254.169.254', metadata.port), `${c} 169.254.169.254`);
    assertGuarded(await allProtocols(c, sess.proxy_token, 'imds6.corp.test', metadata6.port), `${c} imds6.corp.test`);
    assertGuarded(await allProtocols(c, sess.proxy_token, 'fd00:ec2::254', metadata6.port), `${c} fd00:ec2::254`);
    assertGuarded(await allProtocols(c, sess.proxy_token, 'db.corp.test', db.port), `${c} db.corp.test`);
  }
  assert.deepEqual([metadata.connections, metadata6.connections, db.connections], [0, 0, 0], 'nothing may have been dialled');

  const rows = (await s.api('GET', '/api/decisions?decision=deny&limit=1000')).body.decisions as Array<{ container: string; reason: string; destination: string }>;
  const ours = rows.filter((r) => ['wild', 'cidr', 'learner'].includes(r.container));
  assert.ok(ours.length >= 3 * 5 * 3, `audit rows: ${ours.length}`);
  for (const r of ours) assert.equal(r.reason, 'address_guarded', JSON.stringify(r));
});

test('a hostname whose answers mix special and ordinary addresses is dialled only at the ordinary one', async () => {
  const wild = await s.createSession({ container_name: 'mixed', network_rules: [{ destination_pattern: '*' }] });
  // The answer is 10.20.30.40 then 127.0.0.2; only 127.0.0.2 (where `pub` listens) may be dialled.
  const r = await viaHttp('mixed', wild.proxy_token, `mixed.corp.test:${pub.port}`, false);
  assert.equal(r.code, 200, r.body);
  assert.equal(r.body, 'public-origin');
  assert.equal(db.connections, 0);
});

test('rules that name the address or the exact hostname reach the special servers', async () => {
  const named = await s.createSession({
    container_name: 'named',
    network_rules: [{ destination_pattern: 'metadata.corp.test' }, { destination_pattern: 'fd00:ec2::254' }, { destination_pattern: '*.corp.test' }, { destination_pattern: '10.20.30.40' }, { destination_pattern: '*' }],
  });
  const m = await viaHttp('named', named.proxy_token, `metadata.corp.test:${metadata.port}`, false);
  assert.deepEqual([m.code, m.body], [200, 'fake-metadata']);
  const m6 = await viaHttp('named', named.proxy_token, `[fd00:ec2::254]:${metadata6.port}`, false);
  assert.deepEqual([m6.code, m6.body], [200, 'fake-metadata-v6']);
  const d = await viaHttp('named', named.proxy_token, `db.corp.test:${db.port}`, false);
  assert.deepEqual([d.code, d.body], [200, 'private-db'], 'wildcard host + the exact address rule');
  assert.equal((await viaSocks5('named', named.proxy_token, 'metadata.corp.test', metadata.port)).code, 0x00);
  // The metadata literal is not named (only the hostname is; `*` matches it): still guarded.
  assertGuarded([await viaHttp('named', named.proxy_token, `169.254.169.254:${metadata.port}`, true)], 'literal not named');
});

test('live revocation: a tunnel into a private address ends when the naming rule is replaced by a wildcard', async () => {
  const id = 'revoke-me';
  const first = await s.createSession({ session_id: id, container_name: 'rev', network_rules: [{ destination_pattern: 'db.corp.test' }] });
  const c = await RawClient.connect(null, s.sluice.http.port);
  try {
    c.write(`CONNECT db.corp.test:${dbEcho.port} HTTP/1.1\r\nProxy-Authorization: ${basic('rev', first.proxy_token)}\r\n\r\n`);
    assert.equal((await c.takeResponse(4000)).status, 200);
    c.write('ping');
    assert.equal((await c.take(4)).toString(), 'ping');
    // Same session, same token, rules replaced: the name now only matches a wildcard.
    await s.createSession({ session_id: id, container_name: 'rev', network_rules: [{ destination_pattern: '*.corp.test' }] });
    await c.untilClosed(3000);
    const conns = (await s.api('GET', '/api/connections?container=rev')).body.connections as unknown[];
    assert.equal(conns.length, 0);
    const rows = (await s.api('GET', '/api/decisions?container=rev')).body.decisions as Array<{ close_reason: string | null }>;
    assert.ok(
      rows.some((r) => r.close_reason === 'revoked'),
      JSON.stringify(rows),
    );
  } finally {
    c.close();
  }
});
