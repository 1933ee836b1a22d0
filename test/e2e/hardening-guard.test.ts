// The special-range guard end to end. Nothing here dials a special-range address from this
// network namespace: POST /api/check evaluates exactly as the proxy does without
// connecting, and the proxy-level scenarios (hardening-netns-scenarios.ts) run in a fresh
// network namespace that has only a loopback interface, where the "metadata service" and
// the "private database" are addresses on that namespace's own loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sluiceFor } from '../helpers/proxy-helpers.js';

const DNS: Record<string, string[]> = {
  'metadata.corp.test': ['169.254.169.254'],
  'imds6.corp.test': ['fd00:ec2::254'],
  'db.corp.test': ['10.20.30.40'],
  'nat64.corp.test': ['64:ff9b::a9fe:a9fe'],
  'mixed.corp.test': ['10.20.30.40', '127.0.0.2'],
  'public.corp.test': ['127.0.0.2'],
};
const resolver = async (host: string): Promise<string[]> => DNS[host] ?? [];

test('/api/check: wildcards, `*`, 0.0.0.0/0 and learning mode never reach special ranges; naming rules do; denials explain it', async (t) => {
  const s = await sluiceFor(t, { resolver });
  const check = async (container: string, destination: string): Promise<any> => {
    const r = await s.api('POST', '/api/check', { container_name: container, destination, port: 80, resolve: true });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  await s.createSession({ container_name: 'wild', network_rules: [{ destination_pattern: '*' }] });
  await s.createSession({ container_name: 'cidr', network_rules: [{ destination_pattern: '**.corp.test' }, { destination_pattern: '0.0.0.0/0' }, { destination_pattern: '::/0' }] });
  await s.createSession({ container_name: 'learner', allow_all: true });
  await s.createSession({
    container_name: 'named',
    network_rules: [
      { destination_pattern: 'metadata.corp.test' },
      { destination_pattern: '*.corp.test' },
      { destination_pattern: '10.20.0.0/16' },
      { destination_pattern: 'fd00:ec2::254' },
    ],
  });

  for (const c of ['wild', 'cidr', 'learner']) {
    for (const d of ['metadata.corp.test', 'imds6.corp.test', 'db.corp.test', 'nat64.corp.test', '169.254.169.254', '[fd00:ec2::254]', '100.64.1.1', '192.168.0.1', '224.0.0.251', '255.255.255.255', '0xa9fea9fe']) {
      const r = await check(c, d);
      assert.equal(r.decision, 'deny', `${c} -> ${d}: ${JSON.stringify(r)}`);
      assert.equal(r.reason, 'address_guarded', `${c} -> ${d}`);
      assert.match(r.explanation, /is in the [a-z-]+( \(embedded in IPv6\))? range: only a rule naming that address, a network inside that range, or the exact hostname reaches it/);
    }
    // An ordinary address is reached the way the rule says.
    assert.equal((await check(c, 'public.corp.test')).decision, 'allow', c);
  }
  // Special answers are skipped, ordinary ones kept: the proxy dials only what passed.
  const mixed = await check('wild', 'mixed.corp.test');
  assert.deepEqual([mixed.decision, mixed.addresses], ['allow', ['127.0.0.2']]);

  const m = await check('named', 'metadata.corp.test');
  assert.deepEqual([m.decision, m.addresses], ['allow', ['169.254.169.254']], 'the exact hostname');
  const db = await check('named', 'db.corp.test');
  assert.deepEqual([db.decision, db.addresses], ['allow', ['10.20.30.40']], 'a wildcard host plus a CIDR inside 10/8');
  assert.equal((await check('named', '[fd00:ec2::254]')).decision, 'allow', 'the exact IPv6 address');
  assert.equal((await check('named', 'nat64.corp.test')).reason, 'address_guarded', 'NAT64 of the metadata address is not named by anything');
  assert.equal((await check('named', '10.20.99.1')).decision, 'allow', 'a literal inside the named /16');

  // The check answers like the proxy for the operator switch too.
  assert.equal((await s.api('PUT', '/api/containers/wild/learning', { enabled: true })).status, 200);
  assert.equal((await check('wild', 'metadata.corp.test')).reason, 'address_guarded');
});

test('guard_special_ranges: false is the documented opt-out: wildcards reach private addresses again', async (t) => {
  const s = await sluiceFor(t, { resolver, config: { guard_special_ranges: false } });
  await s.createSession({ container_name: 'wild', network_rules: [{ destination_pattern: '*' }] });
  const r = await s.api('POST', '/api/check', { container_name: 'wild', destination: 'metadata.corp.test', port: 80, resolve: true });
  assert.deepEqual([r.body.decision, r.body.addresses], ['allow', ['169.254.169.254']]);
});

// ------------------------------------------------------------------ through the proxy, in a namespace

const SCENARIOS = fileURLToPath(new URL('./hardening-netns-scenarios.js', import.meta.url));

function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'not running as root';
  const probe = spawnSync('unshare', ['--net', '--', 'ip', 'link', 'set', 'lo', 'up'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: 10_000 });
  if (probe.error) return `unshare/ip not available: ${probe.error.message}`;
  if (probe.status !== 0) return `cannot create a network namespace: ${probe.stderr.trim()}`;
  return undefined;
}

test('through every proxy protocol, in a namespace with only loopback: guarded denials, named reach, revocation', async (t) => {
  const missing = netnsUnavailable();
  if (missing) {
    t.skip(`needs root and unshare/iproute2: ${missing}`);
    return;
  }
  // A fresh network namespace per run (no name, gone when the child exits): only `lo`, so a
  // guard bug would meet ENETUNREACH, never a real network.
  const child = spawn('unshare', ['--net', '--', process.execPath, '--test', '--test-reporter=tap', SCENARIOS], {
    // Without the parent runner's NODE_TEST_CONTEXT, or the child would think it is nested.
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT')), SLUICE_NETNS_SCENARIOS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  assert.equal(code, 0, `namespace scenarios failed:\n${out}`);
  assert.match(out, /# pass [1-9]/, out);
  assert.match(out, /# fail 0/, out);
  assert.match(out, /# skipped 0/, out);
});
