// The proxies sluice is compared with, each configured to allow everything (no auth, no
// ACLs, no cache, no access logs) on its own loopback port, run in the foreground from a
// generated config in a temp dir. A peer that is missing or fails to start is reported
// and skipped; it never stops the bench.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, hardNofile, spawnManaged, versionOf, waitForPort, which, type Managed } from './procs.js';
import type { ProxyUnderTest } from './targets.js';

const HOST = '127.0.0.1';
/** The bench's bare Node.js relay (the floor for a Node proxy), shown beside the peers. */
export const NODE_RELAY = 'node-relay';

export interface PeerStatus {
  readonly name: string;
  readonly status: 'running' | 'missing' | 'failed' | 'skipped';
  readonly version?: string;
  readonly note?: string;
}

interface PeerDef {
  readonly name: string;
  readonly bin: string;
  readonly debianPackage: string;
  readonly versionArgs: readonly string[];
  /** Writes its config into `dir` and returns the command-line arguments. */
  configure(dir: string, port: number): string[];
  endpoints(port: number): Omit<ProxyUnderTest, 'name' | 'pid'>;
}

const PEERS: readonly PeerDef[] = [
  {
    name: 'squid',
    bin: 'squid',
    debianPackage: 'squid',
    versionArgs: ['-v'],
    configure(dir, port) {
      const conf = join(dir, 'squid.conf');
      // No cache_dir: memory only, nothing to initialise with -z. CONNECT is allowed to any
      // port because the stock SSL_ports/Safe_ports ACLs are simply not written.
      writeFileSync(
        conf,
        `http_port ${HOST}:${port}
http_access allow all
cache deny all
cache_mem 16 MB
access_log none
cache_store_log none
cache_log ${join(dir, 'cache.log')}
pid_filename ${join(dir, 'squid.pid')}
coredump_dir ${dir}
max_filedescriptors ${hardNofile}
workers 1
shutdown_lifetime 0 seconds
visible_hostname sluice-bench
via off
forwarded_for transparent
client_persistent_connections on
server_persistent_connections on
`,
      );
      return ['-N', '-f', conf];
    },
    endpoints: (port) => ({ connect: { kind: 'connect', host: HOST, port, auth: null }, forward: { host: HOST, port, auth: null } }),
  },
  {
    name: 'tinyproxy',
    bin: 'tinyproxy',
    debianPackage: 'tinyproxy',
    versionArgs: ['-v'],
    configure(dir, port) {
      const conf = join(dir, 'tinyproxy.conf');
      // No ConnectPort/Allow lines: every port and client is allowed. MaxClients bounds its
      // threads, so it must cover the idle-scale workload.
      writeFileSync(
        conf,
        `User nobody
Group nogroup
Port ${port}
Listen ${HOST}
Timeout 600
MaxClients ${Math.max(200, hardNofile)}
LogLevel Error
LogFile "${join(dir, 'tinyproxy.log')}"
PidFile "${join(dir, 'tinyproxy.pid')}"
DisableViaHeader Yes
`,
      );
      return ['-d', '-c', conf];
    },
    endpoints: (port) => ({ connect: { kind: 'connect', host: HOST, port, auth: null }, forward: { host: HOST, port, auth: null } }),
  },
  {
    name: 'dante',
    bin: 'danted',
    debianPackage: 'dante-server',
    versionArgs: ['-v'],
    configure(dir, port) {
      const conf = join(dir, 'danted.conf');
      writeFileSync(
        conf,
        `logoutput: ${join(dir, 'danted.log')}
internal: ${HOST} port = ${port}
external: ${HOST}
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
timeout.negotiate: 30
timeout.io: 0
client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }
socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }
`,
      );
      return ['-f', conf, '-p', join(dir, 'danted.pid')];
    },
    endpoints: (port) => ({ socks5: { kind: 'socks5', host: HOST, port, user: null, pass: null } }),
  },
  {
    name: 'microsocks',
    bin: 'microsocks',
    debianPackage: 'microsocks',
    versionArgs: ['-h'],
    configure(_dir, port) {
      return ['-i', HOST, '-p', String(port)];
    },
    endpoints: (port) => ({ socks5: { kind: 'socks5', host: HOST, port, user: null, pass: null } }),
  },
  {
    // Not a peer: the floor a bare Node.js relay sets (see node-relay.ts). Reported beside
    // the others and in its own ratio line, never as the "best peer" sluice must beat.
    name: NODE_RELAY,
    bin: 'node',
    debianPackage: 'none (the bench script node-relay.js)',
    versionArgs: ['--version'],
    configure(_dir, port) {
      return [fileURLToPath(new URL('./node-relay.js', import.meta.url)), String(port)];
    },
    endpoints: (port) => ({
      connect: { kind: 'connect', host: HOST, port, auth: null },
      socks5: { kind: 'socks5', host: HOST, port, user: null, pass: null },
    }),
  },
];

export interface Peers {
  readonly proxies: ProxyUnderTest[];
  readonly statuses: PeerStatus[];
  readonly managed: Managed[];
}

export async function startPeers(root: string, skip: boolean): Promise<Peers> {
  const peers: Peers = { proxies: [], statuses: [], managed: [] };
  for (const def of PEERS) {
    if (skip) {
      peers.statuses.push({ name: def.name, status: 'skipped', note: '--skip-peers' });
      continue;
    }
    const bin = which(def.bin);
    if (!bin) {
      peers.statuses.push({ name: def.name, status: 'missing', note: `${def.bin} not installed (Debian package ${def.debianPackage}; see test/bench/setup-peers.sh)` });
      continue;
    }
    const dir = join(root, def.name);
    mkdirSync(dir, { recursive: true });
    // Squid and tinyproxy drop root privileges and must still write their logs here.
    chmodSync(dir, 0o777);
    const version = def.name === 'microsocks' ? 'Debian build' : versionOf(bin, def.versionArgs);
    let m: Managed | null = null;
    try {
      const port = await freePort(HOST);
      m = spawnManaged(def.name, bin, def.configure(dir, port), { cwd: dir });
      await waitForPort(m, HOST, port);
      peers.managed.push(m);
      peers.proxies.push({ name: def.name, pid: m.pid, ...def.endpoints(port) });
      peers.statuses.push({ name: def.name, status: 'running', version });
    } catch (err) {
      await m?.stop(1000);
      peers.statuses.push({ name: def.name, status: 'failed', version, note: (err as Error).message.slice(0, 400) });
    }
  }
  return peers;
}
