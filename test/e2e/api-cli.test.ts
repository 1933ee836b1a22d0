// The `sluice` client subcommands against a real server: their effects checked through the
// API and the proxy, and their exit codes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { expectBlocked, expectReach, snapshot } from '../helpers/api-helpers.js';
import { run } from '../../src/cli/main.js';

let s: TestSluice;
let o2: Origin;
let o3: Origin;
before(async () => {
  [o2, o3] = await Promise.all([startOrigin('127.0.0.2'), startOrigin('127.0.0.3')]);
  s = await startTestSluice();
});
after(async () => {
  await s.close(true);
  await Promise.all([o2.close(), o3.close()]);
});

interface CliRun {
  code: number;
  out: string[];
  err: string[];
}

/** Runs the CLI with --api/--token for this server and an empty environment. */
async function cli(args: string[], token: string = s.sluice.apiToken): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run([...args, '--api', `http://127.0.0.1:${s.sluice.api.port}`, '--token', token], {
    out: (line) => void out.push(line),
    err: (line) => void err.push(line),
    env: {},
  });
  return { code, out, err };
}

test('session create: the session, its rules and a working proxy URL', async () => {
  const r = await cli(['session', 'create', '--container', 'cli-box', '--id', 'cli-1', '--ttl', '600', '--allow', `127.0.0.2:${o2.port}`, '--deny', '127.0.0.3', '--json']);
  assert.equal(r.code, 0, r.err.join('\n'));
  const created = JSON.parse(r.out.join('\n'));
  assert.equal(created.session_id, 'cli-1');
  assert.equal(created.rules_created, 2);

  const detail = (await s.api('GET', '/api/sessions/cli-1')).body;
  assert.equal(detail.container_name, 'cli-box');
  assert.equal(detail.ttl_seconds, 600);
  assert.deepEqual(
    detail.rules.map((x: any) => [x.destination_pattern, x.port_pattern, x.action]).sort(),
    [
      ['127.0.0.2', String(o2.port), 'allow'],
      ['127.0.0.3', '*', 'deny'],
    ],
  );
  await expectReach(created.proxy.http, o2);
  const deny = detail.rules.find((x: any) => x.action === 'deny').id;
  await expectBlocked(created.proxy.http, o3, { layer: 'session', ruleId: deny });
});

test('rule add: a global rule with container, port, notes and expiry', async () => {
  const r = await cli(['rule', 'add', '--dest', '127.0.0.2', '--port', String(o2.port), '--container', 'cli-*', '--deny', '--notes', 'from the cli', '--expires-in', '3600', '--json']);
  assert.equal(r.code, 0, r.err.join('\n'));
  const id = JSON.parse(r.out.join('\n')).id as number;
  const rule = (await s.api('GET', `/api/rules/${id}`)).body;
  assert.deepEqual(
    [rule.layer, rule.container_pattern, rule.destination_pattern, rule.port_pattern, rule.action, rule.notes],
    ['global', 'cli-*', '127.0.0.2', String(o2.port), 'deny', 'from the cli'],
  );
  assert.ok(Date.parse(rule.expires_at) > Date.now() + 3_500_000);

  // check: exit 1 on deny, naming the global rule; exit 0 on allow.
  const denied = await cli(['check', 'cli-box', '127.0.0.2', String(o2.port)]);
  assert.equal(denied.code, 1);
  assert.match(denied.out[0] ?? '', new RegExp(`^deny\\s+\\(layer=global rule=${id} reason=rule\\)`));
  const allowed = await cli(['check', 'cli-box', '127.0.0.1', '80']);
  assert.equal(allowed.code, 0);
  assert.match(allowed.out[0] ?? '', /^allow\s+\(layer=builtin rule=\d+ reason=rule\)/);
  assert.equal((await cli(['check', 'cli-box', '127.0.0.2', String(o2.port), '--json'])).code, 1);

  assert.equal((await cli(['rule', 'rm', String(id)])).code, 0);
  assert.equal((await s.api('GET', `/api/rules/${id}`)).status, 404);
  assert.equal((await cli(['check', 'cli-box', '127.0.0.2', String(o2.port)])).code, 0, 'the session rule decides again');
});

test('learn on / off: the operator switch, with its ttl', async () => {
  const on = await cli(['learn', 'on', 'cli-learn', '--ttl', '120']);
  assert.equal(on.code, 0, on.err.join('\n'));
  assert.match(on.out[0] ?? '', /^learning on for cli-learn until \d{4}-/);
  const c = (await s.api('GET', '/api/containers/cli-learn')).body;
  assert.equal(c.learning.active, true);
  assert.equal(c.learning.source, 'operator');
  assert.ok(Date.parse(c.learning.operator_switch.expires_at) > Date.now() + 100_000);
  const sess = await s.createSession({ container_name: 'cli-learn' });
  await expectReach(sess.proxy.http, o3);

  const off = await cli(['learn', 'off', 'cli-learn']);
  assert.equal(off.code, 0);
  assert.equal((await s.api('GET', '/api/containers/cli-learn')).body.learning.active, false);
  await expectBlocked(sess.proxy.http, o3, null);
});

test('failures: a wrong token exits 1 with the API error, bad input exits 2; neither changes anything', async () => {
  const before = await snapshot(s);
  const wrong = await cli(['rule', 'add', '--dest', '*', '--allow'], 'not-the-token');
  assert.equal(wrong.code, 1);
  assert.match(wrong.err.join('\n'), /401/);
  const usage = await cli(['session', 'create', '--container', 'cli-x', '--allow', '*.com']);
  assert.equal(usage.code, 2);
  const usage2 = await cli(['rule', 'add', '--dest', 'a.example', '--allow', '--deny']);
  assert.equal(usage2.code, 2);
  const conflict = await cli(['session', 'create', '--container', 'someone-else', '--id', 'cli-1']);
  assert.equal(conflict.code, 1);
  assert.match(conflict.err.join('\n'), /409/);
  assert.deepEqual(await snapshot(s), before);
});
