// A forwarded request whose client leaves before the response is complete: the upstream
// request is aborted at once (its connection closed, never handed back to the keep-alive
// pool half-used), the connection leaves the registry and the API's list with the close
// reason audited, and its limiter slot is freed exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { eventually, type TestSluice } from '../helpers/harness.js';
import { basic, blackholeFor, RawClient, sleep, sluiceFor, type T } from '../helpers/proxy-helpers.js';
import { decisions, openConnections } from '../helpers/observe-helpers.js';

interface HeldOrigin {
  readonly port: number;
  readonly authority: string;
  /** Every connection, with what it received and when it closed (ms since epoch). */
  readonly conns: Array<{ sock: net.Socket; text: string; closedAt: number | null }>;
}

/**
 * A raw origin on 127.0.0.2. A request for `/ok` is answered at once; any other request
 * (`/hold`, a body never finished) is accepted and never answered.
 */
async function heldOrigin(t: T): Promise<HeldOrigin> {
  const conns: HeldOrigin['conns'] = [];
  const server = net.createServer((sock) => {
    const c = { sock, text: '', closedAt: null as number | null };
    conns.push(c);
    sock.on('error', () => undefined);
    sock.on('close', () => (c.closedAt = Date.now()));
    let answered = 0;
    sock.on('data', (chunk: Buffer) => {
      c.text += chunk.toString('latin1');
      const heads = c.text.split('\r\n\r\n').slice(0, -1);
      for (const head of heads.slice(answered)) {
        if (/^GET \/ok /.test(head)) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }
      answered = heads.length;
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(
    () =>
      new Promise<void>((r) => {
        for (const c of conns) c.sock.destroy();
        server.close(() => r());
      }),
  );
  const port = (server.address() as net.AddressInfo).port;
  return { port, authority: `127.0.0.2:${port}`, conns };
}

function request(method: string, authority: string, path: string, auth: string, extra = ''): string {
  return `${method} http://${authority}${path} HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${auth}\r\n${extra}\r\n`;
}

/** Sends `head` (+ `body`), waits until the origin has it, then the client leaves. Returns when it left. */
async function sendAndLeave(t: T, s: TestSluice, origin: HeldOrigin, head: string, body: string, seen: string): Promise<number> {
  const before = origin.conns.length;
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(head + body);
  await eventually(() => origin.conns.length > before && origin.conns[before]!.text.includes(seen), 2000, 'the origin to receive the request');
  await eventually(() => s.sluice.connections.size === 1, 2000, 'the request to be registered');
  assert.equal((await openConnections(s)).length, 1, 'the API lists the request while it waits');
  assert.equal(origin.conns[before]!.closedAt, null, 'the upstream connection is open while the client waits');
  const left = Date.now();
  c.close();
  return left;
}

/** The origin connection `i` closes within `ms` of `left`. */
async function upstreamClosedWithin(origin: HeldOrigin, i: number, left: number, ms: number): Promise<void> {
  await eventually(() => origin.conns[i]!.closedAt !== null, ms + 500, 'the origin to see its connection closed');
  const after = origin.conns[i]!.closedAt! - left;
  assert.ok(after < ms, `the upstream connection closed ${after} ms after the client left (limit ${ms} ms)`);
}

async function closeAudited(s: TestSluice, container: string): Promise<{ close_reason: string | null; error: string | null }> {
  await eventually(async () => (await decisions(s, { container }))[0]?.close_reason != null, 2000, 'the close to be audited');
  return (await decisions(s, { container }))[0]!;
}

test('a client that leaves while the origin holds its answer: the upstream request is aborted, the close audited, the slot freed', async (t) => {
  const origin = await heldOrigin(t);
  const s = await sluiceFor(t);
  // One connection at a time: the next request only gets through if the slot was released.
  const sess = await s.createSession({ container_name: 'abort-get', network_rules: [{ destination_pattern: '127.0.0.2' }], limits: { max_connections: 1 } });
  const auth = basic('abort-get', sess.proxy_token);

  const left = await sendAndLeave(t, s, origin, request('GET', origin.authority, '/hold', auth), '', '/hold');
  await upstreamClosedWithin(origin, 0, left, 2000);
  await eventually(() => s.sluice.connections.size === 0, 2000, 'the registry to empty');
  assert.deepEqual(await openConnections(s), [], 'the API no longer lists it');
  const row = await closeAudited(s, 'abort-get');
  assert.deepEqual([row.close_reason, row.error], ['client_closed', null], JSON.stringify(row));

  // The slot is free (once: a second release would let two through at max_connections 1),
  // and the next request is not sent over the aborted upstream connection.
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(request('GET', origin.authority, '/ok', auth));
  const res = await c.takeResponse();
  assert.deepEqual([res.status, res.body], [200, 'ok']);
  assert.equal(origin.conns.length, 2, 'a new upstream connection was dialled');
  assert.ok(!origin.conns[1]!.text.includes('/hold'));
  // Held open on purpose (the response is done, so the slot is free again): two at once must be refused.
  const held = await RawClient.connect(t, s.sluice.http.port);
  held.write(request('GET', origin.authority, '/hold', auth));
  await eventually(() => s.sluice.connections.size === 1, 2000, 'the held request to be registered');
  const over = await RawClient.connect(t, s.sluice.http.port);
  over.write(request('GET', origin.authority, '/ok', auth));
  assert.equal((await over.takeResponse()).status, 429, 'max_connections 1 still holds: the slot was released once, not twice');
  held.close();
  await eventually(() => s.sluice.connections.size === 0, 2000, 'the registry to empty');
});

test('a client that leaves half-way through its request body: the upstream request is aborted', async (t) => {
  const origin = await heldOrigin(t);
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'abort-post', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const auth = basic('abort-post', sess.proxy_token);
  const head = request('POST', origin.authority, '/upload', auth, 'Content-Length: 100000\r\n');
  const left = await sendAndLeave(t, s, origin, head, 'partial-body', 'partial-body');
  await upstreamClosedWithin(origin, 0, left, 2000);
  await eventually(() => s.sluice.connections.size === 0, 2000, 'the registry to empty');
  assert.deepEqual(await openConnections(s), []);
  const row = await closeAudited(s, 'abort-post');
  assert.deepEqual([row.close_reason, row.error], ['client_closed', null], JSON.stringify(row));
});

test('a keep-alive client that leaves during its second request: only that upstream request is aborted', async (t) => {
  const origin = await heldOrigin(t);
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'abort-ka', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const auth = basic('abort-ka', sess.proxy_token);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(request('GET', origin.authority, '/ok', auth));
  assert.equal((await c.takeResponse()).status, 200);
  await eventually(() => s.sluice.connections.size === 0, 2000, 'the first request to finish');
  // The second request goes over the pooled upstream connection, and is held there.
  c.write(request('GET', origin.authority, '/hold', auth));
  await eventually(() => origin.conns[0]!.text.includes('/hold'), 2000, 'the origin to receive the second request');
  assert.equal(origin.conns.length, 1);
  await sleep(20);
  const left = Date.now();
  c.close();
  await upstreamClosedWithin(origin, 0, left, 2000);
  await eventually(() => s.sluice.connections.size === 0, 2000, 'the registry to empty');
  const rows = (await decisions(s, { container: 'abort-ka' })).reverse();
  await eventually(async () => (await decisions(s, { container: 'abort-ka' })).every((d) => d.close_reason !== null), 2000, 'both closes to be audited');
  assert.deepEqual(
    (await decisions(s, { container: 'abort-ka' })).reverse().map((r) => [r.close_reason, r.error]),
    [
      ['completed', null],
      ['client_closed', null],
    ],
    JSON.stringify(rows),
  );
});

test('a client that leaves while its request waits for DNS: nothing is sent upstream, the allow is recorded as going nowhere, the slot freed', async (t) => {
  const origin = await heldOrigin(t);
  let answer!: () => void;
  const resolved = new Promise<void>((r) => (answer = r));
  let asked = 0;
  const s = await sluiceFor(t, {
    resolver: async () => {
      asked++;
      await resolved;
      return ['127.0.0.2'];
    },
  });
  t.after(() => answer());
  const sess = await s.createSession({ container_name: 'abort-dns', network_rules: [{ destination_pattern: 'slow.test' }], limits: { max_connections: 1 } });
  const auth = basic('abort-dns', sess.proxy_token);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(request('GET', `slow.test:${origin.port}`, '/hold', auth));
  await eventually(() => asked === 1, 2000, 'the name to be looked up');
  c.close();
  await c.untilClosed();
  await sleep(50);
  answer();
  await eventually(async () => (await decisions(s, { container: 'abort-dns' }))[0]?.error != null, 2000, 'the outcome to be audited');
  const row = (await decisions(s, { container: 'abort-dns' }))[0]!;
  assert.deepEqual([row.decision, row.error], ['allow', 'connect_error'], JSON.stringify(row));
  assert.equal(origin.conns.length, 0, 'nothing was sent upstream');
  assert.equal(s.sluice.connections.size, 0);
  // The slot was released: at max_connections 1 the next request gets through.
  const next = await RawClient.connect(t, s.sluice.http.port);
  next.write(request('GET', `slow.test:${origin.port}`, '/ok', auth));
  const res = await next.takeResponse();
  assert.deepEqual([res.status, res.body], [200, 'ok']);
});

test('a client that leaves while the upstream connection is being dialled: gone from the registry at once, the dial outcome still audited, the proxy unharmed', async (t) => {
  const hole = await blackholeFor(t);
  const origin = await heldOrigin(t);
  const s = await sluiceFor(t, { config: { timeouts: { connect_ms: 1500 } } });
  const sess = await s.createSession({ container_name: 'abort-dial', network_rules: [{ destination_pattern: hole.host }, { destination_pattern: '127.0.0.2' }], limits: { max_connections: 1 } });
  const auth = basic('abort-dial', sess.proxy_token);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(request('GET', `${hole.host}:${hole.port}`, '/never', auth));
  await eventually(() => s.sluice.connections.size === 1, 2000, 'the request to be registered');
  c.close();
  await eventually(() => s.sluice.connections.size === 0, 1000, 'the registry to empty before the dial gives up');
  // The dial still ends (connect_ms) and is recorded for what it was.
  await eventually(async () => (await decisions(s, { container: 'abort-dial' }))[0]?.error != null, 4000, 'the dial outcome to be audited');
  const row = (await decisions(s, { container: 'abort-dial' }))[0]!;
  assert.deepEqual([row.decision, row.close_reason, row.error], ['allow', 'client_closed', 'connection_timeout'], JSON.stringify(row));
  // Released once: at max_connections 1 the next request gets through, and nothing threw.
  const next = await RawClient.connect(t, s.sluice.http.port);
  next.write(request('GET', origin.authority, '/ok', auth));
  const res = await next.takeResponse();
  assert.deepEqual([res.status, res.body], [200, 'ok']);
});
