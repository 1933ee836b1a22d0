// Chaining to a parent proxy (`upstream_proxy`), SOCKS mostly (the HTTP parent's own cases
// are in proxy-upstream-http.test.ts). The parent is a second sluice: its audit trail shows
// exactly what the child asked it for, and its policy can refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type http from 'node:http';
import { configSchema } from '../../src/config/schema.js';
import { curl, eventually, startTestSluice, tempDir } from '../helpers/harness.js';
import { connectVia, decisions } from '../helpers/observe-helpers.js';
import { chain, parentDecisions } from '../helpers/upstream-helpers.js';
import { RawClient, basic, closedPort, halfClosingOriginFor, getOverTunnel, originFor, proxyUrl, sluiceFor, socks5, socks5Raw, socksConnect, type T } from '../helpers/proxy-helpers.js';

for (const [scheme, protocol] of [['socks5', 'socks5'], ['http', 'connect']] as const) {
  test(`CONNECT through the child reaches the origin via a ${scheme}:// parent, which is asked for the checked address`, async (t) => {
    const { parent, child, token, origin } = await chain(t, scheme);
    const { c, res } = await connectVia(t, child, 'build-1', token, `app.test:${origin.port}`);
    assert.equal(res.status, 200, res.body);
    c.write(`GET /chained HTTP/1.1\r\nHost: app.test:${origin.port}\r\nConnection: close\r\n\r\n`);
    await c.takeThrough('GET /chained');
    assert.equal(origin.requests.length, 1);
    // The parent was asked for the address the child resolved and checked, not the name.
    const [seen] = await parentDecisions(parent, 1);
    assert.equal(seen!.protocol, protocol);
    assert.equal(seen!.destination, '127.0.0.2');
    assert.equal(seen!.decision, 'allow');
    // The child's own audit is unchanged by chaining: the name the client asked for, allowed.
    const [mine] = await decisions(child, { container: 'build-1' });
    assert.equal(mine!.destination, 'app.test');
    assert.equal(mine!.address, '127.0.0.2');
  });
}

test('SOCKS5 and SOCKS4 clients are chained too', async (t) => {
  const { parent, child, token, origin } = await chain(t, 'socks5');
  const v5 = await socksConnect(child.sluice.socks.port, { host: 'app.test', port: origin.port }, { type: 5, userId: 'build-1', password: token });
  assert.match(await getOverTunnel(v5.socket, `app.test:${origin.port}`, '/socks5'), /GET \/socks5/);
  const v4 = await socksConnect(child.sluice.socks.port, { host: 'app.test', port: origin.port }, { type: 4, userId: `build-1:${token}` });
  assert.match(await getOverTunnel(v4.socket, `app.test:${origin.port}`, '/socks4'), /GET \/socks4/);
  assert.equal((await parentDecisions(parent, 2)).length, 2);
});

