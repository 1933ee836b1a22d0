// The DNS cache through the real proxy: an injected resolver counts its calls, an injected
// clock moves time past the TTLs, and every decision still checks the cached addresses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { HostResolver } from '../../src/proxy/dns.js';
import { FakeClock, addRule } from '../helpers/api-helpers.js';
import { connectVia, metric, metricsText, roundTrip, socksTunnel } from '../helpers/observe-helpers.js';
import { echoFor, sleep, sluiceFor, socks5, socks5Raw, type T } from '../helpers/proxy-helpers.js';
import type { StartOptions, TestSluice } from '../helpers/harness.js';

/** Answers from `table` (anything else is NXDOMAIN) after `delayMs`, counting calls per name. */
function countingResolver(table: Record<string, string[]>, delayMs = 0): { fn: HostResolver; count: (name: string) => number } {
  const calls = new Map<string, number>();
  const fn: HostResolver = async (name) => {
    calls.set(name, (calls.get(name) ?? 0) + 1);
    if (delayMs > 0) await sleep(delayMs);
    const found = table[name];
    if (found === undefined) throw Object.assign(new Error(`no such host ${name}`), { code: 'ENOTFOUND' });
    return found;
  };
  return { fn, count: (name) => calls.get(name) ?? 0 };
}

interface Setup {
  s: TestSluice;
  token: string;
  port: number;
  clock: FakeClock;
  dns: ReturnType<typeof countingResolver>;
}

async function setup(t: T, opts: StartOptions & { delayMs?: number } = {}): Promise<Setup> {
  const echo = await echoFor(t, '127.0.0.2');
  const clock = new FakeClock();
  const dns = countingResolver({ 'api.test': ['127.0.0.2'], 'other.test': ['127.0.0.2'] }, opts.delayMs);
  const s = await sluiceFor(t, { clock: clock.fn, resolver: dns.fn, ...opts });
  const sess = await s.createSession({
    container_name: 'box',
    network_rules: [{ destination_pattern: 'api.test' }, { destination_pattern: 'other.test' }, { destination_pattern: 'gone.test' }],
  });
  return { s, token: sess.proxy_token, port: echo.port, clock, dns };
}

/** CONNECT through the proxy; the status, after a round trip when it is 200. */
async function connectStatus(t: T, x: Setup, host: string): Promise<{ status: number; body: string }> {
  const { c, res } = await connectVia(t, x.s, 'box', x.token, `${host}:${x.port}`);
  if (res.status === 200) await roundTrip(c, 'ping');
  c.close();
  return { status: res.status, body: res.body };
}

test('two CONNECTs to one name make one lookup; after the TTL, a second', async (t) => {
  const x = await setup(t);
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  assert.equal(x.dns.count('api.test'), 1);
  // SOCKS5 with a domain name shares the same cache.
  (await socksTunnel(t, x.s, 'box', x.token, 'api.test', x.port)).close();
  assert.equal(x.dns.count('api.test'), 1);
  x.clock.advance(29.9);
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  assert.equal(x.dns.count('api.test'), 1, 'still inside the 30 s default');
  x.clock.advance(0.1);
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  assert.equal(x.dns.count('api.test'), 2, 'the TTL is over: resolved again');
  assert.equal((await connectStatus(t, x, 'other.test')).status, 200);
  assert.equal(x.dns.count('other.test'), 1, 'names are cached separately');

  const text = await metricsText(x.s);
  assert.equal(metric(text, 'sluice_dns_cache_lookups_total', { result: 'miss' }), 3);
  assert.equal(metric(text, 'sluice_dns_cache_lookups_total', { result: 'hit' }), 3);
  assert.equal(metric(text, 'sluice_dns_cache_entries'), 2);
});

test('a name that does not exist is cached for the negative TTL, with the same 502 each time', async (t) => {
  const x = await setup(t, { config: { dns: { negative_ttl_ms: 2_000 } } });
  for (let i = 0; i < 3; i++) {
    const r = await connectStatus(t, x, 'gone.test');
    assert.equal(r.status, 502);
    assert.match(r.body, /cannot resolve gone\.test \(ENOTFOUND\)/);
  }
  const { rep } = await socks5Raw(t, x.s.sluice.socks.port, 'box', x.token, socks5.domain('gone.test', x.port));
  assert.equal(rep, 0x04);
  assert.equal(x.dns.count('gone.test'), 1);
  x.clock.advance(1.999);
  assert.equal((await connectStatus(t, x, 'gone.test')).status, 502);
  assert.equal(x.dns.count('gone.test'), 1);
  x.clock.advance(0.001);
  assert.equal((await connectStatus(t, x, 'gone.test')).status, 502);
  assert.equal(x.dns.count('gone.test'), 2, 'the negative TTL is over');
});

test('concurrent requests for one name wait on one lookup', async (t) => {
  const x = await setup(t, { delayMs: 100 });
  const results = await Promise.all(Array.from({ length: 12 }, () => connectStatus(t, x, 'api.test')));
  assert.deepEqual(
    results.map((r) => r.status),
    Array(12).fill(200),
  );
  assert.equal(x.dns.count('api.test'), 1);
  assert.equal(metric(await metricsText(x.s), 'sluice_dns_cache_lookups_total', { result: 'shared' }), 11);
});

test('a cached answer is checked on every decision: a CIDR rule added later denies it, removing it allows it again', async (t) => {
  const x = await setup(t);
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  const rule = await addRule(x.s, { destination_pattern: '127.0.0.2/32', action: 'deny' });
  const denied = await connectStatus(t, x, 'api.test');
  assert.equal(denied.status, 403);
  assert.match(denied.body, /api\.test resolves to 127\.0\.0\.2/);
  const { rep } = await socks5Raw(t, x.s.sluice.socks.port, 'box', x.token, socks5.domain('api.test', x.port));
  assert.equal(rep, 0x02);
  assert.equal((await x.s.api('DELETE', `/api/rules/${rule}`)).status, 200);
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  assert.equal(x.dns.count('api.test'), 1, 'all from the one cached answer');
});

test('dns.cache_ttl_ms 0: every request resolves, nothing is shared, no cache metrics', async (t) => {
  const x = await setup(t, { config: { dns: { cache_ttl_ms: 0 } }, delayMs: 20 });
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  assert.equal((await connectStatus(t, x, 'api.test')).status, 200);
  assert.equal(x.dns.count('api.test'), 2);
  await Promise.all([connectStatus(t, x, 'api.test'), connectStatus(t, x, 'api.test')]);
  assert.equal(x.dns.count('api.test'), 4);
  for (let i = 0; i < 2; i++) assert.equal((await connectStatus(t, x, 'gone.test')).status, 502);
  assert.equal(x.dns.count('gone.test'), 2);
  assert.equal(metric(await metricsText(x.s), 'sluice_dns_cache_entries'), undefined);
});
