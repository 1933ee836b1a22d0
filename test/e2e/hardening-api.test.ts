// Control API abuse: oversized and deeply nested bodies, generated wrong types and unknown
// fields, odd path encodings, and a session carrying 10,000 rules. Every answer is a JSON
// 4xx in the API's error shape (or a 200), never a 500, a crash or a hang, and nothing
// half-done is left behind.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startTestSluice, type TestSluice } from '../helpers/harness.js';
import { snapshot } from '../helpers/api-helpers.js';

let s: TestSluice;
before(async () => {
  s = await startTestSluice();
  await s.createSession({ session_id: 'keep', container_name: 'keeper', network_rules: [{ destination_pattern: 'example.com', port_pattern: '443' }] });
});
after(() => s.close(true));

function assertErrorShape(res: { status: number; body: any }, what: string): void {
  assert.equal(typeof res.body, 'object', `${what}: not JSON: ${String(res.body).slice(0, 200)}`);
  assert.equal(typeof res.body.error, 'string', `${what}: ${JSON.stringify(res.body).slice(0, 300)}`);
  assert.ok(Array.isArray(res.body.details), what);
}

/** Resolves with the response, or fails the test if the API takes longer than `ms`. */
async function timed<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

test('oversized bodies get 413 in the error shape on every write route, streamed or not', async () => {
  const big = JSON.stringify({ container_name: 'big', metadata: { pad: 'x'.repeat(1100 * 1024) } });
  for (const [method, path] of [
    ['POST', '/api/sessions'],
    ['POST', '/api/rules'],
    ['PATCH', '/api/rules/1'],
    ['POST', '/api/check'],
    ['PUT', '/api/containers/big/learning'],
  ] as const) {
    const res = await timed(path, 5000, s.api(method, path, big));
    assert.equal(res.status, 413, `${method} ${path}: ${res.status}`);
    assertErrorShape(res, path);
  }
  // Without Content-Length (chunked): the limit applies to what arrives.
  async function* chunks(): AsyncGenerator<Uint8Array> {
    yield Buffer.from('{"container_name":"big","metadata":{"pad":"');
    for (let i = 0; i < 80; i++) yield Buffer.alloc(16 * 1024, 0x78);
    yield Buffer.from('"}}');
  }
  const res = await fetch(`http://127.0.0.1:${s.sluice.api.port}/api/sessions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${s.sluice.apiToken}`, 'content-type': 'application/json' },
    body: chunks() as unknown as BodyInit,
    duplex: 'half',
  } as RequestInit);
  assert.equal(res.status, 413);
  assertErrorShape({ status: res.status, body: await res.json() }, 'chunked');
  assert.equal((await s.api('GET', '/api/containers/big')).body.current_session, null);
});

