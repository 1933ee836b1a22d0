// `sluice log` and `sluice learn report|promote` against a real server: in-process through
// run(), and `log --follow` as a child process stopped with SIGINT.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { eventually, startOrigin, startTestSluice, type Origin, type SessionCreated, type TestSluice } from '../helpers/harness.js';
import { originUrl, viaProxy } from '../helpers/api-helpers.js';
import { decisions, mapResolver } from '../helpers/observe-helpers.js';
import { run } from '../../src/cli/main.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

let s: TestSluice;
let o2: Origin;
let o3: Origin;
let a: SessionCreated;
let b: SessionCreated;
before(async () => {
  [o2, o3] = await Promise.all([startOrigin('127.0.0.2'), startOrigin('127.0.0.3')]);
  s = await startTestSluice({ resolver: mapResolver({ 'a.cdn.example.test': '127.0.0.2', 'b.cdn.example.test': '127.0.0.2', 'other.test': '127.0.0.3' }) });
  a = await s.createSession({ container_name: 'cli-a', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(o2.port) }] });
  b = await s.createSession({ container_name: 'cli-b', network_rules: [{ destination_pattern: '127.0.0.3', port_pattern: String(o3.port) }] });
  assert.equal((await viaProxy(a.proxy.http, originUrl(o2, '127.0.0.2', '/first'))).status, 200);
  assert.equal((await viaProxy(a.proxy.http, 'http://127.0.0.9:81/')).status, 403);
  assert.equal((await viaProxy(b.proxy.http, originUrl(o3, '127.0.0.3', '/b'))).status, 200);
  assert.equal((await viaProxy(a.proxy.http, 'http://Deny.Example.TEST:82/')).status, 403);
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

function apiArgs(): string[] {
  return ['--api', `http://127.0.0.1:${s.sluice.api.port}`, '--token', s.sluice.apiToken];
}

async function cli(args: string[], signal?: AbortSignal, out: string[] = []): Promise<CliRun> {
  const err: string[] = [];
  const code = await run([...args, ...apiArgs()], { out: (line) => void out.push(...line.split('\n')), err: (line) => void err.push(line), env: {}, signal });
  return { code, out, err };
}

/** Data rows of a table (header dropped), split on runs of two or more spaces. */
function rows(out: string[]): string[][] {
  return out.slice(1).map((l) => l.split(/ {2,}/));
}

