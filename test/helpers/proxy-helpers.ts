// Building blocks for the data-plane end-to-end tests (test/e2e/proxy-*.test.ts): a test
// sluice + origin with cleanup registered, a scriptable raw TCP client, SOCKS wire
// messages, a minimal HTTP response parser, and a "blackhole" destination whose connects hang.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { Worker } from 'node:worker_threads';
import { SocksClient, type SocksClientOptions } from 'socks';
import { startOrigin, startTestSluice, type Origin, type SessionCreated, type StartOptions, type TestSluice } from './harness.js';

export type T = TestContext;

/** A test sluice that is closed (and its data dir removed) when the test ends. */
export async function sluiceFor(t: T, opts: StartOptions = {}): Promise<TestSluice> {
  const s = await startTestSluice(opts);
  t.after(() => s.close(true));
  return s;
}

/** An origin (see harness startOrigin) that is closed when the test ends. */
export async function originFor(t: T, host = '127.0.0.2', handler?: http.RequestListener): Promise<Origin> {
  const o = await startOrigin(host, handler);
  t.after(() => o.close());
  return o;
}

/** A session of `container` allowed to reach exactly `origin` (host and port). */
export function sessionFor(s: TestSluice, container: string, origin: { host: string; port: number }, extra: Record<string, unknown> = {}): Promise<SessionCreated> {
  return s.createSession({
    container_name: container,
    network_rules: [{ destination_pattern: origin.host, port_pattern: String(origin.port) }],
    ...extra,
  });
}

/** Sluice + one origin on 127.0.0.2 + a session of `build-1` allowed to reach it. */
export async function basicSetup(t: T, opts: StartOptions = {}): Promise<{ s: TestSluice; origin: Origin; session: SessionCreated }> {
  const origin = await originFor(t);
  const s = await sluiceFor(t, opts);
  const session = await sessionFor(s, 'build-1', origin);
  return { s, origin, session };
}

export function basic(user: string, pass: string): string {
  return `Basic ${Buffer.from(`${user}:${pass}`, 'utf8').toString('base64')}`;
}

/** http://user:pass@127.0.0.1:port for curl -x. */
export function proxyUrl(port: number, user: string, pass: string, scheme = 'http'): string {
  return `${scheme}://${encodeURIComponent(user)}:${encodeURIComponent(pass)}@127.0.0.1:${port}`;
}

// ------------------------------------------------------------------ raw client

