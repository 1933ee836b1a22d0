// `sluice run --isolate`: the command runs in a fresh network namespace whose only
// network is its own loopback. On that loopback, 127.0.0.1:3128 and 127.0.0.1:1080 are a
// relay (isolate-relay.ts, started inside the namespace) that carries each connection
// over a Unix socket to this process, which connects it to the sluice listener named in
// the session's proxy URL. So the command can reach sluice and nothing else: no veth, no
// routes, no addresses shared with the host, and a program that ignores HTTP_PROXY gets
// "network unreachable" instead of a way around the policy.
//
// Why not a veth pair with the forwarder on the host-side address: every service on the
// host that listens on 0.0.0.0 would be reachable from the namespace at that address
// unless firewall rules were added too. A Unix socket crosses the namespace boundary at
// exactly one point.
//
// Needs Linux, root (to create the namespace) and iproute2's `ip`. The namespace is
// `sluice-run-<pid>-<n>`, and is deleted on exit, whatever happened (not after SIGKILL:
// `ip netns del` it by hand then).
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProxyUrls } from '../client/types.js';

/** Where the relay listens inside the namespace. */
export const ISOLATED_HTTP = { host: '127.0.0.1', port: 3128 } as const;
export const ISOLATED_SOCKS = { host: '127.0.0.1', port: 1080 } as const;

const RELAY_SCRIPT = fileURLToPath(new URL('./isolate-relay.js', import.meta.url));
const IP_TIMEOUT_MS = 10_000;
const RELAY_READY_TIMEOUT_MS = 10_000;

let counter = 0;

/** Why this process cannot isolate, or undefined when it can (as far as can be told without trying). */
export function isolationUnavailable(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'creating a network namespace needs root (run sluice run --isolate as root, or leave out --isolate)';
  const probe = spawnSync('ip', ['-V'], { env, encoding: 'utf8', timeout: IP_TIMEOUT_MS });
  if (probe.error) {
    const code = (probe.error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'the `ip` command (iproute2) is not installed or not on PATH' : `cannot run \`ip\`: ${probe.error.message}`;
  }
  return undefined;
}

interface Endpoint {
  host: string;
  port: number;
}

export class Isolation {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private relay: ChildProcess | undefined;
  private namespaceCreated = false;
  private closing: Promise<string[]> | undefined;

  private constructor(
    readonly namespace: string,
    private readonly dir: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  /**
   * Creates the namespace and the relay towards `targets` (the sluice listeners). On
   * failure everything created so far is removed again before the error is thrown.
   */
  static async create(targets: { http: Endpoint; socks: Endpoint }, env: NodeJS.ProcessEnv = process.env): Promise<Isolation> {
    const namespace = `sluice-run-${process.pid}-${counter++}`;
    const dir = mkdtempSync(join(tmpdir(), 'sluice-run-'));
    const iso = new Isolation(namespace, dir, env);
    try {
      await iso.setUp(targets);
      return iso;
    } catch (err) {
      const problems = await iso.close();
      const extra = problems.length > 0 ? ` (cleanup: ${problems.join('; ')})` : '';
      throw new Error(`${err instanceof Error ? err.message : String(err)}${extra}`);
    }
  }

  /** The session's proxy URLs as the isolated command must use them (the relay's addresses, same credentials). */
  rewrite(proxy: ProxyUrls): ProxyUrls {
    return { http: withAddress(proxy.http, ISOLATED_HTTP), socks5: withAddress(proxy.socks5, ISOLATED_SOCKS) };
  }

  /** The command line that runs `command` inside the namespace. */
  wrap(command: string, args: readonly string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', this.namespace, command, ...args]];
  }

  /** Removes everything; returns what could not be removed (never throws). Idempotent. */
  close(): Promise<string[]> {
    this.closing ??= this.tearDown();
    return this.closing;
  }

  private async setUp(targets: { http: Endpoint; socks: Endpoint }): Promise<void> {
    await this.ip(['netns', 'add', this.namespace]);
    this.namespaceCreated = true;
    await this.ip(['-n', this.namespace, 'link', 'set', 'lo', 'up']);
    const httpSock = join(this.dir, 'http.sock');
    const socksSock = join(this.dir, 'socks.sock');
    await this.forward(httpSock, targets.http);
    await this.forward(socksSock, targets.socks);
    await this.startRelay([`${ISOLATED_HTTP.host}:${ISOLATED_HTTP.port}=${httpSock}`, `${ISOLATED_SOCKS.host}:${ISOLATED_SOCKS.port}=${socksSock}`]);
  }

  /** A Unix socket in our private directory whose connections go to the sluice listener. */
  private forward(path: string, target: Endpoint): Promise<void> {
    const server = net.createServer((inner) => {
      const outer = net.connect({ host: target.host, port: target.port });
      this.sockets.add(inner).add(outer);
      inner.pipe(outer);
      outer.pipe(inner);
      const end = (): void => {
        inner.destroy();
        outer.destroy();
        this.sockets.delete(inner);
        this.sockets.delete(outer);
      };
      for (const s of [inner, outer]) {
        s.on('error', end);
        s.on('close', end);
      }
    });
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  private startRelay(routes: string[]): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.namespace, process.execPath, RELAY_SCRIPT, ...routes], {
      env: this.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C meant for the command must not take the relay down first.
      detached: true,
    });
    this.relay = child;
    return new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      const timer = setTimeout(() => fail(`relay did not start within ${RELAY_READY_TIMEOUT_MS} ms`), RELAY_READY_TIMEOUT_MS);
      const fail = (why: string): void => {
        clearTimeout(timer);
        reject(new Error(`cannot start the relay in namespace ${this.namespace}: ${why}${err.trim() ? `: ${err.trim()}` : ''}`));
      };
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready\n')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (e) => fail(e.message));
      child.once('exit', (code, signal) => fail(`it exited (${signal ?? code})`));
    });
  }

  private async tearDown(): Promise<string[]> {
    const problems: string[] = [];
    const relay = this.relay;
    if (relay && relay.exitCode === null && relay.signalCode === null) {
      const exited = new Promise<void>((resolve) => relay.once('exit', () => resolve()));
      relay.stdin?.end();
      relay.kill('SIGTERM');
      const timer = setTimeout(() => relay.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    }
    relay?.stdout?.destroy();
    relay?.stderr?.destroy();
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    if (this.namespaceCreated) {
      try {
        await this.ip(['netns', 'del', this.namespace]);
      } catch (err) {
        problems.push(`cannot delete network namespace ${this.namespace}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch (err) {
      problems.push(`cannot remove ${this.dir}: ${err instanceof Error ? err.message : String(err)}`);
    }
    return problems;
  }

  private ip(args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile('ip', args, { env: this.env, timeout: IP_TIMEOUT_MS, encoding: 'utf8' }, (err, _stdout, stderr) => {
        if (err) reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || err.message}`));
        else resolve();
      });
    });
  }
}

/** `scheme://user:pass@host:port` with another host and port (works for socks5h:// too). */
function withAddress(url: string, at: Endpoint): string {
  const u = new URL(url);
  const cred = u.username || u.password ? `${u.username}${u.password ? `:${u.password}` : ''}@` : '';
  return `${u.protocol}//${cred}${at.host}:${at.port}`;
}

/** host and port of a proxy URL, for connecting to it (brackets of IPv6 literals removed). */
export function proxyEndpoint(url: string, defaultPort: number): Endpoint {
  const u = new URL(url);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port === '' ? defaultPort : Number(u.port) };
}
