// Learning reports against the real server: a learning run over three loopback origins,
// the learned list, promotion into rules (container and global scope, sibling collapse
// that never spans a public suffix), and the same container with learning off reaching
// exactly what was promoted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { learnedReportSchema, promoteResultSchema } from '../../src/api/responses.js';
import type { LearnedReport, PromoteRequest, PromoteResult, Rule } from '../../src/client/types.js';
import { curl, expectBody, type Origin, type SessionCreated, type TestSluice } from '../helpers/harness.js';
import { originUrl, viaProxy } from '../helpers/api-helpers.js';
import { originFor, sluiceFor, type T } from '../helpers/proxy-helpers.js';
import { decisions, mapResolver } from '../helpers/observe-helpers.js';

interface Origins {
  o2: Origin;
  o3: Origin;
  o4: Origin;
  o5: Origin;
}

async function origins(t: T): Promise<Origins> {
  const [o2, o3, o4, o5] = await Promise.all(['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'].map((h) => originFor(t, h)));
  return { o2: o2!, o3: o3!, o4: o4!, o5: o5! };
}

const RESOLVER = mapResolver({
  'a.cdn.example.test': '127.0.0.2',
  'b.cdn.example.test': '127.0.0.3',
  'already.test': '127.0.0.4',
  'unvisited.test': '127.0.0.5',
});

// For the collapse test: siblings on one origin, and hosts under a public suffix on another.
const SIBLINGS = mapResolver({
  'a.cdn.example.test': '127.0.0.2',
  'b.cdn.example.test': '127.0.0.2',
  'c.cdn.example.test': '127.0.0.2',
  'x.github.io': '127.0.0.3',
  'y.github.io': '127.0.0.3',
  'z.github.io': '127.0.0.3',
});

/** HTTP through the session's proxy to `host`:`origin.port`; returns the status. */
async function http(session: SessionCreated, origin: Origin, host: string = origin.host, path = '/'): Promise<number> {
  return (await viaProxy(session.proxy.http, originUrl(origin, host, path))).status;
}

/** The same over a CONNECT tunnel (curl -p): the origin's status, or the proxy's refusal of the CONNECT. */
async function tunnel(session: SessionCreated, origin: Origin, host: string = origin.host): Promise<number> {
  const r = await curl(['--noproxy', '', '-p', '-x', session.proxy.http, '-o', '/dev/null', '-w', '%{http_connect} %{http_code}', originUrl(origin, host, '/tunnel')], 5000);
  const [connect, code] = r.stdout.trim().split(' ').map(Number);
  return connect !== 200 && connect ? connect : code || 0;
}

/** The same over SOCKS5 (socks5h: the proxy resolves names). */
async function socks(session: SessionCreated, origin: Origin, host: string = origin.host): Promise<number> {
  const r = await curl(['--noproxy', '', '-x', session.proxy.socks5, '-o', '/dev/null', '-w', '%{http_code}', originUrl(origin, host, '/socks')], 5000);
  return Number(r.stdout) || 0;
}

