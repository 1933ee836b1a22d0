// Enforcement on a real (namespaced) network, not just proxy variables. Runs as root with
// iproute2 and curl; skipped otherwise.
//
// Topology (all created here, removed in t.after; names and addresses derived from the pid
// so parallel runs do not collide; no traffic leaves these namespaces and loopback):
//
//   netns SBX (the sandbox)           root namespace (sluice)            netns ORG (an origin host)
//   vethB 10.233.N.2/30  <---->  vethA 10.233.N.1/30  sluice HTTP+SOCKS
//                                 vethC 10.233.N.5/30  <---->  vethD 10.233.N.6/30  two HTTP origins
//
// The sandbox has one connected /30 and no default route: it can reach sluice's listeners
// on 10.233.N.1 and nothing else; the origins at 10.233.N.6 are reachable only by sluice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { eventually, startTestSluice, type CurlResult, type TestSluice } from '../helpers/harness.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function missingPrerequisite(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const [cmd, args] of [['ip', ['-V']], ['curl', ['--version']]] as const) {
    if (spawnSync(cmd, args, { stdio: 'ignore' }).error) return `${cmd} is not installed`;
  }
  // Root without CAP_SYS_ADMIN (some containers) cannot create namespaces.
  const probe = `sluice-probe-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.status !== 0) return `cannot create a network namespace: ${add.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return undefined;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
}

function ipQuiet(...args: string[]): void {
  spawnSync('ip', args, { stdio: 'ignore', timeout: 10_000 });
}

/** A /29 in 10.233.0.0/16 that no interface on this host uses yet. */
function freeBlock(): number {
  const inUse = execFileSync('ip', ['-o', '-4', 'addr'], { encoding: 'utf8' }) + execFileSync('ip', ['-4', 'route'], { encoding: 'utf8' });
  for (let i = 0; i < 256; i++) {
    const n = (process.pid + i) % 256;
    if (!inUse.includes(`10.233.${n}.`)) return n;
  }
  throw new Error('no free 10.233.N.0/29 block');
}

/** curl inside a namespace, asynchronously (the proxy runs on this event loop). */
function nsCurl(ns: string, args: string[], timeoutMs = 8000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, 'curl', '-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...args],
      { timeout: timeoutMs + 2000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  pid: number;
}

function sluiceRun(s: TestSluice, args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, 'run', '--api', `http://127.0.0.1:${s.sluice.api.port}`, '--token', s.sluice.apiToken, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, pid: child.pid ?? -1 });
    });
  });
}

