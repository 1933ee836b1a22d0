// The launcher kit (`import { SluiceClient } from 'sluice'`): the typed client against a
// real sluice, decisions and events against a stand-in, and ManagedSession surviving a
// proxy restart and a lost session.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  ManagedSession,
  SluiceApiError,
  SluiceClient,
  SluiceResponseError,
  SluiceUnreachableError,
  isTransient,
  proxyEnv,
  type RecreatedInfo,
  type SessionCreated,
} from '../../src/index.js';
import { decisionRow, sessionSummary } from '../helpers/api-fixtures.js';
import { curl, eventually, startOrigin, startTestSluice, tempDir, type TestSluice } from '../helpers/harness.js';

function clientFor(s: TestSluice): SluiceClient {
  return new SluiceClient({ baseUrl: `http://127.0.0.1:${s.sluice.api.port}`, token: s.sluice.apiToken });
}

async function apiError(p: Promise<unknown>): Promise<SluiceApiError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SluiceApiError, `expected SluiceApiError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a SluiceApiError');
}

test('SluiceClient drives sessions, rules, learning, check and containers', async (t) => {
  const s = await startTestSluice();
  t.after(() => s.close(true));
  const client = clientFor(s);

  assert.equal((await client.health()).status, 'ok');

  const created = await client.createSession({
    session_id: 'client-s1',
    container_name: 'client-box',
    ttl_seconds: 60,
    network_rules: [{ destination_pattern: 'example.com', port_pattern: '443' }, { destination_pattern: '10.0.0.0/8', action: 'deny' }],
    source_ips: ['10.9.9.9'],
  });
  assert.equal(created.session_id, 'client-s1');
  assert.equal(created.rules_created, 2);
  assert.match(created.proxy.http, /^http:\/\/client-box:[^@]+@127\.0\.0\.1:\d+$/);
  assert.deepEqual(proxyEnv(created.proxy).ALL_PROXY, created.proxy.socks5);

  const detail = await client.getSession('client-s1');
  assert.equal(detail.ttl_seconds, 60);
  assert.deepEqual(detail.source_ips, ['10.9.9.9']);
  assert.deepEqual(detail.rules.map((r) => [r.destination_pattern, r.port_pattern, r.action]), [
    ['example.com', '443', 'allow'],
    ['10.0.0.0/8', '*', 'deny'],
  ]);
  assert.deepEqual((await client.listSessions()).sessions.map((x) => [x.session_id, x.rule_count]), [['client-s1', 2]]);
  const hb = await client.heartbeat('client-s1');
  assert.equal(hb.session_id, 'client-s1');
  assert.ok(hb.expires_at !== null && Date.parse(hb.expires_at) > Date.now());

  const check = await client.check({ container_name: 'client-box', destination: 'example.com', port: 443 });
  assert.equal(check.decision, 'allow');
  assert.equal(check.layer, 'session');
  assert.equal((await client.check({ container_name: 'client-box', destination: 'example.com', port: 80 })).decision, 'deny');

  const rule = await client.createRule({ destination_pattern: 'example.com', port_pattern: '443', action: 'deny', container_pattern: 'client-*', notes: 'no' });
  assert.equal(rule.layer, 'global');
  assert.equal((await client.getRule(rule.id)).notes, 'no');
  assert.equal((await client.updateRule(rule.id, { notes: null, port_pattern: '443,8443' })).port_pattern, '443,8443');
  assert.ok((await client.listRules({ layer: 'global' })).rules.some((r) => r.id === rule.id));
  assert.deepEqual(
    (await client.listRules({ session_id: 'client-s1' })).rules.map((r) => r.layer),
    ['session', 'session'],
  );
  assert.equal((await client.check({ container_name: 'client-box', destination: 'example.com', port: 443 })).layer, 'global');
  assert.deepEqual(await client.deleteRule(rule.id), { id: rule.id, deleted: true });

  const on = await client.learningOn('client-box', 300);
  assert.equal(on.learning.active, true);
  assert.equal(on.learning.operator_switch.enabled, true);
  assert.equal((await client.check({ container_name: 'client-box', destination: 'other.example', port: 1 })).decision, 'allow');
  assert.equal((await client.learningOff('client-box')).learning.operator_switch.enabled, false);

  const box = await client.getContainer('client-box');
  assert.equal(box.current_session?.session_id, 'client-s1');
  assert.ok((await client.listContainers()).containers.some((c) => c.container_name === 'client-box'));

  assert.deepEqual(await client.deleteSession('client-s1'), { session_id: 'client-s1', deleted: true });
  const gone = await apiError(client.getSession('client-s1'));
  assert.equal(gone.status, 404);
  assert.equal(gone.error, 'session not found or expired');
});

test('SluiceClient errors: API errors carry status, error and details; no answer is SluiceUnreachableError', async (t) => {
  const s = await startTestSluice();
  t.after(() => s.close(true));
  const client = clientFor(s);

  const bad = await apiError(client.createSession({ container_name: 'bad name' }));
  assert.equal(bad.status, 400);
  assert.equal(bad.error, 'invalid request');
  assert.ok(Array.isArray(bad.details) && bad.details.length > 0);
  assert.equal(bad.message, '400 invalid request');

  // Unknown fields are refused by the server, typed or not.
  const typo = await apiError(client.createSession({ container_name: 'web', netwrok_rules: [] } as never));
  assert.equal(typo.status, 400);

  const noToken = await apiError(new SluiceClient({ baseUrl: `http://127.0.0.1:${s.sluice.api.port}` }).listSessions());
  assert.equal(noToken.status, 401);
  assert.equal((await apiError(client.heartbeat('nope'))).status, 404);

  const port = s.sluice.api.port;
  await s.close();
  const down = new SluiceClient({ baseUrl: `http://127.0.0.1:${port}/`, token: 't' });
  // The first request may land on a pooled keep-alive socket the server has just closed.
  await assert.rejects(down.listSessions(), SluiceUnreachableError);
  await assert.rejects(down.listSessions(), (err: unknown) => {
    assert.ok(err instanceof SluiceUnreachableError);
    assert.equal(err.code, 'ECONNREFUSED');
    assert.equal(err.baseUrl, `http://127.0.0.1:${port}`);
    return true;
  });
  assert.throws(() => new SluiceClient({ baseUrl: 'ftp://x' }), /http:\/\/ or https:\/\//);
});