test('log: a table of decisions, newest first, with every filter', async () => {
  const all = await cli(['log']);
  assert.equal(all.code, 0, all.err.join('\n'));
  assert.match(all.out[0]!, /^ID\s+TIME\s+CONTAINER\s+PROTO\s+DESTINATION\s+DECISION\s+REASON\s+LAYER\s+RULE\s+BYTES\s+CLOSED$/);
  const ids = rows(all.out).map((r) => Number(r[0]));
  assert.equal(ids.length, 4);
  assert.deepEqual(ids, [...ids].sort((x, y) => y - x), 'newest first');
  const first = rows(all.out).at(-1)!;
  assert.deepEqual([first[2], first[3], first[4], first[5], first[6], first[7]], ['cli-a', 'http', `127.0.0.2:${o2.port}`, 'allow', 'rule', 'session']);
  assert.match(first[9]!, /^\d+\/\d+$/, 'bytes up/down once closed');
  assert.equal(first[10], 'completed');

  const deny = await cli(['log', '--decision', 'deny', '--container', 'cli-a']);
  assert.deepEqual(rows(deny.out).map((r) => [r[4], r[5], r[6]]), [
    ['deny.example.test:82', 'deny', 'default_deny'],
    ['127.0.0.9:81', 'deny', 'default_deny'],
  ]);
  assert.deepEqual(rows((await cli(['log', '--destination', 'DENY.example.test.'])).out).map((r) => r[4]), ['deny.example.test:82'], 'the destination as any spelling of it');
  assert.deepEqual(rows((await cli(['log', '--session', b.session_id])).out).map((r) => r[2]), ['cli-b']);
  assert.equal(rows((await cli(['log', '--limit', '2'])).out).length, 2);
  assert.equal(rows((await cli(['log', '--since', '1h'])).out).length, 4);
  assert.equal(rows((await cli(['log', '--since', String(Date.now() - 3_600_000), '--until', new Date(Date.now() + 60_000).toISOString()])).out).length, 4);
  assert.deepEqual((await cli(['log', '--since', new Date(Date.now() + 60_000).toISOString()])).out, ['no decisions']);
  const json = await cli(['log', '--json', '--container', 'cli-b']);
  const parsed = JSON.parse(json.out.join('\n'));
  assert.deepEqual(parsed.decisions.map((d: any) => [d.container, d.destination, d.decision]), [['cli-b', '127.0.0.3', 'allow']]);

  for (const bad of [
    ['--decision', 'maybe'],
    ['--limit', '0'],
    ['--limit', 'lots'],
    ['--since', 'yesterday'],
    ['--destination', 'not a host'],
    ['--container', 'bad name'],
  ]) {
    const r = await cli(['log', ...bad]);
    assert.equal(r.code, 2, `${bad.join(' ')}: ${r.err.join('\n')}`);
    assert.match(r.err.join('\n'), new RegExp(`^${bad[0]}: `));
  }
  const wrongToken = await run(['log', '--api', `http://127.0.0.1:${s.sluice.api.port}`, '--token', 'nope'], { out: () => undefined, err: () => undefined, env: {} });
  assert.equal(wrongToken, 1);
});

test('log --follow: recent history oldest first, then each new decision as it happens, until stopped', async () => {
  const controller = new AbortController();
  const out: string[] = [];
  const running = cli(['log', '--follow', '--container', 'cli-a', '--limit', '2'], controller.signal, out);
  await eventually(() => out.length >= 3, 3000, 'the header and two rows of history');
  assert.match(out[0]!, /^ID\s+TIME\s+CONTAINER/);
  assert.match(out[1]!, /127\.0\.0\.9:81\s+deny/, 'oldest of the two first');
  assert.match(out[2]!, /deny\.example\.test:82\s+deny/);

  assert.equal((await viaProxy(a.proxy.http, originUrl(o2, '127.0.0.2', '/live'))).status, 200);
  assert.equal((await viaProxy(b.proxy.http, originUrl(o3, '127.0.0.3', '/other-container'))).status, 200);
  assert.equal((await viaProxy(a.proxy.http, 'http://127.0.0.9:83/')).status, 403);
  await eventually(() => out.length >= 5, 3000, `two live lines; got ${out.join(' | ')}`);
  assert.match(out[3]!, new RegExp(`cli-a\\s+http\\s+127\\.0\\.0\\.2:${o2.port}\\s+allow\\s+rule\\s+session`));
  assert.match(out[4]!, /cli-a\s+http\s+127\.0\.0\.9:83\s+deny\s+default_deny/);
  const liveIds = [out[3], out[4]].map((l) => Number(l!.split(/\s+/)[0]));
  assert.ok(liveIds[1]! > liveIds[0]!);
  controller.abort();
  const done = await running;
  assert.equal(done.code, 0, done.err.join('\n'));
  assert.equal(out.length, 5, 'nothing from the other container');

  // --json: one JSON object per line.
  const jsonStop = new AbortController();
  const jsonOut: string[] = [];
  const jsonRun = cli(['log', '--follow', '--json', '--decision', 'deny', '--limit', '1'], jsonStop.signal, jsonOut);
  await eventually(() => jsonOut.length >= 1, 3000, 'history');
  assert.equal((await viaProxy(b.proxy.http, 'http://127.0.0.9:84/')).status, 403);
  assert.equal((await viaProxy(b.proxy.http, originUrl(o3))).status, 200, 'an allow: filtered out');
  await eventually(() => jsonOut.length >= 2, 3000, 'the live deny');
  const live = JSON.parse(jsonOut[1]!);
  assert.deepEqual([live.container, live.destination, live.port, live.decision, live.reason], ['cli-b', '127.0.0.9', 84, 'deny', 'default_deny']);
  jsonStop.abort();
  assert.equal((await jsonRun).code, 0);
  assert.equal(jsonOut.length, 2);
});

