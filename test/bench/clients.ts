// Raw-socket clients for the load workers: tunnel set-up (HTTP CONNECT, SOCKS5, direct)
// and a keep-alive HTTP/1.1 request loop. Deliberately minimal (no http module, no
// parsing beyond what each step needs) so the generator costs little CPU per operation.
import net from 'node:net';
import type { Dest, Hop } from './targets.js';

const CRLF2 = Buffer.from('\r\n\r\n');

export type TunnelCallback = (err: Error | null, socket: net.Socket | null) => void;

/**
 * Connects through `hop` to `dest` and calls back with a socket whose next bytes are the
 * origin's. The socket has no 'error' listener when handed over: add one at once.
 */
export function openTunnel(hop: Hop, dest: Dest, localAddress: string | undefined, timeoutMs: number, cb: TunnelCallback, sink?: (chunk: Buffer) => void): void {
  const host = hop.kind === 'direct' ? dest.host : hop.host;
  const port = hop.kind === 'direct' ? dest.port : hop.port;
  // With a sink, reads go into one reused 1 MiB buffer (no allocation per chunk) so a
  // bulk download is not limited by the client's garbage; the handshake copies what it keeps.
  let onread = (chunk: Buffer): void => onData(Buffer.from(chunk));
  const reused = sink ? Buffer.allocUnsafe(1 << 20) : null;
  const s = net.connect({
    host,
    port,
    localAddress,
    noDelay: true,
    ...(reused ? { onread: { buffer: reused, callback: (n: number) => (onread(reused.subarray(0, n)), true) } } : {}),
  });
  let done = false;
  let buf: Buffer | null = null;
  // Each protocol step waits for the whole reply it needs, as real clients do.
  let step: (b: Buffer) => number = () => 0; // bytes consumed, or 0 = need more
  function onData(chunk: Buffer): void {
    buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
    for (;;) {
      const used = step(buf);
      if (used === 0 || done) return;
      buf = used >= buf.length ? null : buf.subarray(used);
      if (buf === null) return;
    }
  }
  const finish = (err: Error | null): void => {
    if (done) return;
    done = true;
    s.setTimeout(0);
    s.removeListener('error', finish);
    s.removeListener('data', onData);
    if (sink) onread = sink;
    if (err) {
      s.on('error', () => undefined);
      s.destroy();
      cb(err, null);
    } else {
      cb(null, s);
    }
  };
  s.setTimeout(timeoutMs, () => finish(new Error('handshake timeout')));
  s.on('error', finish);

  if (hop.kind === 'direct') {
    s.once('connect', () => finish(null));
    return;
  }

  if (!sink) s.on('data', onData);

  if (hop.kind === 'connect') {
    const authority = `${dest.host}:${dest.port}`;
    const req = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${hop.auth ? `Proxy-Authorization: Basic ${hop.auth}\r\n` : ''}\r\n`;
    s.once('connect', () => s.write(req));
    step = (b) => {
      const end = b.indexOf(CRLF2);
      if (end < 0) return 0;
      // "HTTP/1.x 200 ..." — anything else is a refusal.
      if (b.length < 12 || b[9] !== 0x32 || b[10] !== 0x30 || b[11] !== 0x30) {
        finish(new Error(`CONNECT refused: ${b.toString('latin1', 0, Math.min(end, 80))}`));
        return 0;
      }
      if (end + 4 !== b.length) {
        finish(new Error('unexpected bytes after the CONNECT response'));
        return 0;
      }
      finish(null);
      return b.length;
    };
    return;
  }

  // SOCKS5 (RFC 1928), username/password (RFC 1929) when the hop has credentials.
  const { user, pass } = hop;
  const method = user !== null ? 0x02 : 0x00;
  const ip4 = dest.host.split('.').map(Number);
  const request = Buffer.from([0x05, 0x01, 0x00, 0x01, ...ip4, dest.port >> 8, dest.port & 0xff]);
  s.once('connect', () => s.write(Buffer.from([0x05, 0x01, method])));
  const reply = (b: Buffer): number => {
    if (b.length < 5) return 0;
    if (b[1] !== 0x00) {
      finish(new Error(`SOCKS5 request refused (reply ${b[1]})`));
      return 0;
    }
    const atyp = b[3];
    const len = atyp === 0x01 ? 10 : atyp === 0x04 ? 22 : 7 + b[4]!;
    if (b.length < len) return 0;
    if (b.length > len) {
      finish(new Error('unexpected bytes after the SOCKS5 reply'));
      return 0;
    }
    finish(null);
    return len;
  };
  const auth = (b: Buffer): number => {
    if (b.length < 2) return 0;
    if (b[1] !== 0x00) {
      finish(new Error('SOCKS5 authentication refused'));
      return 0;
    }
    s.write(request);
    step = reply;
    return 2;
  };
  step = (b) => {
    if (b.length < 2) return 0;
    if (b[0] !== 0x05 || b[1] !== method) {
      finish(new Error(`SOCKS5 method refused (${b[1]})`));
      return 0;
    }
    if (method === 0x02) {
      const u = Buffer.from(user!);
      const p = Buffer.from(pass!);
      s.write(Buffer.concat([Buffer.from([0x01, u.length]), u, Buffer.from([p.length]), p]));
      step = auth;
    } else {
      s.write(request);
      step = reply;
    }
    return 2;
  };
}

/** `GET path` with Connection: close, for one tunnel or a direct connection. */
export function closingGet(dest: Dest, path: string): Buffer {
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${dest.host}:${dest.port}\r\nUser-Agent: sluice-bench\r\nConnection: close\r\n\r\n`, 'latin1');
}

