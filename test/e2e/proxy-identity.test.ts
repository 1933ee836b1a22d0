// Who is connecting: session tokens on every protocol, refusals (missing, wrong, forged,
// malformed, expired, deleted), identification by source address, and `identity: username`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { curl, type Origin, type TestSluice } from '../helpers/harness.js';
import { basic, basicSetup, originFor, parseCurl, proxyUrl, RawClient, sessionFor, sluiceFor, socks4, socks5, socks5Raw, socksConnect, type T } from '../helpers/proxy-helpers.js';

const CHALLENGE = 'Basic realm="sluice"';

/** Plain HTTP and CONNECT with a given Proxy-Authorization value (or none); returns both responses. */
async function httpBoth(t: T, s: TestSluice, origin: Origin, auth: string | null, localAddress?: string) {
  const header = auth === null ? '' : `Proxy-Authorization: ${auth}\r\n`;
  const a = await RawClient.connect(t, s.sluice.http.port, { localAddress });
  a.write(`GET http://${origin.authority}/ HTTP/1.1\r\nHost: ${origin.authority}\r\n${header}\r\n`);
  const plain = await a.takeResponse();
  const b = await RawClient.connect(t, s.sluice.http.port, { localAddress });
  b.write(`CONNECT ${origin.authority} HTTP/1.1\r\n${header}\r\n`);
  const connect = await b.takeResponse();
  return { plain, connect };
}

