import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/cli/main.js';
import { parseDestSpec, UsageError, type DestSpec } from '../../src/cli/client-commands.js';
import { formatTable } from '../../src/cli/output.js';
import { CONTAINER, RULE, SESSION_CREATED, T0, checkResult as verdict, sessionSummary as summary } from '../helpers/api-fixtures.js';
import { tempDir } from '../helpers/temp-dir.js';

// ---- DEST[:PORTS] ------------------------------------------------------------

test('parseDestSpec splits destination and ports', () => {
  const cases: Array<[string, DestSpec]> = [
    ['example.com', { destination_pattern: 'example.com' }],
    ['example.com:443', { destination_pattern: 'example.com', port_pattern: '443' }],
    ['host:80,443', { destination_pattern: 'host', port_pattern: '80,443' }],
    ['host:8000-8999', { destination_pattern: 'host', port_pattern: '8000-8999' }],
    ['*.example.com:*', { destination_pattern: '*.example.com', port_pattern: '*' }],
    ['*', { destination_pattern: '*' }],
    ['[2001:db8::1]:443', { destination_pattern: '2001:db8::1', port_pattern: '443' }],
    ['[2001:db8::1]', { destination_pattern: '2001:db8::1' }],
    ['2001:db8::1', { destination_pattern: '2001:db8::1' }],
    ['::1', { destination_pattern: '::1' }],
    ['2001:db8::/32', { destination_pattern: '2001:db8::/32' }],
    ['[2001:db8::/32]:22', { destination_pattern: '2001:db8::/32', port_pattern: '22' }],
    ['10.0.0.0/8:443', { destination_pattern: '10.0.0.0/8', port_pattern: '443' }],
    ['10.0.0.0/8', { destination_pattern: '10.0.0.0/8' }],
    ['1.2.3.4:22', { destination_pattern: '1.2.3.4', port_pattern: '22' }],
  ];
  for (const [spec, expected] of cases) assert.deepEqual(parseDestSpec(spec), expected, spec);
});

test('parseDestSpec rejects malformed specs', () => {
  const bad = ['', 'host:', 'host:0', 'host:70000', 'host:http', 'host:9-1', '[2001:db8::1', '[2001:db8::1]443', '[::1]:', 'http://x.com', 'a b', '*.com:80', '10.0.0.0/99:80'];
  for (const spec of bad) assert.throws(() => parseDestSpec(spec), UsageError, JSON.stringify(spec));
});

test('formatTable aligns columns without trailing spaces', () => {
  const text = formatTable(
    [
      { a: 'x', b: 1 },
      { a: 'longer', b: null },
    ],
    [
      { header: 'A', value: (r) => r.a },
      { header: 'B', value: (r) => r.b },
    ],
  );
  assert.equal(text, 'A       B\nx       1\nlonger  -');
});

// ---- a recording API stand-in -------------------------------------------------

interface Recorded {
  method: string;
  url: string;
  authorization: string | undefined;
  contentType: string | undefined;
  body: unknown;
}

type Reply = { status: number; body?: unknown };

/** What the API answers each route with, unless a test says otherwise. */
const STANDARD: Array<[method: string, path: RegExp, body: (m: RegExpExecArray) => unknown]> = [
  ['POST', /^\/api\/sessions$/, () => SESSION_CREATED],
  ['GET', /^\/api\/sessions$/, () => ({ sessions: [] })],
  ['POST', /^\/api\/rules$/, () => RULE],
  ['GET', /^\/api\/rules$/, () => ({ rules: [] })],
  ['DELETE', /^\/api\/rules\/(\d+)$/, (m) => ({ id: Number(m[1]), deleted: true })],
  ['PUT', /^\/api\/containers\/[^/]+\/learning$/, () => CONTAINER],
  ['POST', /^\/api\/check$/, () => verdict({})],
];

function standardReply(req: Recorded): Reply {
  const path = req.url.split('?')[0] ?? '';
  for (const [method, re, body] of STANDARD) {
    const m = req.method === method ? re.exec(path) : null;
    if (m) return { status: 200, body: body(m) };
  }
  return { status: 500, body: { error: `the stand-in has no answer for ${req.method} ${path}`, details: [] } };
}

let server: Server;
let apiUrl: string;
let requests: Recorded[] = [];
let reply: (req: Recorded) => Reply = standardReply;

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text === '' ? undefined : JSON.parse(text);
}

