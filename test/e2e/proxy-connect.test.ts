// HTTP CONNECT tunnels: curl -p, undici's tunnelling ProxyAgent, IPv6 authorities,
// refusals, bytes pipelined behind the CONNECT head, and half-close through the relay.
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProxyAgent, request as undiciRequest } from 'undici';
import { curl, eventually } from '../helpers/harness.js';
import { basic, basicSetup, echoFor, halfClosingOriginFor, originFor, parseCurl, RawClient, sessionFor, sluiceFor, socks5, socks5Raw } from '../helpers/proxy-helpers.js';

test('curl -p tunnels through CONNECT to an allowed origin', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const r = await curl(['-p', '-x', session.proxy.http, `http://${origin.authority}/tunnelled`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^origin 127\.0\.0\.2:\d+ GET \/tunnelled$/m);
  assert.equal(origin.requests.length, 1);
  assert.equal(origin.requests[0]!.headers['proxy-authorization'], undefined, 'credentials stay in the CONNECT head');
  // The SOCKS port answers CONNECT just the same.
  const r2 = await curl(['-p', '-x', session.proxy.http.replace(`:${s.sluice.http.port}`, `:${s.sluice.socks.port}`), `http://${origin.authority}/socks-port`]);
  assert.match(r2.stdout, /GET \/socks-port/);
});

test('undici ProxyAgent (CONNECT tunnel) reaches the origin', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const agent = new ProxyAgent({ uri: s.httpProxy, token: basic('build-1', session.proxy_token) });
  t.after(() => agent.close());
  const res = await undiciRequest(`http://${origin.authority}/undici-tunnel`, { dispatcher: agent });
  assert.equal(res.statusCode, 200);
  assert.match(await res.body.text(), /GET \/undici-tunnel/);
});

test('a raw CONNECT gets "200 Connection Established", and the tunnel is registered until closed', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT ${origin.authority} HTTP/1.1\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  const head = await c.takeThrough('\r\n\r\n');
  assert.match(head, /^HTTP\/1\.1 200 Connection Established\r\n\r\n$/);
  assert.equal(s.sluice.connections.size, 1);
  const [info] = s.sluice.connections.entries();
  assert.equal(info!.protocol, 'connect');
  assert.equal(info!.address, '127.0.0.2');
  c.write(`GET /in-tunnel HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`);
  const res = await c.takeResponse();
  assert.equal(res.status, 200);
  assert.match(res.body, /GET \/in-tunnel/);
  c.close();
  await eventually(() => s.sluice.connections.size === 0, 2000, 'the tunnel to be unregistered');
});

test('CONNECT to [::1]:port reaches an IPv6 origin', async (t) => {
  const origin = await originFor(t, '::1');
  const s = await sluiceFor(t);
  const session = await s.createSession({ container_name: 'build-1' });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT [::1]:${origin.port} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  assert.match(await c.takeThrough('\r\n\r\n'), /^HTTP\/1\.1 200 /);
  c.write(`GET /v6 HTTP/1.1\r\nHost: [::1]:${origin.port}\r\n\r\n`);
  assert.match((await c.takeResponse()).body, /GET \/v6/);
  const r = await curl(['-p', '-x', session.proxy.http, `http://[::1]:${origin.port}/curl-v6`]);
  assert.match(r.stdout, /GET \/curl-v6/);
});

test('CONNECT to a denied destination: 403 naming destination, container, layer and rule; nothing reaches the origin', async (t) => {
  const { s, session } = await basicSetup(t);
  const other = await originFor(t, '127.0.0.3');
  const rule = await s.api('POST', '/api/rules', { destination_pattern: '127.0.0.3', action: 'deny' });
  assert.equal(rule.status, 200);
  // curl shows the refusal head (it does not print a failed CONNECT's body)...
  const r = await curl(['-i', '-p', '-x', session.proxy.http, `http://${other.authority}/`]);
  assert.notEqual(r.code, 0);
  const head = parseCurl(r.stdout);
  assert.equal(head.status, 403);
  assert.match(head.headers['proxy-status'] ?? '', /^sluice; error=http_request_denied; details="[^"]*127\.0\.0\.3/);
  // ...and a raw client reads the explanation.
  const raw = await RawClient.connect(t, s.sluice.http.port);
  raw.write(`CONNECT ${other.authority} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  const res = await raw.takeResponse();
  assert.equal(res.status, 403);
  assert.match(res.body, new RegExp(`Blocked by sluice egress policy: 127\\.0\\.0\\.3:${other.port}`));
  assert.match(res.body, new RegExp(`container: build-1 \\(session ${session.session_id}\\)`));
  assert.match(res.body, new RegExp(`decided by: global rule #${rule.body.id} \\(deny 127\\.0\\.0\\.3 any port\\)`));
  assert.match(res.body, /not a network\sfailure/);
  await raw.untilClosed();

  // Default deny (no rule at all) says so.
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT 127.0.0.9:443 HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  const res2 = await c.takeResponse();
  assert.equal(res2.status, 403);
  assert.match(res2.body, /Blocked by sluice egress policy: 127\.0\.0\.9:443/);
  assert.match(res2.body, /decided by: no rule matched \(default deny\)/);
  assert.equal(other.requests.length, 0);
});

