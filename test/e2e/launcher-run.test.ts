// `sluice run` and container/launch.mjs against a real sluice: the CLI runs as a child
// process (node dist/src/cli/main.js run ...) so the proxy's event loop is never blocked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually, startOrigin, startTestSluice, type TestSluice } from '../helpers/harness.js';
import { tempDir } from '../helpers/temp-dir.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const LAUNCH = fileURLToPath(new URL('../../../container/launch.mjs', import.meta.url));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Running {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  done: Promise<Run>;
}

/** Spawns node with `args`; killed after `timeoutMs` so a hang fails the test instead of the suite. */
function startNode(args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 15_000): Running {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<Run>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

function apiArgs(s: TestSluice): string[] {
  return ['--api', `http://127.0.0.1:${s.sluice.api.port}`, '--token', s.sluice.apiToken];
}

function sluiceRun(s: TestSluice, args: string[], env?: NodeJS.ProcessEnv): Running {
  const [opts, command] = splitAt(args);
  return startNode([MAIN, 'run', ...apiArgs(s), ...opts, '--', ...command], env);
}

function splitAt(args: string[]): [string[], string[]] {
  const i = args.indexOf('--');
  return i < 0 ? [args, []] : [args.slice(0, i), args.slice(i + 1)];
}

async function containersWithSessions(s: TestSluice): Promise<string[]> {
  const res = await s.api<{ sessions: Array<{ container_name: string }> }>('GET', '/api/sessions');
  assert.equal(res.status, 200);
  return res.body.sessions.map((x) => x.container_name);
}

test('sluice run: allowed and denied destinations, proxy environment, exit codes, session cleanup', async (t) => {
  const origin = await startOrigin('127.0.0.2');
  const other = await startOrigin('127.0.0.3');
  const s = await startTestSluice();
  t.after(async () => {
    await s.close(true);
    await origin.close();
    await other.close();
  });
  const allow = ['--allow', `127.0.0.2:${origin.port}`];

  await t.test('an allowed destination is reached through the session', async () => {
    const r = await sluiceRun(s, ['--container', 'run-ok', ...allow, '--', 'curl', '-sS', '--max-time', '5', `http://${origin.authority}/hello`]).done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /origin 127\.0\.0\.2:\d+ GET \/hello/);
    assert.equal(origin.requests.length, 1);
  });

  await t.test('SOCKS5 through ALL_PROXY works too', async () => {
    const r = await sluiceRun(s, [...allow, '--', 'sh', '-c', `curl -sS --max-time 5 -x "$ALL_PROXY" http://${origin.authority}/socks`]).done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /GET \/socks/);
  });

  await t.test('a denied destination gets 403 and the command its own failure status', async () => {
    const r = await sluiceRun(s, ['--container', 'run-deny', ...allow, '--', 'curl', '-sS', '-f', '--max-time', '5', `http://${other.authority}/`]).done;
    assert.equal(r.code, 22, 'curl -f exits 22 on an HTTP error, and sluice run passes it on');
    assert.match(r.stderr, /403/);
    assert.equal(other.requests.length, 0);

    const shown = await sluiceRun(s, ['--container', 'run-deny', '--', 'curl', '-sS', '-i', '--max-time', '5', `http://${other.authority}/`]).done;
    assert.match(shown.stdout, /^HTTP\/1\.1 403/);
    assert.match(shown.stdout, /Blocked by sluice egress policy/);
  });

  await t.test('the command gets the proxy variables, and its exit status is ours', async () => {
    const script = 'const e=process.env;console.log(JSON.stringify(Object.fromEntries(["HTTP_PROXY","HTTPS_PROXY","ALL_PROXY","NO_PROXY","http_proxy","https_proxy","all_proxy","no_proxy"].map(k=>[k,e[k]]))));process.exit(7)';
    const r = await sluiceRun(s, ['--', process.execPath, '-e', script]).done;
    assert.equal(r.code, 7, r.stderr);
    const env = JSON.parse(r.stdout) as Record<string, string>;
    const http = new RegExp(`^http://(run-[0-9a-f]{8}):[A-Za-z0-9_-]+@127\\.0\\.0\\.1:${s.sluice.http.port}$`);
    assert.match(env.HTTP_PROXY ?? '', http);
    assert.equal(env.HTTPS_PROXY, env.HTTP_PROXY);
    assert.equal(env.http_proxy, env.HTTP_PROXY);
    assert.equal(env.https_proxy, env.HTTP_PROXY);
    assert.match(env.ALL_PROXY ?? '', new RegExp(`^socks5h://run-[0-9a-f]{8}:[A-Za-z0-9_-]+@127\\.0\\.0\\.1:${s.sluice.socks.port}$`));
    assert.equal(env.all_proxy, env.ALL_PROXY);
    assert.equal(env.NO_PROXY, '');
    assert.equal(env.no_proxy, '');

    const killed = await sluiceRun(s, ['--', 'sh', '-c', 'kill -KILL $$']).done;
    assert.equal(killed.code, 128 + 9);
    // An absolute path: a PATH search can end in EACCES (126) on an unreadable PATH entry.
    const missing = await sluiceRun(s, ['--', '/nonexistent/no-such-command-for-sluice-run']).done;
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /cannot run \/nonexistent\/no-such-command-for-sluice-run/);
  });

  await t.test('signals go to the command; the session lives (heartbeats) while it runs and is deleted after', async () => {
    const script = [
      "process.on('SIGTERM', () => { console.log('child got SIGTERM'); process.exit(3); });",
      "setInterval(() => {}, 1000);",
      "console.log('ready');",
    ].join('');
    const running = sluiceRun(s, ['--container', 'run-sig', '--ttl', '1', ...allow, '--', process.execPath, '-e', script]);
    await eventually(() => running.stdout().includes('ready'), 5000, 'the command to start');
    assert.ok((await containersWithSessions(s)).includes('run-sig'));
    // TTL 1 s: without heartbeats (every ~333 ms) the session would have expired by now.
    await new Promise((r) => setTimeout(r, 1500));
    const container = await s.api<{ current_session: { rule_count: number } | null }>('GET', '/api/containers/run-sig');
    assert.equal(container.body.current_session?.rule_count, 1, 'session still current after more than its TTL');
    running.child.kill('SIGTERM');
    const r = await running.done;
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, /child got SIGTERM/);
  });

  await t.test('no session is left behind by any of the runs', async () => {
    assert.deepEqual(await containersWithSessions(s), []);
  });

  await t.test('usage errors and refusals: exit 2 or 1, and the command never runs', async () => {
    const noCommand = await startNode([MAIN, 'run', ...apiArgs(s)]).done;
    assert.equal(noCommand.code, 2);
    assert.match(noCommand.stderr, /missing required argument 'command'/);

    const badAllow = await sluiceRun(s, ['--allow', 'host:0', '--', 'sh', '-c', 'echo ran']).done;
    assert.equal(badAllow.code, 2);
    assert.doesNotMatch(badAllow.stdout, /ran/);

    // Without `ip` on PATH (or without root) --isolate says why and exits 2.
    const noIp = await sluiceRun(s, ['--isolate', '--', 'sh', '-c', 'echo ran'], { ...process.env, PATH: '/nonexistent-sluice-path' }).done;
    assert.equal(noIp.code, 2, noIp.stderr);
    assert.match(noIp.stderr, /cannot isolate: .*(iproute2|root|Linux)/);
    assert.doesNotMatch(noIp.stdout, /ran/);

    const badToken = await startNode([MAIN, 'run', '--api', `http://127.0.0.1:${s.sluice.api.port}`, '--token', 'wrong-token', '--', 'sh', '-c', 'echo ran']).done;
    assert.equal(badToken.code, 1);
    assert.match(badToken.stderr, /401/);
    assert.doesNotMatch(badToken.stdout, /ran/);
    assert.deepEqual(await containersWithSessions(s), []);
  });
});

