// container/: the Dockerfile and compose.yaml say what container/README.md documents.
// No container engine runs here, so these are checks of the files themselves, plus the
// HEALTHCHECK's node one-liner run for real against a stand-in /healthz.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseYaml } from 'yaml';

const containerDir = new URL('../../../container/', import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, containerDir), 'utf8');

// ---- Dockerfile -------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  args: string;
}

/** Instructions with line continuations joined and comments dropped. */
function dockerfile(): Instruction[] {
  const text = read('Dockerfile').replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const m = /^(\S+)\s+(.*)$/.exec(l);
      return { keyword: (m?.[1] ?? l).toUpperCase(), args: (m?.[2] ?? '').replace(/\s+/g, ' ') };
    });
}

/** Instructions grouped by stage (`FROM ... AS name`). */
function stages(): Map<string, Instruction[]> {
  const out = new Map<string, Instruction[]>();
  let current: Instruction[] | undefined;
  for (const i of dockerfile()) {
    if (i.keyword === 'FROM') {
      const name = /\bAS\s+(\S+)/i.exec(i.args)?.[1] ?? `stage${out.size}`;
      current = [i];
      out.set(name, current);
    } else current?.push(i);
  }
  return out;
}

function runs(stage: Instruction[]): string[] {
  return stage.filter((i) => i.keyword === 'RUN').map((i) => i.args);
}

test('Dockerfile: multi-stage build with the package scripts, slim runtime with production deps', () => {
  const all = stages();
  assert.deepEqual([...all.keys()], ['build', 'deps', 'runtime']);
  const args = dockerfile().filter((i) => i.keyword === 'ARG');
  assert.ok(args.some((a) => a.args === 'NODE_IMAGE=node:20-bookworm-slim'));
  for (const stage of all.values()) assert.match(stage[0]!.args, /^\$\{NODE_IMAGE\}|^build\b/);

  const build = all.get('build')!;
  assert.ok(runs(build).includes('npm ci'), 'build installs with npm ci');
  assert.ok(runs(build).includes('npm run build'), 'build compiles with the package build script');
  assert.ok(build.some((i) => i.keyword === 'COPY' && i.args === 'package.json package-lock.json ./'));

  assert.ok(runs(all.get('deps')!).some((r) => r.startsWith('npm ci --omit=dev')));

  const runtime = all.get('runtime')!;
  assert.equal(runtime[0]?.args, '${NODE_IMAGE} AS runtime');
  const copies = runtime.filter((i) => i.keyword === 'COPY').map((i) => i.args);
  assert.ok(copies.includes('--from=deps /app/node_modules ./node_modules'));
  assert.ok(copies.includes('--from=build /app/dist/src ./dist/src'));
  assert.ok(copies.includes('migrations ./migrations'));
  assert.ok(!runtime.some((i) => i.keyword === 'RUN' && /apt-get|npm (ci|install)/.test(i.args)), 'no toolchain or installs in the runtime stage');
});

