// Runs every compiled test file under dist/test (Node 20's --test takes no globs).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
const only = process.argv.slice(2);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      if (name !== 'bench') walk(path);
    } else if (name.endsWith('.test.js') && (only.length === 0 || only.some((o) => path.includes(o)))) {
      files.push(path);
    }
  }
})(root);
if (files.length === 0) {
  console.error('no test files found under dist/test (did the build run?)');
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-timeout=60000', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
