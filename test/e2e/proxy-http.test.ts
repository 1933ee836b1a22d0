// Absolute-form HTTP forwarding: what reaches the origin (and what must not), keep-alive
// reuse upstream, request bodies, WebSocket upgrades, and the refusals for requests a
// forward proxy cannot serve.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { ProxyAgent, request as undiciRequest } from 'undici';
import { curl } from '../helpers/harness.js';
import { basic, basicSetup, originFor, parseCurl, proxyUrl, RawClient, sessionFor, sluiceFor, type T } from '../helpers/proxy-helpers.js';

/** An origin that answers with what it received, as JSON. */
function echoHandler(bodies: string[] = []): http.RequestListener {
  return (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      bodies.push(body);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bodyLength: body.length, remotePort: req.socket.remotePort }));
    });
  };
}

test('curl through the HTTP port reaches an allowed origin and the origin sees an origin-form request', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const r = await curl(['-i', '-x', session.proxy.http, `http://${origin.authority}/path?q=1`]);
  const res = parseCurl(r.stdout);
  assert.equal(res.status, 200);
  assert.match(res.body, new RegExp(`^origin 127\\.0\\.0\\.2:${origin.port} GET /path\\?q=1\\n$`));
  assert.equal(origin.requests.length, 1);
  assert.equal(origin.requests[0]!.url, '/path?q=1');
  assert.equal(s.sluice.connections.size, 0, 'plain HTTP forwarding is not a tunnel');
});

test('the SOCKS port serves HTTP proxying too (first byte decides)', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const r = await curl(['-x', proxyUrl(s.sluice.socks.port, 'build-1', session.proxy_token), `http://${origin.authority}/via-socks-port`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /GET \/via-socks-port/);
});

test('undici ProxyAgent in absolute-form (proxyTunnel: false) is forwarded', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const agent = new ProxyAgent({ uri: s.httpProxy, token: basic('build-1', session.proxy_token), proxyTunnel: false });
  t.after(() => agent.close());
  const res = await undiciRequest(`http://${origin.authority}/undici`, { dispatcher: agent });
  assert.equal(res.statusCode, 200);
  assert.match(await res.body.text(), /GET \/undici/);
});

test('hop-by-hop headers, Proxy-Authorization and headers named in Connection do not reach the origin', async (t) => {
  const origin = await originFor(t, '127.0.0.2', echoHandler());
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(
    `GET http://${origin.authority}/h HTTP/1.1\r\n` +
      `Host: ${origin.authority}\r\n` +
      `Proxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n` +
      'Proxy-Connection: keep-alive\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'Connection: keep-alive, X-Secret-Hop\r\n' +
      'X-Secret-Hop: do-not-forward\r\n' +
      'TE: trailers\r\n' +
      'X-End-To-End: forward-me\r\n\r\n',
  );
  const res = await c.takeResponse();
  assert.equal(res.status, 200, res.body);
  const seen = JSON.parse(res.body).headers as Record<string, string>;
  for (const h of ['proxy-authorization', 'proxy-connection', 'keep-alive', 'x-secret-hop', 'te']) {
    assert.equal(seen[h], undefined, `${h} must not reach the origin`);
  }
  assert.notEqual(seen.connection?.toLowerCase().includes('x-secret-hop'), true);
  assert.equal(seen['x-end-to-end'], 'forward-me');
  // And the response carries no proxy-only headers back.
  assert.equal(res.headers['proxy-authenticate'], undefined);
});

test('the Host header the origin sees is the URL authority, whatever the client sent', async (t) => {
  const origin = await originFor(t, '127.0.0.2', echoHandler());
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET http://${origin.authority}/host HTTP/1.1\r\nHost: internal.example\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  const res = await c.takeResponse();
  assert.equal(res.status, 200, res.body);
  assert.equal(JSON.parse(res.body).headers.host, origin.authority);
});

