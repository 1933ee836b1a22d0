// Proxy tokens. A token is derived from a per-install secret and a per-session nonce, so
// the API can hand the same token back when a launcher re-registers a session, while the
// database only ever holds the token's hash.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const NONCE_BYTES = 16;
// Nonces are cut from a pool of random bytes filled 4 KiB at a time: one call into the
// CSPRNG per 256 nonces instead of one per session create (where it showed in profiles).
// The same source as randomBytes(16), as randomUUID() does it; each byte is used once.
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let poolOffset = 0;

export function newNonce(): string {
  if (poolOffset + NONCE_BYTES > pool.length) {
    pool = randomBytes(POOL_BYTES);
    poolOffset = 0;
  }
  const nonce = pool.toString('base64url', poolOffset, poolOffset + NONCE_BYTES);
  poolOffset += NONCE_BYTES;
  return nonce;
}

export function deriveToken(secret: Buffer, sessionId: string, nonce: string): string {
  return createHmac('sha256', secret).update(sessionId).update('\0').update(nonce).digest('base64url');
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Reads `<dataDir>/<name>`, or creates it (mode 0600) with `make()` on first start. */
export function readOrCreateSecretFile(dataDir: string, name: string, make: () => string): { value: string; created: boolean; path: string } {
  const path = join(dataDir, name);
  try {
    const value = readFileSync(path, 'utf8').trim();
    if (value.length > 0) return { value, created: false, path };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = make();
  writeFileSync(path, value + '\n', { mode: 0o600, flag: 'w' });
  chmodSync(path, 0o600);
  return { value, created: true, path };
}
