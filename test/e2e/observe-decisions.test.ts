// The decision audit trail against the real server: every reason a connection attempt is
// allowed or denied is recorded and queryable by each filter, newest first with cursor
// pagination; closes fill bytes, duration and reason; rules count their hits; and a clean
// shutdown under load loses no record.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { curl, eventually, startTestSluice, tempDir, type Origin, type SessionCreated, type TestSluice } from '../helpers/harness.js';
import { addRule, originUrl, viaProxy } from '../helpers/api-helpers.js';
import { closedPort, echoFor, originFor, sleep, sluiceFor, socks5, socks5Raw, type T } from '../helpers/proxy-helpers.js';
import type { Decision, DecisionPage } from '../../src/client/types.js';
import { connectVia, decisionById, decisions, decisionsPage, mapResolver } from '../helpers/observe-helpers.js';

interface World {
  s: TestSluice;
  o2: Origin;
  a: SessionCreated;
  b: SessionCreated;
  rules: { any2: number; good: number; evil: number; cidrDeny: number };
  /** Decision ids by what each attempt was meant to show. */
  ids: Record<string, number>;
  startedAt: number;
}

async function newestId(s: TestSluice): Promise<number> {
  return (await decisions(s, { limit: 1 }))[0]?.id ?? 0;
}

/** Runs `attempt` and returns the id of the one decision it produced. */
async function one(s: TestSluice, attempt: () => Promise<unknown>): Promise<number> {
  const before = await newestId(s);
  await attempt();
  let ids: number[] = [];
  await eventually(async () => {
    ids = (await decisions(s)).filter((d) => d.id > before).map((d) => d.id);
    return ids.length >= 1;
  }, 2000, 'a decision');
  assert.equal(ids.length, 1, `exactly one decision, got ${ids.length}`);
  return ids[0]!;
}

