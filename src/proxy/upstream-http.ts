// Dialling through a parent HTTP proxy (Squid and the like): one `CONNECT ip:port` per
// connection. The parent's answer is read with a strict parser bounded in bytes, so a
// parent that answers with garbage or an endless header block fails that one connection
// with a clear reason instead of holding memory or the dial open.
import net from 'node:net';
import type { FailureKind, Failure } from './outcomes.js';

/** The most of the parent's answer (status line and headers) that is read before giving up. */
export const MAX_REPLY_BYTES = 16 * 1024;

export interface HttpParent {
  readonly host: string;
  readonly port: number;
  /** The whole Proxy-Authorization value (Basic), or null for a parent that needs none. */
  readonly authorization: string | null;
  /** Scheme, host and port: what logs and errors show (never the credentials). */
  readonly label: string;
}

export type ReplyParse =
  | { readonly state: 'more' }
  | { readonly state: 'bad'; readonly why: string }
  | { readonly state: 'done'; readonly status: number; readonly headers: ReadonlyMap<string, string>; readonly headerBytes: number };

const STATUS_LINE = /^HTTP\/1\.[01] ([1-5]\d\d)(?: [\t\x20-\x7e\x80-\xff]*)?$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*([\t\x20-\x7e\x80-\xff]*?)[\t ]*$/;
const PREFIX = 'HTTP/1.';

/**
 * Parses the parent's answer from the bytes read so far (latin1). CRLF line ends only, no
 * folded header lines: a parent that does not speak HTTP/1.x plainly is not guessed at.
 * Garbage is refused as soon as the first bytes or the first line show it, not at the limit.
 */
export function parseConnectReply(buf: Buffer): ReplyParse {
  const end = buf.indexOf('\r\n\r\n');
  const limit = end === -1 ? buf.length : end + 4;
  if (limit > MAX_REPLY_BYTES) return { state: 'bad', why: `its answer's header block is larger than ${MAX_REPLY_BYTES} bytes` };
  const head = buf.toString('latin1', 0, Math.min(buf.length, limit));
  // The first LF ends the status line: a bare one (no CR) shows a malformed answer at once.
  const lf = head.indexOf('\n');
  const lineEnd = lf > 0 && head.charCodeAt(lf - 1) === 13 ? lf - 1 : lf;
  const first = lf === -1 ? head : head.slice(0, lineEnd);
  const prefix = first.slice(0, PREFIX.length);
  if (prefix !== PREFIX.slice(0, prefix.length)) return { state: 'bad', why: 'its answer is not HTTP' };
  if (lf !== -1 && (lineEnd === lf || !STATUS_LINE.test(first))) return { state: 'bad', why: 'its answer has a malformed status line' };
  if (end === -1) return { state: 'more' };
  const status = Number(first.slice(9, 12));
  const headers = new Map<string, string>();
  const lines = head.slice(lineEnd + 2, end).split('\r\n');
  for (const line of lines) {
    if (line === '') continue;
    const m = HEADER_LINE.exec(line);
    if (m === null) return { state: 'bad', why: 'its answer has a malformed header line' };
    const name = m[1]!.toLowerCase();
    const prior = headers.get(name);
    headers.set(name, prior === undefined ? m[2]! : `${prior}, ${m[2]!}`);
  }
  return { state: 'done', status, headers, headerBytes: end + 4 };
}

const STATUS_NAMES: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  407: 'Proxy Authentication Required',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

// RFC 9209 error types a parent may name in Proxy-Status (sluice itself sends them), and
// what each means here; anything else falls back to the status code.
const PROXY_STATUS_ERRORS: Record<string, FailureKind> = {
  connection_refused: 'connection_refused',
  connection_timeout: 'connection_timeout',
  destination_unavailable: 'unreachable',
  destination_ip_unroutable: 'unreachable',
};

// Squid names the connect errno in X-Squid-Error ("ERR_CONNECT_FAIL 111") and answers 503 for all of them.
const SQUID_ERRNOS: Record<string, FailureKind> = {
  '110': 'connection_timeout',
  '111': 'connection_refused',
  '101': 'unreachable',
  '113': 'unreachable',
};

