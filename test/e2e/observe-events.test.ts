// Live events (SSE, GET /api/events) against the real server: authenticated, filtered by
// type and container, delivered in order; a subscriber that stops reading is cut off
// without slowing the proxy down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { eventually, type TestSluice } from '../helpers/harness.js';
import { addRule, originUrl, viaProxy } from '../helpers/api-helpers.js';
import { originFor, sleep, sluiceFor, type T } from '../helpers/proxy-helpers.js';
import { clientOf, metric, metricsText, tapEvents } from '../helpers/observe-helpers.js';

test('events arrive in order: session.*, rule.*, decision, connection.closed, learning.changed', async (t) => {
  const o2 = await originFor(t, '127.0.0.2');
  const s = await sluiceFor(t, { config: { sessions: { sweep_interval_ms: 50 } } });
  const tap = await tapEvents(t, s);

  const sess = await s.createSession({ session_id: 'ev-1', container_name: 'ev-a', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  await s.createSession({ session_id: 'ev-1', container_name: 'ev-a', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  assert.equal((await s.api('POST', '/api/sessions/ev-1/heartbeat')).status, 200);
  const rule = await addRule(s, { destination_pattern: '127.0.0.9', action: 'deny' });
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2, '127.0.0.2', '/ev'))).status, 200);
  await tap.until((es) => es.some((e) => e.type === 'connection.closed'), 2000, 'connection.closed');
  assert.equal((await s.api('PATCH', `/api/rules/${rule}`, { notes: 'patched' })).status, 200);
  assert.equal((await s.api('PUT', '/api/containers/ev-a/learning', { enabled: true })).status, 200);
  assert.equal((await s.api('PUT', '/api/containers/ev-a/learning', { enabled: false })).status, 200);
  assert.equal((await s.api('DELETE', `/api/rules/${rule}`)).status, 200);
  assert.equal((await s.api('DELETE', '/api/sessions/ev-1')).status, 200);
  await s.createSession({ session_id: 'ev-2', container_name: 'ev-short', ttl_seconds: 1 });

  const expected = [
    'session.created',
    'session.updated',
    'session.heartbeat',
    'rule.created',
    'decision',
    'connection.closed',
    'rule.updated',
    'learning.changed',
    'learning.changed',
    'rule.deleted',
    'session.deleted',
    'session.created',
    'session.expired',
  ];
  await tap.until((es) => es.length >= expected.length, 4000, 'all events');
  assert.deepEqual(tap.events.map((e) => e.type), expected);
  const ids = tap.events.map((e) => Number(e.id));
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i]! > ids[i - 1]!, `ids increase: ${ids.join(',')}`);
  for (const e of tap.events) {
    assert.equal(e.data.type, e.type);
    assert.ok(Date.parse(String(e.data.time)) > 0, 'time is ISO 8601');
  }

  const by = (type: string) => tap.events.find((e) => e.type === type)!.data;
  assert.deepEqual([by('session.created').container, by('session.created').session_id], ['ev-a', 'ev-1']);
  assert.deepEqual([by('session.expired').container, by('session.expired').session_id], ['ev-short', 'ev-2']);
  assert.deepEqual([by('rule.created').rule_id, by('rule.created').destination_pattern, by('rule.created').action, by('rule.created').layer], [rule, '127.0.0.9', 'deny', 'global']);
  const decision = by('decision');
  assert.deepEqual(
    [decision.container, decision.session_id, decision.destination, decision.port, decision.decision, decision.reason, decision.layer, decision.protocol, decision.address],
    ['ev-a', 'ev-1', '127.0.0.2', o2.port, 'allow', 'rule', 'session', 'http', '127.0.0.2'],
  );
  assert.equal(typeof decision.decision_id, 'number');
  const closed = by('connection.closed');
  assert.equal(closed.decision_id, decision.decision_id);
  assert.equal(closed.container, 'ev-a');
  assert.equal(closed.close_reason, 'completed');
  assert.ok((closed.bytes_down as number) > 0 && (closed.duration_ms as number) >= 0);
  const learning = tap.events.filter((e) => e.type === 'learning.changed').map((e) => [e.data.container, e.data.enabled]);
  assert.deepEqual(learning, [
    ['ev-a', true],
    ['ev-a', false],
  ]);
});

