// The API's answers against their schemas (src/api/responses.ts) on a real server: every
// route the server registers is in ROUTE_RESPONSES and is called here; every answer, error
// and live event parses with its strict schema (a field added, dropped or retyped fails);
// and every nullable field is seen both null and not, every optional one both present and
// absent, so no field is typed looser than what the server does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { z } from 'zod';
import { ROUTE_RESPONSES, apiErrorSchema, eventDataSchema } from '../../src/api/responses.js';
import { createApiServer, type ApiOptions } from '../../src/api/server.js';
import { EVENT_TYPES } from '../../src/events/bus.js';
import { eventually, expectBody } from '../helpers/harness.js';
import { originUrl, viaProxy } from '../helpers/api-helpers.js';
import { closedPort, echoFor, originFor, sluiceFor } from '../helpers/proxy-helpers.js';
import { connectTunnel, mapResolver, metricsText, tapEvents } from '../helpers/observe-helpers.js';

type Routes = typeof ROUTE_RESPONSES;
type JsonRoute = { [K in keyof Routes]: Routes[K] extends z.ZodType ? K : never }[keyof Routes];

// ---- walking schemas -------------------------------------------------------------

/** What a nullable field was seen as (`null`/`value`), or an optional one (`absent`/`present`). */
type Sightings = Map<string, Set<string>>;

// A field is named after the object schema it belongs to (by the first path that object
// turned up at), not after each route using it: a Rule's session_id is nullable because
// some rules have none, even though the rules of a session always do.
const objectNames = new Map<z.ZodType, string>();
function nameOf(object: z.ZodType, path: string): string {
  const name = objectNames.get(object) ?? path;
  objectNames.set(object, name);
  return name;
}

/** Nullable and optional fields under `schema`, by name, with what each must be seen as. */
function variableFields(schema: z.ZodType, path: string, out: Map<string, string[]>): void {
  if (schema instanceof z.ZodNullable) {
    out.set(path, ['null', 'value']);
    variableFields(schema.unwrap() as z.ZodType, path, out);
  } else if (schema instanceof z.ZodOptional) {
    out.set(path, ['absent', 'present']);
    variableFields(schema.unwrap() as z.ZodType, path, out);
  } else if (schema instanceof z.ZodObject) {
    const name = nameOf(schema, path);
    for (const [key, field] of Object.entries(schema.shape)) variableFields(field as z.ZodType, `${name}.${key}`, out);
  } else if (schema instanceof z.ZodArray) {
    variableFields(schema.element as z.ZodType, `${path}[]`, out);
  } else if (schema instanceof z.ZodDiscriminatedUnion) {
    schema.options.forEach((option, i) => variableFields(option as z.ZodType, `${path}|${i}`, out));
  }
}

/** Records how each nullable/optional field of `value` (already parsed with `schema`) turned up. */
function sight(schema: z.ZodType, value: unknown, path: string, seen: Sightings): void {
  const mark = (what: string): void => void seen.set(path, (seen.get(path) ?? new Set()).add(what));
  if (schema instanceof z.ZodNullable) {
    mark(value === null ? 'null' : 'value');
    if (value !== null) sight(schema.unwrap() as z.ZodType, value, path, seen);
  } else if (schema instanceof z.ZodOptional) {
    mark(value === undefined ? 'absent' : 'present');
    if (value !== undefined) sight(schema.unwrap() as z.ZodType, value, path, seen);
  } else if (schema instanceof z.ZodObject) {
    const name = nameOf(schema, path);
    const obj = value as Record<string, unknown>;
    for (const [key, field] of Object.entries(schema.shape)) sight(field as z.ZodType, obj[key], `${name}.${key}`, seen);
  } else if (schema instanceof z.ZodArray) {
    for (const item of value as unknown[]) sight(schema.element as z.ZodType, item, `${path}[]`, seen);
  } else if (schema instanceof z.ZodDiscriminatedUnion) {
    const i = schema.options.findIndex((option) => (option as z.ZodType).safeParse(value).success);
    sight(schema.options[i] as z.ZodType, value, `${path}|${i}`, seen);
  }
}