/** A TCP client whose received bytes and closure can be awaited step by step. */
export class RawClient {
  private chunks: Buffer[] = [];
  private consumed = 0;
  closed = false;
  /** The peer's FIN arrived (with allowHalfOpen the socket stays writable). */
  ended = false;
  private waiters = new Set<() => void>();

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** Connects (optionally from a given local address); closed when the test ends. */
  static connect(t: T | null, port: number, opts: { host?: string; localAddress?: string; allowHalfOpen?: boolean } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: opts.host ?? '127.0.0.1', port, localAddress: opts.localAddress, noDelay: true, allowHalfOpen: opts.allowHalfOpen ?? false });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        const c = new RawClient(socket);
        t?.after(() => c.close());
        resolve(c);
      });
    });
  }

  /** Everything received and not yet consumed. */
  get received(): Buffer {
    return Buffer.concat(this.chunks).subarray(this.consumed);
  }

  text(): string {
    return this.received.toString('latin1');
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** Waits until `check` holds for the unconsumed bytes; rejects (with what was seen) after `timeoutMs`. */
  until(check: (buf: Buffer, closed: boolean, ended: boolean) => boolean, timeoutMs = 2000, what = 'data'): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const test = (): boolean => {
        if (!check(this.received, this.closed, this.ended)) return false;
        clearTimeout(timer);
        this.waiters.delete(test);
        resolve(this.received);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(test);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; closed=${this.closed} received=${JSON.stringify(this.text().slice(0, 300))}`));
      }, timeoutMs);
      if (!test()) this.waiters.add(test);
    });
  }

  /** Waits for at least `n` unconsumed bytes and consumes exactly `n`. */
  async take(n: number, timeoutMs = 2000): Promise<Buffer> {
    const buf = await this.until((b) => b.length >= n, timeoutMs, `${n} bytes`);
    this.consumed += n;
    return buf.subarray(0, n);
  }

  /** Waits for `text` to appear and consumes through it. */
  async takeThrough(text: string, timeoutMs = 2000): Promise<string> {
    const buf = await this.until((b) => b.includes(text, 0, 'latin1'), timeoutMs, JSON.stringify(text));
    const end = buf.indexOf(text, 0, 'latin1') + Buffer.byteLength(text, 'latin1');
    this.consumed += end;
    return buf.subarray(0, end).toString('latin1');
  }

  /** Waits for a complete HTTP response (head + Content-Length body, or until close) and consumes it. */
  async takeResponse(timeoutMs = 2000): Promise<HttpResponse> {
    const buf = await this.until((b, closed) => completeResponseLength(b) !== null || (closed && b.length > 0), timeoutMs, 'an HTTP response');
    const len = completeResponseLength(buf) ?? buf.length;
    this.consumed += len;
    return parseResponse(buf.subarray(0, len));
  }

  untilClosed(timeoutMs = 2000): Promise<Buffer> {
    return this.until((_, closed) => closed, timeoutMs, 'the connection to close');
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

// ------------------------------------------------------------------ HTTP parsing

export interface HttpResponse {
  status: number;
  statusLine: string;
  headers: Record<string, string>;
  body: string;
}

function completeResponseLength(buf: Buffer): number | null {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return null;
  const head = buf.subarray(0, headEnd).toString('latin1');
  const m = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
  // Without Content-Length only a 1xx/2xx-to-CONNECT head stands alone; the caller waits for close otherwise.
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  if (!m) return status === 101 || (status >= 200 && status < 300 && /^HTTP\/1\.[01] 200 Connection Established/i.test(head)) ? headEnd + 4 : null;
  const total = headEnd + 4 + Number(m[1]);
  return buf.length >= total ? total : null;
}

export function parseResponse(buf: Buffer | string): HttpResponse {
  const text = typeof buf === 'string' ? buf : buf.toString('utf8');
  const headEnd = text.indexOf('\r\n\r\n');
  const head = headEnd < 0 ? text : text.slice(0, headEnd);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  return { status, statusLine, headers, body: headEnd < 0 ? '' : text.slice(headEnd + 4) };
}

/** Splits curl -i output into its (last) response head and body. */
export function parseCurl(stdout: string): HttpResponse {
  return parseResponse(stdout);
}

// ------------------------------------------------------------------ SOCKS wire messages

export const socks5 = {
  greeting: (...methods: number[]): Buffer => Buffer.from([0x05, methods.length, ...methods]),
  auth: (user: string, pass: string): Buffer => {
    const u = Buffer.from(user, 'utf8');
    const p = Buffer.from(pass, 'utf8');
    return Buffer.concat([Buffer.from([0x01, u.length]), u, Buffer.from([p.length]), p]);
  },
  /** CONNECT (or `cmd`) to an IPv4 literal. */
  ipv4: (ip: string, port: number, cmd = 0x01): Buffer => Buffer.from([0x05, cmd, 0x00, 0x01, ...ip.split('.').map(Number), port >> 8, port & 0xff]),
  domain: (name: string, port: number, cmd = 0x01): Buffer => {
    const n = Buffer.from(name, 'utf8');
    return Buffer.concat([Buffer.from([0x05, cmd, 0x00, 0x03, n.length]), n, Buffer.from([port >> 8, port & 0xff])]);
  },
};

export const socks4 = {
  connect: (ip: string, port: number, userId: string): Buffer =>
    Buffer.concat([Buffer.from([0x04, 0x01, port >> 8, port & 0xff, ...ip.split('.').map(Number)]), Buffer.from(userId, 'utf8'), Buffer.from([0])]),
  connect4a: (host: string, port: number, userId: string): Buffer =>
    Buffer.concat([Buffer.from([0x04, 0x01, port >> 8, port & 0xff, 0, 0, 0, 1]), Buffer.from(userId, 'utf8'), Buffer.from([0]), Buffer.from(host, 'utf8'), Buffer.from([0])]),
};

/**
 * A raw SOCKS5 handshake with username/password up to the CONNECT reply. Returns the
 * client (reply consumed) and the reply code.
 */
export async function socks5Raw(t: T, proxyPort: number, user: string, pass: string, request: Buffer, opts: { allowHalfOpen?: boolean } = {}): Promise<{ c: RawClient; rep: number }> {
  const c = await RawClient.connect(t, proxyPort, opts);
  c.write(socks5.greeting(0x02));
  assert.deepEqual([...(await c.take(2))], [0x05, 0x02], 'server selects username/password');
  c.write(socks5.auth(user, pass));
  const status = await c.take(2);
  if (status[1] !== 0x00) return { c, rep: -1 };
  c.write(request);
  const head = await c.take(4);
  const addrLen = head[3] === 0x04 ? 16 : 4;
  await c.take(addrLen + 2);
  return { c, rep: head[1]! };
}

/** SocksClient.createConnection with a bounded timeout. */
export function socksConnect(proxyPort: number, destination: { host: string; port: number }, proxy: Partial<SocksClientOptions['proxy']> & { type: 4 | 5 }) {
  return SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxyPort, ...proxy },
    command: 'connect',
    destination,
    timeout: 3000,
  });
}

/** Sends a GET over an established tunnel socket and returns the whole response (origin closes). */
export function getOverTunnel(socket: net.Socket, authority: string, path = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete response over tunnel; got ${JSON.stringify(Buffer.concat(chunks).toString())}`));
    }, 2000);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`);
  });
}

// ------------------------------------------------------------------ test servers

export interface EchoServer {
  readonly host: string;
  readonly port: number;
  /** Bytes each accepted connection has sent so far, in accept order. */
  readonly received: Buffer[];
  readonly closedCount: () => number;
}

/** A TCP server that echoes every byte back and records what it received. */
export async function echoFor(t: T, host = '127.0.0.2'): Promise<EchoServer> {
  const received: Buffer[] = [];
  let closed = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    const i = received.push(Buffer.alloc(0)) - 1;
    sock.on('data', (c: Buffer) => {
      received[i] = Buffer.concat([received[i]!, c]);
      sock.write(c);
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      closed++;
      sockets.delete(sock);
    });
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  t.after(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { host, port: (server.address() as net.AddressInfo).port, received, closedCount: () => closed };
}

/** A raw TCP origin on 127.0.0.2: `onData` sees each connection's bytes so far (latin1); connections are tracked. */
export async function rawOriginFor(t: T, onData: (sock: net.Socket, text: string) => void): Promise<{ port: number; sockets: net.Socket[] }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    let text = '';
    sock.on('error', () => undefined);
    sock.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      onData(sock, text);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, sockets };
}

/**
 * An origin on 127.0.0.2 that sends `first` and its FIN at once, then keeps reading until
 * the client's FIN; `heard` gets what each connection sent (a half-close test).
 */
export async function halfClosingOriginFor(t: T, first: string | Buffer): Promise<{ port: number; heard: string[] }> {
  const heard: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString()));
    sock.on('end', () => {
      heard.push(got);
      sock.destroy();
    });
    sock.end(first);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, heard };
}

/**
 * A loopback address:port where TCP connects hang (SYNs dropped): a listener with a tiny
 * backlog on a worker thread whose event loop is blocked, so nothing is ever accepted,
 * and whose accept queue is pre-filled.
 */
export async function blackholeFor(t: T, host = '127.0.0.4'): Promise<{ host: string; port: number }> {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const net = require('node:net');
     const s = net.createServer();
     s.listen({ host: workerData.host, port: 0, backlog: 1 }, () => {
       parentPort.postMessage(s.address().port);
       setImmediate(() => { Atomics.wait(workerData.flag, 0, 0); s.close(); process.exit(0); });
     });`,
    { eval: true, workerData: { host, flag } },
  );
  const port = await new Promise<number>((r) => worker.once('message', r));
  // Fill the accept queue (backlog 1 holds two): from now on connects hang.
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 2; i++) {
    await new Promise<void>((r) => {
      const s = net.connect({ host, port }, () => r());
      s.on('error', () => r());
      fillers.push(s);
    });
  }
  t.after(async () => {
    for (const s of fillers) s.destroy();
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
    await new Promise((r) => worker.once('exit', r));
  });
  return { host, port };
}

/** `promise`'s value, or 'timeout' if it takes longer than `ms` (the timer never outlives the race). */
export async function within<V>(promise: Promise<V>, ms: number): Promise<V | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A port on `host` that nothing listens on (bound, then released). */
export async function closedPort(host = '127.0.0.3'): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}
