#!/usr/bin/env node
// Starts a sandbox container behind sluice: creates a session with the given rules, runs
// `docker run --network <sandbox network>` with that session's proxy credentials in the
// environment, keeps the session alive while the container runs, and deletes it when the
// container exits. Exits with the container's status.
//
//   node container/launch.mjs [options] -- IMAGE [COMMAND [ARG...]]
//
// Needs a built sluice (npm run build: it uses dist/src/index.js, the package's
// SluiceClient) and a docker or podman client. See container/README.md.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SluiceClient, SluiceApiError, proxyEnv } from '../dist/src/index.js';

const USAGE = `usage: node container/launch.mjs [options] -- IMAGE [COMMAND [ARG...]]

  --api URL             sluice API (default: $SLUICE_API_URL or http://127.0.0.1:9080)
  --token TOKEN         API token (default: $SLUICE_API_TOKEN)
  --token-file FILE     file holding the API token (default: $SLUICE_API_TOKEN_FILE,
                        else container/api-token next to this script)
  --network NET         the sandbox network (default: $SLUICE_SANDBOX_NETWORK or sluice_sandbox)
  --name NAME           container name, also the session's container_name (default: sandbox-<random>)
  --allow DEST[:PORTS]  allow a destination; repeatable
  --deny DEST[:PORTS]   deny a destination; repeatable
  --learn               learning mode: allow and record everything no global rule denies
  --ttl SECONDS         session TTL (heartbeats every TTL/3)
  --docker CMD          container client (default: $DOCKER or docker; podman works too)
  --docker-arg ARG      extra argument for \`docker run\`, before IMAGE; repeatable
                        (e.g. --docker-arg=--read-only --docker-arg=--user=1000)`;

const PROXY_VARS = ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'all_proxy', 'no_proxy'];
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function fail(message, code = 2) {
  process.stderr.write(`launch: ${message}\n`);
  process.exit(code);
}

/** DEST[:PORTS], with [IPv6]:PORTS; a bare IPv6 address or CIDR has no port part. */
function rule(spec, action) {
  let dest = spec;
  let ports;
  const bracket = /^\[([^\]]+)\](?::(.+))?$/.exec(spec);
  if (bracket) [, dest, ports] = bracket;
  else if (spec.split(':').length === 2) [dest, ports] = spec.split(':');
  if (!dest) fail(`bad destination "${spec}"`);
  return { destination_pattern: dest, ...(ports ? { port_pattern: ports } : {}), action };
}

function readToken(file) {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    return fail(`cannot read the API token from ${file}: ${err.message}`);
  }
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      api: { type: 'string' },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      network: { type: 'string' },
      name: { type: 'string' },
      allow: { type: 'string', multiple: true, default: [] },
      deny: { type: 'string', multiple: true, default: [] },
      learn: { type: 'boolean' },
      ttl: { type: 'string' },
      docker: { type: 'string' },
      'docker-arg': { type: 'string', multiple: true, default: [] },
      help: { type: 'boolean', short: 'h' },
    },
  });
} catch (err) {
  fail(`${err.message}\n${USAGE}`);
}
const { values: opts, positionals } = parsed;
if (opts.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const [image, ...command] = positionals;
if (!image) fail(`no image given\n${USAGE}`);

const env = process.env;
const tokenFile = opts['token-file'] ?? (env.SLUICE_API_TOKEN_FILE || undefined);
const token = opts.token ?? (env.SLUICE_API_TOKEN || (tokenFile ? readToken(tokenFile) : readToken(fileURLToPath(new URL('./api-token', import.meta.url)))));
const name = opts.name ?? `sandbox-${randomBytes(4).toString('hex')}`;
const network = opts.network ?? (env.SLUICE_SANDBOX_NETWORK || 'sluice_sandbox');
const docker = opts.docker ?? (env.DOCKER || 'docker');
let ttl;
if (opts.ttl !== undefined) {
  ttl = Number(opts.ttl);
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 86_400) fail('--ttl must be a whole number of seconds from 1 to 86400');
}

const client = new SluiceClient({ baseUrl: opts.api ?? (env.SLUICE_API_URL || 'http://127.0.0.1:9080'), token });
let session;
try {
  session = await client.startSession(
    {
      container_name: name,
      ...(ttl !== undefined && { ttl_seconds: ttl }),
      network_rules: [...opts.allow.map((r) => rule(r, 'allow')), ...opts.deny.map((r) => rule(r, 'deny'))],
      ...(opts.learn && { allow_all: true }),
      metadata: { launcher: 'container/launch.mjs', image },
    },
    { onError: (err) => process.stderr.write(`launch: heartbeat failed (retrying): ${err.message}\n`) },
  );
} catch (err) {
  const details = err instanceof SluiceApiError && Array.isArray(err.details) ? `\n  ${err.details.join('\n  ')}` : '';
  fail(`cannot create the session: ${err.message}${details}`, 1);
}
session.on('recreated', (s, info) => {
  if (info.tokenChanged) process.stderr.write(`launch: sluice had lost session ${s.session_id}; re-created with a new token, the sandbox's credentials no longer work\n`);
});

// Values go through the client's environment (`-e NAME` without `=value`), so the session
// token never shows up in `ps` output.
const args = ['run', '--rm', '--name', name, '--network', network, ...PROXY_VARS.flatMap((v) => ['-e', v]), ...opts['docker-arg'], image, ...command];
const child = spawn(docker, args, { stdio: 'inherit', env: { ...env, ...proxyEnv(session.proxy) } });
// `docker run` passes signals on to the container (--sig-proxy is on by default).
const forward = (signal) => child.kill(signal);
for (const s of SIGNALS) process.on(s, forward);

const status = await new Promise((resolve) => {
  child.once('error', (err) => {
    process.stderr.write(`launch: cannot run ${docker}: ${err.message}\n`);
    resolve(err.code === 'ENOENT' ? 127 : 126);
  });
  child.once('exit', (code, signal) => resolve(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1)));
});
for (const s of SIGNALS) process.off(s, forward);
try {
  await session.close();
} catch (err) {
  process.stderr.write(`launch: could not delete session ${session.sessionId} (it expires by itself): ${err.message}\n`);
}
process.exit(status);