test('forwarded http:// requests go through the parent and reuse one pooled connection', async (t) => {
  const { parent, child, token, origin } = await chain(t, 'socks5');
  const url = `http://app.test:${origin.port}`;
  const r = await curl(['-x', proxyUrl(child.sluice.http.port, 'build-1', token), `${url}/one`, `${url}/two`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /GET \/one/);
  assert.match(r.stdout, /GET \/two/);
  // Two requests over one keep-alive upstream connection: one tunnel through the parent.
  const rows = await parentDecisions(parent, 1);
  assert.equal(rows.length, 1, 'the pooled upstream connection was reused');
  assert.equal(origin.requests.length, 2);
});

test("a destination the child denies never reaches the parent", async (t) => {
  const { parent, child, token } = await chain(t, 'socks5');
  const { res } = await connectVia(t, child, 'build-1', token, '127.0.0.9:80');
  assert.equal(res.status, 403);
  // Give a wrongly forwarded attempt time to show up before asserting its absence.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await decisions(parent)).length, 0);
});

for (const [scheme, refusedBy, refusedConn] of [
  ['socks5', '(NotAllowed)', '(ConnectionRefused)'],
  ['http', '(403 Forbidden)', '(502 Bad Gateway, connection_refused)'],
] as const) {
  test(`refusals and failures past the child are reported to the client with the ${scheme}:// parent named`, async (t) => {
    const { parent, child, token, origin } = await chain(t, scheme);
    // The parent's policy refuses 127.0.0.3.
    const refused = await connectVia(t, child, 'build-1', token, 'other.test:80');
    assert.equal(refused.res.status, 502, refused.res.body);
    assert.ok((refused.res.headers['proxy-status'] ?? '').includes(`upstream proxy ${scheme}://127.0.0.1:`), refused.res.headers['proxy-status']);
    assert.ok((refused.res.headers['proxy-status'] ?? '').includes(`could not connect to 127.0.0.3:80 ${refusedBy}`), refused.res.headers['proxy-status']);
    const [denied] = await parentDecisions(parent, 1);
    assert.equal(denied!.decision, 'deny');
    assert.equal(denied!.destination, '127.0.0.3');
    // SOCKS5 clients get a failure reply, not a hang.
    const { rep } = await socks5Raw(t, child.sluice.socks.port, 'build-1', token, socks5.domain('other.test', 80));
    assert.notEqual(rep, 0);
    // Nothing listening behind the parent: the parent's "connection refused" reaches the client as one.
    const dead = await closedPort('127.0.0.2');
    await parent.createSession({ container_name: 'edge', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: '*' }] });
    const gone = await connectVia(t, child, 'build-1', token, `app.test:${dead}`);
    assert.equal(gone.res.status, 502);
    assert.match(gone.res.headers['proxy-status'] ?? '', /error=connection_refused; details="upstream proxy /);
    assert.ok((gone.res.headers['proxy-status'] ?? '').includes(`${refusedConn}"`), gone.res.headers['proxy-status']);
    // ... and the chain still serves the next client.
    const ok = await connectVia(t, child, 'build-1', token, `app.test:${origin.port}`);
    assert.equal(ok.res.status, 200);
  });
}

test('an unreachable parent or wrong credentials give a 502 that names the parent, and sluice keeps serving', async (t) => {
  const origin = await originFor(t);
  const parent = await sluiceFor(t);
  await parent.createSession({ container_name: 'edge', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: '*' }] });
  const deadPort = await closedPort('127.0.0.1');
  for (const [upstream, expected] of [
    [`socks5://127.0.0.1:${deadPort}`, /upstream proxy socks5:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\)/],
    [`socks5://edge:wrong-token@127.0.0.1:${parent.sluice.socks.port}`, /refused sluice's credentials/],
  ] as const) {
    const child = await sluiceFor(t, { config: { upstream_proxy: upstream } });
    const session = await child.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: '*' }] });
    for (let i = 0; i < 2; i++) {
      const { res } = await connectVia(t, child, 'build-1', session.proxy_token, origin.authority);
      assert.equal(res.status, 502, `${upstream}: ${res.statusLine}`);
      assert.match(res.headers['proxy-status'] ?? '', expected);
      assert.doesNotMatch(res.headers['proxy-status'] ?? '', /wrong-token/, 'credentials never appear in errors');
    }
    // Forwarding reports it the same way.
    const r = await curl(['-sS', '-i', '-x', proxyUrl(child.sluice.http.port, 'build-1', session.proxy_token), `http://${origin.authority}/x`]);
    assert.match(r.stdout, /^HTTP\/1\.1 502/);
  }
});

