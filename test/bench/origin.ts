// The loopback origin every workload fetches from: nginx from Debian when installed (a
// generated minimal config), else a Node server in a child process. Serves a 64-byte
// /small and a large /bulk file (sparse, so creating 1 GiB costs nothing).
import { chmodSync, closeSync, mkdirSync, openSync, ftruncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, hardNofile, spawnManaged, versionOf, waitForPort, which, type Managed } from './procs.js';
import { SMALL_BODY_BYTES, type Dest } from './targets.js';

export const ORIGIN_HOST = '127.0.0.2';

export interface Origin {
  readonly dest: Dest;
  /** `nginx 1.22.1` or `node http (fallback: ...)`. */
  readonly kind: string;
  readonly bulkBytes: number;
  readonly managed: Managed;
}

function makeFiles(dir: string, bulkBytes: number): { www: string; small: string; bulk: string } {
  const www = join(dir, 'www');
  mkdirSync(www, { recursive: true });
  // nginx workers run as nobody: the tree must be readable by them.
  chmodSync(dir, 0o755);
  chmodSync(www, 0o755);
  const small = join(www, 'small');
  writeFileSync(small, 'x'.repeat(SMALL_BODY_BYTES - 1) + '\n', { mode: 0o644 });
  const bulk = join(www, 'bulk');
  const fd = openSync(bulk, 'w', 0o644);
  ftruncateSync(fd, bulkBytes); // sparse: reads of the hole return zeros without disk I/O
  closeSync(fd);
  return { www, small, bulk };
}

function nginxConfig(dir: string, www: string, port: number): string {
  const tmp = join(dir, 'nginx-tmp');
  mkdirSync(tmp, { recursive: true });
  const nofile = hardNofile;
  return `daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile ${nofile};
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
events { worker_connections ${Math.max(1024, nofile - 100)}; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_header_timeout 300s;
  default_type application/octet-stream;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  server {
    listen ${ORIGIN_HOST}:${port} backlog=4096;
    root ${www};
    location = /small { default_type text/plain; }
  }
}
`;
}

export async function startOrigin(dir: string, bulkBytes: number): Promise<Origin> {
  mkdirSync(dir, { recursive: true });
  const files = makeFiles(dir, bulkBytes);
  const port = await freePort(ORIGIN_HOST);
  const dest = { host: ORIGIN_HOST, port };
  let fallbackWhy = 'nginx not installed';
  const nginx = which('nginx');
  if (nginx) {
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, nginxConfig(dir, files.www, port));
    const m = spawnManaged('nginx', nginx, ['-c', conf, '-e', join(dir, 'nginx-error.log')]);
    try {
      await waitForPort(m, ORIGIN_HOST, port);
      return { dest, kind: `nginx ${versionOf(nginx, ["-v"])} (1 worker)`, bulkBytes, managed: m };
    } catch (err) {
      await m.stop();
      fallbackWhy = `nginx failed to start: ${(err as Error).message.slice(0, 200)}`;
    }
  }
  const script = fileURLToPath(new URL('./origin-node.js', import.meta.url));
  const m = spawnManaged('origin-node', process.execPath, [script, ORIGIN_HOST, String(port), files.small, files.bulk]);
  await waitForPort(m, ORIGIN_HOST, port);
  return { dest, kind: `node http (fallback: ${fallbackWhy})`, bulkBytes, managed: m };
}
