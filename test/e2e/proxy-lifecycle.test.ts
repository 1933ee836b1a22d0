// Connection lifetimes: idle tunnels are closed, busy ones are not, a tunnel outlives the
// header timeout, and graceful shutdown (stop accepting, drain within the grace period).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { curl, eventually } from '../helpers/harness.js';
import { basic, echoFor, originFor, RawClient, sessionFor, sleep, sluiceFor, socks5, socksConnect, within, type T } from '../helpers/proxy-helpers.js';

/** A CONNECT tunnel (head consumed) from a fresh raw client. */
async function tunnel(t: T, port: number, authority: string, token: string): Promise<RawClient> {
  const c = await RawClient.connect(t, port);
  c.write(`CONNECT ${authority} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', token)}\r\n\r\n`);
  assert.match(await c.takeThrough('\r\n\r\n'), /^HTTP\/1\.1 200 /);
  return c;
}

async function echoes(c: RawClient, text: string): Promise<void> {
  c.write(text);
  assert.equal((await c.take(text.length)).toString(), text);
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

test('timeouts.idle_ms closes an idle tunnel (CONNECT and SOCKS5) but not a busy one', async (t) => {
  const echo = await echoFor(t);
  const s = await sluiceFor(t, { config: { timeouts: { idle_ms: 300 } } });
  const session = await sessionFor(s, 'build-1', echo);
  const idle = await tunnel(t, s.sluice.http.port, `${echo.host}:${echo.port}`, session.proxy_token);
  await echoes(idle, 'hello');
  const socks = await socksConnect(s.sluice.socks.port, { host: echo.host, port: echo.port }, { type: 5, userId: 'build-1', password: session.proxy_token });
  const socksClosed = new Promise<number>((r) => socks.socket.once('close', () => r(Date.now())));
  const busy = await tunnel(t, s.sluice.http.port, `${echo.host}:${echo.port}`, session.proxy_token);
  const started = Date.now();
  // Keep `busy` talking every 100 ms for ~800 ms; the idle ones must go meanwhile.
  for (let i = 0; i < 8; i++) {
    await echoes(busy, `tick-${i}`);
    await sleep(100);
  }
  assert.equal(idle.closed, true, 'idle CONNECT tunnel closed');
  assert.ok((await socksClosed) - started < 800, 'idle SOCKS5 tunnel closed');
  assert.equal(busy.closed, false, 'busy tunnel kept');
  await echoes(busy, 'still here');
  await eventually(() => s.sluice.connections.size === 1, 1000, 'only the busy tunnel left');
  // Traffic in the downstream direction alone also counts as activity.
  busy.close();
});

test('a tunnel outlives handshake_ms: the header timeout never fires into an open tunnel', async (t) => {
  const echo = await echoFor(t);
  const s = await sluiceFor(t, { config: { timeouts: { handshake_ms: 150 } } });
  const session = await sessionFor(s, 'build-1', echo);
  const c = await tunnel(t, s.sluice.http.port, `${echo.host}:${echo.port}`, session.proxy_token);
  const socks = await socksConnect(s.sluice.socks.port, { host: echo.host, port: echo.port }, { type: 5, userId: 'build-1', password: session.proxy_token });
  await sleep(450);
  await echoes(c, 'after the header timeout');
  assert.equal(c.closed, false);
  const back = new Promise<string>((r) => socks.socket.once('data', (d: Buffer) => r(d.toString())));
  socks.socket.write('socks too');
  assert.equal(await back, 'socks too');
  socks.socket.destroy();
  // And a keep-alive HTTP client idle between requests is not sent a 408 either.
  const origin = await originFor(t);
  const s2 = await sessionFor(s, 'build-2', origin);
  const k = await RawClient.connect(t, s.sluice.http.port);
  for (let i = 0; i < 2; i++) {
    k.write(`GET http://${origin.authority}/${i} HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${basic('build-2', s2.proxy_token)}\r\n\r\n`);
    assert.equal((await k.takeResponse()).status, 200);
    await sleep(300);
    assert.equal(k.text(), '', 'nothing unsolicited on an idle keep-alive connection');
  }
});

test('graceful close: open tunnels keep working during the grace period, new connections are refused, then tunnels are cut', async (t) => {
  const echo = await echoFor(t);
  const GRACE = 600;
  const s = await sluiceFor(t, { config: { timeouts: { shutdown_grace_ms: GRACE } } });
  const session = await sessionFor(s, 'build-1', echo);
  const c = await tunnel(t, s.sluice.http.port, `${echo.host}:${echo.port}`, session.proxy_token);
  const { socket: socksTunnel } = await socksConnect(s.sluice.socks.port, { host: echo.host, port: echo.port }, { type: 5, userId: 'build-1', password: session.proxy_token });
  const socksClosed = new Promise<void>((r) => socksTunnel.once('close', () => r()));
  await echoes(c, 'before');

  const started = Date.now();
  let closedAt = 0;
  const closing = s.sluice.close().then(() => (closedAt = Date.now()));
  await sleep(50);
  // New connections are refused on every port as soon as close() begins.
  assert.equal(await refused(s.sluice.http.port), true, 'http port refuses');
  assert.equal(await refused(s.sluice.socks.port), true, 'socks port refuses');
  assert.equal(await refused(s.sluice.api.port), true, 'api port refuses');
  // The open tunnel still relays.
  await echoes(c, 'during grace');
  await sleep(GRACE / 2);
  await echoes(c, 'still during grace');
  assert.equal(c.closed, false);

  await c.untilClosed(GRACE + 1000);
  await socksClosed;
  await closing;
  const took = closedAt - started;
  assert.ok(took >= GRACE - 50 && took < GRACE + 1000, `close() took ${took} ms`);
  assert.equal(s.sluice.connections.size, 0);
});

test('graceful close returns as soon as the last tunnel ends on its own', async (t) => {
  const echo = await echoFor(t);
  const s = await sluiceFor(t, { config: { timeouts: { shutdown_grace_ms: 3000 } } });
  const session = await sessionFor(s, 'build-1', echo);
  const c = await tunnel(t, s.sluice.http.port, `${echo.host}:${echo.port}`, session.proxy_token);
  const started = Date.now();
  const closing = s.sluice.close();
  await sleep(100);
  await echoes(c, 'bye');
  c.close();
  await closing;
  assert.ok(Date.now() - started < 1000, `close() took ${Date.now() - started} ms`);
});

test('close() does not wait for idle keep-alive clients (curl, raw, undici-style pools)', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const clients: RawClient[] = [];
  for (const port of [s.sluice.http.port, s.sluice.socks.port]) {
    const k = await RawClient.connect(t, port);
    k.write(`GET http://${origin.authority}/ HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
    assert.equal((await k.takeResponse()).status, 200);
    clients.push(k);
  }
  const started = Date.now();
  assert.notEqual(await within(s.sluice.close(), 1000), 'timeout', 'close() waited for idle keep-alive clients');
  assert.ok(Date.now() - started < 400, `close() took ${Date.now() - started} ms`);
  for (const k of clients) await k.untilClosed(500);
});

test('close() ends an open WebSocket within the grace period', async (t) => {
  const sockets = new Set<net.Socket>();
  const server = http.createServer();
  server.on('upgrade', (_req, socket: net.Socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(() => {
    for (const so of sockets) so.destroy();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const GRACE = 300;
  const s = await sluiceFor(t, { config: { timeouts: { shutdown_grace_ms: GRACE } } });
  const session = await sessionFor(s, 'build-1', { host: '127.0.0.2', port });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET http://127.0.0.2:${port}/ws HTTP/1.1\r\nHost: 127.0.0.2:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  assert.match(await c.takeThrough('\r\n\r\n'), /^HTTP\/1\.1 101/);
  await echoes(c, 'ws-data');
  assert.equal(s.sluice.connections.size, 1, 'an upgraded WebSocket counts as an open tunnel');
  assert.equal(s.sluice.connections.entries()[0]!.protocol, 'http');
  const started = Date.now();
  const result = await within(s.sluice.close(), GRACE + 1500);
  assert.notEqual(result, 'timeout', 'close() must not wait for the WebSocket client to leave');
  assert.ok(Date.now() - started < GRACE + 1000);
  await c.untilClosed(500);
});

test('a session deleted while sluice runs: new connections refused, the data plane keeps serving others', async (t) => {
  const origin = await originFor(t);
  const s = await sluiceFor(t);
  const a = await sessionFor(s, 'build-1', origin);
  const b = await sessionFor(s, 'build-2', origin);
  await s.api('DELETE', `/api/sessions/${a.session_id}`);
  const ra = await curl(['-i', '-x', a.proxy.http, `http://${origin.authority}/`]);
  assert.match(ra.stdout, /^HTTP\/1\.1 407/);
  const rb = await curl(['-x', b.proxy.http, `http://${origin.authority}/b`]);
  assert.match(rb.stdout, /GET \/b/);
  const c = await RawClient.connect(t, s.sluice.socks.port);
  c.write(Buffer.concat([socks5.greeting(0x02), socks5.auth('build-1', a.proxy_token)]));
  assert.deepEqual([...(await c.take(4))], [0x05, 0x02, 0x01, 0x01]);
});

test('a client that leaves while sluice is still resolving leaves no tunnel or upstream connection behind', async (t) => {
  const echo = await echoFor(t);
  const s = await sluiceFor(t, { resolver: (name) => new Promise((r) => setTimeout(() => r(name === 'slow.test' ? [echo.host] : []), 150)) });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'slow.test' }] });
  const connect = await RawClient.connect(t, s.sluice.http.port);
  connect.write(`CONNECT slow.test:${echo.port} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  const viaSocks = await RawClient.connect(t, s.sluice.socks.port);
  viaSocks.write(Buffer.concat([socks5.greeting(0x02), socks5.auth('build-1', session.proxy_token), socks5.domain('slow.test', echo.port)]));
  await viaSocks.take(4);
  await sleep(30);
  connect.close();
  viaSocks.close();
  await sleep(200); // past the resolver's answer
  await eventually(() => s.sluice.connections.size === 0, 1000, 'no tunnel left for the departed clients');
  await eventually(() => echo.closedCount() === echo.received.length, 1000, 'every upstream connection to close');
});
