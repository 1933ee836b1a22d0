// GET /metrics against the real server: Prometheus text without a token on the API
// listener, and every series the issue names moving with real traffic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually } from '../helpers/harness.js';
import { addRule, originUrl, viaProxy } from '../helpers/api-helpers.js';
import { echoFor, originFor, sluiceFor } from '../helpers/proxy-helpers.js';
import { connectTunnel, metric, metricsText, roundTrip, socksTunnel, tapEvents } from '../helpers/observe-helpers.js';

test('GET /metrics: no token, Prometheus text, and the series move with traffic', async (t) => {
  const o2 = await originFor(t, '127.0.0.2');
  const echo = await echoFor(t, '127.0.0.3');
  const s = await sluiceFor(t);
  const res = await fetch(`http://127.0.0.1:${s.sluice.api.port}/metrics`);
  assert.equal(res.status, 200, 'no token needed');
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const empty = await res.text();
  assert.equal(metric(empty, 'sluice_sessions_active'), 0);
  assert.equal(metric(empty, 'sluice_rules', { layer: 'builtin' }), 3, 'loopback built-ins');
  assert.equal(metric(empty, 'sluice_connections_open'), 0);
  // The API's own wrong-token handling does not apply to /metrics, and /api/metrics does not exist.
  assert.equal((await fetch(`http://127.0.0.1:${s.sluice.api.port}/metrics`, { headers: { authorization: 'Bearer nope' } })).status, 200);

  const sess = await s.createSession({
    container_name: 'metric-box',
    network_rules: [
      { destination_pattern: '127.0.0.2', port_pattern: String(o2.port) },
      { destination_pattern: '127.0.0.3', port_pattern: String(echo.port) },
    ],
  });
  await addRule(s, { destination_pattern: '127.0.0.9', action: 'deny' });
  const tap = await tapEvents(t, s, { types: ['decision'] });
  for (let i = 0; i < 3; i++) assert.equal((await viaProxy(sess.proxy.http, originUrl(o2, '127.0.0.2', `/m${i}`))).status, 200);
  assert.equal((await viaProxy(sess.proxy.http, 'http://127.0.0.5:80/')).status, 403);
  assert.equal((await viaProxy(sess.proxy.http, 'http://127.0.0.9:80/')).status, 403);
  const tunnel = await connectTunnel(t, s, 'metric-box', sess.proxy_token, `${echo.host}:${echo.port}`);
  const socks = await socksTunnel(t, s, 'metric-box', sess.proxy_token, echo.host, echo.port);
  await roundTrip(tunnel, 'x'.repeat(1000));

  let text = await metricsText(s);
  assert.equal(metric(text, 'sluice_decisions_total', { decision: 'allow', layer: 'session', reason: 'rule' }), 5);
  assert.equal(metric(text, 'sluice_decisions_total', { decision: 'deny', layer: 'none', reason: 'default_deny' }), 1);
  assert.equal(metric(text, 'sluice_decisions_total', { decision: 'deny', layer: 'global', reason: 'rule' }), 1);
  // Counts are folded in at scrape time: a second scrape must not count them again.
  assert.equal(metric(await metricsText(s), 'sluice_decisions_total', { decision: 'allow', layer: 'session', reason: 'rule' }), 5);
  assert.equal(metric(text, 'sluice_connections_open'), 2, 'the two tunnels');
  assert.equal(metric(text, 'sluice_sessions_active'), 1);
  assert.equal(metric(text, 'sluice_rules', { layer: 'session' }), 2);
  assert.equal(metric(text, 'sluice_rules', { layer: 'global' }), 1);
  assert.equal(metric(text, 'sluice_event_subscribers'), 1);
  assert.equal(metric(text, 'sluice_event_subscribers_dropped'), 0);
  assert.equal(typeof metric(text, 'sluice_audit_queue_depth'), 'number');
  assert.equal(metric(text, 'sluice_audit_dropped'), 0);
  assert.equal(metric(text, 'sluice_limiter_keys'), 0, 'no limits configured: nothing tracked');
  // Latency histograms are observed: every decision, every upstream connect.
  assert.equal(metric(text, 'sluice_decision_seconds_count'), 7);
  assert.ok(metric(text, 'sluice_decision_seconds_bucket', { le: '+Inf' })! >= 7);
  assert.ok(metric(text, 'sluice_decision_seconds_sum')! > 0);
  assert.ok(metric(text, 'sluice_upstream_connect_seconds_count')! >= 3, 'tunnels and the forwarded requests dialled');
  assert.ok(metric(text, 'sluice_upstream_connect_seconds_sum')! > 0);
  assert.ok(/^sluice_process_cpu_user_seconds_total /m.test(text), 'process metrics, named once');
  assert.ok(/^sluice_nodejs_eventloop_lag_seconds /m.test(text), 'Node metrics');
  assert.ok(!text.includes('process_process'));
  assert.ok(!text.includes('metric-box'), 'no container names in labels (bounded cardinality)');

  // Bytes are counted when tunnels close; revocation is counted too.
  tunnel.close();
  await eventually(async () => metric(await metricsText(s), 'sluice_connections_open') === 1, 2000, 'one tunnel left');
  text = await metricsText(s);
  assert.ok(metric(text, 'sluice_bytes_relayed_total', { direction: 'up' })! >= 1000 + 'hello-connect'.length);
  assert.ok(metric(text, 'sluice_bytes_relayed_total', { direction: 'down' })! >= 1000);
  assert.equal((await s.api('DELETE', `/api/sessions/${sess.session_id}`)).status, 200);
  await socks.untilClosed(1000);
  await eventually(async () => metric(await metricsText(s), 'sluice_connections_revoked_total') === 1, 2000, 'the revocation to be counted');
  text = await metricsText(s);
  assert.equal(metric(text, 'sluice_sessions_active'), 0);
  assert.equal(metric(text, 'sluice_rules', { layer: 'session' }), 0);
  assert.equal(metric(text, 'sluice_connections_open'), 0);
  await tap.close();
  await eventually(async () => metric(await metricsText(s), 'sluice_event_subscribers') === 0, 2000, 'the subscriber to be gone');
});

test('limit decisions and limiter keys show in the metrics', async (t) => {
  const o2 = await originFor(t, '127.0.0.2');
  const s = await sluiceFor(t, { config: { limits: { connections_per_second: 0.2 } } });
  const sess = await s.createSession({ container_name: 'metered', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 200);
  assert.equal((await viaProxy(sess.proxy.http, originUrl(o2))).status, 429);
  const text = await metricsText(s);
  assert.equal(metric(text, 'sluice_decisions_total', { decision: 'deny', layer: 'none', reason: 'limit' }), 1);
  assert.equal(metric(text, 'sluice_limiter_keys'), 1);
});