test('types= and container= filter the stream; bad filters and missing tokens are refused', async (t) => {
  const o2 = await originFor(t, '127.0.0.2');
  const s = await sluiceFor(t);
  const onlyB = await tapEvents(t, s, { types: ['decision', 'connection.closed'], container: 'ev-b' });
  const sessions = await tapEvents(t, s, { types: ['session.created'] });
  const denials = await tapEvents(t, s, { types: ['decision'] });
  const a = await s.createSession({ container_name: 'ev-a', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const b = await s.createSession({ container_name: 'ev-b', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  await addRule(s, { destination_pattern: '127.0.0.9', action: 'deny' });
  for (const sess of [a, b, a]) assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 200);
  assert.equal((await viaProxy(b.proxy.http, 'http://127.0.0.7:9/')).status, 403);

  await onlyB.until((es) => es.length >= 3, 2000, 'ev-b events');
  await denials.until((es) => es.length >= 4, 2000, 'decisions');
  await sleep(100);
  assert.deepEqual(onlyB.events.map((e) => [e.type, e.data.container, e.data.decision ?? e.data.close_reason]), [
    ['decision', 'ev-b', 'allow'],
    ['connection.closed', 'ev-b', 'completed'],
    ['decision', 'ev-b', 'deny'],
  ]);
  assert.deepEqual(sessions.events.map((e) => e.data.container), ['ev-a', 'ev-b']);
  assert.deepEqual(denials.events.map((e) => [e.data.container, e.data.decision]), [
    ['ev-a', 'allow'],
    ['ev-b', 'allow'],
    ['ev-a', 'allow'],
    ['ev-b', 'deny'],
  ]);

  const base = `http://127.0.0.1:${s.sluice.api.port}/api/events`;
  const get = (query: string, token: string | null = s.sluice.apiToken) => fetch(base + query, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  for (const q of ['?types=decision,nonsense', '?types=', '?container=bad%20name', '?colour=red']) {
    const res = await get(q);
    assert.equal(res.status, 400, q);
    assert.ok(Array.isArray(((await res.json()) as any).details));
  }
  const noToken = await get('', null);
  assert.equal(noToken.status, 401);
  assert.equal((await get('?types=decision', 'wrong-token-wrong-token')).status, 401);
  await assert.rejects(
    async () => {
      for await (const _ of clientOf(s).events({ types: ['no.such.type'] })) break;
    },
    (err: any) => err.status === 400,
  );
  assert.equal(metric(await metricsText(s), 'sluice_event_subscribers'), 3);
  await onlyB.close();
  await eventually(async () => metric(await metricsText(s), 'sluice_event_subscribers') === 2, 2000, 'a closed subscriber to be gone');
});

/** Pipelines `n` denied requests (long host names make big events) on one connection; resolves with the 403s seen. */
function flood(proxyPort: number, auth: string, n: number, offset: number): Promise<number> {
  const host = (i: number) => `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.n${offset + i}.test`;
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port: proxyPort });
    let seen = 0;
    let tail = '';
    const timer = setTimeout(() => c.destroy(), 5000);
    c.on('connect', () => {
      let out = '';
      for (let i = 0; i < n; i++) out += `GET http://${host(i)}/ HTTP/1.1\r\nHost: ${host(i)}\r\nProxy-Authorization: ${auth}\r\n\r\n`;
      c.write(out);
    });
    c.on('data', (d: Buffer) => {
      const text = tail + d.toString('latin1');
      seen += text.split('HTTP/1.1 403').length - 1;
      tail = text.slice(-('HTTP/1.1 403'.length - 1)); // a match split across chunks, never a whole one
      if (seen >= n) c.destroy();
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      clearTimeout(timer);
      resolve(seen);
    });
  });
}

/** One allowed request through the proxy; returns its latency in ms. */
function probe(proxyPort: number, auth: string, url: string): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, path: url, headers: { 'proxy-authorization': auth }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - started) : reject(new Error(`probe got ${res.statusCode}`))));
    });
    req.setTimeout(3000, () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
    req.end();
  });
}

test('a stalled subscriber is dropped and does not slow the proxy; a reading subscriber keeps everything', async (t) => {
  const o2 = await originFor(t, '127.0.0.2');
  // Small, but above what a reader in this busy test process may briefly leave unread.
  const s: TestSluice = await sluiceFor(t, { config: { events: { max_buffer_bytes: 65_536 } } });
  const sess = await s.createSession({ container_name: 'staller', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  const auth = `Basic ${Buffer.from(`staller:${sess.proxy_token}`).toString('base64')}`;
  const reader = await tapEvents(t, s, { types: ['decision'] });

  // The stalled subscriber: sends its GET and never reads a byte.
  const stalled = net.connect({ host: '127.0.0.1', port: s.sluice.api.port });
  t.after(() => stalled.destroy());
  await new Promise((r) => stalled.once('connect', r));
  stalled.pause();
  stalled.write(`GET /api/events?types=decision HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer ${s.sluice.apiToken}\r\n\r\n`);
  await eventually(async () => metric(await metricsText(s), 'sluice_event_subscribers') === 2, 2000, 'both subscribers');

  const latencies: number[] = [];
  let sent = 0;
  let dropped = false;
  // Bursts of 8 x 40 pipelined requests: the reading subscriber (in this same process) keeps
  // up, while the stalled one's socket buffers fill until its unsent bytes pass the limit.
  for (let round = 0; round < 150 && !dropped; round++) {
    const probing = probe(s.sluice.http.port, auth, originUrl(o2, '127.0.0.2', `/probe-${round}`));
    const seen = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((k) => flood(s.sluice.http.port, auth, 40, sent + k * 40)));
    assert.deepEqual(seen, [40, 40, 40, 40, 40, 40, 40, 40], 'every flooded request was answered');
    sent += 320;
    latencies.push(await probing);
    if (round % 5 === 4) dropped = (metric(await metricsText(s), 'sluice_event_subscribers_dropped') ?? 0) > 0;
  }
  assert.ok(dropped, `the stalled subscriber was dropped (after ${sent} decisions)`);
  // No wall-clock bound on the flood (machines are shared): a bus that waited on the stalled
  // reader would stop the proxy outright, and every probe above fails after 3 s unanswered.
  // The stalled one is gone; the reading one is still there and missed nothing.
  assert.equal(metric(await metricsText(s), 'sluice_event_subscribers'), 1);
  const total = sent + latencies.length;
  await reader.until((es) => es.length >= total, 5000, `all ${total} decisions`);
  assert.equal(reader.events.length, total);
  // And the proxy still answers.
  await probe(s.sluice.http.port, auth, originUrl(o2));
});

test('closing sluice ends open event streams instead of waiting for them', async (t) => {
  const s = await sluiceFor(t);
  const tap = await tapEvents(t, s);
  const started = Date.now();
  await s.sluice.close();
  assert.ok(Date.now() - started < 2000, `close() took ${Date.now() - started} ms`);
  await tap.close();
});
