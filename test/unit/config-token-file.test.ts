import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { run } from '../../src/cli/main.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { tempDir } from '../helpers/temp-dir.js';

function tokenFile(content: string): string {
  const file = join(tempDir('sluice-token-'), 'api-token');
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

test('SLUICE_API_TOKEN_FILE supplies api_token, trimmed', () => {
  const file = tokenFile('  0123456789abcdef0123456789abcdef\n\n');
  const c = loadConfig({ env: { SLUICE_API_TOKEN_FILE: file } });
  assert.equal(c.api_token, '0123456789abcdef0123456789abcdef');
});

test('an empty SLUICE_API_TOKEN_FILE is ignored like any empty variable', () => {
  const c = loadConfig({ env: { SLUICE_API_TOKEN_FILE: '' } });
  assert.equal(c.api_token, undefined);
});

test('SLUICE_API_TOKEN_FILE beats the config file, and flags still beat it', () => {
  const file = tokenFile('from-the-secret-file-0001');
  const config = join(tempDir('sluice-token-'), 'sluice.yaml');
  writeFileSync(config, 'api_token: from-the-config-file-0001\n');
  assert.equal(loadConfig({ file: config, env: { SLUICE_API_TOKEN_FILE: file } }).api_token, 'from-the-secret-file-0001');
  assert.equal(loadConfig({ file: config, env: { SLUICE_API_TOKEN_FILE: file }, flags: { api_token: 'from-the-flags-000001' } }).api_token, 'from-the-flags-000001');
});

test('an unreadable SLUICE_API_TOKEN_FILE is an error naming the variable and the file', () => {
  const missing = join(tempDir('sluice-token-'), 'nope');
  const e = configError(() => loadConfig({ env: { SLUICE_API_TOKEN_FILE: missing } }));
  assert.match(e.message, /^SLUICE_API_TOKEN_FILE: cannot read .*nope: ENOENT/);

  const dir = tempDir('sluice-token-');
  const d = configError(() => loadConfig({ env: { SLUICE_API_TOKEN_FILE: dir } }));
  assert.match(d.message, /^SLUICE_API_TOKEN_FILE: cannot read /);

  if (process.getuid?.() !== 0) {
    const locked = tokenFile('0123456789abcdef0123');
    chmodSync(locked, 0o000);
    assert.match(configError(() => loadConfig({ env: { SLUICE_API_TOKEN_FILE: locked } })).message, /SLUICE_API_TOKEN_FILE: cannot read .*EACCES/);
  }
});

test('an empty token file, or both variables at once, is an error', () => {
  const blank = tokenFile(' \n');
  assert.match(configError(() => loadConfig({ env: { SLUICE_API_TOKEN_FILE: blank } })).message, /SLUICE_API_TOKEN_FILE: .* is empty/);

  const file = tokenFile('0123456789abcdef0123');
  const both = configError(() => loadConfig({ env: { SLUICE_API_TOKEN_FILE: file, SLUICE_API_TOKEN: '0123456789abcdef0123' } }));
  assert.match(both.message, /SLUICE_API_TOKEN and SLUICE_API_TOKEN_FILE are both set/);
});

test('a token from the file that fails validation names SLUICE_API_TOKEN_FILE as its origin', () => {
  const file = tokenFile('short\n');
  const e = configError(() => loadConfig({ env: { SLUICE_API_TOKEN_FILE: file } }));
  assert.match(e.message, /api_token: .*at least 16 characters \(from SLUICE_API_TOKEN_FILE\)/);
});

test('client commands read SLUICE_API_TOKEN_FILE too: after SLUICE_API_TOKEN, before <data-dir>/api-token', async (t) => {
  const seen: Array<string | undefined> = [];
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"sessions":[]}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dataDir = tempDir('sluice-token-');
  writeFileSync(join(dataDir, 'api-token'), 'from-data-dir');
  const file = tokenFile('from-secret-file\n');
  const cli = async (env: NodeJS.ProcessEnv): Promise<{ code: number; err: string }> => {
    const err: string[] = [];
    const code = await run(['session', 'list', '--api', api, '--data-dir', dataDir], { out: () => undefined, err: (l) => err.push(l), env });
    return { code, err: err.join('\n') };
  };
  assert.equal((await cli({ SLUICE_API_TOKEN_FILE: file })).code, 0);
  assert.equal((await cli({ SLUICE_API_TOKEN_FILE: file, SLUICE_API_TOKEN: 'from-env' })).code, 0);
  assert.equal((await cli({})).code, 0);
  assert.deepEqual(seen, ['Bearer from-secret-file', 'Bearer from-env', 'Bearer from-data-dir']);

  const missing = await cli({ SLUICE_API_TOKEN_FILE: join(dataDir, 'nope') });
  assert.equal(missing.code, 2);
  assert.match(missing.err, /^SLUICE_API_TOKEN_FILE: cannot read .*nope/);
  assert.equal(seen.length, 3, 'no request without a token');
});
