// The store under faults, shared by the suites that need it: sluice as a child process
// (so it can be killed with SIGKILL) and small tmpfs file systems that this process mounts,
// fills and removes (root only; callers skip with mountUnavailable()'s reason otherwise).
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './harness.js';
import type { T } from './proxy-helpers.js';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

// ------------------------------------------------------------------ sluice as a child process

export interface Child {
  readonly proc: ChildProcess;
  readonly api: string;
  readonly token: string;
  readonly exited: Promise<number | null>;
  stderr(): string;
}

export async function serve(t: T, dataDir: string): Promise<Child> {
  const proc = spawn(process.execPath, [MAIN, 'serve', '--data-dir', dataDir, '--listen-http', '127.0.0.1:0', '--listen-socks', '127.0.0.1:0', '--listen-api', '127.0.0.1:0'], {
    env: { ...process.env, SLUICE_LOG_LEVEL: 'info', SLUICE_API_TOKEN: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => void (proc.exitCode === null && proc.kill('SIGKILL')));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  // The CLI logs where it listens (ports chosen by the kernel for :0) as one JSON line.
  const api = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`sluice did not start: ${err}`)), 10_000);
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      for (const line of out.split('\n')) {
        if (!line.includes('"sluice listening"')) continue;
        clearTimeout(timer);
        resolve((JSON.parse(line) as { api: string }).api);
      }
    });
    proc.once('exit', (code) => reject(new Error(`sluice exited with ${code}: ${err}`)));
  });
  proc.stdout!.resume();
  return { proc, api, token: readFileSync(join(dataDir, 'api-token'), 'utf8').trim(), exited, stderr: () => err };
}

export async function call(c: Child, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(c.api + path, {
    method,
    headers: { authorization: `Bearer ${c.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

// ------------------------------------------------------------------ disk faults (tmpfs)

export function mountUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `tmpfs needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'not running as root (mounting a tmpfs needs it)';
  const probe = tempDir('sluice-mount-probe-');
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(probe, { recursive: true, force: true });
    return `cannot mount a tmpfs: ${(r.stderr || r.error?.message || '').trim()}`;
  }
  spawnSync('umount', [probe]);
  rmSync(probe, { recursive: true, force: true });
  return undefined;
}

/** A tmpfs of `size` mounted for this test and removed after it. */
export function tinyDisk(t: T, size: string): string {
  const dir = tempDir('sluice-disk-');
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  t.after(() => {
    if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Writes a file until the file system says ENOSPC, then frees `leave` bytes again; returns its path. */
export function fill(dir: string, leave = 0): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'w');
  try {
    for (const size of [1024 * 1024, 64 * 1024, 4096, 512, 1]) {
      const chunk = Buffer.alloc(size);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
  if (leave > 0) truncateSync(path, statSync(path).size - leave);
  return path;
}