function refusalKind(status: number, headers: ReadonlyMap<string, string>): FailureKind {
  const named = /\berror=([a-z_]+)/.exec(headers.get('proxy-status') ?? '')?.[1];
  if (named !== undefined && PROXY_STATUS_ERRORS[named] !== undefined) return PROXY_STATUS_ERRORS[named]!;
  const squid = /^ERR_CONNECT_FAIL (\d+)/.exec(headers.get('x-squid-error') ?? '')?.[1];
  if (squid !== undefined && SQUID_ERRNOS[squid] !== undefined) return SQUID_ERRNOS[squid]!;
  return status === 504 ? 'connection_timeout' : 'connect_error';
}

/** What the parent's refusal of `CONNECT target` means for the client (never its reason text: it is the parent's to choose). */
export function refusalOf(parent: HttpParent, status: number, headers: ReadonlyMap<string, string>, target: string): Failure {
  const name = STATUS_NAMES[status];
  const said = name === undefined ? `HTTP ${status}` : `${status} ${name}`;
  if (status === 407) {
    const why = parent.authorization === null ? 'requires credentials and none are configured' : "refused sluice's credentials";
    return { kind: 'connect_error', detail: `upstream proxy ${parent.label} ${why} (${said})` };
  }
  const kind = refusalKind(status, headers);
  const error = kind === 'connect_error' ? '' : `, ${kind}`;
  return { kind, detail: `upstream proxy ${parent.label} could not connect to ${target} (${said}${error})` };
}

/** A connection through a parent proxy, its handshake done, or why there is none. */
export type ViaResult = { ok: true; socket: net.Socket } | { ok: false; failure: Failure };

function connectRequest(parent: HttpParent, target: string): string {
  const auth = parent.authorization === null ? '' : `Proxy-Authorization: ${parent.authorization}\r\n`;
  return `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`;
}

/**
 * Opens a connection to `target` (a checked `ip:port` or `[v6]:port`) through `parent`,
 * within `timeoutMs`. The answer is pulled with read() rather than taken from 'data' events,
 * so the socket is handed over neither flowing nor explicitly paused: whoever takes it
 * starts the flow by listening, as with a fresh socket (Node's HTTP client never resumes
 * one). The bytes that followed the parent's header block (a server that speaks first may
 * have sent them in the same read as the 200) are put back at the front of its stream.
 */
export function connectViaHttp(parent: HttpParent, target: string, timeoutMs: number): Promise<ViaResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: parent.host, port: parent.port, noDelay: true });
    let buffered: Buffer = Buffer.alloc(0);
    let settled = false;
    const settle = (r: ViaResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('error', onError);
      socket.off('end', onEnd);
      socket.off('connect', onConnect);
      if (!r.ok) {
        socket.on('error', () => undefined);
        socket.destroy();
      }
      resolve(r);
    };
    const fail = (kind: FailureKind, detail: string): void => settle({ ok: false, failure: { kind, detail } });
    const timer = setTimeout(() => fail('connection_timeout', `upstream proxy ${parent.label} did not connect to ${target} in time`), Math.max(1, timeoutMs));
    let connected = false;
    const onConnect = (): void => {
      connected = true;
      socket.write(connectRequest(parent, target));
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (!settled && (chunk = socket.read() as Buffer | null) !== null) onData(chunk);
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const reply = parseConnectReply(buffered);
      if (reply.state === 'more') return;
      if (reply.state === 'bad') return fail('connect_error', `upstream proxy ${parent.label} failed: ${reply.why}`);
      // RFC 9110 9.3.6: any 2xx opens the tunnel. Interim 1xx answers are not expected from a
      // parent proxy, and guessing past one is not worth it.
      if (reply.status < 200 || reply.status > 299) return settle({ ok: false, failure: refusalOf(parent, reply.status, reply.headers, target) });
      const rest = buffered.subarray(reply.headerBytes);
      settle({ ok: true, socket });
      if (rest.length > 0) socket.unshift(rest);
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      const code = err.code ?? err.message;
      fail('connect_error', connected ? `upstream proxy ${parent.label} failed before answering (${code})` : `upstream proxy ${parent.label} is unreachable (${code})`);
    };
    const onEnd = (): void => fail('connect_error', `upstream proxy ${parent.label} closed the connection before answering`);
    socket.once('connect', onConnect);
    socket.on('readable', onReadable);
    socket.once('error', onError);
    socket.once('end', onEnd);
  });
}
