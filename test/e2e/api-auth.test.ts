// The API's front door: bearer token on every /api route (however the path is spelled),
// /healthz open, the generated token file, body size limit.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { rawExchange, startTestSluice, tempDir, type TestSluice } from '../helpers/harness.js';
import { snapshot } from '../helpers/api-helpers.js';

let s: TestSluice;
before(async () => {
  s = await startTestSluice({ config: { limits: { max_api_body_bytes: 1024 } } });
});
after(async () => {
  await s.close(true);
});

const ROUTES: Array<[string, string, unknown?]> = [
  ['GET', '/api/sessions'],
  ['POST', '/api/sessions', { container_name: 'sneaky' }],
  ['GET', '/api/sessions/x'],
  ['POST', '/api/sessions/x/heartbeat'],
  ['DELETE', '/api/sessions/x'],
  ['GET', '/api/rules'],
  ['POST', '/api/rules', { destination_pattern: '*', action: 'allow' }],
  ['GET', '/api/rules/1'],
  ['PATCH', '/api/rules/1', { action: 'deny' }],
  ['DELETE', '/api/rules/1'],
  ['POST', '/api/check', { container_name: 'c', destination: '127.0.0.2', port: 80 }],
  ['GET', '/api/containers'],
  ['GET', '/api/containers/c'],
  ['PUT', '/api/containers/c/learning', { enabled: true }],
  ['GET', '/api/no-such-route'],
];

test('every /api route answers 401 in the error shape without a token, with a wrong one, or with another scheme', async () => {
  const before = await snapshot(s);
  for (const token of [null, 'wrong-token', `${s.sluice.apiToken}x`, s.sluice.apiToken.slice(0, -1), '']) {
    for (const [method, path, body] of ROUTES) {
      const res = await s.api(method, path, body, token);
      assert.equal(res.status, 401, `${method} ${path} with token ${JSON.stringify(token)}`);
      assert.equal(res.body.error, 'missing or invalid API token');
      assert.ok(Array.isArray(res.body.details));
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="sluice"');
    }
  }
  // The right token under another scheme is not a bearer token.
  const basic = await fetch(`http://127.0.0.1:${s.sluice.api.port}/api/rules`, { headers: { authorization: `Basic ${s.sluice.apiToken}` } });
  assert.equal(basic.status, 401);
  assert.deepEqual(await snapshot(s), before, 'the refused writes changed nothing');
});

test('the token is checked for every spelling of an /api path (percent-encoding, absolute-form target)', async () => {
  // The router decodes %61 -> a and routes absolute-form targets by their path, so a check
  // on the raw request target would let these through.
  for (const target of ['/%61pi/rules', '/%61%70%69/sessions', `http://127.0.0.1:${s.sluice.api.port}/api/rules`, 'http://evil.example/api/sessions', '/api//rules', '/api/rules/']) {
    const r = await rawExchange(s.sluice.api.port, Buffer.from(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), 2000);
    const text = r.received.toString('latin1');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
    assert.ok(status === 401 || status === 404, `${target} answered ${text.split('\r\n')[0]} without a token`);
    assert.doesNotMatch(text, /"rules":|"sessions":/, `${target} leaked data: ${text}`);
  }
  const post = await rawExchange(
    s.sluice.api.port,
    Buffer.from(`POST /%61pi/rules HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n{"destination_pattern":"*","action":"allow"}\n`),
    2000,
  );
  assert.match(post.received.toString('latin1'), /^HTTP\/1\.1 401/);
  const rules = await s.api('GET', '/api/rules?layer=global');
  assert.deepEqual(rules.body.rules, [], 'no global rule was created');
});

test('/healthz needs no token; a known token works with any bearer spelling', async () => {
  const health = await s.api('GET', '/healthz', undefined, null);
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'ok');
  assert.equal(health.body.store, 'ok');
  const res = await fetch(`http://127.0.0.1:${s.sluice.api.port}/api/sessions`, { headers: { authorization: `bearer   ${s.sluice.apiToken}` } });
  assert.equal(res.status, 200);
});

test('unknown routes under /api are 404 in the error shape once authenticated', async () => {
  const res = await s.api('GET', '/api/nope');
  assert.equal(res.status, 404);
  assert.equal(res.body.error, 'not found');
  assert.ok(res.body.details.length > 0);
});

test('the generated API token is stored in <data-dir>/api-token with mode 0600, and reused on restart', async () => {
  const file = join(s.dataDir, 'api-token');
  assert.equal(s.sluice.apiTokenFile, file);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(readFileSync(file, 'utf8').trim(), s.sluice.apiToken);
  assert.ok(s.sluice.apiToken.length >= 32);
  assert.equal(statSync(join(s.dataDir, 'token-secret')).mode & 0o777, 0o600);
  assert.ok(existsSync(join(s.dataDir, 'sluice.db')));

  const dir = tempDir();
  const first = await startTestSluice({ dataDir: dir });
  const token = first.sluice.apiToken;
  await first.close();
  const second = await startTestSluice({ dataDir: dir });
  try {
    assert.equal(second.sluice.apiToken, token);
    assert.equal((await second.api('GET', '/api/sessions')).status, 200);
  } finally {
    await second.close(true);
  }
});

test('a configured API token is used and no token file is written', async () => {
  const token = 'configured-token-0123456789';
  const c = await startTestSluice({ config: { api_token: token } });
  try {
    assert.equal(c.sluice.apiTokenFile, null);
    assert.equal(existsSync(join(c.dataDir, 'api-token')), false);
    assert.equal((await c.api('GET', '/api/sessions', undefined, token)).status, 200);
    assert.equal((await c.api('GET', '/api/sessions', undefined, 'some-other-token-000000')).status, 401);
  } finally {
    await c.close(true);
  }
});

test('a body over limits.max_api_body_bytes is refused with 413 in the JSON error shape, and stores nothing', async () => {
  const before = await snapshot(s);
  const big = { container_name: 'big', metadata: { pad: 'x'.repeat(2000) } };
  const res = await s.api('POST', '/api/sessions', big);
  assert.equal(res.status, 413);
  assert.equal(typeof res.body.error, 'string');
  assert.ok(Array.isArray(res.body.details));
  assert.deepEqual(await snapshot(s), before);
  // Just under the limit is fine.
  const ok = await s.api('POST', '/api/sessions', { container_name: 'small', metadata: { pad: 'x'.repeat(800) } });
  assert.equal(ok.status, 200);
  await s.api('DELETE', `/api/sessions/${ok.body.session_id}`);
});