/** Problems that would let drift through: objects that accept unknown keys, transforms (the client returns answers as sent). */
function looseParts(schema: z.ZodType, path: string, out: string[]): void {
  if (schema instanceof z.ZodNullable || schema instanceof z.ZodOptional) {
    looseParts(schema.unwrap() as z.ZodType, path, out);
  } else if (schema instanceof z.ZodObject) {
    if (!(schema.def.catchall instanceof z.ZodNever)) out.push(`${path}: not a strict object`);
    for (const [key, field] of Object.entries(schema.shape)) looseParts(field as z.ZodType, `${path}.${key}`, out);
  } else if (schema instanceof z.ZodArray) {
    looseParts(schema.element as z.ZodType, `${path}[]`, out);
  } else if (schema instanceof z.ZodDiscriminatedUnion) {
    schema.options.forEach((option, i) => looseParts(option as z.ZodType, `${path}|${i}`, out));
  } else if (schema instanceof z.ZodPipe || schema instanceof z.ZodTransform || schema instanceof z.ZodDefault) {
    out.push(`${path}: transforms the answer`);
  }
}

const jsonRoutes = (Object.keys(ROUTE_RESPONSES) as Array<keyof Routes>).filter((r): r is JsonRoute => typeof ROUTE_RESPONSES[r] !== 'string');

test('the response schemas are strict objects all the way down and transform nothing', () => {
  const problems: string[] = [];
  for (const route of jsonRoutes) looseParts(ROUTE_RESPONSES[route], route, problems);
  looseParts(eventDataSchema, 'event', problems);
  looseParts(apiErrorSchema, 'error', problems);
  assert.deepEqual(problems, []);
  // The walk itself finds what it is meant to find.
  const loose: string[] = [];
  looseParts(z.strictObject({ a: z.array(z.object({ b: z.string() })), c: z.string().transform(Number).optional() }), 'x', loose);
  assert.deepEqual(loose, ['x.a[]: not a strict object', 'x.c: transforms the answer']);
});

/** The server's routes (without HEAD), from fastify's own table; handlers are never called. */
async function registeredRoutes(): Promise<string[]> {
  const app = createApiServer({ token: 't'.repeat(32), maxBodyBytes: 1024, logger: pino({ level: 'silent' }), health: () => ({}) } as unknown as ApiOptions);
  await app.ready();
  const stack: string[] = [];
  const routes: string[] = [];
  // Lines look like `│   └── /:id (GET, HEAD, DELETE)`; four columns per level.
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│├└─\s]*?)(\/\S*) \(([^)]*)\)$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4 - 1;
    stack.length = depth;
    const path = (stack[depth - 1] ?? '') + m[2]!;
    stack.push(path);
    for (const method of m[3]!.split(', ')) if (method !== 'HEAD' && method !== '-') routes.push(`${method} ${path}`);
  }
  await app.close();
  return routes.sort();
}

test('every route the server registers has its answer in ROUTE_RESPONSES, and no other', async () => {
  const routes = await registeredRoutes();
  assert.ok(routes.includes('POST /api/sessions/:id/heartbeat') && routes.includes('GET /healthz'), `the route table was read: ${routes.join(', ')}`);
  assert.deepEqual(routes, Object.keys(ROUTE_RESPONSES).sort());
});

// ---- the server ---------------------------------------------------------------------

