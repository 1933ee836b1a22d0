import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { tempDir } from '../helpers/temp-dir.js';

function tempFile(name: string, content: string): string {
  const dir = tempDir('sluice-config-');
  const file = join(dir, name);
  writeFileSync(file, content);
  return file;
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ConfigError');
}

test('no sources gives the schema defaults with data_dir made absolute', () => {
  const c = loadConfig({});
  assert.equal(c.listen.http, '127.0.0.1:3128');
  assert.equal(c.listen.socks, '127.0.0.1:1080');
  assert.equal(c.listen.api, '127.0.0.1:9080');
  assert.equal(c.identity, 'credentials');
  assert.equal(c.data_dir, resolve(process.cwd(), 'data'));
  assert.equal(c.log.level, 'info');
});

test('reads a YAML file', () => {
  const file = tempFile(
    'sluice.yaml',
    ['data_dir: /var/lib/sluice', 'listen:', '  http: 0.0.0.0:8080', 'identity: username', 'timeouts:', '  idle_ms: 5000', ''].join('\n'),
  );
  const c = loadConfig({ file });
  assert.equal(c.data_dir, '/var/lib/sluice');
  assert.equal(c.listen.http, '0.0.0.0:8080');
  assert.equal(c.listen.socks, '127.0.0.1:1080', 'unset siblings keep their defaults');
  assert.equal(c.identity, 'username');
  assert.equal(c.timeouts.idle_ms, 5000);
  assert.equal(c.timeouts.connect_ms, 10_000);
});

test('reads a JSON file', () => {
  const file = tempFile('sluice.json', JSON.stringify({ listen: { api: '[::1]:9999' }, log: { level: 'debug', decisions: false } }));
  const c = loadConfig({ file });
  assert.equal(c.listen.api, '[::1]:9999');
  assert.equal(c.log.level, 'debug');
  assert.equal(c.log.decisions, false);
});

test('an unknown extension is parsed as YAML (which also covers JSON)', () => {
  assert.equal(loadConfig({ file: tempFile('sluice.conf', 'identity: username\n') }).identity, 'username');
  assert.equal(loadConfig({ file: tempFile('sluice.cfg', '{"identity": "username"}') }).identity, 'username');
});

test('an empty YAML file means "no settings"', () => {
  assert.equal(loadConfig({ file: tempFile('empty.yaml', '') }).listen.http, '127.0.0.1:3128');
});

test('relative data_dir resolves against the working directory', () => {
  const c = loadConfig({ flags: { data_dir: 'state/here' } });
  assert.equal(c.data_dir, resolve(process.cwd(), 'state/here'));
});

test('precedence: file < env < flags, merged field by field', () => {
  const file = tempFile(
    'p.yaml',
    ['data_dir: /from/file', 'listen:', '  http: 127.0.0.1:1001', '  socks: 127.0.0.1:1002', '  api: 127.0.0.1:1003', 'log:', '  level: warn', 'identity: username', ''].join('\n'),
  );
  const env = { SLUICE_LISTEN_HTTP: '127.0.0.1:2001', SLUICE_LISTEN_API: '127.0.0.1:2003', SLUICE_LOG_LEVEL: 'error', SLUICE_DATA_DIR: '/from/env' };
  const flags = { listen: { http: '127.0.0.1:3001' } };
  const c = loadConfig({ file, env, flags });
  assert.equal(c.listen.http, '127.0.0.1:3001', 'flag beats env and file');
  assert.equal(c.listen.api, '127.0.0.1:2003', 'env beats file');
  assert.equal(c.listen.socks, '127.0.0.1:1002', 'file value survives when env/flags set siblings');
  assert.equal(c.log.level, 'error');
  assert.equal(c.data_dir, '/from/env');
  assert.equal(c.identity, 'username');
});

test('every SLUICE_* variable maps onto its field', () => {
  const c = loadConfig({
    env: {
      SLUICE_DATA_DIR: '/d',
      SLUICE_LISTEN_HTTP: '127.0.0.1:1',
      SLUICE_LISTEN_SOCKS: '127.0.0.1:2',
      SLUICE_LISTEN_API: '127.0.0.1:3',
      SLUICE_ADVERTISE_HOST: 'proxy.internal',
      SLUICE_API_TOKEN: 'a-token-of-sixteen-chars',
      SLUICE_IDENTITY: 'username',
      SLUICE_LOG_LEVEL: 'trace',
    },
  });
  assert.equal(c.data_dir, '/d');
  assert.deepEqual(c.listen, { http: '127.0.0.1:1', socks: '127.0.0.1:2', api: '127.0.0.1:3' });
  assert.equal(c.advertise_host, 'proxy.internal');
  assert.equal(c.api_token, 'a-token-of-sixteen-chars');
  assert.equal(c.identity, 'username');
  assert.equal(c.log.level, 'trace');
});

test('empty env vars and undefined flag leaves do not override', () => {
  const file = tempFile('e.yaml', 'listen:\n  http: 127.0.0.1:1111\nlog:\n  level: warn\n');
  const c = loadConfig({
    file,
    env: { SLUICE_LISTEN_HTTP: '', SLUICE_LOG_LEVEL: '' },
    flags: { data_dir: undefined, listen: { http: undefined } },
  });
  assert.equal(c.listen.http, '127.0.0.1:1111');
  assert.equal(c.log.level, 'warn');
});