test('sequential requests on one client connection reuse one upstream connection', async (t) => {
  const origin = await originFor(t, '127.0.0.2', echoHandler());
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const c = await RawClient.connect(t, s.sluice.http.port);
  const auth = basic('build-1', session.proxy_token);
  const ports: number[] = [];
  for (const path of ['/one', '/two', '/three']) {
    c.write(`GET http://${origin.authority}${path} HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
    const res = await c.takeResponse();
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).url, path);
    ports.push(JSON.parse(res.body).remotePort);
  }
  assert.equal(new Set(ports).size, 1, `origin saw connections from ports ${ports.join(', ')}`);
  assert.equal(c.closed, false, 'the client connection stays open between requests');
  // curl's own connection reuse with two URLs: the same, end to end.
  const r = await curl(['-x', session.proxy.http, `http://${origin.authority}/a`, `http://${origin.authority}/b`]);
  const [a, b] = r.stdout.split('}{').map((p, i) => JSON.parse(i === 0 ? p + '}' : '{' + p));
  assert.equal(a.url, '/a');
  assert.equal(b.url, '/b');
  assert.equal(a.remotePort, b.remotePort);
});

test('request bodies arrive intact: Content-Length and chunked', async (t) => {
  const bodies: string[] = [];
  const origin = await originFor(t, '127.0.0.2', echoHandler(bodies));
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const auth = basic('build-1', session.proxy_token);

  // A large Content-Length body, written in several pieces.
  const big = Array.from({ length: 20_000 }, (_, i) => `line ${i}\n`).join('');
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`POST http://${origin.authority}/cl HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${auth}\r\nContent-Length: ${big.length}\r\n\r\n`);
  for (let i = 0; i < big.length; i += 40_000) c.write(big.slice(i, i + 40_000));
  const r1 = await c.takeResponse();
  assert.equal(r1.status, 200, r1.body);
  assert.equal(JSON.parse(r1.body).bodyLength, big.length);
  assert.equal(bodies[0], big);

  // Chunked, on the same connection, chunks in separate writes.
  c.write(`POST http://${origin.authority}/chunked HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${auth}\r\nTransfer-Encoding: chunked\r\n\r\n`);
  for (const part of ['hello ', 'chunked ', 'world']) c.write(`${part.length.toString(16)}\r\n${part}\r\n`);
  c.write('0\r\n\r\n');
  const r2 = await c.takeResponse();
  assert.equal(r2.status, 200, r2.body);
  assert.equal(bodies[1], 'hello chunked world');

  // curl POST, for good measure.
  const r3 = await curl(['-x', session.proxy.http, '--data-binary', 'a=1&b=2', `http://${origin.authority}/form`]);
  assert.equal(JSON.parse(r3.stdout).method, 'POST');
  assert.equal(bodies[2], 'a=1&b=2');
});

/** An origin that upgrades /ws to an echo protocol; records the upgrade requests. */
async function wsOriginFor(t: T, host = '127.0.0.2'): Promise<{ port: number; authority: string; upgrades: http.IncomingMessage[] }> {
  const upgrades: http.IncomingMessage[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => res.end('not an upgrade\n'));
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    upgrades.push(req);
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  t.after(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  const port = (server.address() as net.AddressInfo).port;
  return { port, authority: `${host}:${port}`, upgrades };
}

test('a WebSocket upgrade in absolute form is relayed both ways, without the proxy credentials', async (t) => {
  const origin = await wsOriginFor(t);
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', { host: '127.0.0.2', port: origin.port });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(
    `GET http://${origin.authority}/ws//chat HTTP/1.1\r\nHost: ${origin.authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`,
  );
  const head = await c.takeThrough('\r\n\r\n');
  assert.match(head, /^HTTP\/1\.1 101 /);
  c.write('ping-1');
  assert.equal((await c.take(6)).toString(), 'ping-1');
  c.write('ping-2');
  assert.equal((await c.take(6)).toString(), 'ping-2');
  assert.equal(origin.upgrades.length, 1);
  const h = origin.upgrades[0]!.headers;
  // The target as sent (no slash folding), the fields in the client's order.
  assert.equal(origin.upgrades[0]!.url, '/ws//chat');
  assert.deepEqual(
    origin.upgrades[0]!.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase()),
    ['host', 'upgrade', 'connection', 'sec-websocket-version', 'sec-websocket-key'],
  );
  assert.equal(h.host, origin.authority);
  assert.equal(h.upgrade, 'websocket');
  assert.equal(h['proxy-authorization'], undefined);
});

test('a WebSocket upgrade to a denied destination gets 403 and never reaches the origin', async (t) => {
  const origin = await wsOriginFor(t, '127.0.0.3');
  const s = await sluiceFor(t);
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(
    `GET http://${origin.authority}/ws//chat HTTP/1.1\r\nHost: ${origin.authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Proxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`,
  );
  const res = await c.takeResponse();
  assert.equal(res.status, 403);
  assert.match(res.headers['proxy-status'] ?? '', /error=http_request_denied/);
  assert.equal(origin.upgrades.length, 0);
});