test('every answer, error and event of a real server parses with its schema, each nullable field seen both ways', async (t) => {
  const origin = await originFor(t, '127.0.0.2');
  const echo = await echoFor(t, '127.0.0.3');
  const closed = await closedPort('127.0.0.4');
  const s = await sluiceFor(t, {
    resolver: mapResolver({ 'named.test': '127.0.0.2' }),
    // `username` identity lets a container without a session connect (learning mode), so
    // connections and decisions without a session_id happen too.
    config: { identity: 'username', sessions: { sweep_interval_ms: 50 }, limits: { max_api_body_bytes: 4096 } },
  });
  const tap = await tapEvents(t, s);
  const called = new Set<string>(['GET /api/events']);
  const seen: Sightings = new Map();
  const errors = new Set<number>();

  /** A 200 from `route` (its template) at `path`, parsed with the route's schema. */
  async function call<R extends JsonRoute>(route: R, path: string, body?: unknown): Promise<z.output<Routes[R]>> {
    const method = route.slice(0, route.indexOf(' '));
    const res = await s.api(method, path, body);
    assert.equal(res.status, 200, `${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    const schema: z.ZodType = ROUTE_RESPONSES[route];
    const parsed = expectBody(schema, res.body, `${method} ${path}`);
    sight(schema, res.body, route, seen);
    called.add(route);
    return parsed as z.output<Routes[R]>;
  }

  /** A refusal in the API's one error shape. */
  async function refused(status: number, res: Promise<{ status: number; body: unknown }>, what: string): Promise<void> {
    const r = await res;
    assert.equal(r.status, status, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
    expectBody(apiErrorSchema, r.body, what);
    sight(apiErrorSchema, r.body, 'error', seen);
    errors.add(status);
  }

  const base = `http://127.0.0.1:${s.sluice.api.port}`;
  const auth = { authorization: `Bearer ${s.sluice.apiToken}` };
  const ports = { origin: String(origin.port), echo: String(echo.port) };

  // ---- sessions: without and with metadata, source addresses and each kind of limit
  const plainBody = {
    session_id: 'plain',
    container_name: 'box-plain',
    network_rules: [
      { destination_pattern: '127.0.0.2', port_pattern: ports.origin, notes: 'the origin' },
      { destination_pattern: 'named.test', port_pattern: ports.origin },
      { destination_pattern: '127.0.0.3', port_pattern: ports.echo },
      { destination_pattern: '127.0.0.4', port_pattern: String(closed) },
    ],
  };
  const plain = await call('POST /api/sessions', '/api/sessions', plainBody);
  await call('POST /api/sessions', '/api/sessions', plainBody); // re-posted: session.updated
  await call('POST /api/sessions', '/api/sessions', { session_id: 'rich', container_name: 'box-rich', metadata: { owner: 'ci', run: 7 }, source_ips: ['10.1.2.3'], limits: { max_connections: 50 } });
  await call('POST /api/sessions', '/api/sessions', { session_id: 'paced', container_name: 'box-paced', ttl_seconds: 600, limits: { connections_per_second: 100 } });
  // allow_all: learning mode by session; its deny rule is what the rules alone would decide.
  const open = await call('POST /api/sessions', '/api/sessions', {
    session_id: 'open',
    container_name: 'box-open',
    allow_all: true,
    network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: ports.origin }, { destination_pattern: 'denied.test', action: 'deny' }],
  });
  await call('POST /api/sessions', '/api/sessions', { session_id: 'brief', container_name: 'box-brief', ttl_seconds: 1 });
  await call('GET /api/sessions', '/api/sessions');
  await call('GET /api/sessions/:id', '/api/sessions/plain');
  await call('GET /api/sessions/:id', '/api/sessions/rich');
  await call('POST /api/sessions/:id/heartbeat', '/api/sessions/plain/heartbeat');

  // ---- global rules: with and without expiry and notes
  const expiring = await call('POST /api/rules', '/api/rules', { destination_pattern: '127.0.0.9', action: 'deny', expires_in_seconds: 3600, notes: 'for an hour' });
  const fence = await call('POST /api/rules', '/api/rules', { container_pattern: 'box-*', destination_pattern: '127.0.0.8', action: 'deny' });
  await call('GET /api/rules/:id', `/api/rules/${fence.id}`);
  await call('PATCH /api/rules/:id', `/api/rules/${expiring.id}`, { notes: 'patched' });

  // ---- learning: the operator switch for a container without a session, with a TTL
  await call('PUT /api/containers/:name/learning', '/api/containers/box-loner/learning', { enabled: true, ttl_seconds: 600 });
  await call('PUT /api/containers/:name/learning', '/api/containers/box-quiet/learning', { enabled: true });
  await call('PUT /api/containers/:name/learning', '/api/containers/box-quiet/learning', { enabled: false });

  // ---- traffic: allowed, denied, unidentified, failing upstream, learned, held open
  assert.equal((await viaProxy(plain.proxy.http, originUrl(origin))).status, 200);
  assert.equal((await viaProxy(plain.proxy.http, 'http://127.0.0.7:81/')).status, 403);
  assert.equal((await viaProxy(s.httpProxy, originUrl(origin))).status, 407);
  assert.equal((await viaProxy(plain.proxy.http, `http://127.0.0.4:${closed}/`)).status, 502);
  assert.equal((await viaProxy(open.proxy.http, originUrl(origin))).status, 200);
  const held = await connectTunnel(t, s, 'box-plain', plain.proxy_token, `127.0.0.3:${echo.port}`);
  const loner = await connectTunnel(t, s, 'box-loner', 'any', `127.0.0.3:${echo.port}`);

  const listed = await call('GET /api/connections', '/api/connections');
  assert.equal(listed.connections.length, 2, JSON.stringify(listed));
  await call('GET /api/connections', '/api/connections?container=box-plain');
  const lonerConnection = listed.connections.find((c) => c.container === 'box-loner');
  assert.ok(lonerConnection);
  await call('DELETE /api/connections/:id', `/api/connections/${lonerConnection.id}`);
  await eventually(() => loner.closed, 2000, 'the tunnel closed by id to close');
  assert.equal(held.closed, false);

  // ---- checks: each way a verdict comes about
  const check = (body: Record<string, unknown>) => call('POST /api/check', '/api/check', body);
  assert.equal((await check({ container_name: 'box-plain', destination: '127.0.0.2', port: origin.port })).layer, 'session');
  assert.equal((await check({ container_name: 'box-plain', destination: '127.0.0.8', port: 80 })).layer, 'global');
  assert.equal((await check({ container_name: 'box-plain', destination: '127.0.0.9', port: 80 })).rule?.id, expiring.id);
  assert.equal((await check({ container_name: 'box-none', destination: '127.0.0.7', port: 80 })).reason, 'default_deny');
  assert.equal((await check({ container_name: 'box-open', destination: 'denied.test', port: 80 })).would_be?.layer, 'session');
  assert.equal((await check({ container_name: 'box-loner', destination: 'anywhere.test', port: 80 })).learning, 'operator');
  assert.deepEqual((await check({ container_name: 'box-plain', destination: 'named.test', port: origin.port, resolve: true })).addresses, ['127.0.0.2']);
  assert.equal((await check({ container_name: 'box-loner', destination: 'nowhere.test', port: 80, resolve: true })).dns_error, 'dns_error');

  // ---- containers and what learning mode saw
  await call('GET /api/containers', '/api/containers');
  await call('GET /api/containers/:name', '/api/containers/box-plain');
  await call('GET /api/containers/:name', '/api/containers/box-open');
  await call('GET /api/containers/:name/learned', '/api/containers/box-open/learned');
  await call('GET /api/containers/:name/learned', '/api/containers/box-loner/learned');
  const promoted = await call('POST /api/containers/:name/learned/promote', '/api/containers/box-loner/learned/promote', {});
  assert.equal(promoted.created.length, 1);
  assert.equal((await call('POST /api/containers/:name/learned/promote', '/api/containers/box-open/learned/promote', {})).skipped.length, 1);

  // ---- the audit trail, once the closes are recorded; rules with their usage
  const settled = async (): Promise<boolean> => {
    const page = await call('GET /api/decisions', '/api/decisions?limit=1000');
    return page.decisions.some((d) => d.error !== null) && page.decisions.filter((d) => d.close_reason !== null).length >= 3;
  };
  for (let i = 0; !(await settled()); i++) {
    assert.ok(i < 100, 'closes and upstream failures reach the audit trail');
    await new Promise((r) => setTimeout(r, 20));
  }
  await call('GET /api/decisions', '/api/decisions?limit=1');
  await call('GET /api/rules', '/api/rules');
  await call('GET /api/rules', '/api/rules?layer=session&container=box-plain');

  // ---- the rest of the lifecycle
  await tap.until((es) => es.some((e) => e.type === 'session.expired'), 4000, 'the brief session to expire');
  await call('DELETE /api/rules/:id', `/api/rules/${expiring.id}`);
  await call('DELETE /api/sessions/:id', '/api/sessions/rich');
  await call('GET /healthz', '/healthz');
  assert.match(await metricsText(s), /sluice_/);
  called.add('GET /metrics');

  // ---- refusals, all in the one error shape
  const raw = (path: string, init: RequestInit) => fetch(base + path, init).then(async (r) => ({ status: r.status, body: (await r.json()) as unknown }));
  await refused(400, s.api('POST', '/api/sessions', { container_name: 'bad name' }), 'bad input');
  await refused(400, s.api('POST', '/api/rules', { destination_pattern: '*.com', action: 'allow' }), 'a pattern the control plane refuses');
  await refused(400, raw('/api/rules', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{' }), 'malformed JSON');
  await refused(400, raw('/api/sessions/%c0%ae', { headers: auth }), 'a target the router cannot decode');
  await refused(401, s.api('GET', '/api/sessions', undefined, null), 'no token');
  await refused(404, s.api('GET', '/api/nothing-here'), 'no such route');
  await refused(404, s.api('GET', '/api/rules/999999'), 'no such rule');
  await refused(404, s.api('DELETE', '/api/connections/999999'), 'no such connection');
  await refused(409, s.api('POST', '/api/sessions', { session_id: 'plain', container_name: 'box-other' }), 'a session of another container');
  await refused(413, raw('/api/rules', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ notes: 'x'.repeat(5000) }) }), 'too large');
  await refused(415, raw('/api/rules', { method: 'POST', headers: { ...auth, 'content-type': 'application/xml' }, body: '<rule/>' }), 'a content type the API does not read');
  assert.deepEqual([...errors].sort(), [400, 401, 404, 409, 413, 415]);

  // ---- live events
  await tap.close();
  const eventTypes = new Set<string>();
  for (const e of tap.events) {
    const data = expectBody(eventDataSchema, e.data, `event ${e.type}`);
    assert.equal(data.type, e.type);
    assert.equal(String(data.id), e.id);
    sight(eventDataSchema, e.data, 'event', seen);
    eventTypes.add(e.type);
  }
  assert.deepEqual([...eventTypes].sort(), [...EVENT_TYPES].sort(), 'every kind of event was seen');

  // ---- coverage: every route, and every nullable/optional field both ways
  assert.deepEqual([...called].sort(), Object.keys(ROUTE_RESPONSES).sort(), 'every route was called');
  const expected = new Map<string, string[]>();
  for (const route of jsonRoutes) variableFields(ROUTE_RESPONSES[route], route, expected);
  variableFields(eventDataSchema, 'event', expected);
  variableFields(apiErrorSchema, 'error', expected);
  const unseen = [...expected].flatMap(([path, ways]) => ways.filter((way) => !seen.get(path)?.has(way)).map((way) => `${path} never ${way}`));
  assert.deepEqual(unseen, [], 'a field typed nullable (or optional) that is never null (or absent) is typed too loosely, or untested');
});

test('the walk that checks coverage sees what it is meant to', () => {
  const shared = z.strictObject({ c: z.number().optional() });
  const schema = z.strictObject({ a: z.string().nullable(), b: z.array(shared), d: shared.nullable() });
  const expected = new Map<string, string[]>();
  variableFields(schema, 'r', expected);
  assert.deepEqual([...expected], [
    ['r.a', ['null', 'value']],
    ['r.b[].c', ['absent', 'present']],
    ['r.d', ['null', 'value']],
  ]);
  const seen: Sightings = new Map();
  sight(schema, { a: null, b: [{ c: 1 }], d: {} }, 'r', seen);
  assert.deepEqual([...seen].map(([k, v]) => [k, [...v].sort()]), [
    ['r.a', ['null']],
    ['r.b[].c', ['absent', 'present']],
    ['r.d', ['value']],
  ], 'one object schema used in two places is one set of fields');
});