async function world(t: T): Promise<World> {
  const o2 = await originFor(t, '127.0.0.2');
  await originFor(t, '127.0.0.3');
  const startedAt = Date.now();
  const s = await sluiceFor(t, { resolver: mapResolver({ 'good.test': '127.0.0.2', 'evil.test': '127.0.0.3' }) });
  const cidrDeny = await addRule(s, { destination_pattern: '127.0.0.3/32', action: 'deny', notes: 'no one reaches .3' });
  const a = await s.createSession({
    container_name: 'dec-a',
    network_rules: [{ destination_pattern: '127.0.0.2' }, { destination_pattern: 'good.test', port_pattern: String(o2.port) }, { destination_pattern: 'evil.test' }],
  });
  const b = await s.createSession({ container_name: 'dec-b', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  const l = await s.createSession({ container_name: 'dec-l' });
  assert.equal((await s.api('PUT', '/api/containers/dec-l/learning', { enabled: true })).status, 200);
  const lim = await s.createSession({ container_name: 'dec-lim', network_rules: [{ destination_pattern: '127.0.0.2' }], limits: { connections_per_second: 0.2 } });
  const detail = (await s.api('GET', `/api/sessions/${a.session_id}`)).body.rules as any[];
  const ruleOf = (dest: string) => detail.find((r) => r.destination_pattern === dest).id as number;
  const rules = { any2: ruleOf('127.0.0.2'), good: ruleOf('good.test'), evil: ruleOf('evil.test'), cidrDeny };
  const dead = await closedPort('127.0.0.2');
  const ids: Record<string, number> = {};

  ids.allowIp = await one(s, () => viaProxy(a.proxy.http, originUrl(o2, '127.0.0.2', '/ip')));
  ids.allowHost = await one(s, () => viaProxy(a.proxy.http, originUrl(o2, 'good.test', '/host')));
  ids.addressDenied = await one(s, () => viaProxy(a.proxy.http, `http://evil.test:${o2.port}/`));
  ids.defaultDeny = await one(s, () => viaProxy(a.proxy.http, 'http://127.0.0.5:8080/'));
  ids.identity = await one(s, () => curl(['--noproxy', '', '-x', `http://127.0.0.1:${s.sluice.http.port}`, originUrl(o2)]));
  ids.self = await one(s, () => connectVia(t, s, 'dec-a', a.proxy_token, `127.0.0.1:${s.sluice.api.port}`));
  ids.learning = await one(s, () => viaProxy(l.proxy.http, originUrl(o2, '127.0.0.2', '/learn')));
  ids.limitOk = await one(s, () => viaProxy(lim.proxy.http, originUrl(o2)));
  ids.limit = await one(s, () => viaProxy(lim.proxy.http, originUrl(o2)));
  ids.b = await one(s, () => viaProxy(b.proxy.http, originUrl(o2, '127.0.0.2', '/b')));
  ids.refused = await one(s, () => connectVia(t, s, 'dec-a', a.proxy_token, `127.0.0.2:${dead}`));
  ids.socks = await one(s, async () => {
    const { c, rep } = await socks5Raw(t, s.sluice.socks.port, 'dec-a', a.proxy_token, socks5.ipv4('127.0.0.2', o2.port));
    assert.equal(rep, 0);
    c.write(`GET /socks HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n`);
    await c.untilClosed();
  });
  return { s, o2, a, b, rules, ids, startedAt };
}

const pick = (d: Decision | undefined) => d && [d.container, d.decision, d.reason, d.layer, d.rule_id];

test('every reason is recorded, with bytes, duration and close reason filled on close; rules count their hits', async (t) => {
  const { s, o2, a, b, rules, ids } = await world(t);
  const all = await decisions(s);
  const byId = new Map(all.map((d) => [d.id, d]));
  const globalLayer = 'global';
  assert.deepEqual(pick(byId.get(ids.allowIp!)), ['dec-a', 'allow', 'rule', 'session', rules.any2]);
  assert.deepEqual(pick(byId.get(ids.allowHost!)), ['dec-a', 'allow', 'rule', 'session', rules.good]);
  assert.deepEqual(pick(byId.get(ids.addressDenied!)), ['dec-a', 'deny', 'address_denied', globalLayer, rules.cidrDeny]);
  assert.deepEqual(pick(byId.get(ids.defaultDeny!)), ['dec-a', 'deny', 'default_deny', null, null]);
  assert.deepEqual(pick(byId.get(ids.identity!)), [null, 'deny', 'identity_required', null, null]);
  assert.deepEqual(pick(byId.get(ids.self!)), ['dec-a', 'deny', 'self_connection', null, null]);
  assert.deepEqual(pick(byId.get(ids.learning!)), ['dec-l', 'allow', 'learning', null, null]);
  assert.deepEqual(pick(byId.get(ids.limit!)), ['dec-lim', 'deny', 'limit', null, null]);
  assert.deepEqual(pick(byId.get(ids.refused!)), ['dec-a', 'allow', 'rule', 'session', rules.any2]);
  assert.deepEqual(pick(byId.get(ids.socks!)), ['dec-a', 'allow', 'rule', 'session', rules.any2]);

  const host = byId.get(ids.allowHost!)!;
  assert.deepEqual([host.destination, host.port, host.address, host.protocol, host.session_id, host.client_address], ['good.test', o2.port, '127.0.0.2', 'http', a.session_id, '127.0.0.1']);
  assert.deepEqual([byId.get(ids.addressDenied!)!.destination, byId.get(ids.addressDenied!)!.address], ['evil.test', '127.0.0.3']);
  assert.equal(byId.get(ids.refused!)!.error, 'connection_refused');
  assert.equal(byId.get(ids.socks!)!.protocol, 'socks5');
  assert.equal(byId.get(ids.self!)!.protocol, 'connect');

  // Closing fills bytes, duration and the close reason (a forwarded request, a SOCKS tunnel).
  await eventually(async () => (await decisionById(s, ids.socks!))?.close_reason != null, 2000, 'the SOCKS close to be recorded');
  const fwd = (await decisionById(s, ids.allowHost!))!;
  assert.equal(fwd.close_reason, 'completed');
  assert.ok(fwd.bytes_up! > 0 && fwd.bytes_down! > 0 && fwd.duration_ms! >= 0, JSON.stringify(fwd));
  const tun = (await decisionById(s, ids.socks!))!;
  assert.ok(['upstream_closed', 'client_closed'].includes(tun.close_reason!), tun.close_reason!);
  assert.ok(tun.bytes_up! >= 40 && tun.bytes_down! >= 40 && tun.duration_ms! >= 0, JSON.stringify(tun));
  const denied = byId.get(ids.defaultDeny!)!;
  assert.deepEqual([denied.bytes_up, denied.bytes_down, denied.close_reason], [null, null, null], 'nothing is closed for a denial');

  // Rule usage: hits and when last used, on GET /api/rules.
  const listed = (await s.api('GET', '/api/rules')).body.rules as any[];
  const usage = (id: number) => listed.find((r) => r.id === id);
  assert.equal(usage(rules.any2).hit_count, 3, 'ip, refused, socks');
  assert.equal(usage(rules.good).hit_count, 1);
  assert.equal(usage(rules.cidrDeny).hit_count, 1, 'a deny rule counts its hits too');
  assert.equal(usage(rules.evil).hit_count, 0, 'the allow that the address check overrode did not decide');
  assert.equal(usage(rules.evil).last_used_at, null);
  const last = Date.parse(usage(rules.good).last_used_at);
  assert.ok(last <= Date.now() && last > Date.now() - 60_000, usage(rules.good).last_used_at);
  const one = (await s.api('GET', `/api/rules/${rules.cidrDeny}`)).body;
  assert.equal(one.hit_count, 1);
  assert.ok(b.session_id);
});

test('decisions are filtered by container, session, decision, destination and time, newest first with cursor pages', async (t) => {
  const { s, a, b, ids } = await world(t);
  const all = await decisions(s);
  assert.ok(all.length >= 12);
  for (let i = 1; i < all.length; i++) assert.ok(all[i - 1]!.id > all[i]!.id, 'newest first');

  const onlyA = await decisions(s, { container: 'dec-a' });
  assert.deepEqual(onlyA.map((d) => d.id), all.filter((d) => d.container === 'dec-a').map((d) => d.id));
  assert.ok(onlyA.length >= 7);
  assert.deepEqual((await decisions(s, { session_id: b.session_id })).map((d) => d.id), [ids.b]);
  assert.ok((await decisions(s, { session_id: a.session_id })).every((d) => d.session_id === a.session_id));
  const denies = await decisions(s, { decision: 'deny' });
  assert.deepEqual(denies.map((d) => d.id), all.filter((d) => d.decision === 'deny').map((d) => d.id));
  assert.ok(denies.length >= 5);
  assert.deepEqual((await decisions(s, { decision: 'allow', container: 'dec-a' })).map((d) => d.id), all.filter((d) => d.decision === 'allow' && d.container === 'dec-a').map((d) => d.id));
  assert.deepEqual((await decisions(s, { destination: 'good.test' })).map((d) => d.id), [ids.allowHost]);
  assert.deepEqual((await decisions(s, { destination: 'evil.test' })).map((d) => d.id), [ids.addressDenied]);
  assert.equal((await decisions(s, { destination: 'nowhere.test' })).length, 0);

  // Time: since is inclusive, until exclusive; ISO 8601 and epoch milliseconds both work.
  const pivot = all.find((d) => d.id === ids.learning)!;
  const t0 = Date.parse(pivot.time);
  const since = await decisions(s, { since: pivot.time });
  assert.deepEqual(since.map((d) => d.id), all.filter((d) => Date.parse(d.time) >= t0).map((d) => d.id));
  assert.ok(since.some((d) => d.id === ids.learning));
  assert.deepEqual((await decisions(s, { since: t0 })).map((d) => d.id), since.map((d) => d.id));
  const until = await decisions(s, { until: new Date(t0).toISOString() });
  assert.deepEqual(until.map((d) => d.id), all.filter((d) => Date.parse(d.time) < t0).map((d) => d.id));
  assert.deepEqual((await decisions(s, { since: t0, until: t0 })).length, 0);
  assert.deepEqual((await decisions(s, { since: new Date(Date.now() + 60_000).toISOString() })).length, 0);
  assert.deepEqual((await decisions(s, { since: '2000-01-01T00:00:00+02:00' })).length, all.length, 'an ISO time with an offset');

  // Cursor pages: no gaps, no repeats, and no next_cursor on the last page.
  for (const size of [1, 3, 5, all.length]) {
    const seen: number[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 100; page++) {
      const res: DecisionPage = await decisionsPage(s, { limit: size, ...(cursor ? { cursor } : {}) });
      assert.ok(res.decisions.length <= size);
      seen.push(...res.decisions.map((d) => d.id));
      cursor = res.next_cursor;
      if (cursor === null) break;
      assert.equal(res.decisions.length, size, 'only a full page has a next page');
    }
    assert.equal(cursor, null, `page size ${size}: pagination ended`);
    if (size === all.length) assert.equal((await decisionsPage(s, { limit: size })).next_cursor, null, 'one full page holding everything is the last page');
    assert.deepEqual(seen, all.map((d) => d.id), `page size ${size}`);
  }
  const filteredPages = await decisionsPage(s, { container: 'dec-a', limit: 2 });
  assert.ok(filteredPages.next_cursor);
  const next = await decisionsPage(s, { container: 'dec-a', limit: 2, cursor: filteredPages.next_cursor! });
  assert.deepEqual([...filteredPages.decisions, ...next.decisions].map((d) => d.id), onlyA.slice(0, 4).map((d) => d.id));

  // Default page size and bad queries.
  assert.ok((await decisionsPage(s)).decisions.length === Math.min(100, all.length));
  for (const q of ['decision=maybe', 'limit=0', 'limit=1001', 'cursor=abc', 'since=yesterday', 'until=2020-13-45', 'colour=blue', 'container=bad%20name']) {
    const res = await s.api('GET', `/api/decisions?${q}`);
    assert.equal(res.status, 400, `${q}: ${JSON.stringify(res.body)}`);
  }
  assert.equal((await s.api('GET', '/api/decisions', undefined, null)).status, 401);
});

interface Load {
  /** Long-lived tunnels open at close(). */
  tunnels: number;
  /** CONNECTs whose decision is waiting for DNS at close(), clients still there. */
  holders: number;
  /** The same, but the clients gave up before close(). */
  quitters: number;
}

async function shutdownUnderLoad(t: T, load: Load): Promise<void> {
  const dataDir = tempDir();
  const echo = await echoFor(t, '127.0.0.2');
  const o2 = await originFor(t, '127.0.0.2');
  // Slow DNS keeps admissions in flight while close() runs.
  let resolving = 0;
  const slow = async (name: string): Promise<string[]> => {
    resolving++;
    await sleep(150);
    if (name === 'slow.test') return ['127.0.0.2'];
    throw Object.assign(new Error('nx'), { code: 'ENOTFOUND' });
  };
  // No DNS cache: every slow admission must make (and wait for) its own lookup.
  let s: TestSluice | null = await startTestSluice({ dataDir, resolver: slow, config: { timeouts: { shutdown_grace_ms: 300 }, dns: { cache_ttl_ms: 0 } } });
  t.after(async () => {
    await s?.close(true);
  });
  const session = await s.createSession({ container_name: 'load', network_rules: [{ destination_pattern: '127.0.0.2' }, { destination_pattern: 'slow.test' }] });
  const made: number[] = [];
  const audit = s.sluice.audit;
  const record = audit.decision.bind(audit);
  audit.decision = (d) => {
    made.push(d.id);
    record(d);
  };
  const proxyPort = s.sluice.http.port;
  const auth = `Proxy-Authorization: Basic ${Buffer.from(`load:${session.proxy_token}`).toString('base64')}\r\n`;
  const answered: string[] = [];
  const attempts: Array<Promise<void>> = [];
  const raw = (payload: string, label: string): Promise<void> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port: proxyPort });
      let got = '';
      const timer = setTimeout(() => sock.destroy(), 5000);
      sock.on('connect', () => sock.write(payload));
      sock.on('data', (d) => {
        if (got === '') answered.push(label);
        got += d.toString('latin1');
        if (label === 'tunnel' && got.includes('200 Connection Established')) sock.write('ping');
      });
      sock.on('error', () => undefined);
      sock.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  // Long-lived tunnels (or not), plain requests, and CONNECTs whose DNS is still pending at close().
  const { tunnels, holders, quitters: quitting } = load;
  for (let i = 0; i < tunnels; i++) attempts.push(raw(`CONNECT 127.0.0.2:${echo.port} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, 'tunnel'));
  for (let i = 0; i < 60; i++) attempts.push(raw(`GET http://127.0.0.2:${o2.port}/${i} HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n${auth}\r\n`, 'get'));
  await eventually(() => made.length >= tunnels + 60, 5000, 'the first decisions');
  for (let i = 0; i < holders; i++) attempts.push(raw(`CONNECT slow.test:${echo.port} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, 'slow'));
  // And clients that give up while their decision waits for DNS: the attempt still counts.
  const quitters: net.Socket[] = [];
  for (let i = 0; i < quitting; i++) {
    const q = net.connect({ host: '127.0.0.1', port: proxyPort }, () => q.write(`CONNECT slow.test:${echo.port} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`));
    q.on('error', () => undefined);
    quitters.push(q);
  }
  await eventually(() => resolving >= holders + quitting, 3000, 'the slow admissions to be waiting for DNS');
  for (const q of quitters) q.resetAndDestroy(); // RST: the proxy sees them gone at once
  const closing = Date.now();
  await s.sluice.close();
  const closeMs = Date.now() - closing;
  assert.ok(closeMs < 300 + 1500, `close() took ${closeMs} ms: admissions finishing during shutdown must not hold it open`);
  await Promise.all(attempts);
  await sleep(300); // anything still running after close() would land now (and be lost)
  const madeCount = made.length;
  assert.ok(madeCount >= tunnels + 60 + holders + quitting, `decisions made: ${madeCount}`);
  assert.ok(answered.length <= madeCount, 'every answer came from a decision');

  s = await startTestSluice({ dataDir });
  const rows = await decisions(s, { container: 'load' });
  assert.deepEqual(rows.map((r) => r.id).sort((x, y) => x - y), [...made].sort((x, y) => x - y), `rows ${rows.length} vs decisions ${madeCount}`);
  const allowed = rows.filter((r) => r.decision === 'allow' && r.error === null);
  const unclosed = allowed.filter((r) => r.close_reason === null);
  assert.deepEqual(unclosed.map((r) => [r.destination, r.id]), [], 'every admitted connection has its close recorded');
  if (tunnels > 0) assert.ok(allowed.some((r) => r.close_reason === 'shutdown'), 'tunnels open at shutdown are closed as such');
}

test('a clean shutdown under load loses no decision record and records every close', (t) => shutdownUnderLoad(t, { tunnels: 40, holders: 40, quitters: 20 }));

test('shutdown is not held open by connections admitted while it runs, and records their close', (t) => shutdownUnderLoad(t, { tunnels: 0, holders: 40, quitters: 0 }));

test('shutdown records the decision of a client that left while its DNS lookup ran', (t) => shutdownUnderLoad(t, { tunnels: 0, holders: 0, quitters: 20 }));

test('destinations are recorded canonically, so one destination filter finds every attempt at it', async (t) => {
  const echo = await echoFor(t, '::1');
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'canon', limits: { max_connections: 1 } });
  const held = await connectVia(t, s, 'canon', sess.proxy_token, `[::1]:${echo.port}`);
  assert.equal(held.res.status, 200, 'loopback is built in');
  const limited = await connectVia(t, s, 'canon', sess.proxy_token, `[0:0::1]:${echo.port}`);
  assert.equal(limited.res.status, 429);
  const anonymous = await connectVia(t, s, 'canon', 'wrong-token', `[::0001]:${echo.port}`);
  assert.equal(anonymous.res.status, 407);
  const rows = await decisions(s, { destination: '::1' });
  assert.deepEqual(rows.map((r) => [r.reason, r.destination, r.port]), [
    ['identity_required', '::1', echo.port],
    ['limit', '::1', echo.port],
    ['rule', '::1', echo.port],
  ]);
  for (const spelling of ['[::1]', '0:0:0:0:0:0:0:1']) assert.deepEqual((await decisions(s, { destination: spelling })).map((r) => r.id), rows.map((r) => r.id), spelling);
  held.c.close();
});