before(async () => {
  server = createServer((req, res) => {
    void readBody(req).then((body) => {
      const rec: Recorded = {
        method: req.method ?? '',
        url: req.url ?? '',
        authorization: req.headers.authorization,
        contentType: req.headers['content-type'],
        body,
      };
      requests.push(rec);
      const { status, body: out } = reply(rec);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(out === undefined ? '' : JSON.stringify(out));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  requests = [];
  reply = standardReply;
});

interface Result {
  code: number;
  out: string;
  err: string;
}

/** Runs the CLI in-process against the stand-in, with a token unless the test says otherwise. */
async function cli(args: string[], env: NodeJS.ProcessEnv = { SLUICE_API_TOKEN: 'tok-from-env' }, withApi = true): Promise<Result> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(withApi ? [...args, '--api', apiUrl] : args, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env,
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function only(): Recorded {
  assert.equal(requests.length, 1, `expected one request, got ${requests.length}`);
  return requests[0] as Recorded;
}

// ---- sessions -------------------------------------------------------------------

test('session create posts the full body', async () => {
  const r = await cli([
    'session', 'create', '--container', 'web', '--id', 's1', '--ttl', '600',
    '--allow', 'example.com:443', '--allow', '[2001:db8::1]:80,443', '--deny', '10.0.0.0/8',
    '--allow-all', '--source-ip', '10.1.2.3', '--source-ip', '2001:db8::5',
  ]);
  assert.equal(r.code, 0, r.err);
  const req = only();
  assert.equal(req.method, 'POST');
  assert.equal(req.url, '/api/sessions');
  assert.equal(req.authorization, 'Bearer tok-from-env');
  assert.equal(req.contentType, 'application/json');
  assert.deepEqual(req.body, {
    session_id: 's1',
    container_name: 'web',
    ttl_seconds: 600,
    network_rules: [
      { destination_pattern: 'example.com', port_pattern: '443', action: 'allow' },
      { destination_pattern: '2001:db8::1', port_pattern: '80,443', action: 'allow' },
      { destination_pattern: '10.0.0.0/8', action: 'deny' },
    ],
    allow_all: true,
    source_ips: ['10.1.2.3', '2001:db8::5'],
  });
  assert.match(r.out, /^proxy_token\s+pt$/m);
  assert.match(r.out, /^proxy\.http\s+http:\/\/web:pt@h:3128$/m);
});

test('session create sends only what was given', async () => {
  const r = await cli(['session', 'create', '--container', 'web']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(only().body, { container_name: 'web', network_rules: [] });
});

test('session list prints a table, or JSON with --json', async () => {
  const sessions = [
    summary({ session_id: 'abc', rule_count: 2 }),
    summary({ session_id: 'd', container_name: 'worker-1', expires_at: '2030-01-02T00:00:00.000Z', allow_all: true, source_ips: ['10.0.0.1'] }),
  ];
  reply = () => ({ status: 200, body: { sessions } });
  const r = await cli(['session', 'list']);
  assert.equal(r.code, 0, r.err);
  assert.equal(only().method, 'GET');
  assert.equal(only().url, '/api/sessions');
  const lines = r.out.split('\n');
  assert.match(lines[0] ?? '', /^ID\s+CONTAINER\s+EXPIRES\s+RULES\s+ALLOW_ALL\s+SOURCE_IPS$/);
  assert.match(lines[2] ?? '', /^d\s+worker-1\s+2030-01-02T00:00:00.000Z\s+0\s+true\s+10\.0\.0\.1$/);
  assert.equal(lines[1]?.indexOf('web'), lines[2]?.indexOf('worker-1'), 'columns align');

  const j = await cli(['session', 'list', '--json']);
  assert.deepEqual(JSON.parse(j.out), { sessions });
});

test('session delete', async () => {
  reply = () => ({ status: 200, body: { session_id: 'abc', deleted: true } });
  const r = await cli(['session', 'delete', 'abc']);
  assert.equal(r.code, 0, r.err);
  assert.equal(only().method, 'DELETE');
  assert.equal(only().url, '/api/sessions/abc');
  assert.equal(r.out, 'deleted session abc');
});

// ---- rules ----------------------------------------------------------------------

test('rule add posts the rule', async () => {
  const r = await cli(['rule', 'add', '--dest', 'api.example.com', '--port', '443', '--container', 'web-*', '--deny', '--notes', 'no', '--expires-in', '3600']);
  assert.equal(r.code, 0, r.err);
  const req = only();
  assert.equal(req.method, 'POST');
  assert.equal(req.url, '/api/rules');
  assert.deepEqual(req.body, {
    container_pattern: 'web-*',
    destination_pattern: 'api.example.com',
    port_pattern: '443',
    action: 'deny',
    notes: 'no',
    expires_in_seconds: 3600,
  });
  assert.match(r.out, /^id\s+12$/m);
});

test('rule add with only the required fields', async () => {
  const r = await cli(['rule', 'add', '--dest', '*.example.com', '--allow']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(only().body, { destination_pattern: '*.example.com', action: 'allow' });
});

test('rule list passes filters as a query string', async () => {
  reply = () => ({
    status: 200,
    body: {
      rules: [
        { ...RULE, id: 1, layer: 'builtin', container_pattern: '*', destination_pattern: '127.0.0.1', port_pattern: '*', action: 'allow', notes: 'built-in: IPv4 loopback' },
      ],
    },
  });
  const r = await cli(['rule', 'list', '--container', 'web', '--layer', 'session', '--session', 's1']);
  assert.equal(r.code, 0, r.err);
  assert.equal(only().url, '/api/rules?container=web&layer=session&session_id=s1');
  assert.match(r.out, /^ID\s+LAYER\s+SESSION\s+CONTAINER\s+DESTINATION\s+PORTS\s+ACTION\s+EXPIRES\s+NOTES$/m);
  assert.match(r.out, /^1\s+builtin\s+-\s+\*\s+127\.0\.0\.1\s+\*\s+allow\s+-\s+built-in: IPv4 loopback$/m);

  requests = [];
  await cli(['rule', 'list']);
  assert.equal(only().url, '/api/rules');
});

test('rule rm', async () => {
  const r = await cli(['rule', 'rm', '12']);
  assert.equal(r.code, 0, r.err);
  assert.equal(only().method, 'DELETE');
  assert.equal(only().url, '/api/rules/12');
});

// ---- learning and check ------------------------------------------------------------

test('learn on/off', async () => {
  reply = () => ({ status: 200, body: { ...CONTAINER, learning: { active: true, source: 'operator', operator_switch: { enabled: true, expires_at: T0 } } } });
  const on = await cli(['learn', 'on', 'web', '--ttl', '300']);
  assert.equal(on.code, 0, on.err);
  assert.equal(only().method, 'PUT');
  assert.equal(only().url, '/api/containers/web/learning');
  assert.deepEqual(only().body, { enabled: true, ttl_seconds: 300 });
  assert.equal(on.out, 'learning on for web until 2030-01-01T00:00:00.000Z');

  requests = [];
  const off = await cli(['learn', 'off', 'web']);
  assert.equal(off.code, 0, off.err);
  assert.deepEqual(only().body, { enabled: false });
  assert.equal(off.out, 'learning off for web');
});

test('check prints the verdict and exits 0 on allow, 1 on deny, 2 when there is no answer', async () => {
  reply = () => ({ status: 200, body: verdict({ layer: 'global', rule: RULE, reason: 'rule', explanation: 'global rule 12 denies' }) });
  const deny = await cli(['check', 'web', 'example.com', '443']);
  assert.equal(deny.code, 1);
  assert.equal(deny.out, 'deny  (layer=global rule=12 reason=rule)\n  global rule 12 denies');
  assert.equal(only().method, 'POST');
  assert.equal(only().url, '/api/check');
  assert.deepEqual(only().body, { container_name: 'web', destination: 'example.com', port: 443 });

  reply = () => ({ status: 200, body: verdict({ decision: 'allow', layer: 'session', rule: { ...RULE, id: 3, layer: 'session', session_id: 's1' }, reason: 'rule', explanation: '' }) });
  const allow = await cli(['check', 'web', '[2001:db8::1]', '80', '--resolve']);
  assert.equal(allow.code, 0, allow.err);
  assert.equal(allow.out, 'allow (layer=session rule=3 reason=rule)');
  assert.deepEqual(requests[1]?.body, { container_name: 'web', destination: '[2001:db8::1]', port: 80, resolve: true });

  reply = () => ({
    status: 200,
    body: verdict({ decision: 'allow', reason: 'learning', explanation: '', learning: 'operator', would_be: { decision: 'deny', layer: null, rule: null } }),
  });
  const learning = await cli(['check', 'web', 'x.org', '1']);
  assert.equal(learning.code, 0);
  assert.equal(learning.out, 'allow (reason=learning would_be=deny)');

  reply = () => ({ status: 200, body: verdict({}) });
  const json = await cli(['check', 'web', 'x.org', '1', '--json']);
  assert.equal(json.code, 1);
  assert.equal(JSON.parse(json.out).reason, 'default_deny');

  reply = () => ({ status: 200, body: { verdict: 'maybe' } });
  const odd = await cli(['check', 'web', 'x.org', '1']);
  assert.equal(odd.code, 2, 'a response that is not a verdict is not a deny');
  assert.match(odd.err, /unexpected response from the API to POST \/api\/check .*decision: /);

  reply = () => ({ status: 401, body: { error: 'missing or invalid API token' } });
  const refused = await cli(['check', 'web', 'x.org', '1']);
  assert.equal(refused.code, 2, 'an API error is not a deny');
  assert.match(refused.err, /401/);

  const badPort = await cli(['check', 'web', 'x.org', 'http']);
  assert.equal(badPort.code, 2);
});

// ---- tokens, URLs and failures --------------------------------------------------------

test('token precedence: --token, then SLUICE_API_TOKEN, then <data-dir>/api-token', async () => {
  const dir = tempDir('sluice-cli-');
  writeFileSync(join(dir, 'api-token'), 'tok-from-file\n');

  await cli(['session', 'list', '--token', 'tok-flag', '--data-dir', dir], { SLUICE_API_TOKEN: 'tok-env' });
  await cli(['session', 'list', '--data-dir', dir], { SLUICE_API_TOKEN: 'tok-env' });
  await cli(['session', 'list', '--data-dir', dir], { SLUICE_API_TOKEN: '' });
  await cli(['session', 'list'], { SLUICE_DATA_DIR: dir });
  assert.deepEqual(
    requests.map((r) => r.authorization),
    ['Bearer tok-flag', 'Bearer tok-env', 'Bearer tok-from-file', 'Bearer tok-from-file'],
  );
});

test('no token anywhere: exit 2 without a request', async () => {
  const empty = tempDir('sluice-cli-');
  const r = await cli(['session', 'list', '--data-dir', empty], {});
  assert.equal(r.code, 2);
  assert.match(r.err, /no API token/);
  assert.equal(requests.length, 0);
});

test('SLUICE_API_URL is the default API address', async () => {
  const r = await cli(['rule', 'rm', '5'], { SLUICE_API_URL: apiUrl, SLUICE_API_TOKEN: 't' }, false);
  assert.equal(r.code, 0, r.err);
  assert.equal(only().url, '/api/rules/5');
});

test('an API error prints status, message and details, and exits 1', async () => {
  reply = () => ({ status: 400, body: { error: 'invalid rule', details: ['wildcards over a bare top-level domain (like *.com) are not allowed'] } });
  const r = await cli(['rule', 'add', '--dest', 'example.com', '--allow']);
  assert.equal(r.code, 1);
  assert.equal(r.err, 'error: 400 invalid rule\n  wildcards over a bare top-level domain (like *.com) are not allowed');

  reply = () => ({ status: 404, body: { error: 'rule not found' } });
  const nf = await cli(['rule', 'rm', '99']);
  assert.equal(nf.code, 1);
  assert.equal(nf.err, 'error: 404 rule not found');
});

test('an unreachable API says so and exits 1', async () => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const r = await cli(['session', 'list', '--api', url, '--token', 't'], {}, false);
  assert.equal(r.code, 1);
  assert.ok(r.err.includes(`not reachable at ${url}`), r.err);
  assert.match(r.err, /ECONNREFUSED/);
});

test('invalid input exits 2 and sends nothing', async () => {
  const invalid: Array<[string[], RegExp]> = [
    [['session', 'create', '--container', 'bad name'], /--container: must be letters/],
    [['session', 'create', '--container', 'web', '--ttl', '86401'], /--ttl: must be from 1 to 86400/],
    [['session', 'create', '--container', 'web', '--ttl', '1.5'], /--ttl: must be a whole number/],
    [['session', 'create', '--container', 'web', '--allow', 'host:0'], /--allow: "host:0": ports must be within 1-65535/],
    [['session', 'create', '--container', 'web', '--deny', 'http://x'], /--deny: "http:\/\/x"/],
    [['session', 'create', '--container', 'web', '--source-ip', 'example.com'], /--source-ip: must be an IPv4 or IPv6 address/],
    [['session', 'create', '--container', 'web', '--id', 'a/b'], /--id: must be letters/],
    [['session', 'create'], /required option '--container <name>' not specified/],
    [['session', 'delete', 'a/b'], /ID: must be letters/],
    [['rule', 'add', '--dest', 'x.com'], /exactly one of --allow or --deny/],
    [['rule', 'add', '--dest', 'x.com', '--allow', '--deny'], /exactly one of --allow or --deny/],
    [['rule', 'add', '--dest', '*.com', '--allow'], /--dest: .*top-level domain/],
    [['rule', 'add', '--dest', 'x.com', '--port', '1-2-3', '--allow'], /--port: /],
    [['rule', 'add', '--dest', 'x.com', '--container', 'a/b', '--allow'], /--container: /],
    [['rule', 'add', '--dest', 'x.com', '--allow', '--expires-in', '0'], /--expires-in: must be from 1/],
    [['rule', 'list', '--layer', 'top'], /--layer: must be one of global, session, builtin/],
    [['rule', 'rm', 'twelve'], /ID: must be a whole number/],
    [['learn', 'on', 'web', '--ttl', '0'], /--ttl: must be from 1/],
    [['learn', 'off', 'web', '--ttl', '5'], /unknown option '--ttl'/],
    [['check', 'web', 'example.com', '0'], /PORT: must be from 1 to 65535/],
    [['check', 'web', 'example.com', '65536'], /PORT: must be from 1 to 65535/],
    [['check', 'web', 'bad host', '80'], /HOST: /],
    [['check', 'w e b', 'example.com', '80'], /CONTAINER: must be letters/],
    [['check', 'web', 'example.com'], /missing required argument 'port'/],
    [['check', 'web', 'example.com', '80', 'extra'], /too many arguments/],
    [['session', 'list', '--bogus'], /unknown option '--bogus'/],
  ];
  for (const [args, message] of invalid) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(' ')} -> ${r.code}: ${r.err}`);
    assert.match(r.err, message, args.join(' '));
  }
  const noSubcommand = await cli(['session'], {}, false);
  assert.equal(noSubcommand.code, 2);
  assert.match(noSubcommand.err, /Usage: sluice session/);
  const unknown = await cli(['frobnicate'], {}, false);
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /unknown command 'frobnicate'/);
  const badUrl = await cli(['session', 'list', '--api', 'ftp://x', '--token', 't'], {}, false);
  assert.equal(badUrl.code, 2);
  assert.match(badUrl.err, /--api: must be an http:\/\/ or https:\/\/ URL/);
  assert.equal(requests.length, 0);
});

test('help and version exit 0', async () => {
  const help = await cli(['--help'], {}, false);
  assert.equal(help.code, 0);
  assert.match(help.out, /Usage: sluice/);
  const sub = await cli(['help', 'session'], {}, false);
  assert.equal(sub.code, 0);
  const version = await cli(['--version'], {}, false);
  assert.equal(version.code, 0);
  assert.match(version.out, /^\d+\.\d+\.\d+/);
});

// ---- serve (configuration errors only: nothing is started) --------------------------

test('serve with an invalid config prints the field and exits 2', async () => {
  const r = await cli(['serve', '--listen-http', 'nowhere'], {}, false);
  assert.equal(r.code, 2);
  assert.match(r.err, /^invalid config: listen\.http: expected HOST:PORT/);

  const missing = await cli(['serve', '--config', '/nonexistent/sluice.yaml'], {}, false);
  assert.equal(missing.code, 2);
  assert.match(missing.err, /cannot read config file \/nonexistent\/sluice\.yaml/);

  const env = await cli(['serve'], { SLUICE_IDENTITY: 'nobody' }, false);
  assert.equal(env.code, 2);
  assert.match(env.err, /identity: .*\(from SLUICE_IDENTITY\)/);
});

// ---- the bin -------------------------------------------------------------------------

test('the bin runs when invoked through a symlink and exits with the command status', async () => {
  const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
  const link = join(tempDir('sluice-bin-'), 'sluice');
  symlinkSync(main, link);
  const child = spawn(process.execPath, [link, 'check', 'web', 'example.com', '443', '--api', apiUrl, '--token', 't'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const started = Date.now();
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 1);
  assert.equal(out, 'deny  (reason=default_deny)\n  no rule matched (default deny)\n');
  assert.ok(Date.now() - started < 3000, 'exits promptly (no lingering keep-alive socket)');
});
