// Session ids that sluice generates (when a launcher sends none): UUIDv7 (RFC 9562), a
// millisecond timestamp followed by 74 random bits. With random (v4) ids every new session
// landed at a random place in the index of session ids and, through rules_by_session, in
// the index of its rules, so a commit of N creates (and later of N deletes) rewrote about
// N pages of each; time-ordered ids go to the end of both, a few pages per commit. An id
// grants nothing by itself (the API needs its token, the proxy the session's own token),
// so the timestamp it reveals (also in created_at) and the fewer random bits cost nothing.
import { randomBytes } from 'node:crypto';

const RANDOM_BYTES = 10;
// As for proxy-token nonces: random bytes are cut from a pool, one CSPRNG call per 409 ids.
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** A UUIDv7 for a session created at `now` (epoch ms). */
export function newSessionId(now: number): string {
  if (poolOffset + RANDOM_BYTES > pool.length) {
    pool = randomBytes(POOL_BYTES);
    poolOffset = 0;
  }
  const b = Buffer.allocUnsafe(16);
  b.writeUIntBE(Math.max(0, Math.min(Math.floor(now), 2 ** 48 - 1)), 0, 6);
  pool.copy(b, 6, poolOffset, poolOffset + RANDOM_BYTES);
  poolOffset += RANDOM_BYTES;
  b[6] = 0x70 | (b[6]! & 0x0f); // version 7
  b[8] = 0x80 | (b[8]! & 0x3f); // variant 10
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