// Two origins on the ORG host; prints one JSON line when listening and one per request.
const ORIGIN_SCRIPT = `
const http = require('node:http');
const host = process.argv[1];
const start = (name) => new Promise((resolve) => {
  const server = http.createServer((req, res) => {
    console.log(JSON.stringify({ name, url: req.url, from: req.socket.remoteAddress }));
    res.end('origin ' + name + ' ' + req.method + ' ' + req.url + '\\n');
  });
  server.listen(0, host, () => resolve(server.address().port));
});
Promise.all([start('allowed'), start('denied')]).then(([allowed, denied]) => console.log(JSON.stringify({ ready: true, allowed, denied })));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

interface OriginHost {
  child: ChildProcess;
  allowed: number;
  denied: number;
  requests(): Array<{ name: string; url: string; from: string }>;
}

async function startOriginHost(ns: string, host: string): Promise<OriginHost> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', ORIGIN_SCRIPT, host], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts.filter(Boolean));
  });
  await eventually(() => lines.length > 0, 5000, 'the origin host to listen');
  const ready = JSON.parse(lines[0]!) as { allowed: number; denied: number };
  return {
    child,
    allowed: ready.allowed,
    denied: ready.denied,
    requests: () => lines.slice(1).map((l) => JSON.parse(l) as { name: string; url: string; from: string }),
  };
}

test('enforcement: a sandbox namespace reaches origins only through sluice', async (t) => {
  const missing = missingPrerequisite();
  if (missing !== undefined) {
    t.skip(`needs root and iproute2: ${missing}`);
    return;
  }
  const tag = String(process.pid);
  const SBX = `sluice-e2e-sbx-${tag}`;
  const ORG = `sluice-e2e-org-${tag}`;
  const vethA = `sle${tag}a`;
  const vethB = `sle${tag}b`;
  const vethC = `sle${tag}c`;
  const vethD = `sle${tag}d`;

  let s: TestSluice | undefined;
  let origins: OriginHost | undefined;
  // Registered before anything is created, so a failure half-way still cleans up.
  t.after(async () => {
    if (origins) {
      origins.child.stdin?.end();
      origins.child.kill('SIGTERM');
    }
    await s?.close(true);
    ipQuiet('netns', 'del', SBX);
    ipQuiet('netns', 'del', ORG);
    // Deleting a namespace deletes the veth ends in it and so the pairs; in case not:
    ipQuiet('link', 'del', vethA);
    ipQuiet('link', 'del', vethC);
  });

  const n = freeBlock();
  const sluiceIp = `10.233.${n}.1`;
  const sandboxIp = `10.233.${n}.2`;
  const routerIp = `10.233.${n}.5`;
  const originIp = `10.233.${n}.6`;

  ip('netns', 'add', SBX);
  ip('netns', 'add', ORG);
  ip('link', 'add', vethA, 'type', 'veth', 'peer', 'name', vethB);
  ip('link', 'set', vethB, 'netns', SBX);
  ip('addr', 'add', `${sluiceIp}/30`, 'dev', vethA);
  ip('link', 'set', vethA, 'up');
  ip('-n', SBX, 'addr', 'add', `${sandboxIp}/30`, 'dev', vethB);
  ip('-n', SBX, 'link', 'set', vethB, 'up');
  ip('-n', SBX, 'link', 'set', 'lo', 'up');
  ip('link', 'add', vethC, 'type', 'veth', 'peer', 'name', vethD);
  ip('link', 'set', vethD, 'netns', ORG);
  ip('addr', 'add', `${routerIp}/30`, 'dev', vethC);
  ip('link', 'set', vethC, 'up');
  ip('-n', ORG, 'addr', 'add', `${originIp}/30`, 'dev', vethD);
  ip('-n', ORG, 'link', 'set', vethD, 'up');
  ip('-n', ORG, 'link', 'set', 'lo', 'up');

  // IPv4 addresses are usable at once (no duplicate address detection as for IPv6).
  origins = await startOriginHost(ORG, originIp);
  const o = origins;
  // sluice listens on the sandbox-facing address (so the URLs a session gets name it); the API stays on loopback.
  s = await startTestSluice({ config: { listen: { http: `${sluiceIp}:0`, socks: `${sluiceIp}:0`, api: '127.0.0.1:0' } } });
  const sl = s;
  const allowed = `http://${originIp}:${o.allowed}`;
  const denied = `http://${originIp}:${o.denied}`;
  const session = await sl.createSession({ container_name: 'sandbox-ns', network_rules: [{ destination_pattern: originIp, port_pattern: String(o.allowed) }] });
  assert.match(session.proxy.http, new RegExp(`@${sluiceIp.replace(/\./g, '\\.')}:${sl.sluice.http.port}$`));

  await t.test('through sluice, the allowed origin answers (HTTP proxy and SOCKS5)', async () => {
    const r = await nsCurl(SBX, ['-x', session.proxy.http, `${allowed}/via-http-proxy`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /origin allowed GET \/via-http-proxy/);
    const socks = await nsCurl(SBX, ['-x', session.proxy.socks5, `${allowed}/via-socks`]);
    assert.equal(socks.code, 0, socks.stderr);
    assert.match(socks.stdout, /origin allowed GET \/via-socks/);
    // The origin saw sluice (the router address), never the sandbox.
    assert.ok(o.requests().every((req) => req.from === routerIp), JSON.stringify(o.requests()));
  });

  await t.test('through sluice, the denied origin gets 403 and is never contacted', async () => {
    const r = await nsCurl(SBX, ['-i', '-x', session.proxy.http, `${denied}/nope`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.1 403/);
    assert.match(r.stdout, /container: sandbox-ns/);
    assert.ok(!o.requests().some((req) => req.name === 'denied'));
  });

  await t.test('directly, without the proxy, the origin is unreachable', async () => {
    const r = await nsCurl(SBX, ['--noproxy', '*', `${allowed}/direct`], 3000);
    assert.equal(r.code, 7, `curl should fail to connect: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, /unreachable|Couldn't connect/i);
    assert.ok(!o.requests().some((req) => req.url === '/direct'));
  });

  await t.test('a session listing the sandbox address in source_ips identifies it without credentials', async () => {
    const bare = `http://${sluiceIp}:${sl.sluice.http.port}`;
    const before = await nsCurl(SBX, ['-i', '-x', bare, `${allowed}/anonymous`]);
    assert.match(before.stdout, /^HTTP\/1\.1 407/, 'no session for this address yet');
    await sl.createSession({
      container_name: 'sandbox-by-address',
      source_ips: [sandboxIp],
      network_rules: [{ destination_pattern: originIp, port_pattern: String(o.allowed) }],
    });
    const r = await nsCurl(SBX, ['-x', bare, `${allowed}/by-address`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /origin allowed GET \/by-address/);
    const d = await nsCurl(SBX, ['-i', '-x', bare, `${denied}/by-address`]);
    assert.match(d.stdout, /^HTTP\/1\.1 403/);
    assert.match(d.stdout, /container: sandbox-by-address/);
  });

  await t.test('sluice run --isolate: same results for the command it launches, and no namespace left behind', async () => {
    const allow = ['--isolate', '--allow', `${originIp}:${o.allowed}`, '--'];
    const ok = await sluiceRun(sl, [...allow, 'curl', '-sS', '--max-time', '5', `${allowed}/isolated`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /origin allowed GET \/isolated/);

    const no = await sluiceRun(sl, [...allow, 'curl', '-sS', '-i', '--max-time', '5', `${denied}/isolated`]);
    assert.equal(no.code, 0, no.stderr);
    assert.match(no.stdout, /^HTTP\/1\.1 403/);

    const direct = await sluiceRun(sl, [...allow, 'curl', '-sS', '--noproxy', '*', '--max-time', '3', `${allowed}/isolated-direct`]);
    assert.equal(direct.code, 7, direct.stderr);
    assert.ok(!o.requests().some((req) => req.url === '/isolated-direct'));

    // The command sees only loopback: no address of this host, no routes.
    const view = await sluiceRun(sl, ['--isolate', '--', 'ip', '-o', '-4', 'addr']);
    assert.equal(view.code, 0, view.stderr);
    assert.deepEqual(view.stdout.trim().split('\n').map((l) => l.split(/\s+/)[1]), ['lo']);

    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const run of [ok, no, direct, view]) assert.ok(!left.includes(`sluice-run-${run.pid}-`), `namespace of run ${run.pid} removed: ${left}`);
    assert.deepEqual((await sl.api<{ sessions: Array<{ container_name: string }> }>('GET', '/api/sessions')).body.sessions.map((x) => x.container_name).sort(), [
      'sandbox-by-address',
      'sandbox-ns',
    ]);
  });
});