function assert407(res: { status: number; headers: Record<string, string>; body: string }, what: string): void {
  assert.equal(res.status, 407, `${what}: ${res.status}`);
  assert.equal(res.headers['proxy-authenticate'], CHALLENGE, what);
  assert.match(res.headers['proxy-status'] ?? '', /^sluice; error=http_request_denied; details="proxy credentials/, what);
}

test('no credentials: 407 with Proxy-Authenticate (HTTP and CONNECT), SOCKS5 method 0xFF, SOCKS4 0x5B', async (t) => {
  const { s, origin } = await basicSetup(t);
  const r = await curl(['-i', '-x', s.httpProxy, `http://${origin.authority}/`]);
  const res = parseCurl(r.stdout);
  assert407(res, 'curl');
  assert.match(res.body, /proxy credentials required \(username = container name, password = session proxy_token\)/);
  const { plain, connect } = await httpBoth(t, s, origin, null);
  assert407(plain, 'plain');
  assert407(connect, 'connect');

  const c = await RawClient.connect(t, s.sluice.socks.port);
  c.write(socks5.greeting(0x00));
  assert.deepEqual([...(await c.take(2))], [0x05, 0xff]);
  await c.untilClosed();

  const c4 = await RawClient.connect(t, s.sluice.socks.port);
  c4.write(socks4.connect('127.0.0.2', origin.port, ''));
  assert.deepEqual([...(await c4.take(8)).subarray(0, 2)], [0x00, 0x5b]);
  assert.equal(origin.requests.length, 0);
});

test('a wrong token is refused on every protocol', async (t) => {
  const { s, origin } = await basicSetup(t);
  const { plain, connect } = await httpBoth(t, s, origin, basic('build-1', 'not-the-token'));
  assert407(plain, 'plain');
  assert.match(plain.body, /proxy credentials rejected/);
  assert407(connect, 'connect');
  const r = await curl(['-i', '-x', proxyUrl(s.sluice.http.port, 'build-1', 'wrong'), `http://${origin.authority}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 407/);
  await assert.rejects(
    socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 5, userId: 'build-1', password: 'wrong' }),
    /Socks5 Authentication failed/,
  );
  await assert.rejects(socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 4, userId: 'build-1:wrong' }), /Socks4 Proxy rejected/);
  // A SOCKS4 userid with no token at all is a bare username: refused in credentials mode.
  await assert.rejects(socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 4, userId: 'build-1' }), /Socks4 Proxy rejected/);
  assert.equal(origin.requests.length, 0);
});

test('a forged identity (victim name + attacker token) is refused on HTTP, CONNECT, SOCKS5 and SOCKS4', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t);
  await sessionFor(s, 'victim', origin);
  const attacker = await s.createSession({ container_name: 'attacker' });
  const tok = attacker.proxy_token;

  const { plain, connect } = await httpBoth(t, s, origin, basic('victim', tok));
  assert407(plain, 'plain');
  assert407(connect, 'connect');
  const { c, rep } = await socks5Raw(t, s.sluice.socks.port, 'victim', tok, socks5.ipv4('127.0.0.2', origin.port));
  assert.equal(rep, -1, 'no CONNECT reply: auth failed');
  await c.untilClosed();
  // The RFC 1929 status byte itself.
  const raw = await RawClient.connect(t, s.sluice.socks.port);
  raw.write(socks5.greeting(0x02));
  await raw.take(2);
  raw.write(socks5.auth('victim', tok));
  assert.deepEqual([...(await raw.take(2))], [0x01, 0x01]);
  await raw.untilClosed();
  await assert.rejects(socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 4, userId: `victim:${tok}` }), /Socks4 Proxy rejected/);
  assert.equal(origin.requests.length, 0);

  // The attacker under its own name is identified, and its own policy (nothing allowed) applies.
  const own = await curl(['-i', '-x', attacker.proxy.http, `http://${origin.authority}/`]);
  assert.match(own.stdout, /^HTTP\/1\.1 403/);
  assert.equal(origin.requests.length, 0);
});

test('malformed Proxy-Authorization values are refused, never treated as absent', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin, { source_ips: ['127.0.0.5'] });
  const good = Buffer.from(`build-1:${session.proxy_token}`).toString('base64');
  const values = [
    'Basic',
    'Basic ',
    'Basic !!!notbase64!!!',
    `Basic ${good} trailing`,
    `Bearer ${session.proxy_token}`,
    `Digest username="build-1"`,
    `Basic ${Buffer.from('no-colon-here').toString('base64')}`,
    `Basic ${Buffer.from([0x62, 0x3a, 0xff, 0xfe]).toString('base64')}`, // "b:" + invalid UTF-8
    `Basic ${Buffer.from(`:${session.proxy_token}`).toString('base64')}`, // empty username
    `Basic ${Buffer.from(`build 1:${session.proxy_token}`).toString('base64')}`, // not a container name
    `Basic ${good.slice(0, -4)}`, // truncated
  ];
  for (const v of values) {
    // From an address that would identify the session on its own: a broken header must not fall back to it.
    const { plain, connect } = await httpBoth(t, s, origin, v, '127.0.0.5');
    assert407(plain, `plain ${JSON.stringify(v)}`);
    assert407(connect, `connect ${JSON.stringify(v)}`);
  }
  assert.equal(origin.requests.length, 0);
  // The well-formed header works (case-insensitive scheme, as RFC 9110 says).
  const { plain } = await httpBoth(t, s, origin, `bAsIc ${good}`);
  assert.equal(plain.status, 200);
});

test("an expired session's token is refused", async (t) => {
  let now = Date.now();
  const origin = await originFor(t);
  const s = await sluiceFor(t, { clock: () => now });
  const session = await sessionFor(s, 'build-1', origin, { ttl_seconds: 60 });
  const before = await curl(['-x', session.proxy.http, `http://${origin.authority}/`]);
  assert.match(before.stdout, /^origin/);
  now += 61_000;
  const { plain, connect } = await httpBoth(t, s, origin, basic('build-1', session.proxy_token));
  assert407(plain, 'plain');
  assert407(connect, 'connect');
  await assert.rejects(
    socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 5, userId: 'build-1', password: session.proxy_token }),
    /Socks5 Authentication failed/,
  );
  assert.equal(origin.requests.length, 1);
});

test("a deleted session's token is refused", async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const before = await curl(['-x', session.proxy.http, `http://${origin.authority}/`]);
  assert.match(before.stdout, /^origin/);
  const del = await s.api('DELETE', `/api/sessions/${session.session_id}`);
  assert.equal(del.status, 200);
  const { plain, connect } = await httpBoth(t, s, origin, basic('build-1', session.proxy_token));
  assert407(plain, 'plain');
  assert407(connect, 'connect');
  await assert.rejects(socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 4, userId: `build-1:${session.proxy_token}` }), /rejected/);
  assert.equal(origin.requests.length, 1);
});

