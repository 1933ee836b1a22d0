// Who is connecting: proxy credentials (container + session token), else a session's
// declared source address. A wrong credential is never rescued by the source address:
// a sandbox must not be able to claim another identity by picking a username.
import { hashToken } from './tokens.js';
import { isValidName } from '../policy/patterns.js';
import type { PolicyState } from '../policy/state.js';

export type IdentityMode = 'credentials' | 'username';

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

export type Identity =
  | { readonly ok: true; readonly container: string; readonly via: 'token' | 'source_ip' | 'username' }
  | { readonly ok: false; readonly reason: 'missing' | 'invalid' };

const MISSING: Identity = Object.freeze({ ok: false, reason: 'missing' });
const INVALID: Identity = Object.freeze({ ok: false, reason: 'invalid' });

export function identify(state: PolicyState, mode: IdentityMode, creds: Credentials | null, remoteIp: string, now: number): Identity {
  if (creds) {
    if (!isValidName(creds.username)) return INVALID;
    if (mode === 'username') return { ok: true, container: creds.username, via: 'username' };
    const session = state.sessionByTokenHash(tokenHashOf(creds.password), now);
    if (session && session.record.container === creds.username) return { ok: true, container: creds.username, via: 'token' };
    return INVALID;
  }
  const bySource = state.sessionBySourceIp(remoteIp, now);
  if (bySource) return { ok: true, container: bySource.record.container, via: 'source_ip' };
  return MISSING;
}

// SHA-256 of the same token on every connection a sandbox opens was a visible share of a
// tunnel's CPU. Bounded (and only for token-sized inputs) so junk credentials cannot grow it;
// it holds hashes of tokens the process has seen anyway.
const TOKEN_HASH_CACHE_SIZE = 4096;
const MAX_CACHED_TOKEN_LENGTH = 256;
const tokenHashes = new Map<string, string>();

function tokenHashOf(token: string): string {
  let hash = tokenHashes.get(token);
  if (hash !== undefined) return hash;
  hash = hashToken(token);
  if (token.length <= MAX_CACHED_TOKEN_LENGTH) {
    if (tokenHashes.size >= TOKEN_HASH_CACHE_SIZE) tokenHashes.clear();
    tokenHashes.set(token, hash);
  }
  return hash;
}

/**
 * A credential that can never authenticate. A malformed header maps to it rather than to
 * "no credentials", so a broken header is refused instead of falling back to source address.
 */
export const MALFORMED_CREDENTIALS: Credentials = Object.freeze({ username: '', password: '' });

const utf8 = new TextDecoder('utf-8', { fatal: true });

// Every tunnel of a sandbox sends the same Proxy-Authorization; decoding it (regex, base64,
// UTF-8 check) is remembered per header string. Bounded like the token hashes, and only for
// credential-sized headers; a malformed header is not remembered (it is refused anyway).
const CREDENTIALS_CACHE_SIZE = 4096;
const MAX_CACHED_HEADER_LENGTH = 512;
const parsedHeaders = new Map<string, Credentials>();

/** Decodes `Basic base64(user:pass)`; null when the header is absent. */
export function parseBasicAuth(header: string | undefined): Credentials | null {
  if (header === undefined) return null;
  const known = parsedHeaders.get(header);
  if (known !== undefined) return known;
  const creds = decodeBasicAuth(header);
  if (creds !== MALFORMED_CREDENTIALS && header.length <= MAX_CACHED_HEADER_LENGTH) {
    if (parsedHeaders.size >= CREDENTIALS_CACHE_SIZE) parsedHeaders.clear();
    parsedHeaders.set(header, creds);
  }
  return creds;
}

function decodeBasicAuth(header: string): Credentials {
  const m = /^basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(header);
  if (!m) return MALFORMED_CREDENTIALS;
  let decoded: string;
  try {
    decoded = utf8.decode(Buffer.from(m[1]!, 'base64'));
  } catch {
    return MALFORMED_CREDENTIALS;
  }
  const colon = decoded.indexOf(':');
  if (colon < 0) return MALFORMED_CREDENTIALS;
  return Object.freeze({ username: decoded.slice(0, colon), password: decoded.slice(colon + 1) });
}
