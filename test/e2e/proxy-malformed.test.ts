// Hostile and broken input on raw sockets. After each case the connection must have got a
// defined reply or been closed, and a well-formed client must still be served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { curl, type Origin, type SessionCreated, type TestSluice } from '../helpers/harness.js';
import { basic, basicSetup, parseResponse, RawClient, socks4, socks5, socks5Raw, type T } from '../helpers/proxy-helpers.js';

const HANDSHAKE_MS = 300;
const config = { timeouts: { handshake_ms: HANDSHAKE_MS }, limits: { max_header_bytes: 2048 } };

interface Env {
  s: TestSluice;
  origin: Origin;
  session: SessionCreated;
}

async function setup(t: T): Promise<Env> {
  return basicSetup(t, { config });
}

/** A normal client still gets through (on the HTTP port and via SOCKS5). */
async function stillServes({ s, origin, session }: Env): Promise<void> {
  const r = await curl(['-x', session.proxy.http, `http://${origin.authority}/still-ok`]);
  assert.match(r.stdout, /GET \/still-ok/, `HTTP still served: ${r.stderr}`);
  const r2 = await curl(['-x', session.proxy.socks5, `http://${origin.authority}/still-ok-socks`]);
  assert.match(r2.stdout, /GET \/still-ok-socks/, `SOCKS5 still served: ${r2.stderr}`);
  assert.ok(s.sluice.connections.size <= 1);
}

/** Sends `data` (chunks with a pause between) and returns what came back once the server closed. */
async function exchange(t: T, env: Env, data: Buffer | string | Array<Buffer | string>, port = env.s.sluice.http.port): Promise<{ received: Buffer; elapsed: number }> {
  const c = await RawClient.connect(t, port);
  const started = Date.now();
  const parts = Array.isArray(data) ? data : [data];
  for (const p of parts) {
    c.write(p);
    if (parts.length > 1) await new Promise((r) => setTimeout(r, 10));
  }
  const received = await c.untilClosed(HANDSHAKE_MS + 1500);
  return { received, elapsed: Date.now() - started };
}

