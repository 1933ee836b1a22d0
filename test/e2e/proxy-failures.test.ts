// Upstream and resolution failures, and the destinations that are never dialled (sluice
// itself, the unspecified address, addresses a hostname resolves into a denied network).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { curl, type TestSluice } from '../helpers/harness.js';
import {
  basic,
  blackholeFor,
  closedPort,
  getOverTunnel,
  originFor,
  parseCurl,
  RawClient,
  sluiceFor,
  socks4,
  socks5,
  socks5Raw,
  socksConnect,
  type HttpResponse,
  type T,
} from '../helpers/proxy-helpers.js';

/** The refusal a plain absolute-form request and a CONNECT get for `authority`. */
async function httpBoth(t: T, s: TestSluice, token: string, authority: string): Promise<{ plain: HttpResponse; connect: HttpResponse }> {
  const auth = `Proxy-Authorization: ${basic('build-1', token)}\r\n`;
  const a = await RawClient.connect(t, s.sluice.http.port);
  a.write(`GET http://${authority}/ HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`);
  const b = await RawClient.connect(t, s.sluice.http.port);
  b.write(`CONNECT ${authority} HTTP/1.1\r\n${auth}\r\n`);
  return { plain: await a.takeResponse(4000), connect: await b.takeResponse(4000) };
}

function assertFailure(res: HttpResponse, status: number, error: string, what: string): void {
  assert.equal(res.status, status, `${what}: ${res.statusLine} ${res.body}`);
  assert.match(res.headers['proxy-status'] ?? '', new RegExp(`^sluice; error=${error}; details="`), what);
}

test('origin port closed: 502 connection_refused on HTTP and CONNECT, SOCKS5 0x05, SOCKS4 0x5B', async (t) => {
  const port = await closedPort('127.0.0.3');
  const s = await sluiceFor(t);
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '127.0.0.3' }] });
  const { plain, connect } = await httpBoth(t, s, session.proxy_token, `127.0.0.3:${port}`);
  assertFailure(plain, 502, 'connection_refused', 'plain');
  assert.match(plain.body, /refused the connection/);
  assertFailure(connect, 502, 'connection_refused', 'connect');
  const r = await curl(['-i', '-x', session.proxy.http, `http://127.0.0.3:${port}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 502/);
  await assert.rejects(
    socksConnect(s.sluice.socks.port, { host: '127.0.0.3', port }, { type: 5, userId: 'build-1', password: session.proxy_token }),
    /ConnectionRefused/,
  );
  const c = await RawClient.connect(t, s.sluice.socks.port);
  c.write(socks4.connect('127.0.0.3', port, `build-1:${session.proxy_token}`));
  assert.equal((await c.take(8))[1], 0x5b);
});

test('a resolver that fails: 502 dns_error, SOCKS5 0x04', async (t) => {
  const s = await sluiceFor(t, {
    resolver: async (name) => {
      if (name === 'empty.dns.test') return [];
      if (name === 'junk.dns.test') return ['not-an-address'];
      throw Object.assign(new Error('no such host'), { code: 'ENOTFOUND' });
    },
  });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '*.dns.test' }] });
  const { plain, connect } = await httpBoth(t, s, session.proxy_token, 'missing.dns.test:80');
  assertFailure(plain, 502, 'dns_error', 'plain');
  assert.match(plain.body, /cannot resolve missing\.dns\.test \(ENOTFOUND\)/);
  assertFailure(connect, 502, 'dns_error', 'connect');
  for (const name of ['empty.dns.test', 'junk.dns.test']) {
    const r = await httpBoth(t, s, session.proxy_token, `${name}:80`);
    assertFailure(r.plain, 502, 'dns_error', name);
    assert.match(r.plain.body, /has no addresses/);
  }
  const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.domain('missing.dns.test', 80));
  assert.equal(rep, 0x04);
  await assert.rejects(socksConnect(s.sluice.socks.port, { host: 'missing.dns.test', port: 80 }, { type: 4, userId: `build-1:${session.proxy_token}` }), /rejected/);
});

test('a resolver that never answers: 504 dns_timeout after timeouts.dns_ms, SOCKS5 0x04', async (t) => {
  const s = await sluiceFor(t, { config: { timeouts: { dns_ms: 200 } }, resolver: () => new Promise<string[]>(() => undefined) });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'slow.test' }] });
  const started = Date.now();
  const { plain, connect } = await httpBoth(t, s, session.proxy_token, 'slow.test:80');
  assert.ok(Date.now() - started < 1500);
  assertFailure(plain, 504, 'dns_timeout', 'plain');
  assert.match(plain.body, /resolving slow\.test took longer than 200 ms/);
  assertFailure(connect, 504, 'dns_timeout', 'connect');
  const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.domain('slow.test', 80));
  assert.equal(rep, 0x04);
});

test('connect timeout (destination drops SYNs): 504 connection_timeout, SOCKS5 0x06', async (t) => {
  const hole = await blackholeFor(t);
  // handshake_ms shorter than connect_ms: the client finished its handshake, so only connect_ms applies.
  const s = await sluiceFor(t, { config: { timeouts: { connect_ms: 400, handshake_ms: 250 } } });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: hole.host }] });
  const started = Date.now();
  const { plain, connect } = await httpBoth(t, s, session.proxy_token, `${hole.host}:${hole.port}`);
  assert.ok(Date.now() - started < 2500, `took ${Date.now() - started} ms`);
  assertFailure(plain, 504, 'connection_timeout', 'plain');
  assertFailure(connect, 504, 'connection_timeout', 'connect');
  const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.ipv4(hole.host, hole.port));
  assert.equal(rep, 0x06);
});

test('a hostname resolving into a network denied by a global CIDR rule: 403 naming the resolved address', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t, { resolver: async (name) => (name === 'app.test' ? ['127.0.0.2'] : []) });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'app.test' }] });
  // Global beats the session's allow of the name (and the built-in loopback rule).
  const rule = await s.api('POST', '/api/rules', { destination_pattern: '127.0.0.0/24', action: 'deny' });
  assert.equal(rule.status, 200, JSON.stringify(rule.body));
  const authority = `app.test:${origin.port}`;
  const { plain, connect } = await httpBoth(t, s, session.proxy_token, authority);
  for (const [what, res] of [['plain', plain], ['connect', connect]] as const) {
    assertFailure(res, 403, 'http_request_denied', what);
    assert.match(res.body, new RegExp(`Blocked by sluice egress policy: app\\.test:${origin.port}`));
    assert.match(res.body, new RegExp(`decided by: app\\.test resolves to 127\\.0\\.0\\.2, denied by global rule #${rule.body.id} \\(deny 127\\.0\\.0\\.0/24 any port\\)`));
  }
  const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.domain('app.test', origin.port));
  assert.equal(rep, 0x02);
  assert.equal(origin.requests.length, 0);
});