test('a session with source_ips identifies an unauthenticated client from that address, on every protocol', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t);
  await sessionFor(s, 'build-1', origin, { source_ips: ['127.0.0.5'] });

  const r = await curl(['--interface', '127.0.0.5', '-x', s.httpProxy, `http://${origin.authority}/by-source`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /GET \/by-source/);
  const rp = await curl(['--interface', '127.0.0.5', '-p', '-x', s.httpProxy, `http://${origin.authority}/by-source-connect`]);
  assert.match(rp.stdout, /GET \/by-source-connect/);
  const rs = await curl(['--interface', '127.0.0.5', '-x', `socks5h://127.0.0.1:${s.sluice.socks.port}`, `http://${origin.authority}/by-source-socks5`]);
  assert.match(rs.stdout, /GET \/by-source-socks5/);

  // SOCKS5 offering only "no auth" is accepted from that address.
  const c = await RawClient.connect(t, s.sluice.socks.port, { localAddress: '127.0.0.5' });
  c.write(socks5.greeting(0x00));
  assert.deepEqual([...(await c.take(2))], [0x05, 0x00]);
  c.write(socks5.ipv4('127.0.0.2', origin.port));
  assert.equal((await c.take(10))[1], 0x00);
  // SOCKS4 with an empty userid too.
  const c4 = await RawClient.connect(t, s.sluice.socks.port, { localAddress: '127.0.0.5' });
  c4.write(socks4.connect('127.0.0.2', origin.port, ''));
  assert.equal((await c4.take(8))[1], 0x5a);

  // From any other address the same unauthenticated request is refused.
  const other = await curl(['-i', '--interface', '127.0.0.6', '-x', s.httpProxy, `http://${origin.authority}/`]);
  assert.match(other.stdout, /^HTTP\/1\.1 407/);
  assert.equal(origin.requests.length, 3);
});

test('a wrong credential is not rescued by a matching source address', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t);
  await sessionFor(s, 'build-1', origin, { source_ips: ['127.0.0.5'] });
  const r = await curl(['-i', '--interface', '127.0.0.5', '-x', proxyUrl(s.sluice.http.port, 'build-1', 'wrong'), `http://${origin.authority}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 407/);
  const { plain, connect } = await httpBoth(t, s, origin, basic('someone-else', 'x'), '127.0.0.5');
  assert407(plain, 'plain');
  assert407(connect, 'connect');
  // SOCKS5: offering user/pass with a wrong password fails even though "no auth" would have worked.
  const c = await RawClient.connect(t, s.sluice.socks.port, { localAddress: '127.0.0.5' });
  c.write(socks5.greeting(0x00, 0x02));
  assert.deepEqual([...(await c.take(2))], [0x05, 0x02]);
  c.write(socks5.auth('build-1', 'wrong'));
  assert.deepEqual([...(await c.take(2))], [0x01, 0x01]);
  // SOCKS4: a wrong token in the userid.
  const c4 = await RawClient.connect(t, s.sluice.socks.port, { localAddress: '127.0.0.5' });
  c4.write(socks4.connect('127.0.0.2', origin.port, 'build-1:wrong'));
  assert.equal((await c4.take(8))[1], 0x5b);
  assert.equal(origin.requests.length, 0);
});

test("identity: username trusts the container name and ignores the password", async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t, { config: { identity: 'username' } });
  await sessionFor(s, 'build-1', origin);
  const r = await curl(['-x', proxyUrl(s.sluice.http.port, 'build-1', 'anything'), `http://${origin.authority}/username-mode`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /GET \/username-mode/);
  const { socket } = await socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 5, userId: 'build-1', password: 'whatever' });
  socket.destroy();
  const v4 = await socksConnect(s.sluice.socks.port, { host: '127.0.0.2', port: origin.port }, { type: 4, userId: 'build-1:x' });
  v4.socket.destroy();
  // The name still picks the policy: another container gets its own (empty) policy, and
  // a missing or invalid name is still refused.
  const other = await curl(['-i', '-x', proxyUrl(s.sluice.http.port, 'other', 'anything'), `http://${origin.authority}/`]);
  assert.match(other.stdout, /^HTTP\/1\.1 403/);
  const none = await curl(['-i', '-x', s.httpProxy, `http://${origin.authority}/`]);
  assert.match(none.stdout, /^HTTP\/1\.1 407/);
  const { plain } = await httpBoth(t, s, origin, basic('bad name!', 'x'));
  assert.equal(plain.status, 407);
  assert.equal(origin.requests.length, 1);
});