test('garbage bytes get 400 and a close', async (t) => {
  const env = await setup(t);
  for (const junk of [Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', 'latin1'), Buffer.from('\r\n\r\n\x00\x00\xff\xfe garbage'), Buffer.from('HELLO\r\n\r\n')]) {
    const { received } = await exchange(t, env, junk);
    const res = parseResponse(received);
    assert.equal(res.status, 400, JSON.stringify(received.toString('latin1')));
    assert.match(res.headers['proxy-status'] ?? '', /error=http_request_error/);
    assert.match(res.body, /malformed HTTP request/);
  }
  await stillServes(env);
});

test('a request line with garbage gets 400', async (t) => {
  const env = await setup(t);
  for (const line of ['GET http://127.0.0.2/ HTTP/9.9', 'GET http://127.0.0.2/\x01 HTTP/1.1', 'G\x7fT / HTTP/1.1', 'GET  HTTP/1.1']) {
    const { received } = await exchange(t, env, `${line}\r\nHost: x\r\n\r\n`);
    assert.equal(parseResponse(received).status, 400, JSON.stringify(line));
  }
  // Framing a smuggler would exploit: both Content-Length and chunked, or a space before the colon.
  const auth = `Proxy-Authorization: ${basic('build-1', env.session.proxy_token)}\r\n`;
  for (const head of ['Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', 'Content-Length: 5\r\nContent-Length: 6\r\n', 'Host : x\r\n']) {
    const { received } = await exchange(t, env, `POST http://${env.origin.authority}/ HTTP/1.1\r\n${auth}${head}\r\n0\r\n\r\n`);
    assert.equal(parseResponse(received).status, 400, JSON.stringify(head));
  }
  assert.equal(env.origin.requests.length, 0);
  await stillServes(env);
});

test('headers beyond limits.max_header_bytes get 431', async (t) => {
  const env = await setup(t);
  const flood = Array.from({ length: 100 }, (_, i) => `X-Flood-${i}: ${'a'.repeat(60)}\r\n`).join('');
  const { received } = await exchange(t, env, `GET http://${env.origin.authority}/ HTTP/1.1\r\nHost: ${env.origin.authority}\r\n${flood}\r\n`);
  const res = parseResponse(received);
  assert.equal(res.status, 431);
  assert.match(res.body, /request headers exceed 2048 bytes/);
  // One endless header line, sent in pieces.
  const { received: r2 } = await exchange(t, env, [`GET http://${env.origin.authority}/ HTTP/1.1\r\nX-Long: `, 'b'.repeat(1500), 'b'.repeat(1500)]);
  assert.equal(parseResponse(r2).status, 431);
  assert.equal(env.origin.requests.length, 0);
  await stillServes(env);
});

test('a client that sends half its headers and stalls gets 408 after handshake_ms', async (t) => {
  const env = await setup(t);
  const { received, elapsed } = await exchange(t, env, `GET http://${env.origin.authority}/ HTTP/1.1\r\nHost: ${env.origin.authority}\r\nX-Partial: yes`);
  const res = parseResponse(received);
  assert.equal(res.status, 408, JSON.stringify(received.toString()));
  assert.match(res.body, /not received in time/);
  assert.ok(elapsed >= HANDSHAKE_MS - 50 && elapsed < HANDSHAKE_MS + 1000, `closed after ${elapsed} ms`);
  // CONNECT heads are held to the same limit.
  const { received: r2 } = await exchange(t, env, `CONNECT ${env.origin.authority} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', env.session.proxy_token)}\r\n`);
  assert.equal(parseResponse(r2).status, 408);
  assert.equal(env.origin.requests.length, 0);
  await stillServes(env);
});

test('a client that connects and says nothing is closed after handshake_ms', async (t) => {
  const env = await setup(t);
  const c = await RawClient.connect(t, env.s.sluice.http.port);
  const started = Date.now();
  const received = await c.untilClosed(HANDSHAKE_MS + 1500);
  assert.equal(received.length, 0);
  assert.ok(Date.now() - started >= HANDSHAKE_MS - 50);
  await stillServes(env);
});

test('a lone 0x05 (and a SOCKS client stalling mid-handshake) is closed after handshake_ms without a reply', async (t) => {
  const env = await setup(t);
  // All four at once: each is closed by its own handshake timer.
  const [lone, mid, half, s4] = await Promise.all([
    exchange(t, env, Buffer.from([0x05])),
    // Greeting answered, then the client never sends its credentials.
    exchange(t, env, socks5.greeting(0x02), env.s.sluice.socks.port),
    // Authenticated, then half a request.
    exchange(t, env, [socks5.greeting(0x02), socks5.auth('build-1', env.session.proxy_token), Buffer.from([0x05, 0x01, 0x00, 0x01, 127])]),
    // A SOCKS4 request without its terminating NUL.
    exchange(t, env, Buffer.from([0x04, 0x01, 0x00, 0x50, 127, 0, 0, 2, 0x61])),
  ]);
  assert.equal(lone.received.length, 0);
  assert.deepEqual([...mid.received], [0x05, 0x02]);
  assert.deepEqual([...half.received], [0x05, 0x02, 0x01, 0x00]);
  assert.equal(s4.received.length, 0);
  for (const { elapsed } of [lone, mid, half, s4]) {
    assert.ok(elapsed >= HANDSHAKE_MS - 50 && elapsed < HANDSHAKE_MS + 1000, `closed after ${elapsed} ms`);
  }
  await stillServes(env);
});

test('SOCKS5 request with a bad version is closed without a reply', async (t) => {
  const env = await setup(t);
  const { c } = await authed(t, env);
  c.write(Buffer.from([0x04, 0x01, 0x00, 0x01, 127, 0, 0, 2, 0, 80]));
  assert.equal((await c.untilClosed()).length, 0);
  // A greeting offering zero methods: "no acceptable methods".
  const none = await exchange(t, env, Buffer.from([0x05, 0x00]), env.s.sluice.socks.port);
  assert.deepEqual([...none.received], [0x05, 0xff]);
  // RFC 1929 sub-negotiation with the wrong version: status failure.
  const badAuth = await exchange(t, env, [socks5.greeting(0x02), Buffer.from([0x02, 0x01, 0x61, 0x01, 0x62])]);
  assert.deepEqual([...badAuth.received], [0x05, 0x02, 0x01, 0x01]);
  await stillServes(env);
});

/** A SOCKS5 client past authentication (both replies consumed). */
async function authed(t: T, env: Env): Promise<{ c: RawClient }> {
  const c = await RawClient.connect(t, env.s.sluice.socks.port);
  c.write(socks5.greeting(0x02));
  await c.take(2);
  c.write(socks5.auth('build-1', env.session.proxy_token));
  assert.deepEqual([...(await c.take(2))], [0x01, 0x00]);
  return { c };
}

async function socks5Reply(t: T, env: Env, request: Buffer): Promise<number> {
  const { c, rep } = await socks5Raw(t, env.s.sluice.socks.port, 'build-1', env.session.proxy_token, request);
  await c.untilClosed();
  return rep;
}

test('SOCKS5 bad ATYP gets 0x08, a zero-length or invalid domain gets 0x01', async (t) => {
  const env = await setup(t);
  assert.equal(await socks5Reply(t, env, Buffer.from([0x05, 0x01, 0x00, 0x05, 127, 0, 0, 2, 0, 80])), 0x08);
  assert.equal(await socks5Reply(t, env, Buffer.from([0x05, 0x01, 0x00, 0x03, 0x00, 0, 80])), 0x01);
  assert.equal(await socks5Reply(t, env, Buffer.concat([Buffer.from([0x05, 0x01, 0x00, 0x03, 4]), Buffer.from([0x61, 0xff, 0xfe, 0x62]), Buffer.from([0, 80])])), 0x01);
  assert.equal(await socks5Reply(t, env, socks5.domain('app\x00.test', 80)), 0x01);
  assert.equal(await socks5Reply(t, env, socks5.ipv4('127.0.0.2', 0)), 0x01);
  assert.equal(env.origin.requests.length, 0);
  await stillServes(env);
});

test('SOCKS5 BIND and UDP ASSOCIATE get 0x07 (command not supported); SOCKS4 BIND gets 0x5B', async (t) => {
  const env = await setup(t);
  assert.equal(await socks5Reply(t, env, socks5.ipv4('127.0.0.2', env.origin.port, 0x02)), 0x07);
  assert.equal(await socks5Reply(t, env, socks5.ipv4('0.0.0.0', 0, 0x03)), 0x07);
  assert.equal(await socks5Reply(t, env, socks5.ipv4('127.0.0.2', env.origin.port, 0x09)), 0x07);
  const bind4 = Buffer.from(socks4.connect('127.0.0.2', env.origin.port, `build-1:${env.session.proxy_token}`));
  bind4[1] = 0x02;
  const { received } = await exchange(t, env, bind4, env.s.sluice.socks.port);
  assert.deepEqual([...received.subarray(0, 2)], [0x00, 0x5b]);
  assert.equal(env.origin.requests.length, 0);
  await stillServes(env);
});

test('SOCKS4 userid longer than 255 bytes without a NUL gets 0x5B; so does an empty 4a host', async (t) => {
  const env = await setup(t);
  const long = Buffer.concat([Buffer.from([0x04, 0x01, 0x00, 0x50, 127, 0, 0, 2]), Buffer.alloc(300, 0x61)]);
  const { received, elapsed } = await exchange(t, env, long);
  assert.deepEqual([...received], [0x00, 0x5b, 0, 0, 0, 0, 0, 0]);
  assert.ok(elapsed < HANDSHAKE_MS, 'refused at once, not by the handshake timeout');
  const empty4a = await exchange(t, env, socks4.connect4a('', 80, `build-1:${env.session.proxy_token}`));
  assert.deepEqual([...empty4a.received.subarray(0, 2)], [0x00, 0x5b]);
  await stillServes(env);
});

test('many concurrent broken clients do not disturb a well-formed one', async (t) => {
  const env = await setup(t);
  const junk = [Buffer.from([0x05]), Buffer.from([0x04, 0x01]), Buffer.from('GET http://x/ HTTP/1.1\r\nHost'), Buffer.from('\x00\x01\x02'), Buffer.from([0x05, 0x01, 0x02])];
  const clients = await Promise.all(Array.from({ length: 25 }, (_, i) => RawClient.connect(t, i % 2 ? env.s.sluice.http.port : env.s.sluice.socks.port)));
  clients.forEach((c, i) => c.write(junk[i % junk.length]!));
  await stillServes(env);
  await Promise.all(clients.map((c) => c.untilClosed(HANDSHAKE_MS + 1500)));
});