test('denied resolved addresses are skipped: the connection goes to the first allowed one', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t, { resolver: async (name) => (name === 'multi.test' ? ['127.0.0.3', '127.0.0.2'] : []) });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'multi.test' }] });
  await s.api('POST', '/api/rules', { destination_pattern: '127.0.0.3/32', action: 'deny' });
  const url = `http://multi.test:${origin.port}/multi`;
  const r = await curl(['-x', session.proxy.http, url]);
  assert.match(r.stdout, /GET \/multi/, r.stderr);
  const rp = await curl(['-p', '-x', session.proxy.http, url]);
  assert.match(rp.stdout, /GET \/multi/, rp.stderr);
  const { socket } = await socksConnect(s.sluice.socks.port, { host: 'multi.test', port: origin.port }, { type: 5, userId: 'build-1', password: session.proxy_token });
  assert.match(await getOverTunnel(socket, `multi.test:${origin.port}`, '/multi'), /GET \/multi/);
  assert.equal(origin.requests.length, 3);
});

test("connections to sluice's own listeners and API are denied even though 127.0.0.1 is allowed", async (t) => {
  const s = await sluiceFor(t, { resolver: async (name) => (name === 'me.test' || name === 'localhost' ? ['127.0.0.1'] : []) });
  // 127.0.0.1 and localhost are allowed by the built-in rules; me.test by the session.
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'me.test' }] });
  for (const [name, port] of [
    ['api', s.sluice.api.port],
    ['http', s.sluice.http.port],
    ['socks', s.sluice.socks.port],
  ] as const) {
    for (const host of ['127.0.0.1', 'localhost', 'me.test', '127.1', '[::ffff:127.0.0.1]']) {
      const { plain, connect } = await httpBoth(t, s, session.proxy_token, `${host}:${port}`);
      for (const [what, res] of [['plain', plain], ['connect', connect]] as const) {
        assertFailure(res, 403, 'http_request_denied', `${what} ${host} ${name}`);
        assert.match(res.body, /sluice's own listener or API/, `${what} ${host} ${name}`);
      }
    }
    const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.ipv4('127.0.0.1', port));
    assert.equal(rep, 0x02, `socks5 -> ${name}`);
  }
  // The API really is not reachable through the proxy with the API token either.
  const r = await curl(['-i', '-x', session.proxy.http, '-H', `Authorization: Bearer ${s.sluice.apiToken}`, `http://127.0.0.1:${s.sluice.api.port}/api/sessions`]);
  assert.match(r.stdout, /^HTTP\/1\.1 403/);
  assert.doesNotMatch(r.stdout, /session_id/);
});