test('Dockerfile: non-root, /data volume, listeners on 0.0.0.0, ports, health check, start command', () => {
  const runtime = stages().get('runtime')!;
  const one = (keyword: string): string => {
    const found = runtime.filter((i) => i.keyword === keyword);
    assert.equal(found.length, 1, `one ${keyword}`);
    return found[0]!.args;
  };
  const user = one('USER');
  assert.notEqual(user, 'root');
  assert.notEqual(user, '0');
  assert.equal(user, 'node');
  // USER comes before the command runs and after the last RUN that needs root.
  const order = runtime.map((i) => i.keyword);
  assert.ok(order.lastIndexOf('RUN') < order.indexOf('USER'));

  assert.equal(one('VOLUME'), '["/data"]');
  assert.deepEqual(one('EXPOSE').split(' '), ['3128', '1080', '9080']);

  const env = one('ENV');
  for (const pair of ['SLUICE_DATA_DIR=/data', 'SLUICE_LISTEN_HTTP=0.0.0.0:3128', 'SLUICE_LISTEN_SOCKS=0.0.0.0:1080', 'SLUICE_LISTEN_API=0.0.0.0:9080']) {
    assert.ok(env.split(' ').includes(pair), `ENV ${pair}`);
  }

  assert.deepEqual(JSON.parse(one('CMD')), ['node', 'dist/src/cli/main.js', 'serve']);
  const health = one('HEALTHCHECK');
  assert.match(health, /^--interval=\S+ --timeout=\S+ .*CMD \[/);
  const probe = healthProbe();
  assert.equal(probe[0], 'node');
  assert.match(probe[2] ?? '', /\/healthz/);
  assert.doesNotMatch(health, /curl|wget/);
});

function healthProbe(): string[] {
  const health = dockerfile().find((i) => i.keyword === 'HEALTHCHECK')!;
  return JSON.parse(health.args.slice(health.args.indexOf('CMD ') + 4)) as string[];
}

test('the HEALTHCHECK probe passes on a healthy /healthz and fails otherwise', async (t) => {
  let status = 200;
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(status, { 'content-type': 'application/json' }).end('{"status":"ok"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  const port = (server.address() as AddressInfo).port;
  const [, flag, script] = healthProbe();
  const probe = (listenApi: string): Promise<number> =>
    new Promise((resolve) => {
      execFile(process.execPath, [flag!, script!], { env: { SLUICE_LISTEN_API: listenApi }, timeout: 10_000 }, (err) =>
        resolve(err ? Number((err as NodeJS.ErrnoException).code ?? 1) : 0),
      );
    });
  assert.equal(await probe(`0.0.0.0:${port}`), 0);
  assert.equal(await probe(`127.0.0.1:${port}`), 0);
  assert.deepEqual(paths, ['/healthz', '/healthz']);
  status = 503;
  assert.equal(await probe(`0.0.0.0:${port}`), 1);
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.equal(await probe(`0.0.0.0:${port}`), 1, 'nothing listening');
});

test('Dockerfile.dockerignore keeps local state and secrets out of the build context', () => {
  const ignored = read('Dockerfile.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const entry of ['node_modules', 'dist', 'data', '.git', '**/api-token']) assert.ok(ignored.includes(entry), entry);
});

// ---- compose.yaml -------------------------------------------------------------------------

interface ComposeService {
  build?: { context: string; dockerfile: string };
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  networks?: string[] | Record<string, { ipv4_address?: string } | null | Record<string, never>>;
  volumes?: string[];
  secrets?: string[];
  depends_on?: Record<string, { condition: string }>;
}

interface Compose {
  services: Record<string, ComposeService>;
  networks: Record<string, { internal?: boolean; ipam?: { config: Array<{ subnet: string }> } } | null>;
  volumes: Record<string, unknown>;
  secrets: Record<string, { file: string }>;
}

const compose = (): Compose => parseYaml(read('compose.yaml')) as Compose;

function networkNames(s: ComposeService): string[] {
  return Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? {});
}

test('compose.yaml: sluice on both networks, the sandbox network internal, the sandbox only on it', () => {
  const c = compose();
  assert.deepEqual(Object.keys(c.services).sort(), ['sandbox', 'sluice']);
  assert.deepEqual(Object.keys(c.networks).sort(), ['egress', 'sandbox']);
  assert.equal(c.networks.sandbox?.internal, true);
  assert.notEqual(c.networks.egress?.internal, true);
  assert.deepEqual(c.networks.sandbox?.ipam?.config, [{ subnet: '172.30.53.0/24' }]);

  const sluice = c.services.sluice!;
  assert.deepEqual(networkNames(sluice).sort(), ['egress', 'sandbox']);
  assert.deepEqual(sluice.networks, { sandbox: { ipv4_address: '172.30.53.2' }, egress: {} });
  assert.deepEqual(sluice.build, { context: '..', dockerfile: 'container/Dockerfile' });
  // Published on the host's loopback only.
  assert.deepEqual(sluice.ports, ['127.0.0.1:9080:9080', '127.0.0.1:3128:3128', '127.0.0.1:1080:1080']);
  assert.deepEqual(sluice.environment, {
    SLUICE_ADVERTISE_HOST: 'sluice',
    SLUICE_API_TOKEN_FILE: '/run/secrets/sluice_api_token',
    SLUICE_LOG_LEVEL: 'info',
  });
  assert.deepEqual(sluice.secrets, ['sluice_api_token']);
  assert.deepEqual(c.secrets, { sluice_api_token: { file: './api-token' } });
  assert.deepEqual(sluice.volumes, ['sluice-data:/data']);
  assert.ok('sluice-data' in c.volumes);

  const sandbox = c.services.sandbox!;
  assert.deepEqual(networkNames(sandbox), ['sandbox'], 'the sandbox has no other network');
  assert.equal(sandbox.ports, undefined);
  assert.deepEqual(sandbox.networks, { sandbox: { ipv4_address: '172.30.53.10' } });
  assert.deepEqual(sandbox.environment, {
    HTTP_PROXY: 'http://sluice:3128',
    HTTPS_PROXY: 'http://sluice:3128',
    ALL_PROXY: 'socks5h://sluice:1080',
    NO_PROXY: '',
    http_proxy: 'http://sluice:3128',
    https_proxy: 'http://sluice:3128',
    all_proxy: 'socks5h://sluice:1080',
    no_proxy: '',
  });
  assert.deepEqual(sandbox.depends_on, { sluice: { condition: 'service_healthy' } });
});

test('container/README.md documents the files, the launcher and the firewall rules', () => {
  const readme = read('README.md');
  for (const needle of [
    'docker compose -f container/compose.yaml',
    'podman',
    'SLUICE_API_TOKEN_FILE',
    'SLUICE_CONFIG=/etc/sluice/config.yaml',
    'container/launch.mjs',
    'internal: true',
    'iptables',
    'nft',
    '172.30.53.0/24',
    '3128',
    '1080',
  ]) {
    assert.ok(readme.includes(needle), `README mentions ${needle}`);
  }
});

test('container/launch.mjs is a launcher built on the package entry point', () => {
  const text = read('launch.mjs');
  assert.match(text, /^#!\/usr\/bin\/env node\n/);
  assert.match(text, /from '\.\.\/dist\/src\/index\.js'/);
  assert.match(text, /startSession\(/);
  assert.match(text, /session\.close\(\)/);
});