test('decisions pages and the live event stream (against a stand-in API)', async (t) => {
  const seen: Array<{ url: string; auth: string | undefined }> = [];
  let eventsClosed = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    seen.push({ url: req.url ?? '', auth: req.headers.authorization });
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.headers.authorization !== 'Bearer tok') {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'missing or invalid API token', details: [] }));
      return;
    }
    if (url.pathname === '/api/decisions') {
      const page = url.searchParams.get('cursor') === '4' ? { decisions: [decisionRow(3)], next_cursor: null } : { decisions: [decisionRow(5), decisionRow(4)], next_cursor: '4' };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(page));
      return;
    }
    if (url.pathname === '/api/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      req.on('close', () => eventsClosed++);
      // Split mid-line and mid-CRLF, with comments and a two-line data field.
      const chunks = [
        ': sluice events\n\n',
        'id: 1\nevent: decision\ndata: {"type":"decision","container":"web",',
        '"decision":"deny"}\n\n',
        'id: 2\r\nevent: session.created\r',
        '\ndata: {"type":"session.created",\r\ndata: "container":"web"}\r\n\r\n: keep-alive\n\n',
      ];
      let i = 0;
      const timer = setInterval(() => {
        const c = chunks[i++];
        if (c === undefined) return clearInterval(timer);
        res.write(c);
      }, 10);
      res.on('close', () => clearInterval(timer));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new SluiceClient({ baseUrl: base, token: 'tok' });

  const page = await client.decisions({ container: 'web', decision: 'deny', since: new Date(0), limit: 2 });
  assert.deepEqual(page, { decisions: [decisionRow(5), decisionRow(4)], next_cursor: '4' });
  assert.equal(seen.at(-1)?.url, '/api/decisions?container=web&decision=deny&since=1970-01-01T00%3A00%3A00.000Z&limit=2');
  const all: number[] = [];
  for await (const d of client.allDecisions({ container: 'web' })) all.push(d.id);
  assert.deepEqual(all, [5, 4, 3]);

  const events = [];
  for await (const e of client.events({ types: ['decision', 'session.created'], container: 'web' })) {
    events.push(e);
    if (events.length === 2) break;
  }
  assert.equal(seen.at(-1)?.url, '/api/events?types=decision%2Csession.created&container=web');
  assert.deepEqual(events, [
    { type: 'decision', id: '1', data: { type: 'decision', container: 'web', decision: 'deny' } },
    { type: 'session.created', id: '2', data: { type: 'session.created', container: 'web' } },
  ]);
  await eventually(() => eventsClosed === 1, 2000, 'the stream to be closed after break');

  const controller = new AbortController();
  const got = [];
  for await (const e of client.events({ signal: controller.signal })) {
    got.push(e.type);
    controller.abort();
  }
  assert.deepEqual(got, ['decision']);

  const denied = new SluiceClient({ baseUrl: base, token: 'wrong' });
  await assert.rejects(async () => {
    for await (const _ of denied.events()) break;
  }, (err: unknown) => err instanceof SluiceApiError && err.status === 401);
});

