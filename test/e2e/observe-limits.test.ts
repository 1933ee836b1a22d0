// Per-container connection limits against the real server: concurrent connections and new
// connections per second, from config or a session's `limits`; over the limit HTTP gets 429
// with Retry-After and Proxy-Status, SOCKS5 gets 0x02, the attempt is recorded with reason
// `limit`, and the container recovers once under the limit again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, type TestSluice } from '../helpers/harness.js';
import { originUrl, viaProxy } from '../helpers/api-helpers.js';
import { closedPort, echoFor, originFor, parseCurl, sleep, sluiceFor, socks5, socks5Raw, type EchoServer, type T } from '../helpers/proxy-helpers.js';
import { connectTunnel, connectVia, decisions, socksTunnel } from '../helpers/observe-helpers.js';
import { curl } from '../helpers/harness.js';

async function expect429(t: T, s: TestSluice, container: string, token: string, echo: EchoServer, kind: 'concurrent' | 'rate'): Promise<void> {
  const { c, res } = await connectVia(t, s, container, token, `${echo.host}:${echo.port}`);
  assert.equal(res.status, 429, `${res.statusLine}\n${res.body}`);
  assert.match(res.headers['retry-after'] ?? '', /^[1-9][0-9]*$/);
  assert.match(res.headers['proxy-status'] ?? '', /^sluice; error=http_request_denied; details=".*limit/);
  assert.match(res.body, kind === 'concurrent' ? /concurrent-connection limit/ : /new-connection rate limit/);
  await c.untilClosed();
}

async function socksRefused(t: T, s: TestSluice, container: string, token: string, echo: EchoServer): Promise<number> {
  const { c, rep } = await socks5Raw(t, s.sluice.socks.port, container, token, socks5.ipv4(echo.host, echo.port));
  c.close();
  return rep;
}

const allowEcho = (e: EchoServer) => [{ destination_pattern: e.host, port_pattern: String(e.port) }];

test('limits.max_connections: the next CONNECT gets 429, the next SOCKS5 0x02, both recorded as limit; closing one recovers', async (t) => {
  const echo = await echoFor(t, '127.0.0.2');
  const s = await sluiceFor(t, { config: { limits: { max_connections: 2 } } });
  const a = await s.createSession({ container_name: 'lim-a', network_rules: allowEcho(echo) });
  const b = await s.createSession({ container_name: 'lim-b', network_rules: allowEcho(echo) });
  const one = await connectTunnel(t, s, 'lim-a', a.proxy_token, `${echo.host}:${echo.port}`);
  const two = await socksTunnel(t, s, 'lim-a', a.proxy_token, echo.host, echo.port);
  await expect429(t, s, 'lim-a', a.proxy_token, echo, 'concurrent');
  assert.equal(await socksRefused(t, s, 'lim-a', a.proxy_token, echo), 0x02);
  // Per container: another container is not affected.
  const other = await connectTunnel(t, s, 'lim-b', b.proxy_token, `${echo.host}:${echo.port}`);

  const limited = (await decisions(s, { container: 'lim-a', decision: 'deny' })).map((d) => [d.reason, d.protocol, d.destination, d.port]);
  assert.deepEqual(limited, [
    ['limit', 'socks5', '127.0.0.2', echo.port],
    ['limit', 'connect', '127.0.0.2', echo.port],
  ]);

  one.close();
  await eventually(async () => (await s.api('GET', '/api/connections?container=lim-a')).body.connections.length === 1, 2000, 'the slot to be free');
  const three = await socksTunnel(t, s, 'lim-a', a.proxy_token, echo.host, echo.port);
  three.close();
  two.close();
  other.close();
});

test('limits.connections_per_second: bursts up to the rate, then 429 with Retry-After (plain HTTP too), then recovers', async (t) => {
  const o2 = await originFor(t, '127.0.0.2');
  const s = await sluiceFor(t, { config: { limits: { connections_per_second: 2 } } });
  const sess = await s.createSession({ container_name: 'rate', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  // Six at once: the bucket holds one second's worth (2); the rest are refused.
  const answers = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => curl(['--noproxy', '', '-i', '-x', sess.proxy.http, originUrl(o2, '127.0.0.2', `/r${i}`)])));
  const heads = answers.map((a) => parseCurl(a.stdout));
  assert.deepEqual(heads.map((h) => h.status).sort(), [200, 200, 429, 429, 429, 429]);
  const head = heads.find((h) => h.status === 429)!;
  assert.match(head.headers['retry-after'] ?? '', /^[1-9]$/);
  assert.match(head.headers['proxy-status'] ?? '', /error=http_request_denied; details="container rate is over its new-connection rate limit"/);
  assert.match(head.body, /new-connection rate limit/);
  assert.equal(o2.requests.length, 2, 'refused attempts never reached the origin');
  const rows = await decisions(s, { container: 'rate' });
  assert.deepEqual(rows.map((r) => r.reason).sort(), ['limit', 'limit', 'limit', 'limit', 'rule', 'rule']);
  assert.ok(rows.filter((r) => r.reason === 'limit').every((r) => r.decision === 'deny' && r.session_id === sess.session_id));
  // Retry-After is honest: after it, the bucket has refilled.
  await sleep(Number(head.headers['retry-after']) * 1000);
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 200);
});