// ---- keep-alive HTTP/1.1 ---------------------------------------------------

export interface KeepAliveOptions {
  readonly host: string;
  readonly port: number;
  readonly connections: number;
  readonly endAt: number;
  readonly sources: readonly string[];
  /** The next request for connection `conn` (called once per request); null = this connection is done. */
  readonly request: (conn: number) => Buffer | null;
  /** Sees every complete response; its body is only sliced out when `wantBody`. */
  readonly onResponse?: (conn: number, status: number, body: Buffer | null) => void;
  readonly wantBody?: boolean;
  readonly timeoutMs?: number;
}

export interface KeepAliveResult {
  ok: number;
  /** Responses with a status other than 2xx. */
  bad: number;
  errors: number;
  reconnects: number;
  firstError: string | null;
}

/**
 * Sends requests one at a time on each of `connections` keep-alive connections until
 * `endAt`; latency is request write to last response byte. Responses must be framed by
 * Content-Length or chunked encoding (all servers measured here do that).
 */
export function keepAliveLoop(opts: KeepAliveOptions, record: (ms: number) => void): Promise<KeepAliveResult> {
  const result: KeepAliveResult = { ok: 0, bad: 0, errors: 0, reconnects: 0, firstError: null };
  let running = opts.connections;
  let resolveAll!: () => void;
  const all = new Promise<void>((r) => (resolveAll = r));
  let src = 0;

  const runConnection = (conn: number): void => {
    if (Date.now() >= opts.endAt) {
      if (--running === 0) resolveAll();
      return;
    }
    const s = net.connect({ host: opts.host, port: opts.port, localAddress: opts.sources[src++ % opts.sources.length], noDelay: true });
    let buf: Buffer | null = null;
    let t0 = 0;
    let closed = false;
    const fail = (err: Error): void => {
      if (closed) return;
      closed = true;
      result.errors++;
      result.firstError ??= err.message;
      s.destroy();
      result.reconnects++;
      // Back off a little so a refusing server is not hammered in a tight loop.
      setTimeout(() => runConnection(conn), 20);
    };
    const send = (): void => {
      const next = Date.now() >= opts.endAt ? null : opts.request(conn);
      if (next === null) {
        closed = true;
        s.destroy();
        if (--running === 0) resolveAll();
        return;
      }
      t0 = performance.now();
      s.write(next);
    };
    s.setTimeout(opts.timeoutMs ?? 10_000, () => fail(new Error('response timeout')));
    s.on('error', fail);
    s.on('close', () => fail(new Error('connection closed by server')));
    s.on('connect', send);
    s.on('data', (chunk: Buffer) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      const framed = frame(buf);
      if (framed === null) return;
      if (framed.length < 0) return fail(new Error('unframed response'));
      if (framed.length !== buf.length) return fail(new Error('bytes beyond the response'));
      const status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48);
      const ms = performance.now() - t0;
      if (status >= 200 && status < 300) {
        result.ok++;
        record(ms);
      } else {
        result.bad++;
      }
      opts.onResponse?.(conn, status, opts.wantBody ? buf.subarray(framed.bodyStart, framed.length) : null);
      buf = null;
      if (!framed.close) return send();
      // The server ends this connection (e.g. its keep-alive request limit): open another.
      closed = true;
      s.destroy();
      result.reconnects++;
      runConnection(conn);
    });
  };
  for (let c = 0; c < opts.connections; c++) runConnection(c);
  return all.then(() => result);
}

/** Total length of the first complete response in `b` (null: incomplete; -1: cannot frame). */
function frame(b: Buffer): { length: number; bodyStart: number; close: boolean } | null {
  const end = b.indexOf(CRLF2);
  if (end < 0) return null;
  const head = b.toString('latin1', 0, end).toLowerCase();
  const bodyStart = end + 4;
  const close = /\r\n(proxy-)?connection:[ \t]*close/.test(head) || (head.startsWith('http/1.0') && !/\r\n(proxy-)?connection:[ \t]*keep-alive/.test(head));
  const cl = /\r\ncontent-length:[ \t]*(\d+)/.exec(head);
  if (cl) {
    const total = bodyStart + Number(cl[1]);
    return b.length >= total ? { length: total, bodyStart, close } : null;
  }
  if (/\r\ntransfer-encoding:[ \t]*chunked/.test(head)) {
    // No trailers in these responses: the body ends at the zero-length chunk.
    if (b.length - bodyStart >= 5 && b.toString('latin1', bodyStart, bodyStart + 5) === '0\r\n\r\n') return { length: bodyStart + 5, bodyStart, close };
    const last = b.indexOf('\r\n0\r\n\r\n', bodyStart);
    return last >= 0 ? { length: last + 7, bodyStart, close } : null;
  }
  if (/^http\/1\.[01] (1\d\d|204|304)/.test(head)) return { length: bodyStart, bodyStart, close };
  return { length: -1, bodyStart, close };
}

/** Loopback source addresses to spread client connections over (fewer TIME_WAIT tuple clashes). */
export function sourceAddresses(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `127.0.0.${10 + i}`);
}