test('container/launch.mjs creates the session, passes its credentials to docker run, and deletes it', async (t) => {
  const origin = await startOrigin('127.0.0.2');
  const s = await startTestSluice();
  const dir = tempDir('sluice-launch-');
  t.after(async () => {
    await s.close(true);
    await origin.close();
    rmSync(dir, { recursive: true, force: true });
  });
  // A stand-in for the docker client: prints its arguments, reaches the origin through the
  // proxy variables it was given (curl reads them), and exits like a container would.
  const fakeDocker = join(dir, 'docker');
  writeFileSync(
    fakeDocker,
    [
      `#!${process.execPath}`,
      "const { execFileSync } = require('node:child_process');",
      'console.log(JSON.stringify(process.argv.slice(2)));',
      `console.log(execFileSync('curl', ['-sS', '--max-time', '5', 'http://${origin.authority}/from-sandbox'], { encoding: 'utf8' }));`,
      'process.exit(5);',
    ].join('\n'),
  );
  chmodSync(fakeDocker, 0o755);
  const tokenFile = join(dir, 'api-token');
  writeFileSync(tokenFile, `${s.sluice.apiToken}\n`);

  const r = await startNode([
    LAUNCH,
    '--api', `http://127.0.0.1:${s.sluice.api.port}`,
    '--token-file', tokenFile,
    '--docker', fakeDocker,
    '--network', 'test_sandbox',
    '--name', 'sandbox-launch',
    '--allow', `127.0.0.2:${origin.port}`,
    '--docker-arg=--read-only',
    '--', 'alpine:3', 'sh', '-c', 'echo hi',
  ]).done;
  assert.equal(r.code, 5, r.stderr);
  const [argsLine, ...rest] = r.stdout.split('\n');
  const args = JSON.parse(argsLine ?? '[]') as string[];
  const env = ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'all_proxy', 'no_proxy'].flatMap((v) => ['-e', v]);
  assert.deepEqual(args, ['run', '--rm', '--name', 'sandbox-launch', '--network', 'test_sandbox', ...env, '--read-only', 'alpine:3', 'sh', '-c', 'echo hi']);
  assert.ok(!args.some((a) => a.includes(s.sluice.apiToken)), 'no secret on the command line');
  assert.match(rest.join('\n'), /origin 127\.0\.0\.2:\d+ GET \/from-sandbox/);
  assert.deepEqual(await containersWithSessions(s), []);
});
