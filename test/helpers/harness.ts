// Real servers on loopback for end-to-end tests: sluice itself (temp data dir, port 0
// everywhere), origin servers on 127.0.0.x, and clients (curl, raw sockets).
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import pino from 'pino';
import { z } from 'zod';
import { sessionCreatedSchema } from '../../src/api/responses.js';
import { startSluice, type Sluice, type SluiceOptions } from '../../src/app.js';
import type { SessionCreated } from '../../src/client/types.js';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import { tempDir } from './temp-dir.js';

export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export interface TestSluice {
  readonly sluice: Sluice;
  readonly dataDir: string;
  /** http://container:token@127.0.0.1:port style URLs come from createSession(); these are bare. */
  readonly httpProxy: string;
  readonly socksProxy: string;
  api<T = any>(method: string, path: string, body?: unknown, token?: string | null): Promise<ApiResponse<T>>;
  /** POST /api/sessions, asserting 200. */
  createSession(body: Record<string, unknown>): Promise<SessionCreated>;
  /** Stops sluice; the data dir survives unless `removeData`. */
  close(removeData?: boolean): Promise<void>;
}

export type { SessionCreated };

/**
 * `body` as the API's response schema describes it (src/api/responses.ts), failing the
 * test on any difference, a field too many included: the server must say what it documents.
 */
export function expectBody<S extends z.ZodType>(schema: S, body: unknown, what: string): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) throw new Error(`${what}: the answer does not match its schema:\n${z.prettifyError(r.error)}\n${JSON.stringify(body)}`);
  return r.data;
}

export { tempDir };

export interface StartOptions extends SluiceOptions {
  readonly config?: ConfigInput;
  readonly dataDir?: string;
}

export async function startTestSluice(opts: StartOptions = {}): Promise<TestSluice> {
  const dataDir = opts.dataDir ?? tempDir();
  const input: ConfigInput = {
    ...opts.config,
    data_dir: dataDir,
    listen: { http: '127.0.0.1:0', socks: '127.0.0.1:0', api: '127.0.0.1:0', ...opts.config?.listen },
    log: { level: 'silent', ...opts.config?.log },
    timeouts: { shutdown_grace_ms: 500, ...opts.config?.timeouts },
  };
  const config = configSchema.parse(input);
  const sluice = await startSluice(config, { logger: opts.logger ?? pino({ level: 'silent' }), resolver: opts.resolver, clock: opts.clock });
  const base = `http://127.0.0.1:${sluice.api.port}`;
  const api = async <T,>(method: string, path: string, body?: unknown, token: string | null = sluice.apiToken): Promise<ApiResponse<T>> => {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON: keep text */
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  };
  return {
    sluice,
    dataDir,
    httpProxy: `http://127.0.0.1:${sluice.http.port}`,
    socksProxy: `127.0.0.1:${sluice.socks.port}`,
    api,
    async createSession(body) {
      const res = await api('POST', '/api/sessions', body);
      if (res.status !== 200) throw new Error(`createSession failed: ${res.status} ${JSON.stringify(res.body)}`);
      return expectBody(sessionCreatedSchema, res.body, 'POST /api/sessions');
    },
    async close(removeData = false) {
      await sluice.close();
      if (removeData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Origin {
  readonly host: string;
  readonly port: number;
  /** `host:port` */
  readonly authority: string;
  readonly requests: http.IncomingMessage[];
  close(): Promise<void>;
}

/**
 * An HTTP origin that answers `origin <host>:<port> <METHOD> <url>` (so tests can tell
 * which origin they reached). Bind it to 127.0.0.2+ for destinations that are not built-in.
 */
export async function startOrigin(host = '127.0.0.2', handler?: http.RequestListener): Promise<Origin> {
  const requests: http.IncomingMessage[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req);
    if (handler) return handler(req, res);
    res.setHeader('content-type', 'text/plain');
    res.end(`origin ${host}:${(server.address() as net.AddressInfo).port} ${req.method} ${req.url}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    host,
    port,
    authority: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface CurlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs curl with a hard timeout (never blocks the event loop the proxy runs on). */
export function curl(args: string[], timeoutMs = 10_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...args], { timeout: timeoutMs + 2000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Connects, writes `data` (chunks are written with a short pause between them), and
 * collects everything the server sends until it closes or `timeoutMs` passes.
 */
export function rawExchange(port: number, data: Buffer | Buffer[], timeoutMs = 2000, host = '127.0.0.1'): Promise<{ received: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host, port });
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ received: Buffer.concat(chunks), closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', (c) => chunks.push(c));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
    socket.on('connect', async () => {
      const parts = Array.isArray(data) ? data : [data];
      for (const p of parts) {
        if (socket.destroyed) return;
        socket.write(p);
        if (parts.length > 1) await new Promise((r) => setTimeout(r, 10));
      }
    });
  });
}

/** Resolves when `check()` is true, polling every 20 ms; rejects after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
