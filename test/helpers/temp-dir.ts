// Temp dirs for tests, removed when the test process exits: a suite that leaves a data
// dir per run behind fills /tmp on a developer's machine within weeks. Set
// SLUICE_TEST_KEEP_TMP=1 to keep them for a post-mortem.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];
let hooked = false;

export function tempDir(prefix = 'sluice-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  if (!hooked && process.env.SLUICE_TEST_KEEP_TMP !== '1') {
    hooked = true;
    // 'exit' runs after every test and after() hook of the file, so nothing still uses them.
    process.once('exit', () => {
      for (const d of made) rmSync(d, { recursive: true, force: true, maxRetries: 2 });
    });
  }
  return dir;
}