test('log --follow as a process: prints live decisions and exits 0 on SIGINT', async (t) => {
  const child = spawn(process.execPath, [MAIN, 'log', '--follow', '--container', 'cli-b', '--limit', '0', ...apiArgs()], { stdio: ['ignore', 'pipe', 'pipe'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  t.after(() => {
    clearTimeout(killer);
    child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  await eventually(() => stdout.startsWith('ID'), 5000, `the header; stderr: ${stderr}`);
  assert.equal((await viaProxy(b.proxy.http, originUrl(o3, '127.0.0.3', '/from-child'))).status, 200);
  await eventually(() => stdout.split('\n').length >= 3, 3000, 'the live line');
  assert.match(stdout.split('\n')[1]!, new RegExp(`cli-b\\s+http\\s+127\\.0\\.0\\.3:${o3.port}\\s+allow`));
  child.kill('SIGINT');
  assert.equal(await exited, 0, stderr);
});

test('log --limit 0 means no history', async () => {
  const r = await cli(['log', '--limit', '0']);
  assert.equal(r.code, 2, 'history is 1..100000 without --follow');
});

test('learn report: a table, or network_rules as YAML/JSON ready for a session; learn promote', async () => {
  const learner = await s.createSession({ container_name: 'cli-learn' });
  assert.equal((await cli(['learn', 'on', 'cli-learn'])).code, 0);
  for (const host of ['a.cdn.example.test', 'b.cdn.example.test']) assert.equal((await viaProxy(learner.proxy.http, originUrl(o2, host, '/l'))).status, 200);
  assert.equal((await viaProxy(learner.proxy.http, originUrl(o2, 'a.cdn.example.test', '/again'))).status, 200);
  assert.equal((await viaProxy(learner.proxy.http, originUrl(o3, 'other.test'))).status, 200);
  assert.equal((await cli(['learn', 'off', 'cli-learn'])).code, 0);

  const table = await cli(['learn', 'report', 'cli-learn']);
  assert.equal(table.code, 0, table.err.join('\n'));
  assert.match(table.out[0]!, /^DESTINATION\s+PORT\s+COUNT\s+FIRST_SEEN\s+LAST_SEEN\s+WOULD_BE\s+LAYER\s+RULE$/);
  assert.deepEqual(rows(table.out).map((r) => [r[0], r[1], r[2], r[5]]), [
    ['a.cdn.example.test', String(o2.port), '2', 'deny'],
    ['b.cdn.example.test', String(o2.port), '1', 'deny'],
    ['other.test', String(o3.port), '1', 'deny'],
  ]);

  const yaml = await cli(['learn', 'report', 'cli-learn', '--format', 'yaml']);
  assert.equal(yaml.code, 0);
  assert.match(yaml.out[0]!, /^network_rules:/);
  const rules = parseYaml(yaml.out.join('\n')).network_rules;
  assert.deepEqual(rules, [
    { destination_pattern: 'a.cdn.example.test', port_pattern: String(o2.port), action: 'allow' },
    { destination_pattern: 'b.cdn.example.test', port_pattern: String(o2.port), action: 'allow' },
    { destination_pattern: 'other.test', port_pattern: String(o3.port), action: 'allow' },
  ]);
  const json = JSON.parse((await cli(['learn', 'report', 'cli-learn', '--format', 'json'])).out.join('\n'));
  assert.deepEqual(json.network_rules, rules);
  const collapsed = parseYaml((await cli(['learn', 'report', 'cli-learn', '--format', 'yaml', '--collapse-subdomains'])).out.join('\n')).network_rules;
  assert.deepEqual(collapsed.map((r: any) => r.destination_pattern), ['*.cdn.example.test', 'other.test']);

  // The YAML attaches to a session as is: the container reaches exactly those.
  const attached = await s.createSession({ container_name: 'cli-learn', network_rules: rules });
  assert.equal((await viaProxy(attached.proxy.http, originUrl(o2, 'b.cdn.example.test'))).status, 200);
  assert.equal((await viaProxy(attached.proxy.http, originUrl(o3, 'other.test'))).status, 200);
  assert.equal((await viaProxy(attached.proxy.http, originUrl(o3, '127.0.0.3'))).status, 403);

  assert.deepEqual((await cli(['learn', 'report', 'nobody'])).out, ['nothing learned for nobody (learning is off)']);
  assert.deepEqual(parseYaml((await cli(['learn', 'report', 'nobody', '--format', 'yaml'])).out.join('\n')), { network_rules: [] });
  const badFormat = await cli(['learn', 'report', 'cli-learn', '--format', 'xml']);
  assert.equal(badFormat.code, 2);
  assert.match(badFormat.err.join('\n'), /--format: must be table, yaml or json/);
});

test('learn promote: container or global scope, collapse, chosen destinations; the rules it made', async () => {
  const learner = await s.createSession({ container_name: 'cli-promo', allow_all: true });
  for (const host of ['a.cdn.example.test', 'b.cdn.example.test']) assert.equal((await viaProxy(learner.proxy.http, originUrl(o2, host))).status, 200);
  assert.equal((await viaProxy(learner.proxy.http, originUrl(o3, 'other.test'))).status, 200);

  const some = await cli(['learn', 'promote', 'cli-promo', '--collapse-subdomains', '--destination', 'A.CDN.example.test', '--destination', 'b.cdn.example.test']);
  assert.equal(some.code, 0, some.err.join('\n'));
  assert.equal(some.out[0], 'created 1 rule for cli-promo:');
  assert.match(some.out[1]!, /^ID\s+LAYER\s+SESSION\s+CONTAINER\s+DESTINATION\s+PORTS\s+ACTION/);
  assert.match(some.out[2]!, new RegExp(`^\\d+\\s+global\\s+-\\s+cli-promo\\s+\\*\\.cdn\\.example\\.test\\s+${o2.port}\\s+allow`));

  const rest = await cli(['learn', 'promote', 'cli-promo', '--scope', 'global', '--json']);
  assert.equal(rest.code, 0);
  const res = JSON.parse(rest.out.join('\n'));
  assert.deepEqual(res.created.map((r: any) => [r.container_pattern, r.destination_pattern, r.port_pattern]), [['*', 'other.test', String(o3.port)]]);
  assert.deepEqual(res.skipped.map((x: any) => x.destination).sort(), ['a.cdn.example.test', 'b.cdn.example.test']);

  const again = await cli(['learn', 'promote', 'cli-promo']);
  assert.equal(again.out[0], 'no rules created for cli-promo');
  assert.match(again.out[1]!, /^skipped 3: a\.cdn\.example\.test:\d+ \(already allowed\), /);

  const ruleList = (await s.api('GET', '/api/rules?layer=global')).body.rules.map((r: any) => r.destination_pattern).sort();
  assert.deepEqual(ruleList, ['*.cdn.example.test', 'other.test']);
  for (const bad of [['--scope', 'everyone'], ['--destination', 'has space']]) {
    const r = await cli(['learn', 'promote', 'cli-promo', ...bad]);
    assert.equal(r.code, 2, bad.join(' '));
  }
  assert.equal((await cli(['learn', 'promote'])).code, 2, 'CONTAINER is required');
  assert.ok((await decisions(s, { container: 'cli-promo' })).length >= 3);
});