test('answers are checked: another or an older server is a SluiceResponseError naming the field; added fields pass', async (t) => {
  const current = sessionSummary();
  const { limits: _limits, ...older } = current;
  const answers: Record<string, unknown> = {
    // A newer sluice: a field this client does not know, at the top and inside.
    '/api/sessions': { sessions: [{ ...current, added_later: 1 }], also_new: true },
    // An older sluice: no `limits` yet, and null creation times.
    '/api/containers/web': { container_name: 'web', current_session: { ...older, created_at: null }, active_sessions: ['s1'], learning: {}, rule_counts: { session: 0, global: 0 } },
    // Something else answering on the port.
    '/api/rules/7': { id: '7', name: 'not a rule' },
    '/healthz': [],
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answers[req.url ?? ''] ?? {}));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const client = new SluiceClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: 'tok' });

  assert.deepEqual(await client.listSessions(), answers['/api/sessions'], 'added fields pass, and are kept');

  const problems = async (p: Promise<unknown>): Promise<SluiceResponseError> => {
    try {
      await p;
    } catch (err) {
      assert.ok(err instanceof SluiceResponseError, `expected SluiceResponseError, got ${String(err)}`);
      assert.equal(isTransient(err), false, 'a wrong server does not get better by retrying');
      return err;
    }
    assert.fail('expected a SluiceResponseError');
  };
  const old = await problems(client.getContainer('web'));
  assert.equal(old.request, 'GET /api/containers/web');
  assert.deepEqual(old.problems.map((p) => p.split(':')[0]).sort(), [
    'current_session.created_at',
    'current_session.limits',
    'learning.active',
    'learning.operator_switch',
    'learning.source',
  ]);
  assert.match(old.message, /^unexpected response from the API to GET \/api\/containers\/web \(is it sluice, and a version this client knows\?\): /);
  assert.match(old.message, /and 2 more$/);

  const other = await problems(client.getRule(7));
  assert.ok(other.problems.includes('id: Invalid input: expected number, received string'), other.problems.join('\n'));
  assert.deepEqual((await problems(client.health())).problems, ['(body): Invalid input: expected object, received array']);
  assert.ok((await problems(client.deleteSession('gone'))).problems.some((p) => p.startsWith('deleted: ')), 'an empty object is not a deletion');
});

test('ManagedSession heartbeats, survives a proxy restart and a lost session, and deletes it on close', async (t) => {
  const origin = await startOrigin('127.0.0.2');
  const dataDir = tempDir();
  let s = await startTestSluice({ dataDir });
  t.after(async () => {
    await s.close(true);
    await origin.close();
  });
  let base = `http://127.0.0.1:${s.sluice.api.port}`;
  const client = new SluiceClient({ baseUrl: () => base, token: s.sluice.apiToken });

  // Defaults: a third of the TTL.
  const defaults = await client.startSession({ container_name: 'managed-defaults', ttl_seconds: 30 });
  assert.equal(defaults.heartbeatIntervalMs, 10_000);
  await defaults.close();

  const managed: ManagedSession = await client.startSession(
    { container_name: 'managed-1', ttl_seconds: 3, network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(origin.port) }] },
    { heartbeatIntervalMs: 100, retryDelayMs: 50 },
  );
  let heartbeats = 0;
  const recreated: Array<[SessionCreated, RecreatedInfo]> = [];
  managed.on('heartbeat', () => heartbeats++);
  managed.on('recreated', (session, info) => recreated.push([session, info]));
  // Deliberately no 'error' listener: failures must be recorded, never thrown.
  await eventually(() => heartbeats >= 2, 3000, 'heartbeats');
  const firstToken = managed.proxyToken;
  assert.match((await curl(['-x', managed.proxy.http, `http://${origin.authority}/before`])).stdout, /GET \/before/);

  // Restart on the same data dir: the API (and proxy) ports change; the session survives in the store.
  await s.close();
  await eventually(() => managed.errors.some((e) => e instanceof SluiceUnreachableError), 3000, 'a recorded unreachable error');
  s = await startTestSluice({ dataDir });
  base = `http://127.0.0.1:${s.sluice.api.port}`;
  await eventually(() => recreated.length >= 1, 5000, 're-registration after the restart');
  assert.equal(recreated[0]?.[1].reason, 'reconnected');
  assert.equal(recreated[0]?.[1].tokenChanged, false, 'the re-posted session keeps its token');
  assert.equal(managed.proxyToken, firstToken);
  assert.ok(managed.proxy.http.endsWith(`:${s.sluice.http.port}`), `${managed.proxy.http} names the new proxy port`);
  assert.match((await curl(['-x', managed.proxy.http, `http://${origin.authority}/after-restart`])).stdout, /GET \/after-restart/);

  // Deleted behind its back: the next heartbeat gets 404 and the session comes back under the same id.
  assert.equal((await s.api('DELETE', `/api/sessions/${managed.sessionId}`)).status, 200);
  await eventually(() => recreated.length >= 2, 3000, 're-creation after a 404');
  assert.equal(recreated[1]?.[1].reason, 'not_found');
  assert.equal(recreated[1]?.[1].tokenChanged, true);
  assert.equal(recreated[1]?.[0].session_id, managed.sessionId);
  assert.equal((await s.api('GET', `/api/sessions/${managed.sessionId}`)).status, 200);
  assert.match((await curl(['-x', managed.proxy.http, `http://${origin.authority}/recreated`])).stdout, /GET \/recreated/);

  await managed.close();
  assert.equal(managed.closed, true);
  assert.equal((await s.api('GET', `/api/sessions/${managed.sessionId}`)).status, 404);
  const after = heartbeats;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(heartbeats, after, 'no heartbeats after close');
  await managed.close(); // idempotent
});