test('0.0.0.0 and :: are never dialled, even when a rule allows them', async (t) => {
  const origin = await originFor(t, '127.0.0.1');
  const s = await sluiceFor(t, { resolver: async (name) => (name === 'zero.test' ? ['0.0.0.0'] : name === 'zero6.test' ? ['::'] : []) });
  const session = await s.createSession({
    container_name: 'build-1',
    network_rules: ['0.0.0.0', '::', 'zero.test', 'zero6.test'].map((d) => ({ destination_pattern: d })),
  });
  // An origin on 127.0.0.1 would answer a dial of 0.0.0.0:port on Linux.
  for (const host of ['0.0.0.0', '0', '[::]', 'zero.test', 'zero6.test']) {
    const { plain, connect } = await httpBoth(t, s, session.proxy_token, `${host}:${origin.port}`);
    assertFailure(plain, 403, 'http_request_denied', `plain ${host}`);
    assertFailure(connect, 403, 'http_request_denied', `connect ${host}`);
    assert.match(plain.body, /unspecified address/, host);
  }
  const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.ipv4('0.0.0.0', origin.port));
  assert.equal(rep, 0x02);
  await assert.rejects(socksConnect(s.sluice.socks.port, { host: '0.0.0.0', port: origin.port }, { type: 4, userId: `build-1:${session.proxy_token}` }), /rejected/);
  const r = await curl(['-i', '-x', session.proxy.http, `http://0.0.0.0:${origin.port}/`]);
  assert.equal(parseCurl(r.stdout).status, 403);
  assert.equal(origin.requests.length, 0);
});

test('other spellings of a denied address are denied on every protocol', async (t) => {
  const victim = await originFor(t, '127.0.0.3');
  const s = await sluiceFor(t, {
    resolver: async () => {
      throw new Error('IP literals must never be resolved');
    },
  });
  // The session allows it; a global rule (higher layer) denies it.
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '127.0.0.3' }] });
  await s.api('POST', '/api/rules', { destination_pattern: '127.0.0.3', action: 'deny' });
  const p = victim.port;
  for (const host of ['127.0.0.3', '2130706435', '0x7f.0.0.3', '0177.0.0.3', '127.3', '[::ffff:127.0.0.3]', '[::ffff:7f00:3]', '127.0.0.3.']) {
    const { plain, connect } = await httpBoth(t, s, session.proxy_token, `${host}:${p}`);
    assertFailure(plain, 403, 'http_request_denied', `plain ${host}`);
    assertFailure(connect, 403, 'http_request_denied', `connect ${host}`);
    assert.match(plain.body, /Blocked by sluice egress policy: 127\.0\.0\.3:/, host);
  }
  // SOCKS5: IPv4-mapped IPv6 (ATYP 4) and IP literals sent as domain names (ATYP 3).
  const mapped = Buffer.from([0x05, 0x01, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 3, p >> 8, p & 0xff]);
  for (const req of [mapped, socks5.domain('127.0.0.3', p), socks5.domain('2130706435', p), socks5.domain('[::ffff:127.0.0.3]', p)]) {
    const { rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, req);
    assert.equal(rep, 0x02, req.toString('hex'));
  }
  const c = await RawClient.connect(t, s.sluice.socks.port);
  c.write(socks4.connect4a('0x7f000003', p, `build-1:${session.proxy_token}`));
  assert.equal((await c.take(8))[1], 0x5b);
  assert.equal(victim.requests.length, 0);
});