async function learned(s: TestSluice, container: string): Promise<LearnedReport> {
  const res = await s.api('GET', `/api/containers/${container}/learned`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return expectBody(learnedReportSchema, res.body, 'GET /api/containers/:name/learned');
}

async function promote(s: TestSluice, container: string, body: PromoteRequest): Promise<PromoteResult> {
  const res = await s.api('POST', `/api/containers/${container}/learned/promote`, body);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return expectBody(promoteResultSchema, res.body, 'POST /api/containers/:name/learned/promote');
}

const pairs = (rules: Rule[]): string[][] => rules.map((r) => [r.destination_pattern, r.port_pattern]).sort();

test('a learning run over three origins is reported, promoted into container rules, and then reaches exactly those', async (t) => {
  const { o2, o3, o4, o5 } = await origins(t);
  const s = await sluiceFor(t, { resolver: RESOLVER });
  const session = await s.createSession({ container_name: 'learner', network_rules: [{ destination_pattern: 'already.test', port_pattern: String(o4.port) }] });
  const alreadyRule = (await s.api('GET', `/api/sessions/${session.session_id}`)).body.rules[0].id as number;
  const before = Date.now();
  assert.equal((await s.api('PUT', '/api/containers/learner/learning', { enabled: true })).status, 200);

  // The learning run: a hostname over HTTP (twice), a hostname over CONNECT, an IP over SOCKS5,
  // and one destination its session rule allows anyway.
  assert.equal(await http(session, o2, 'a.cdn.example.test', '/one'), 200);
  assert.equal(await http(session, o2, 'a.cdn.example.test', '/two'), 200);
  assert.equal(await tunnel(session, o3, 'b.cdn.example.test'), 200);
  assert.equal(await socks(session, o4), 200);
  assert.equal(await http(session, o4, 'already.test'), 200);
  assert.equal(o2.requests.length, 2);

  const report = await learned(s, 'learner');
  assert.equal(report.container_name, 'learner');
  assert.equal(report.learning.active, true);
  assert.deepEqual(
    report.learned.map((l) => [l.destination, l.port, l.count, l.would_be.decision, l.would_be.layer, l.would_be.rule_id]),
    [
      ['127.0.0.4', o4.port, 1, 'deny', null, null],
      ['a.cdn.example.test', o2.port, 2, 'deny', null, null],
      ['already.test', o4.port, 1, 'allow', 'session', alreadyRule],
      ['b.cdn.example.test', o3.port, 1, 'deny', null, null],
    ],
  );
  for (const l of report.learned) {
    const first = Date.parse(l.first_seen);
    const last = Date.parse(l.last_seen);
    assert.ok(first >= before - 1000 && first <= last && last <= Date.now() + 1000, `times of ${l.destination}: ${l.first_seen} ${l.last_seen}`);
  }
  const learnedRows = await decisions(s, { container: 'learner' });
  assert.equal(learnedRows.filter((d) => d.reason === 'learning' && d.decision === 'allow').length, 4, 'allowed by learning mode, and recorded so');

  // Promotion: container-scoped global rules for what the rules alone would have denied.
  const promoted = await promote(s, 'learner', { scope: 'container' });
  assert.deepEqual(pairs(promoted.created), [
    ['127.0.0.4', String(o4.port)],
    ['a.cdn.example.test', String(o2.port)],
    ['b.cdn.example.test', String(o3.port)],
  ]);
  for (const r of promoted.created) {
    assert.equal(r.layer, 'global');
    assert.equal(r.container_pattern, 'learner');
    assert.equal(r.action, 'allow');
    assert.equal(typeof r.id, 'number');
  }
  assert.deepEqual(promoted.skipped, [{ destination: 'already.test', port: o4.port, reason: 'already allowed' }]);
  const globals = (await s.api('GET', '/api/rules?layer=global')).body.rules;
  assert.deepEqual(pairs(globals), pairs(promoted.created), 'exactly the created rules exist');
  const again = await promote(s, 'learner', {});
  assert.deepEqual(again.created, [], 'promoting twice creates nothing new');
  assert.equal(again.skipped.length, 4);

  // Learning off: exactly the learned origins, over every protocol, and nothing else.
  assert.equal((await s.api('PUT', '/api/containers/learner/learning', { enabled: false })).status, 200);
  assert.equal(await http(session, o2, 'a.cdn.example.test'), 200);
  assert.equal(await tunnel(session, o3, 'b.cdn.example.test'), 200);
  assert.equal(await socks(session, o4), 200);
  assert.equal(await http(session, o4, 'already.test'), 200);
  assert.equal(await http(session, o5, 'unvisited.test'), 403, 'a host never reached stays denied');
  assert.equal(await http(session, o5), 403);
  assert.equal(await http(session, o3), 403, 'b.cdn.example.test was learned by name, not its address');
  assert.equal(await tunnel(session, o3, 'a.cdn.example.test'), 403, 'only the learned port');
  assert.equal(await socks(session, o2), 0, 'SOCKS5 refuses 127.0.0.2 (never learned)');
  assert.equal(o2.requests.filter((r) => r.url === '/socks').length, 0);
  const bystander = await s.createSession({ container_name: 'bystander' });
  assert.equal(await http(bystander, o2, 'a.cdn.example.test'), 403, 'container scope: another container gets nothing');

  // With learning off nothing more is learned.
  const after = await learned(s, 'learner');
  assert.equal(after.learning.active, false);
  assert.deepEqual(
    after.learned.map((l) => [l.destination, l.count]),
    report.learned.map((l) => [l.destination, l.count]),
  );
});

test('collapse_subdomains groups siblings into *.parent but never over a public suffix; scope global; a destination filter', async (t) => {
  const { o2, o3 } = await origins(t);
  const s = await sluiceFor(t, { resolver: SIBLINGS });
  // Learning through the session itself (allow_all).
  const learning = await s.createSession({ container_name: 'collapser', allow_all: true });
  for (const host of ['a.cdn.example.test', 'b.cdn.example.test']) assert.equal(await http(learning, o2, host), 200);
  for (const host of ['x.github.io', 'y.github.io']) assert.equal(await tunnel(learning, o3, host), 200);
  assert.equal((await learned(s, 'collapser')).learned.length, 4);

  // A destination filter picks one learned host (written any way that names the same host).
  const one = await promote(s, 'collapser', { destinations: ['X.GitHub.IO.'], scope: 'global' });
  assert.deepEqual(pairs(one.created), [['x.github.io', String(o3.port)]]);
  assert.deepEqual(one.skipped, []);

  const rest = await promote(s, 'collapser', { scope: 'global', collapse_subdomains: true });
  assert.deepEqual(pairs(rest.created), [
    ['*.cdn.example.test', String(o2.port)],
    ['y.github.io', String(o3.port)],
  ]);
  assert.deepEqual(rest.skipped.map((x) => x.destination), ['x.github.io']);
  const all = (await s.api('GET', '/api/rules?layer=global')).body.rules;
  for (const r of all) {
    assert.equal(r.container_pattern, '*', 'scope global');
    assert.ok(!['*.github.io', '*.io', '*.test', '*.example.test'].includes(r.destination_pattern), `no wildcard over a public suffix: ${r.destination_pattern}`);
  }
  const cdnRule = rest.created.find((r) => r.destination_pattern === '*.cdn.example.test');
  assert.match(cdnRule?.notes ?? '', /a\.cdn\.example\.test, b\.cdn\.example\.test/);

  // A newer session without allow_all ends learning: the wildcard covers an unseen sibling,
  // the public-suffix neighbour stays denied, and global scope reaches other containers.
  const plain = await s.createSession({ container_name: 'collapser' });
  assert.equal((await s.api('GET', '/api/containers/collapser')).body.learning.active, false);
  assert.equal(await http(plain, o2, 'c.cdn.example.test'), 200, 'the collapsed rule covers a sibling never seen');
  assert.equal(await tunnel(plain, o3, 'y.github.io'), 200);
  assert.equal(await tunnel(plain, o3, 'z.github.io'), 403, 'no *.github.io');
  const other = await s.createSession({ container_name: 'someone-else' });
  assert.equal(await http(other, o2, 'a.cdn.example.test'), 200, 'global scope');
});

test('learned and promote: validation, unknown containers and nothing learned', async (t) => {
  const s = await sluiceFor(t);
  const empty = await learned(s, 'never-seen');
  assert.deepEqual(empty.learned, []);
  assert.equal(empty.learning.active, false);
  assert.deepEqual(await promote(s, 'never-seen', {}), { container_name: 'never-seen', created: [], skipped: [] });
  for (const body of [{ scope: 'everyone' }, { collapse: true }, { destinations: 'a.test' }, { collapse_subdomains: 'yes' }]) {
    const res = await s.api('POST', '/api/containers/never-seen/learned/promote', body);
    assert.equal(res.status, 400, `${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
    assert.ok(Array.isArray(res.body.details) && res.body.details.length > 0);
  }
  assert.equal((await s.api('GET', '/api/containers/bad%20name/learned')).status, 400);
  assert.equal((await s.api('GET', '/api/containers/never-seen/learned', undefined, null)).status, 401);
  assert.equal((await s.api('POST', '/api/containers/never-seen/learned/promote', {}, null)).status, 401);
});
