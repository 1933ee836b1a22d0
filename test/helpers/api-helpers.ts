// Shared pieces of the API and resolution end-to-end tests: requests through a session's
// proxy URL with the deciding layer/rule read back from the 403 body, a fake clock, and
// snapshots of everything the API lists (to prove a rejected request changed nothing).
import assert from 'node:assert/strict';
import { apiErrorSchema, containerListSchema, ruleListSchema, ruleWithUsageSchema, sessionDetailSchema, sessionListSchema } from '../../src/api/responses.js';
import { curl, expectBody, type Origin, type TestSluice } from './harness.js';

export interface ProxyResult {
  /** HTTP status from the proxy or origin; 0 when curl got no HTTP answer at all. */
  readonly status: number;
  readonly body: string;
  /** For a policy 403: the layer and rule named on the body's "decided by" line. */
  readonly layer: string | null;
  readonly ruleId: number | null;
}

/** One plain HTTP request through `proxyUrl` (the session's `proxy.http`, credentials included). */
export async function viaProxy(proxyUrl: string, target: string): Promise<ProxyResult> {
  // --noproxy '' keeps NO_PROXY in the environment from sending loopback traffic around the proxy.
  const r = await curl(['--noproxy', '', '-x', proxyUrl, '-w', '\n%{http_code}', target], 5000);
  const cut = r.stdout.lastIndexOf('\n');
  const status = Number(r.stdout.slice(cut + 1)) || 0;
  const body = cut < 0 ? '' : r.stdout.slice(0, cut);
  const m = /(global|session|builtin) rule #(\d+)/.exec(body);
  return { status, body, layer: m ? m[1]! : null, ruleId: m ? Number(m[2]) : null };
}

export function originUrl(origin: Origin, host: string = origin.host, path = '/'): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return `http://${h}:${origin.port}${path}`;
}

/** Asserts the request reached `origin` (its body names the origin's own address). */
export async function expectReach(proxyUrl: string, origin: Origin, host: string = origin.host, what = ''): Promise<void> {
  const r = await viaProxy(proxyUrl, originUrl(origin, host));
  assert.equal(r.status, 200, `${what} ${host}:${origin.port} should be allowed; got ${r.status}: ${r.body}`);
  assert.match(r.body, new RegExp(`^origin ${origin.host.replace(/[.:]/g, '\\$&')}:${origin.port} GET /`), what);
}

/**
 * Asserts a policy 403. `decidedBy` is `{layer, ruleId}` for a rule, or null for the
 * default deny (no rule matched).
 */
export async function expectBlocked(
  proxyUrl: string,
  origin: Origin,
  decidedBy: { layer: string; ruleId: number } | null,
  host: string = origin.host,
  what = '',
): Promise<ProxyResult> {
  const r = await viaProxy(proxyUrl, originUrl(origin, host));
  assert.equal(r.status, 403, `${what} ${host}:${origin.port} should be denied; got ${r.status}: ${r.body}`);
  assert.match(r.body, /^Blocked by sluice egress policy/, what);
  if (decidedBy === null) {
    assert.match(r.body, /no rule matched \(default deny\)/, `${what}: expected the default deny, got: ${r.body}`);
  } else {
    assert.deepEqual({ layer: r.layer, ruleId: r.ruleId }, decidedBy, `${what}: decided by the wrong rule: ${r.body}`);
  }
  return r;
}

/** A clock the test moves by hand; pass `() => clock.now` as the harness `clock`. */
export class FakeClock {
  now = Date.now();
  readonly fn = (): number => this.now;
  advance(seconds: number): void {
    this.now += seconds * 1000;
  }
}

/** Everything the API lists; equal snapshots mean nothing visible changed. */
export async function snapshot(s: TestSluice): Promise<unknown> {
  const sessions = await s.api('GET', '/api/sessions');
  const rules = await s.api('GET', '/api/rules');
  const containers = await s.api('GET', '/api/containers');
  assert.equal(sessions.status, 200);
  assert.equal(rules.status, 200);
  assert.equal(containers.status, 200);
  const details = [];
  for (const sess of expectBody(sessionListSchema, sessions.body, 'GET /api/sessions').sessions) {
    details.push(expectBody(sessionDetailSchema, (await s.api('GET', `/api/sessions/${sess.session_id}`)).body, 'GET /api/sessions/:id'));
  }
  // Usage counters move whenever the proxy is used; they are not configuration.
  const ruleList = expectBody(ruleListSchema, rules.body, 'GET /api/rules').rules.map(({ hit_count: _h, last_used_at: _l, ...rest }) => rest);
  return { sessions: sessions.body, details, rules: ruleList, containers: expectBody(containerListSchema, containers.body, 'GET /api/containers') };
}

/** Asserts a 400 in the API's error shape with at least one detail; returns the details. */
export function expect400(res: { status: number; body: unknown }, what: string): string[] {
  assert.equal(res.status, 400, `${what}: expected 400, got ${res.status} ${JSON.stringify(res.body)}`);
  const { details } = expectBody(apiErrorSchema, res.body, what);
  assert.ok(details.length > 0, `${what}: details must name the problem: ${JSON.stringify(res.body)}`);
  return details;
}

/** Posts a global rule and returns its id (asserting 200). */
export async function addRule(s: TestSluice, body: Record<string, unknown>): Promise<number> {
  const res = await s.api('POST', '/api/rules', body);
  assert.equal(res.status, 200, `POST /api/rules ${JSON.stringify(body)}: ${res.status} ${JSON.stringify(res.body)}`);
  return expectBody(ruleWithUsageSchema, res.body, 'POST /api/rules').id;
}

/** The id of a session's rule by its destination pattern (rules are listed with the session). */
export async function sessionRuleId(s: TestSluice, sessionId: string, destinationPattern: string, portPattern?: string): Promise<number> {
  const res = await s.api('GET', `/api/sessions/${sessionId}`);
  assert.equal(res.status, 200);
  const rule = expectBody(sessionDetailSchema, res.body, 'GET /api/sessions/:id').rules.find(
    (r) => r.destination_pattern === destinationPattern && (portPattern === undefined || r.port_pattern === portPattern),
  );
  assert.ok(rule, `session ${sessionId} has no rule for ${destinationPattern} ${portPattern ?? ''}`);
  return rule.id;
}

/** The builtin rule's id for a destination (seeded by migration 001). */
export async function builtinRuleId(s: TestSluice, destination: string): Promise<number> {
  const res = await s.api('GET', '/api/rules?layer=builtin');
  const rule = expectBody(ruleListSchema, res.body, 'GET /api/rules').rules.find((r) => r.destination_pattern === destination);
  assert.ok(rule, `no builtin rule for ${destination}`);
  return rule.id;
}