test('deeply nested JSON (100,000 levels) is a 400, wherever it appears, and the API stays up', async () => {
  const depth = 100_000;
  const arrays = '['.repeat(depth) + ']'.repeat(depth);
  const objects = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
  const cases: Array<[string, string, string, RegExp?]> = [
    ['metadata arrays', 'POST /api/sessions', `{"container_name":"deep","metadata":{"x":${arrays}}}`, /metadata.*deeper than 32/],
    ['metadata objects', 'POST /api/sessions', `{"container_name":"deep","metadata":${objects}}`, /metadata.*deeper than 32/],
    ['rules array', 'POST /api/sessions', `{"container_name":"deep","network_rules":${arrays}}`],
    ['whole body', 'POST /api/sessions', arrays],
    ['check destination', 'POST /api/check', `{"container_name":"deep","destination":${arrays},"port":80}`],
    ['rule notes', 'POST /api/rules', `{"destination_pattern":"a.example","action":"deny","notes":${objects}}`],
    ['learning', 'PUT /api/containers/deep/learning', `{"enabled":${arrays}}`],
  ];
  for (const [what, route, body, detail] of cases) {
    const [method, path] = route.split(' ') as [string, string];
    const res = await timed(what, 10_000, s.api(method, path, body));
    assert.equal(res.status, 400, `${what}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    assertErrorShape(res, what);
    if (detail) assert.ok((res.body.details as string[]).some((d) => detail.test(d)), `${what}: ${JSON.stringify(res.body.details)}`);
  }
  // Nesting up to the limit is fine, and round-trips.
  let ok: unknown = 'leaf';
  for (let i = 0; i < 30; i++) ok = [ok];
  const created = await s.api('POST', '/api/sessions', { container_name: 'deep', metadata: { ok } });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  assert.deepEqual((await s.api('GET', `/api/sessions/${created.body.session_id}`)).body.metadata, { ok });
  assert.equal((await s.api('DELETE', `/api/sessions/${created.body.session_id}`)).status, 200);
});

test('property: generated bodies with wrong types and unknown fields get 200 or a 4xx in the error shape, never a 500', async () => {
  const baseline = await snapshot(s);
  const json = fc.jsonValue({ maxDepth: 4 });
  const valid: Record<string, Record<string, unknown>> = {
    'POST /api/sessions': { container_name: 'gen', ttl_seconds: 60, network_rules: [{ destination_pattern: 'a.example', port_pattern: '443', action: 'allow' }], allow_all: false, source_ips: ['127.0.0.9'], metadata: { k: 'v' }, limits: { max_connections: 1 } },
    'POST /api/rules': { container_pattern: 'gen-*', destination_pattern: '*.example', port_pattern: '80,443', action: 'deny', notes: 'n', expires_in_seconds: 60 },
    'PATCH /api/rules/1': { action: 'deny' },
    'POST /api/check': { container_name: 'gen', destination: 'a.example', port: 443, resolve: false },
    'PUT /api/containers/gen/learning': { enabled: false, ttl_seconds: 60 },
  };
  const body = fc.constantFrom(...Object.keys(valid)).chain((route) =>
    fc
      .record({
        route: fc.constant(route),
        // Each field replaced by a random JSON value, dropped, or kept; plus unknown fields.
        edits: fc.array(fc.tuple(fc.constantFrom(...Object.keys(valid[route]!)), fc.oneof(json, fc.constant(undefined))), { maxLength: 3 }),
        extra: fc.option(fc.dictionary(fc.string({ maxLength: 8 }), json, { maxKeys: 2 }), { freq: 3 }),
        whole: fc.option(json, { freq: 8 }),
      })
      .map(({ route, edits, extra, whole }) => {
        if (whole !== null) return { route, body: whole };
        const b: Record<string, unknown> = { ...valid[route]! };
        for (const [k, v] of edits) {
          if (v === undefined) delete b[k];
          else b[k] = v;
        }
        return { route, body: extra ? { ...b, ...extra } : b };
      }),
  );
  const created: string[] = [];
  await fc.assert(
    fc.asyncProperty(body, async ({ route, body: b }) => {
      const [method, path] = route.split(' ') as [string, string];
      const res = await timed(route, 5000, s.api(method, path, JSON.stringify(b)));
      assert.ok([200, 400, 404, 409].includes(res.status), `${route} ${JSON.stringify(b).slice(0, 300)} -> ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
      if (res.status !== 200) assertErrorShape(res, `${route} ${JSON.stringify(b).slice(0, 200)}`);
      if (res.status === 200 && route === 'POST /api/sessions') created.push(res.body.session_id);
      if (res.status === 200 && route === 'POST /api/rules') created.push(`rule:${res.body.id}`);
    }),
    { numRuns: 300 },
  );
  // Put things back the way they were and prove nothing else changed.
  for (const id of created) await s.api('DELETE', id.startsWith('rule:') ? `/api/rules/${id.slice(5)}` : `/api/sessions/${id}`);
  await s.api('PUT', '/api/containers/gen/learning', { enabled: false });
  const after = (await snapshot(s)) as { containers: { containers: unknown[] } };
  const base = baseline as { containers: { containers: Array<{ container_name: string }> } };
  assert.deepEqual({ ...after, containers: null }, { ...base, containers: null });
});

