// Session deletes through the group commit, end to end. Deletes sent together (pipelined on
// one keep-alive connection, so they are read in one event-loop turn and share a commit)
// each get their own answer: 200 for the sessions that existed, 404 in the error shape for
// the one that did not. The deleted sessions' open tunnels are closed (revoked), their
// tokens stop authenticating, `session.deleted` goes out for each; other sessions and
// their tunnels are untouched. A restart finds exactly what was acknowledged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, startTestSluice } from '../helpers/harness.js';
import { connectTunnel, connectVia, decisionById, openConnections, roundTrip, tapEvents } from '../helpers/observe-helpers.js';
import { RawClient, echoFor, sluiceFor } from '../helpers/proxy-helpers.js';

test('pipelined deletes: 200 for each real session, 404 alone for the missing one; deleted sessions lose tunnels and tokens, others keep theirs', async (t) => {
  const echo = await echoFor(t, '127.0.0.2');
  const s = await sluiceFor(t, { config: { sessions: { sweep_interval_ms: 3_600_000 } } });
  const rule = { destination_pattern: echo.host, port_pattern: String(echo.port) };
  const names = ['gd-gone-1', 'gd-stay', 'gd-gone-2'];
  const sessions = new Map<string, { session_id: string; proxy_token: string }>();
  for (const name of names) sessions.set(name, await s.createSession({ session_id: name, container_name: name, network_rules: [rule] }));
  const tunnels = new Map<string, RawClient>();
  for (const name of names) tunnels.set(name, await connectTunnel(t, s, name, sessions.get(name)!.proxy_token, `${echo.host}:${echo.port}`));
  const listed = await openConnections(s);
  const decisionOf = (name: string) => listed.find((c) => c.container === name)!.decision_id as number;
  const events = await tapEvents(t, s, { types: ['session.deleted'] });

  const api = await RawClient.connect(t, s.sluice.api.port);
  const del = (id: string) => `DELETE /api/sessions/${id} HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer ${s.sluice.apiToken}\r\n\r\n`;
  api.write(del('gd-gone-1') + del('gd-never-was') + del('gd-gone-2'));
  const answers = [await api.takeResponse(), await api.takeResponse(), await api.takeResponse()];
  assert.deepEqual(
    answers.map((a) => [a.status, JSON.parse(a.body)]),
    [
      [200, { session_id: 'gd-gone-1', deleted: true }],
      [404, { error: 'session not found', details: [] }],
      [200, { session_id: 'gd-gone-2', deleted: true }],
    ],
  );

  for (const name of ['gd-gone-1', 'gd-gone-2']) {
    await tunnels.get(name)!.untilClosed(1000);
    await eventually(async () => (await decisionById(s, decisionOf(name)))?.close_reason === 'revoked', 2000, `${name}: close_reason revoked`);
    const again = await connectVia(t, s, name, sessions.get(name)!.proxy_token, `${echo.host}:${echo.port}`);
    assert.equal(again.res.status, 407, `${name}: the token of a deleted session no longer authenticates`);
    assert.equal((await s.api('GET', `/api/sessions/${name}`)).status, 404);
  }
  await roundTrip(tunnels.get('gd-stay')!, 'still-open');
  assert.deepEqual(
    (await openConnections(s)).map((c) => c.container),
    ['gd-stay'],
  );
  await events.until((e) => e.length >= 2, 2000, 'session.deleted events');
  assert.deepEqual(
    events.events.map((e) => [e.type, e.data.container]),
    [
      ['session.deleted', 'gd-gone-1'],
      ['session.deleted', 'gd-gone-2'],
    ],
  );

  // What was acknowledged is what a restart finds.
  await events.close();
  await s.close();
  const again = await startTestSluice({ dataDir: s.dataDir });
  try {
    const after = (await again.api('GET', '/api/sessions')).body.sessions.map((x: { session_id: string }) => x.session_id);
    assert.deepEqual(after, ['gd-stay']);
  } finally {
    await again.close();
  }
});