test('upstream_proxy accepts socks5://, socks4:// and http:// URLs and rejects what it cannot honour', () => {
  const parse = (upstream_proxy: string) => configSchema.safeParse({ upstream_proxy });
  const socksOf = (r: ReturnType<typeof parse>) => (r.data?.upstream_proxy?.kind === 'socks' ? r.data.upstream_proxy.proxy : undefined);
  const ok = parse('socks5://user:p%40ss@10.0.0.1:1081');
  assert.ok(ok.success);
  assert.deepEqual(socksOf(ok), { host: '10.0.0.1', port: 1081, type: 5, userId: 'user', password: 'p@ss' });
  assert.equal(ok.data.upstream_proxy?.label, 'socks5://10.0.0.1:1081', 'the label never carries credentials');
  const v6 = parse('socks4://[::1]');
  assert.ok(v6.success);
  assert.deepEqual(socksOf(v6), { host: '::1', port: 1080, type: 4 });
  const squid = parse('http://me:p%40ss%3A1@10.0.0.1:3128');
  assert.ok(squid.success);
  assert.deepEqual(squid.data.upstream_proxy, {
    kind: 'http',
    host: '10.0.0.1',
    port: 3128,
    authorization: `Basic ${Buffer.from('me:p@ss:1').toString('base64')}`,
    label: 'http://10.0.0.1:3128',
  });
  assert.deepEqual(parse('http://[::1]/').data?.upstream_proxy, { kind: 'http', host: '::1', port: 80, authorization: null, label: 'http://[::1]:80' });
  for (const [bad, why] of [
    ['ftp://10.0.0.1:3128', /unsupported scheme/],
    ['https://10.0.0.1:3128', /https:\/\/ parents .* are not supported/],
    ['http://a%3Ab:c@10.0.0.1:3128', /user of an http:\/\/ upstream proxy cannot contain/],
    ['http://10.0.0.1:3128/?x', /no path/],
    ['socks5h://10.0.0.1', /resolves and checks them itself/],
    ['socks5://10.0.0.1:1080/path', /no path/],
    ['socks4://u:p@10.0.0.1', /no passwords/],
    ['not a url', /expected a URL/],
  ] as const) {
    const r = parse(bad);
    assert.equal(r.success, false, bad);
    assert.match(JSON.stringify(r.error?.issues), why, bad);
  }
});

test('a chained tunnel keeps half-close and carries a download intact', async (t) => {
  // The origin sends its payload and its FIN at once (a server that speaks first), then keeps
  // reading until the client's FIN.
  const payload = randomBytes(2 * 1024 * 1024 + 7);
  const { port, heard } = await halfClosingOriginFor(t, payload);
  const parent = await sluiceFor(t);
  const edge = await parent.createSession({ container_name: 'edge', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(port) }] });
  const child = await sluiceFor(t, { config: { upstream_proxy: `socks5://edge:${edge.proxy_token}@127.0.0.1:${parent.sluice.socks.port}` } });
  const session = await child.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(port) }] });

  const c = await RawClient.connect(t, child.sluice.http.port, { allowHalfOpen: true });
  c.write(`CONNECT 127.0.0.2:${port} HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n\r\n`);
  await c.takeThrough('\r\n\r\n');
  await c.until((_b, _closed, ended) => ended, 5000, "the origin's FIN");
  assert.equal(createHash('sha256').update(c.received).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  c.socket.end('late reply');
  await c.untilClosed();
  await eventually(() => heard.length === 1, 3000, 'the origin to hear the client after its own FIN');
  assert.deepEqual(heard, ['late reply']);
});

test("an upstream_proxy that is sluice's own listener is refused at start (a proxy loop)", async (t) => {
  const port = await closedPort('127.0.0.1');
  const dataDir = tempDir();
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  await assert.rejects(
    startTestSluice({ dataDir, config: { listen: { socks: `127.0.0.1:${port}` }, upstream_proxy: `socks5://127.0.0.1:${port}` } }),
    /upstream_proxy socks5:\/\/127\.0\.0\.1:\d+ is one of this sluice's own listeners/,
  );
  // The port was released again: a sluice without the loop starts on it.
  const s = await sluiceFor(t, { config: { listen: { socks: `127.0.0.1:${port}` } } });
  assert.equal(s.sluice.socks.port, port);
});