test('an IPv6 origin ([::1]) is reachable in absolute form', async (t) => {
  const origin = await originFor(t, '::1');
  const s = await sluiceFor(t);
  // ::1 is allowed by the built-in loopback rule; a session is still needed for identity.
  const session = await s.createSession({ container_name: 'build-1' });
  const r = await curl(['-x', session.proxy.http, `http://[::1]:${origin.port}/v6`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /GET \/v6/);
});

test('origin-form and https:// requests are refused with 400 and an explanation', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const auth = basic('build-1', session.proxy_token);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET /not-absolute HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
  const r1 = await c.takeResponse();
  assert.equal(r1.status, 400);
  assert.match(r1.body, /forward proxy.*absolute form/);
  assert.match(r1.headers['proxy-status'] ?? '', /error=http_request_error/);

  const c2 = await RawClient.connect(t, s.sluice.http.port);
  c2.write(`GET https://${origin.authority}/ HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
  const r2 = await c2.takeResponse();
  assert.equal(r2.status, 400);
  assert.match(r2.body, /CONNECT/);
  assert.equal(origin.requests.length, 0);
});

test('an absolute URL with only a query after the authority reaches the origin as /?query', async (t) => {
  const origin = await originFor(t, '127.0.0.2', echoHandler());
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET http://${origin.authority}?q=1 HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  const res = await c.takeResponse();
  assert.equal(res.status, 200, res.body);
  assert.equal(JSON.parse(res.body).url, '/?q=1');
});

test('a denied request gets 403 with Proxy-Status and a body naming destination, container, layer and rule', async (t) => {
  const origin = await originFor(t, '127.0.0.2');
  const other = await originFor(t, '127.0.0.3');
  const s = await sluiceFor(t);
  const session = await s.createSession({
    container_name: 'build-1',
    network_rules: [
      { destination_pattern: '127.0.0.2', port_pattern: String(origin.port) },
      { destination_pattern: '127.0.0.3', action: 'deny' },
    ],
  });
  const rules = (await s.api('GET', `/api/sessions/${session.session_id}`)).body.rules as Array<{ id: number; action: string }>;
  const denyRule = rules.find((r) => r.action === 'deny')!;
  const r = await curl(['-i', '-x', session.proxy.http, `http://${other.authority}/secret`]);
  const res = parseCurl(r.stdout);
  assert.equal(res.status, 403);
  assert.equal(
    res.headers['proxy-status'],
    `sluice; error=http_request_denied; details="${other.authority} denied for container build-1: session rule #${denyRule.id} (deny 127.0.0.3 any port for container build-1)"`,
  );
  assert.equal(res.headers['proxy-authenticate'], undefined, 'a policy denial is not an authentication challenge');
  assert.match(res.body, new RegExp(`^Blocked by sluice egress policy: ${other.authority.replace(/\./g, '\\.')}\\n`));
  assert.match(res.body, new RegExp(`\\ncontainer: build-1 \\(session ${session.session_id}\\)\\n`));
  assert.match(res.body, new RegExp(`\\ndecided by: session rule #${denyRule.id} \\(deny 127\\.0\\.0\\.3 any port for container build-1\\)\\n`));
  assert.equal(other.requests.length, 0, 'the denied origin received nothing');
  // The allowed origin on the same proxy connection setup still works.
  const ok = await curl(['-x', session.proxy.http, `http://${origin.authority}/`]);
  assert.match(ok.stdout, /^origin 127\.0\.0\.2/);
});

test('hop-by-hop headers in the origin response do not reach the client', async (t) => {
  const origin = await originFor(t, '127.0.0.2', (_req, res) => {
    res.setHeader('Connection', 'X-Hop-Secret');
    res.setHeader('X-Hop-Secret', 'origin-internal');
    res.setHeader('Keep-Alive', 'timeout=1');
    res.setHeader('Proxy-Authenticate', 'Basic realm="origin"');
    res.setHeader('X-End-To-End', 'kept');
    res.end('ok\n');
  });
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET http://${origin.authority}/ HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  const res = await c.takeResponse();
  assert.equal(res.status, 200);
  assert.equal(res.headers['x-end-to-end'], 'kept');
  assert.equal(res.headers['x-hop-secret'], undefined);
  assert.equal(res.headers['keep-alive'], undefined);
  assert.equal(res.headers['proxy-authenticate'], undefined);
  assert.doesNotMatch(res.headers.connection ?? '', /x-hop-secret/i);
});

test('HTTP/1.0 clients and large bodies with Expect: 100-continue are forwarded', async (t) => {
  const bodies: string[] = [];
  const origin = await originFor(t, '127.0.0.2', echoHandler(bodies));
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', origin);
  const r = await curl(['--http1.0', '-i', '-x', session.proxy.http, `http://${origin.authority}/old`]);
  assert.equal(parseCurl(r.stdout).status, 200, r.stdout);
  assert.equal(JSON.parse(parseCurl(r.stdout).body).url, '/old');

  const c = await RawClient.connect(t, s.sluice.http.port);
  const body = 'x'.repeat(100_000);
  c.write(
    `POST http://${origin.authority}/expect HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n` +
      `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
  );
  assert.match(await c.takeThrough('\r\n\r\n'), /^HTTP\/1\.1 100 Continue/);
  c.write(body);
  const res = await c.takeResponse();
  assert.equal(res.status, 200, res.body);
  assert.equal(bodies[1], body);
});