test("a session's limits override the configured ones, in both directions, and show on the session", async (t) => {
  const echo = await echoFor(t, '127.0.0.2');
  const s = await sluiceFor(t, { config: { limits: { max_connections: 1 } } });
  const roomy = await s.createSession({ container_name: 'roomy', network_rules: allowEcho(echo), limits: { max_connections: 3 } });
  const unlimited = await s.createSession({ container_name: 'free', network_rules: allowEcho(echo), limits: { max_connections: 0 } });
  const tight = await s.createSession({ container_name: 'tight', network_rules: allowEcho(echo), limits: { connections_per_second: 0.2 } });
  const plain = await s.createSession({ container_name: 'plain', network_rules: allowEcho(echo) });

  for (let i = 0; i < 3; i++) await connectTunnel(t, s, 'roomy', roomy.proxy_token, `${echo.host}:${echo.port}`);
  await expect429(t, s, 'roomy', roomy.proxy_token, echo, 'concurrent');
  for (let i = 0; i < 5; i++) await socksTunnel(t, s, 'free', unlimited.proxy_token, echo.host, echo.port);
  await connectTunnel(t, s, 'plain', plain.proxy_token, `${echo.host}:${echo.port}`);
  await expect429(t, s, 'plain', plain.proxy_token, echo, 'concurrent');
  // Only the rate is overridden: the configured concurrency limit (1) still applies to `tight`.
  const first = await connectTunnel(t, s, 'tight', tight.proxy_token, `${echo.host}:${echo.port}`);
  await expect429(t, s, 'tight', tight.proxy_token, echo, 'concurrent');
  first.close();
  await eventually(async () => (await s.api('GET', '/api/connections?container=tight')).body.connections.length === 0, 2000, 'tight to be idle');
  await expect429(t, s, 'tight', tight.proxy_token, echo, 'rate');

  const shown = (await s.api('GET', `/api/sessions/${roomy.session_id}`)).body;
  assert.deepEqual(shown.limits, { max_connections: 3, connections_per_second: null });
  assert.equal((await s.api('GET', `/api/sessions/${plain.session_id}`)).body.limits, null);
  for (const limits of [{ max_connections: -1 }, { connections_per_second: 'fast' }, { max_conns: 3 }, { max_connections: 1.5 }]) {
    const res = await s.api('POST', '/api/sessions', { container_name: 'bad', limits });
    assert.equal(res.status, 400, `${JSON.stringify(limits)}: ${JSON.stringify(res.body)}`);
  }
  // A newer session of the same container brings its own limits.
  const widened = await s.createSession({ container_name: 'plain', network_rules: allowEcho(echo), limits: { max_connections: 2 } });
  await connectTunnel(t, s, 'plain', widened.proxy_token, `${echo.host}:${echo.port}`);
  await expect429(t, s, 'plain', widened.proxy_token, echo, 'concurrent');
});

test('denied and failed attempts give their slot back', async (t) => {
  const echo = await echoFor(t, '127.0.0.2');
  const s = await sluiceFor(t, { config: { limits: { max_connections: 1 } } });
  const sess = await s.createSession({ container_name: 'give-back', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const dead = await closedPort('127.0.0.2');
  for (let i = 0; i < 3; i++) {
    const denied = await connectVia(t, s, 'give-back', sess.proxy_token, `127.0.0.3:${echo.port}`);
    assert.equal(denied.res.status, 403);
    const refused = await connectVia(t, s, 'give-back', sess.proxy_token, `${echo.host}:${dead}`);
    assert.equal(refused.res.status, 502, 'allowed, then refused upstream');
    const viaSocks = await socksRefused(t, s, 'give-back', sess.proxy_token, { ...echo, port: dead });
    assert.equal(viaSocks, 0x05);
  }
  const tunnel = await connectTunnel(t, s, 'give-back', sess.proxy_token, `${echo.host}:${echo.port}`);
  tunnel.close();
  await eventually(async () => (await s.api('GET', '/api/connections?container=give-back')).body.connections.length === 0, 2000, 'idle');
  const again = await socksTunnel(t, s, 'give-back', sess.proxy_token, echo.host, echo.port);
  again.close();
});

test('a rate below one per second admits one connection every 1/rate seconds', async (t) => {
  const o2 = await originFor(t, '127.0.0.2');
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'slow-rate', network_rules: [{ destination_pattern: '127.0.0.2' }], limits: { connections_per_second: 0.5 } });
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 200, 'the first connection is admitted');
  const head = parseCurl((await curl(['--noproxy', '', '-i', '-x', sess.proxy.http, originUrl(o2)])).stdout);
  assert.equal(head.status, 429);
  assert.equal(head.headers['retry-after'], '2');
  await sleep(2000);
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 200, 'and another after Retry-After');
});