test('odd encodings of ids in paths are refused (400/404), never reach anything, never 500', async () => {
  const ids = ['%252e%252e%252f', '..%5c..%5capi-token', '%00', 'a%00b', '%c0%ae%c0%ae', '%e2%80%a4%e2%80%a4', '.%2e', '%2e', 'keep%2f..%2fkeep', 'keep%3F', 'keep%23', encodeURIComponent('\u202e'), 'k'.repeat(300)];
  for (const id of ids) {
    for (const [method, path] of [
      ['GET', `/api/sessions/${id}`],
      ['DELETE', `/api/sessions/${id}`],
      ['POST', `/api/sessions/${id}/heartbeat`],
      ['GET', `/api/containers/${id}`],
      ['GET', `/api/rules/${id}`],
    ] as const) {
      const res = await s.api(method, path);
      assert.ok([400, 404].includes(res.status), `${method} ${path}: ${res.status}`);
      assertErrorShape(res, `${method} ${path}`);
      const anon = await s.api(method, path, undefined, null);
      // 400 for a target the router cannot even decode (before authentication, revealing nothing).
      assert.ok([400, 401, 404].includes(anon.status), `${method} ${path} without a token: ${anon.status}`);
      assertErrorShape(anon, `${method} ${path} without a token`);
    }
  }
  assert.equal((await s.api('GET', '/api/sessions/keep')).status, 200, 'the real session is untouched');
});

test('10,000 rules in one session: refused at once by sessions.max_rules_per_session (1000); accepted in seconds when the limit allows it', async (t) => {
  const rules = (n: number) => Array.from({ length: n }, (_, i) => ({ destination_pattern: `h${i}.bulk.example`, port_pattern: '443' }));
  const started = Date.now();
  const refused = await timed('10k rules', 10_000, s.api('POST', '/api/sessions', { container_name: 'bulk', network_rules: rules(10_000) }));
  assert.equal(refused.status, 400);
  assert.match(refused.body.error, /at most 1000 rules \(sessions\.max_rules_per_session\)/);
  assert.ok(Date.now() - started < 3000, `refusal took ${Date.now() - started} ms`);
  assert.equal((await s.api('GET', '/api/containers/bulk')).body.current_session, null, 'nothing stored');
  const atLimit = await s.api('POST', '/api/sessions', { container_name: 'bulk', network_rules: rules(1000) });
  assert.equal(atLimit.status, 200);
  assert.equal(atLimit.body.rules_created, 1000);

  const big = await startTestSluice({ config: { sessions: { max_rules_per_session: 10_000 }, limits: { max_api_body_bytes: 4 * 1024 * 1024 } } });
  t.after(() => big.close(true));
  const t0 = Date.now();
  const accepted = await timed('10k rules (allowed)', 15_000, big.api('POST', '/api/sessions', { container_name: 'bulk', network_rules: rules(10_000) }));
  assert.equal(accepted.status, 200, JSON.stringify(accepted.body).slice(0, 300));
  assert.equal(accepted.body.rules_created, 10_000);
  assert.ok(Date.now() - t0 < 10_000, `storing 10,000 rules took ${Date.now() - t0} ms`);
  const check = await big.api('POST', '/api/check', { container_name: 'bulk', destination: 'h9999.bulk.example', port: 443 });
  assert.deepEqual([check.body.decision, check.body.rule.destination_pattern], ['allow', 'h9999.bulk.example']);
  // Re-posting replaces them all, as one transaction.
  const replaced = await big.api('POST', '/api/sessions', { session_id: accepted.body.session_id, container_name: 'bulk', network_rules: rules(3) });
  assert.equal(replaced.body.rules_created, 3);
  assert.equal((await big.api('GET', `/api/rules?session_id=${accepted.body.session_id}`)).body.rules.length, 3);
});
