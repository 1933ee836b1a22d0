// The forwarding pool against origins that close kept-alive connections: an idempotent
// request that meets the close is sent again on a new connection (once, under the same
// decision), anything else gets a clear 502, and idle connections are closed by sluice
// first (after timeouts.upstream_idle_ms, or sooner when the origin announces its timeout).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { eventually, type TestSluice } from '../helpers/harness.js';
import { basic, rawOriginFor, RawClient, sluiceFor, type T } from '../helpers/proxy-helpers.js';
import { decisions, metric, metricsText } from '../helpers/observe-helpers.js';

const OK = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';

/** Request heads in `text` (no request here has "\r\n\r\n" in its body). */
function heads(text: string): number {
  return text.split('\r\n\r\n').length - 1;
}

/**
 * A raw origin that answers the first request on each connection with OK and then, when a
 * second request arrives on that connection, does `second` to it (typically: close it).
 */
async function closingOrigin(t: T, second: (sock: net.Socket) => void): Promise<{ port: number; sockets: net.Socket[]; requests: string[] }> {
  const requests: string[] = [];
  const seen = new WeakMap<net.Socket, number>();
  const origin = await rawOriginFor(t, (sock, text) => {
    const n = heads(text);
    const before = seen.get(sock) ?? 0;
    if (n === before) return;
    seen.set(sock, n);
    for (const head of text.split('\r\n\r\n').slice(before, n)) requests.push(head.split('\r\n')[0]!);
    if (before === 0) sock.write(OK);
    else second(sock);
  });
  return { ...origin, requests };
}

async function setup(t: T, container: string, config = {}): Promise<{ s: TestSluice; c: RawClient; auth: string }> {
  const s = await sluiceFor(t, { config });
  const sess = await s.createSession({ container_name: container, network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  return { s, c, auth: basic(container, sess.proxy_token) };
}

function request(method: string, authority: string, path: string, auth: string, body = ''): string {
  const length = body === '' && method !== 'POST' ? '' : `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  return `${method} http://${authority}${path} HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${auth}\r\n${length}\r\n${body}`;
}

test('a GET sent on a pooled connection the origin closes as it arrives is retried on a new connection, under one decision', async (t) => {
  const origin = await closingOrigin(t, (sock) => sock.destroy());
  const { s, c, auth } = await setup(t, 'pool-get');
  const authority = `127.0.0.2:${origin.port}`;
  c.write(request('GET', authority, '/first', auth));
  assert.equal((await c.takeResponse()).status, 200);
  c.write(request('GET', authority, '/second//exact', auth));
  const res = await c.takeResponse();
  assert.equal(res.status, 200, `the retried GET: ${res.status} ${res.body}`);
  assert.equal(res.body, 'ok');
  assert.equal(origin.sockets.length, 2, 'the retry went on a new connection');
  assert.deepEqual(origin.requests, ['GET /first HTTP/1.1', 'GET /second//exact HTTP/1.1', 'GET /second//exact HTTP/1.1']);
  // One client request, one decision: the retry is the pool's business, like its dial.
  await eventually(async () => (await decisions(s, { container: 'pool-get' })).length >= 2, 2000, 'both requests audited');
  await eventually(async () => (await decisions(s, { container: 'pool-get' })).every((d) => d.close_reason === 'completed'), 2000, 'both requests closed');
  const rows = await decisions(s, { container: 'pool-get' });
  assert.deepEqual(
    rows.map((r) => [r.decision, r.close_reason, r.error ?? null]),
    [
      ['allow', 'completed', null],
      ['allow', 'completed', null],
    ],
  );
  // Operators see how often the pool met a closing origin.
  assert.equal(metric(await metricsText(s), 'sluice_forward_retries_total'), 1);
});

for (const method of ['POST', 'PUT']) {
  test(`a ${method} with a body that meets the same close is not retried: the client gets a clear 502`, async (t) => {
    const origin = await closingOrigin(t, (sock) => sock.destroy());
    const { c, auth } = await setup(t, `pool-${method.toLowerCase()}`);
    const authority = `127.0.0.2:${origin.port}`;
    c.write(request('GET', authority, '/first', auth));
    assert.equal((await c.takeResponse()).status, 200);
    c.write(request(method, authority, '/order', auth, 'buy=1'));
    const res = await c.takeResponse();
    assert.equal(res.status, 502, `${res.status} ${res.body}`);
    assert.match(res.body, /closed or reset the connection before answering/);
    assert.equal(origin.sockets.length, 1, `no second connection: the ${method} was sent once`);
    assert.deepEqual(origin.requests, ['GET /first HTTP/1.1', `${method} /order HTTP/1.1`]);
  });
}

test('a GET whose response had begun when the origin closed is not retried', async (t) => {
  const origin = await closingOrigin(t, (sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Le'));
  const { c, auth } = await setup(t, 'pool-partial');
  const authority = `127.0.0.2:${origin.port}`;
  c.write(request('GET', authority, '/first', auth));
  assert.equal((await c.takeResponse()).status, 200);
  c.write(request('GET', authority, '/second', auth));
  const res = await c.takeResponse();
  assert.equal(res.status, 502, `${res.status} ${res.body}`);
  assert.equal(origin.sockets.length, 1, 'not sent again');
});

test('an idle pooled connection is closed by sluice after timeouts.upstream_idle_ms', async (t) => {
  const origin = await closingOrigin(t, (sock) => sock.destroy());
  const { c, auth } = await setup(t, 'pool-idle', { timeouts: { upstream_idle_ms: 200 } });
  c.write(request('GET', `127.0.0.2:${origin.port}`, '/once', auth));
  assert.equal((await c.takeResponse()).status, 200);
  await eventually(() => origin.sockets[0]!.readableEnded, 3000, "sluice to close the idle origin connection (the origin's socket to see its end)");
  assert.equal(c.closed, false, 'the client connection is not affected');
});

test("an origin's Keep-Alive: timeout hint shorter than upstream_idle_ms is honoured", async (t) => {
  const origin = await rawOriginFor(t, (sock, text) => {
    if (text.endsWith('\r\n\r\n')) sock.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok');
  });
  const { c, auth } = await setup(t, 'pool-hint', { timeouts: { upstream_idle_ms: 60_000 } });
  c.write(request('GET', `127.0.0.2:${origin.port}`, '/once', auth));
  assert.equal((await c.takeResponse()).status, 200);
  // Closed a second before the announced timeout, as Node's own agent does.
  await eventually(() => origin.sockets[0]!.readableEnded, 5000, 'sluice to close the idle origin connection');
});

test('upstream_idle_ms 0 sets no limit of its own, but an origin that announces Keep-Alive: timeout=1 is not kept at all', async (t) => {
  const origin = await rawOriginFor(t, (sock, text) => {
    if (text.endsWith('\r\n\r\n')) sock.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok');
  });
  const { c, auth } = await setup(t, 'pool-hint-short', { timeouts: { upstream_idle_ms: 0 } });
  const authority = `127.0.0.2:${origin.port}`;
  c.write(request('GET', authority, '/1', auth));
  assert.equal((await c.takeResponse()).status, 200);
  await eventually(() => origin.sockets[0]!.readableEnded, 2000, 'sluice to close the origin connection after the response');
  c.write(request('GET', authority, '/2', auth));
  assert.equal((await c.takeResponse()).status, 200);
  assert.equal(origin.sockets.length, 2);
});