test('SLUICE_CONFIG names the file unless one is given explicitly', () => {
  const viaEnv = tempFile('env.yaml', 'identity: username\n');
  assert.equal(loadConfig({ env: { SLUICE_CONFIG: viaEnv } }).identity, 'username');
  const explicit = tempFile('explicit.yaml', 'identity: credentials\n');
  assert.equal(loadConfig({ file: explicit, env: { SLUICE_CONFIG: viaEnv } }).identity, 'credentials');
  assert.equal(loadConfig({ env: { SLUICE_CONFIG: '' } }).identity, 'credentials', 'empty SLUICE_CONFIG is ignored');
});

test('an invalid field is named, with where the value came from', () => {
  const fromFile = tempFile('bad.yaml', 'listen:\n  http: "nonsense"\n');
  const e1 = configError(() => loadConfig({ file: fromFile }));
  assert.match(e1.message, /^invalid config: listen\.http: expected HOST:PORT/);
  assert.ok(e1.message.includes(fromFile), e1.message);
  assert.equal(e1.issues.length, 1, 'one line per field even when several checks fail');

  const e2 = configError(() => loadConfig({ file: fromFile, env: { SLUICE_LISTEN_HTTP: '1.2.3.4:99999' } }));
  assert.match(e2.message, /listen\.http: port must be 0-65535 \(from SLUICE_LISTEN_HTTP\)/);

  const e3 = configError(() => loadConfig({ env: { SLUICE_LOG_LEVEL: 'loud' }, flags: { api_token: 'short' } }));
  assert.match(e3.message, /log\.level: .*\(from SLUICE_LOG_LEVEL\)/);
  assert.match(e3.message, /api_token: api_token must be at least 16 characters \(from command-line flags\)/);
  assert.equal(e3.issues.length, 2);
});

test('a wrongly typed field is named', () => {
  const e = configError(() => loadConfig({ file: tempFile('t.json', '{"timeouts": {"connect_ms": "soon"}}') }));
  assert.match(e.message, /timeouts\.connect_ms: /);
});

test('unknown fields are rejected by name, at any depth', () => {
  const e = configError(() => loadConfig({ file: tempFile('u.yaml', 'listn:\n  http: 127.0.0.1:1\nlisten:\n  htp: 127.0.0.1:2\n') }));
  assert.match(e.message, /listn: unknown field/);
  assert.match(e.message, /listen\.htp: unknown field/);
});

test('a __proto__ key is an unknown field, not a prototype', () => {
  const e = configError(() => loadConfig({ file: tempFile('proto.json', '{"__proto__": {"identity": "username"}}') }));
  assert.match(e.message, /__proto__: unknown field/);
  assert.equal(({} as Record<string, unknown>).identity, undefined);
});

test('missing, unparsable and non-mapping files name the file', () => {
  const missing = join(tempDir('sluice-config-'), 'nope.yaml');
  assert.match(configError(() => loadConfig({ file: missing })).message, new RegExp(`cannot read config file ${missing}: ENOENT`));

  const badYaml = tempFile('bad.yml', 'listen: [unclosed\n');
  assert.ok(configError(() => loadConfig({ file: badYaml })).message.startsWith(`cannot parse config file ${badYaml}: `));

  const badJson = tempFile('bad.json', '{"listen": ');
  assert.ok(configError(() => loadConfig({ file: badJson })).message.startsWith(`cannot parse config file ${badJson}: `));

  const list = tempFile('list.yaml', '- a\n- b\n');
  assert.match(configError(() => loadConfig({ file: list })).message, /must contain a mapping of settings, not a list/);

  const dupe = tempFile('dupe.yaml', 'identity: username\nidentity: credentials\n');
  assert.ok(configError(() => loadConfig({ file: dupe })).message.includes(dupe));
});

test('dns: cache defaults, set from a file, 0 turns the cache off, bad values named', () => {
  assert.deepEqual(loadConfig({}).dns, { cache_ttl_ms: 30_000, negative_ttl_ms: 5_000, cache_size: 10_000 });
  const c = loadConfig({ file: tempFile('dns.yaml', 'dns:\n  cache_ttl_ms: 0\n  cache_size: 50\n') });
  assert.deepEqual(c.dns, { cache_ttl_ms: 0, negative_ttl_ms: 5_000, cache_size: 50 });
  assert.equal(c.timeouts.dns_ms, 5_000, 'timeouts.dns_ms stays where it was');

  const bad = configError(() =>
    loadConfig({ file: tempFile('bad-dns.json', JSON.stringify({ dns: { cache_ttl_ms: -1, negative_ttl_ms: 1.5, cache_size: 0, ttl: 5 } })) }),
  );
  for (const field of ['dns.cache_ttl_ms', 'dns.negative_ttl_ms', 'dns.cache_size']) assert.match(bad.message, new RegExp(`${field.replace('.', '\\.')}: `));
  assert.match(bad.message, /dns\.ttl: unknown field/);
  assert.match(configError(() => loadConfig({ flags: { dns: { cache_ttl_ms: 3_600_001 } } })).message, /dns\.cache_ttl_ms: .*\(from command-line flags\)/);
});
