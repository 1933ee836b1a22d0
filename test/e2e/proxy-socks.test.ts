// SOCKS5 (IPv4, IPv6, domain), SOCKS4 and 4a through real clients (curl, the `socks`
// package) and raw bytes: success, denial reply codes, and the SOCKS port/HTTP port symmetry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { curl } from '../helpers/harness.js';
import { basicSetup, getOverTunnel, originFor, proxyUrl, RawClient, sessionFor, sluiceFor, socks4, socks5, socks5Raw, socksConnect } from '../helpers/proxy-helpers.js';

test('curl --socks5-hostname reaches an allowed origin', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const r = await curl(['--socks5-hostname', `127.0.0.1:${s.sluice.socks.port}`, '--proxy-user', `build-1:${session.proxy_token}`, `http://${origin.authority}/socks5h`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^origin 127\.0\.0\.2:\d+ GET \/socks5h$/m);
  // The URL the API hands out works as-is.
  const r2 = await curl(['-x', session.proxy.socks5, `http://${origin.authority}/from-api-url`]);
  assert.match(r2.stdout, /GET \/from-api-url/);
});

test('the HTTP port serves SOCKS5 too (first byte decides)', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const r = await curl(['-x', proxyUrl(s.sluice.http.port, 'build-1', session.proxy_token, 'socks5h'), `http://${origin.authority}/socks-on-http-port`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /GET \/socks-on-http-port/);
});

test('SOCKS5 CONNECT with an IPv4 address (socks package)', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const { socket } = await socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 5, userId: 'build-1', password: session.proxy_token });
  assert.match(await getOverTunnel(socket, origin.authority, '/v4'), /GET \/v4/);
  assert.equal(origin.requests.length, 1);
});

test('SOCKS5 CONNECT with an IPv6 address reaches an origin on ::1', async (t) => {
  const origin = await originFor(t, '::1');
  const s = await sluiceFor(t);
  const session = await s.createSession({ container_name: 'build-1' });
  const { socket } = await socksConnect(s.sluice.socks.port, { host: '::1', port: origin.port }, { type: 5, userId: 'build-1', password: session.proxy_token });
  assert.match(await getOverTunnel(socket, `[::1]:${origin.port}`, '/v6'), /GET \/v6/);
});

test('SOCKS5 CONNECT with a domain name is resolved by sluice (injected resolver)', async (t) => {
  const origin = await originFor(t);
  const asked: string[] = [];
  const s = await sluiceFor(t, {
    resolver: async (name) => {
      asked.push(name);
      return name === 'app.test' ? ['127.0.0.2'] : [];
    },
  });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'app.test', port_pattern: String(origin.port) }] });
  const { socket } = await socksConnect(s.sluice.socks.port, { host: 'app.test', port: origin.port }, { type: 5, userId: 'build-1', password: session.proxy_token });
  assert.match(await getOverTunnel(socket, `app.test:${origin.port}`, '/domain'), /GET \/domain/);
  assert.deepEqual(asked, ['app.test'], 'resolved exactly once');
  // curl with socks5h sends the name too.
  const r = await curl(['-x', session.proxy.socks5, `http://app.test:${origin.port}/curl`]);
  assert.match(r.stdout, /GET \/curl/);
  assert.equal(origin.requests[1]!.headers.host, `app.test:${origin.port}`);
});

test('SOCKS4 and SOCKS4a CONNECT with userid container:token', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t, { resolver: async (name) => (name === 'app.test' ? ['127.0.0.2'] : []) });
  const session = await s.createSession({
    container_name: 'build-1',
    network_rules: [
      { destination_pattern: '127.0.0.2', port_pattern: String(origin.port) },
      { destination_pattern: 'app.test', port_pattern: String(origin.port) },
    ],
  });
  const userId = `build-1:${session.proxy_token}`;
  const v4 = await socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 4, userId });
  assert.match(await getOverTunnel(v4.socket, origin.authority, '/socks4'), /GET \/socks4/);
  // A hostname makes the socks package speak 4a (0.0.0.1 + name).
  const v4a = await socksConnect(s.sluice.socks.port, { host: 'app.test', port: origin.port }, { type: 4, userId });
  assert.match(await getOverTunnel(v4a.socket, `app.test:${origin.port}`, '/socks4a'), /GET \/socks4a/);
  // Raw: the grant reply is 0x00 0x5A.
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(socks4.connect('127.0.0.2', origin.port, userId));
  const reply = await c.take(8);
  assert.deepEqual([...reply.subarray(0, 2)], [0x00, 0x5a]);
});

test('SOCKS5 denial: reply 0x02, nothing reaches the origin', async (t) => {
  const { s, session } = await basicSetup(t);
  const other = await originFor(t, '127.0.0.3');
  await assert.rejects(
    socksConnect(s.sluice.socks.port, { host: '127.0.0.3', port: other.port }, { type: 5, userId: 'build-1', password: session.proxy_token }),
    /Socks5 proxy rejected connection - NotAllowed/,
  );
  const { c, rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.ipv4('127.0.0.3', other.port));
  assert.equal(rep, 0x02);
  await c.untilClosed();
  assert.equal(other.requests.length, 0);
});