test('bytes pipelined in the same packet as the CONNECT head reach the origin', async (t) => {
  const { s, origin, session } = await basicSetup(t);
  const c = await RawClient.connect(t, s.sluice.http.port);
  // One write: CONNECT head immediately followed by the tunnelled request.
  c.write(
    `CONNECT ${origin.authority} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n` +
      `GET /pipelined HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: close\r\n\r\n`,
  );
  assert.match(await c.takeThrough('\r\n\r\n'), /^HTTP\/1\.1 200 Connection Established/);
  const res = await c.takeResponse();
  assert.equal(res.status, 200);
  assert.match(res.body, /GET \/pipelined/);
  assert.equal(origin.requests.length, 1);
});

test('half-close propagates through a tunnel: the origin sees EOF after the data and the client gets the rest', async (t) => {
  const echo = await echoFor(t);
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', echo);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT ${echo.host}:${echo.port} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  await c.takeThrough('\r\n\r\n');
  c.socket.end('last words');
  // The echo server answers, sees EOF, ends; the tunnel relays all of it, then closes.
  const all = await c.untilClosed();
  assert.equal(all.toString(), 'last words');
  assert.equal(echo.received[0]!.toString(), 'last words');
});

test('CONNECT with an unparseable target is refused with 400', async (t) => {
  const { s, session, origin } = await basicSetup(t);
  for (const target of ['no-port-here', '::1:80', '127.0.0.2:0', '127.0.0.2:99999', '[::1:80', 'a b:80']) {
    const c = await RawClient.connect(t, s.sluice.http.port);
    c.write(`CONNECT ${target} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
    const res = await c.takeResponse();
    assert.equal(res.status, 400, `${target}: ${res.statusLine}`);
    assert.match(res.headers['proxy-status'] ?? '', /error=http_request_error/);
  }
  assert.equal(origin.requests.length, 0);
});

test('bytes sent while sluice is still resolving and dialling are delivered after the 200, in order', async (t) => {
  const origin = await originFor(t);
  // A resolver that takes 150 ms gives the client time to send ahead.
  const s = await sluiceFor(t, { resolver: (name) => new Promise((r) => setTimeout(() => r(name === 'slow.test' ? ['127.0.0.2'] : []), 150)) });
  const session = await s.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: 'slow.test' }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT slow.test:${origin.port} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\nGET /early`);
  await new Promise((r) => setTimeout(r, 40));
  c.write(` HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\n\r\n`);
  assert.match(await c.takeThrough('\r\n\r\n'), /^HTTP\/1\.1 200 /);
  const res = await c.takeResponse();
  assert.match(res.body, /GET \/early/);
});

test('an origin that half-closes still receives what the client sends afterwards (CONNECT and SOCKS5)', async (t) => {
  const { port, heard } = await halfClosingOriginFor(t, 'hello, and that is all from me');
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', { host: '127.0.0.2', port });

  const viaConnect = await RawClient.connect(t, s.sluice.http.port, { allowHalfOpen: true });
  viaConnect.write(`CONNECT 127.0.0.2:${port} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  await viaConnect.takeThrough('\r\n\r\n');
  const { c: viaSocks, rep } = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.ipv4('127.0.0.2', port), { allowHalfOpen: true });
  assert.equal(rep, 0);
  for (const [via, c] of [['connect', viaConnect], ['socks5', viaSocks]] as const) {
    await c.until((_b, _closed, ended) => ended, 2000, `${via}: the origin's FIN`);
    assert.equal(c.text(), 'hello, and that is all from me');
    // After the origin's FIN the tunnel still carries the client's bytes.
    c.socket.end(`${via}: late reply`);
    await c.untilClosed();
  }
  await eventually(() => heard.length === 2, 2000, 'the origin to hear both clients');
  assert.deepEqual(heard.sort(), ['connect: late reply', 'socks5: late reply']);
  await eventually(() => s.sluice.connections.size === 0, 2000, 'both tunnels to be unregistered');
  const rows = (await s.api('GET', '/api/decisions?container=build-1')).body.decisions as Array<{ close_reason: string | null }>;
  assert.deepEqual(rows.map((r) => r.close_reason), ['upstream_closed', 'upstream_closed'], 'the origin ended both conversations');
});

test('a download through a tunnel arrives intact, for a fast and a slow reader, while other tunnels run (read buffers are grown and recycled)', async (t) => {
  const payload = randomBytes(8 * 1024 * 1024 + 123);
  const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  const server = net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.once('data', () => sock.end(payload));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const s = await sluiceFor(t);
  const session = await sessionFor(s, 'build-1', { host: '127.0.0.2', port });

  const download = async (via: 'connect' | 'socks5', slow: boolean): Promise<string> => {
    let c: RawClient;
    if (via === 'connect') {
      c = await RawClient.connect(t, s.sluice.http.port);
      c.write(`CONNECT 127.0.0.2:${port} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
      await c.takeThrough('\r\n\r\n');
    } else {
      const r = await socks5Raw(t, s.sluice.socks.port, 'build-1', session.proxy_token, socks5.ipv4('127.0.0.2', port));
      assert.equal(r.rep, 0);
      c = r.c;
    }
    if (slow) {
      // Read in small sips so sluice's writes to this client queue up (backpressure).
      c.socket.pause();
      const sip = setInterval(() => {
        c.socket.resume();
        setTimeout(() => c.socket.pause(), 2);
      }, 10);
      t.after(() => clearInterval(sip));
      c.write('go');
      const got = await c.untilClosed(20_000);
      clearInterval(sip);
      return digest(got);
    }
    c.write('go');
    return digest(await c.untilClosed(10_000));
  };
  const results = await Promise.all([download('connect', false), download('socks5', false), download('connect', true), download('socks5', true)]);
  for (const r of results) assert.equal(r, digest(payload));
});
