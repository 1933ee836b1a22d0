// Every malformed request is a 400 naming the problem, and leaves everything as it was.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { addRule, expect400, expectReach, snapshot } from '../helpers/api-helpers.js';

let s: TestSluice;
let o2: Origin;
let existing: { proxy: { http: string } };
let ruleId: number;
let baseline: unknown;

before(async () => {
  o2 = await startOrigin('127.0.0.2');
  s = await startTestSluice({ config: { sessions: { max_rules_per_session: 5 } } });
  // Some state for the refused requests to (not) disturb.
  existing = await s.createSession({ session_id: 'keep', container_name: 'web', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  ruleId = await addRule(s, { container_pattern: 'web*', destination_pattern: '**.example.com', port_pattern: '443', action: 'allow', notes: 'n' });
  await s.api('PUT', '/api/containers/web/learning', { enabled: false });
  baseline = await snapshot(s);
});
after(async () => {
  await s.close(true);
  await o2.close();
});

async function refused(method: string, path: string, body: unknown, what: string, detail?: RegExp): Promise<void> {
  const res = await s.api(method, path, body);
  const details = expect400(res, what);
  if (detail) assert.ok(details.some((d) => detail.test(d)), `${what}: no detail matches ${detail}: ${JSON.stringify(details)}`);
}

const okRule = { destination_pattern: 'example.com' };

const BAD_SESSIONS: Array<[string, unknown, RegExp?]> = [
  ['malformed JSON', '{"container_name": "web",', undefined],
  ['empty JSON body', '', undefined],
  ['JSON null', 'null', undefined],
  ['JSON array', '[]', undefined],
  ['JSON string', '"web"', undefined],
  ['__proto__ key', '{"container_name":"x","__proto__":{"allow_all":true}}', undefined],
  ['missing container_name', { network_rules: [okRule] }, /container_name/],
  ['empty object', {}, /container_name/],
  ['container_name a number', { container_name: 5 }, /container_name/],
  ['container_name null', { container_name: null }, /container_name/],
  ['ttl_seconds a string', { container_name: 'x', ttl_seconds: '60' }, /ttl_seconds/],
  ['ttl_seconds fractional', { container_name: 'x', ttl_seconds: 1.5 }, /ttl_seconds/],
  ['ttl_seconds 0', { container_name: 'x', ttl_seconds: 0 }, /ttl_seconds/],
  ['ttl_seconds 86401', { container_name: 'x', ttl_seconds: 86_401 }, /ttl_seconds/],
  ['ttl_seconds negative', { container_name: 'x', ttl_seconds: -1 }, /ttl_seconds/],
  ['allow_all a string', { container_name: 'x', allow_all: 'yes' }, /allow_all/],
  ['network_rules an object', { container_name: 'x', network_rules: {} }, /network_rules/],
  ['network_rules of strings', { container_name: 'x', network_rules: ['example.com'] }, /network_rules\.0/],
  ['rule without destination', { container_name: 'x', network_rules: [{ port_pattern: '80' }] }, /network_rules\.0\.destination_pattern/],
  ['destination a number', { container_name: 'x', network_rules: [{ destination_pattern: 5 }] }, /destination_pattern/],
  ['port_pattern a number', { container_name: 'x', network_rules: [{ destination_pattern: 'a.com', port_pattern: 443 }] }, /port_pattern/],
  ['action misspelt', { container_name: 'x', network_rules: [{ destination_pattern: 'a.com', action: 'block' }] }, /action/],
  ['unknown top-level field', { container_name: 'x', netwrok_rules: [okRule] }, /netwrok_rules/],
  ['proxy_token supplied', { container_name: 'x', proxy_token: 'mine' }, /proxy_token/],
  ['unknown rule field', { container_name: 'x', network_rules: [{ ...okRule, layer: 'global' }] }, /network_rules\.0/],
  ['source_ips a string', { container_name: 'x', source_ips: '127.0.0.9' }, /source_ips/],
  ['source_ips a hostname', { container_name: 'x', source_ips: ['localhost'] }, /source_ips\.0/],
  ['source_ips a CIDR', { container_name: 'x', source_ips: ['127.0.0.0/8'] }, /source_ips\.0/],
  ['metadata an array', { container_name: 'x', metadata: [] }, /metadata/],
  ['metadata a string', { container_name: 'x', metadata: 'x' }, /metadata/],
  ['more rules than sessions.max_rules_per_session', { container_name: 'x', network_rules: Array.from({ length: 6 }, () => okRule) }, /max_rules_per_session/],
];

test('malformed session bodies are 400 with details, and nothing changes', async () => {
  for (const [what, body, detail] of BAD_SESSIONS) await refused('POST', '/api/sessions', body, what, detail);
  assert.deepEqual(await snapshot(s), baseline);
});

const BAD_NAMES = ['', 'a b', 'a/b', '../x', '..', '.', 'x'.repeat(129), 'wéb', 'web\n', 'a:b', 'a*', 'a@b'];

test('invalid container names and session ids are 400 and create nothing', async () => {
  for (const name of BAD_NAMES) {
    await refused('POST', '/api/sessions', { container_name: name }, `container_name ${JSON.stringify(name)}`, /container_name/);
    await refused('POST', '/api/sessions', { session_id: name, container_name: 'web' }, `session_id ${JSON.stringify(name)}`, /session_id/);
  }
  // The longest valid name is fine (and cleaned up).
  const long = await s.api('POST', '/api/sessions', { session_id: 's'.repeat(128), container_name: 'c'.repeat(128) });
  assert.equal(long.status, 200);
  assert.equal((await s.api('DELETE', `/api/sessions/${'s'.repeat(128)}`)).status, 200);
  assert.deepEqual(await snapshot(s), baseline);
});

const BAD_DESTINATIONS = [
  '', ' ', ' example.com', 'example.com ', 'exa mple.com', 'http://example.com', 'https://example.com/', 'example.com/path',
  'example.com:443', '*.*', '*.com', '**.com', '*', '**', '*example.com', 'a.*.example.com', 'example.*', '*.*.example.com',
  '1.2.3.4/33', '10.0.0.0/x', '10.0.0.0/', '::1/129', '1.2.3.4.5', 'user@example.com', 'a..b', '*.1.2.3.4',
];

test('one invalid rule among valid ones rejects the whole session: nothing stored', async () => {
  for (const dest of BAD_DESTINATIONS) {
    if (dest === '*') continue; // `*` alone is valid (any destination)
    const body = { container_name: 'fresh', network_rules: [okRule, { destination_pattern: dest }, { destination_pattern: '10.0.0.0/8', action: 'deny' }] };
    await refused('POST', '/api/sessions', body, `destination ${JSON.stringify(dest)}`, /network_rules\.1/);
  }
  for (const port of ['0', '65536', '80-70', 'http', '80,', ',80', '-1', '', '1-2-3', '80;443', '99999']) {
    const body = { container_name: 'fresh', network_rules: [okRule, { destination_pattern: 'a.example.com', port_pattern: port }] };
    await refused('POST', '/api/sessions', body, `port ${JSON.stringify(port)}`, /network_rules\.1/);
  }
  assert.deepEqual(await snapshot(s), baseline);
});

test('a refused re-post of an existing session keeps its rules, expiry and token', async () => {
  await refused('POST', '/api/sessions', { session_id: 'keep', container_name: 'web', ttl_seconds: 5, network_rules: [okRule, { destination_pattern: '*.com' }] }, 're-post with a bad rule', /network_rules\.1/);
  await refused('POST', '/api/sessions', { session_id: 'keep', container_name: 'web', ttl_seconds: 0 }, 're-post with a bad ttl', /ttl_seconds/);
  assert.deepEqual(await snapshot(s), baseline);
  await expectReach(existing.proxy.http, o2, undefined, 'the old rules still decide');
});

test('malformed rule bodies, patches and queries are 400, and nothing changes', async () => {
  const badCreates: Array<[string, unknown]> = [
    ['missing action', { destination_pattern: 'a.com' }],
    ['missing destination', { action: 'allow' }],
    ['action misspelt', { destination_pattern: 'a.com', action: 'permit' }],
    ['layer supplied', { destination_pattern: 'a.com', action: 'allow', layer: 'session' }],
    ['session_id supplied', { destination_pattern: 'a.com', action: 'allow', session_id: 'keep' }],
    ['container_pattern with a slash', { container_pattern: 'a/b', destination_pattern: 'a.com', action: 'allow' }],
    ['container_pattern with a space', { container_pattern: 'a b', destination_pattern: 'a.com', action: 'allow' }],
    ['expires_in_seconds 0', { destination_pattern: 'a.com', action: 'allow', expires_in_seconds: 0 }],
    ['expires_in_seconds a string', { destination_pattern: 'a.com', action: 'allow', expires_in_seconds: '60' }],
    ['expires_in_seconds fractional', { destination_pattern: 'a.com', action: 'allow', expires_in_seconds: 1.5 }],
    ['malformed JSON', '{"destination_pattern":'],
  ];
  for (const [what, body] of badCreates) await refused('POST', '/api/rules', body, what);
  for (const dest of BAD_DESTINATIONS) {
    if (dest === '*') continue;
    await refused('POST', '/api/rules', { destination_pattern: dest, action: 'deny' }, `rule destination ${JSON.stringify(dest)}`, /./);
  }
  for (const port of ['0', '65536', '9-1', 'x']) await refused('POST', '/api/rules', { destination_pattern: 'a.com', port_pattern: port, action: 'deny' }, `rule port ${port}`);

  const badPatches: Array<[string, unknown]> = [
    ['empty patch', {}],
    ['layer', { layer: 'builtin' }],
    ['bad destination', { destination_pattern: '*.*' }],
    ['bad port', { port_pattern: '0' }],
    ['bad action', { action: 'nope' }],
    ['bad container', { container_pattern: 'a b' }],
    ['unknown field', { id: 99 }],
    ['bad expiry', { expires_in_seconds: 0 }],
  ];
  for (const [what, body] of badPatches) await refused('PATCH', `/api/rules/${ruleId}`, body, `patch: ${what}`);

  for (const q of ['layer=bogus', 'foo=1', 'container=a%20b', 'session_id=..%2F..', 'container=']) await refused('GET', `/api/rules?${q}`, undefined, `query ${q}`);
  assert.deepEqual(await snapshot(s), baseline);
});

test('path parameters are validated: traversal, non-numeric and out-of-range ids are 400', async () => {
  for (const id of ['..%2F..', '..%2F..%2Fapi-token', 'a%20b', '%2E%2E%2Fkeep', 'x'.repeat(129)]) {
    await refused('GET', `/api/sessions/${id}`, undefined, `GET session ${id}`);
    await refused('POST', `/api/sessions/${id}/heartbeat`, undefined, `heartbeat ${id}`);
    await refused('DELETE', `/api/sessions/${id}`, undefined, `DELETE session ${id}`);
    await refused('GET', `/api/containers/${id}`, undefined, `GET container ${id}`);
    await refused('PUT', `/api/containers/${id}/learning`, { enabled: true }, `learning ${id}`);
  }
  for (const id of ['abc', '0', '-1', '1.5', '..%2F1', '1e3x', '9007199254740993']) {
    await refused('GET', `/api/rules/${id}`, undefined, `GET rule ${id}`);
    await refused('PATCH', `/api/rules/${id}`, { action: 'deny' }, `PATCH rule ${id}`);
    await refused('DELETE', `/api/rules/${id}`, undefined, `DELETE rule ${id}`);
  }
  assert.deepEqual(await snapshot(s), baseline);
});

test('malformed learning switches and checks are 400', async () => {
  for (const body of [{}, { enabled: 'yes' }, { enabled: true, ttl_seconds: 0 }, { enabled: true, ttl_seconds: 30 * 86_400 + 1 }, { enabled: true, extra: 1 }, []]) {
    await refused('PUT', '/api/containers/web/learning', body, `learning ${JSON.stringify(body)}`);
  }
  const badChecks: Array<[string, unknown, RegExp?]> = [
    ['port 0', { container_name: 'web', destination: '127.0.0.2', port: 0 }, /port/],
    ['port 65536', { container_name: 'web', destination: '127.0.0.2', port: 65_536 }, /port/],
    ['port a string', { container_name: 'web', destination: '127.0.0.2', port: '80' }, /port/],
    ['missing destination', { container_name: 'web', port: 80 }, /destination/],
    ['bad container', { container_name: 'a b', destination: '127.0.0.2', port: 80 }, /container_name/],
    ['unknown field', { container_name: 'web', destination: '127.0.0.2', port: 80, layer: 'global' }],
    ['destination is a URL', { container_name: 'web', destination: 'http://example.com', port: 80 }, /destination/],
    ['destination with a space', { container_name: 'web', destination: 'exa mple.com', port: 80 }, /destination/],
    ['destination with a path', { container_name: 'web', destination: 'example.com/x', port: 80 }, /destination/],
  ];
  for (const [what, body, detail] of badChecks) await refused('POST', '/api/check', body, `check: ${what}`, detail);
  assert.deepEqual(await snapshot(s), baseline);
});