test('SOCKS4 denial: reply 0x5B, nothing reaches the origin', async (t) => {
  const { s, session } = await basicSetup(t);
  const other = await originFor(t, '127.0.0.3');
  await assert.rejects(
    socksConnect(s.sluice.socks.port, { host: '127.0.0.3', port: other.port }, { type: 4, userId: `build-1:${session.proxy_token}` }),
    /Socks4 Proxy rejected connection/,
  );
  const c = await RawClient.connect(t, s.sluice.socks.port);
  c.write(socks4.connect('127.0.0.3', other.port, `build-1:${session.proxy_token}`));
  const reply = await c.take(8);
  assert.deepEqual([...reply.subarray(0, 2)], [0x00, 0x5b]);
  await c.untilClosed();
  assert.equal(other.requests.length, 0);
});

test('an IPv6 destination denied by a global rule: SOCKS5 0x02 and CONNECT 403', async (t) => {
  const origin = await originFor(t, '::1');
  const s = await sluiceFor(t);
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '::1' }] });
  // Global outranks the session allow and the built-in loopback rule.
  const rule = await s.api('POST', '/api/rules', { destination_pattern: '::1/128', action: 'deny' });
  assert.equal(rule.status, 200, JSON.stringify(rule.body));
  await assert.rejects(
    socksConnect(s.sluice.socks.port, { host: '::1', port: origin.port }, { type: 5, userId: 'build-1', password: session.proxy_token }),
    /NotAllowed/,
  );
  const r = await curl(['-i', '-x', session.proxy.http, `http://[::1]:${origin.port}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 403/);
  assert.match(r.stdout, new RegExp(`decided by: global rule #${rule.body.id}`));
  assert.equal(origin.requests.length, 0);
});

test('a SOCKS5 client may pipeline greeting, auth, request and payload in one packet', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const c = await RawClient.connect(t, s.sluice.socks.port);
  c.write(
    Buffer.concat([
      socks5.greeting(0x02),
      socks5.auth('build-1', session.proxy_token),
      socks5.ipv4('127.0.0.2', origin.port),
      Buffer.from(`GET /optimistic HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: close\r\n\r\n`),
    ]),
  );
  assert.deepEqual([...(await c.take(2))], [0x05, 0x02]);
  assert.deepEqual([...(await c.take(2))], [0x01, 0x00]);
  const reply = await c.take(10);
  assert.equal(reply[1], 0x00);
  assert.equal(reply[3], 0x01, 'BND.ADDR is IPv4');
  assert.ok(reply.readUInt16BE(8) > 0, 'BND.PORT is the bound upstream port');
  const res = await c.takeResponse();
  assert.equal(res.status, 200);
  assert.match(res.body, /GET \/optimistic/);
});

test('SOCKS5 domain request for a name the policy denies is refused before any DNS lookup', async (t) => {
  const asked: string[] = [];
  const s = await sluiceFor(t, {
    resolver: async (name) => {
      asked.push(name);
      return ['127.0.0.2'];
    },
  });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'app.test' }] });
  const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.domain('other.test', 80));
  assert.equal(rep, 0x02);
  assert.deepEqual(asked, []);
});

test('session rules bind the SOCKS port too: an allowed port on another host is refused', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.ipv4('127.0.0.3', origin.port));
  assert.equal(rep, 0x02);
});

test('SOCKS4a to a name that resolves to IPv6 works (the reply carries no IPv6 address)', async (t) => {
  const origin = await originFor(t, '::1');
  const s = await sluiceFor(t, { resolver: async (name) => (name === 'v6.test' ? ['::1'] : []) });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'v6.test' }] });
  const c = await RawClient.connect(t, s.sluice.socks.port);
  c.write(socks4.connect4a('v6.test', origin.port, `build-1:${session.proxy_token}`));
  assert.deepEqual([...(await c.take(8))], [0x00, 0x5a, 0, 0, 0, 0, 0, 0]);
  c.write(`GET /4a-v6 HTTP/1.1\r\nHost: v6.test\r\nConnection: close\r\n\r\n`);
  assert.match((await c.takeResponse()).body, /GET \/4a-v6/);
});

test('an IP literal sent as a SOCKS5 domain name is used as the address, without DNS', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t, {
    resolver: async () => {
      throw new Error('must not be asked');
    },
  });
  const session = await sessionFor(s, 'build-1', origin);
  const { c, rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.domain('127.0.0.2', origin.port));
  assert.equal(rep, 0x00);
  c.write(`GET /literal HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: close\r\n\r\n`);
  assert.match((await c.takeResponse()).body, /GET \/literal/);
});
