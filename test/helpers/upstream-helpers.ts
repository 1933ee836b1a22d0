// A child sluice chained to a parent sluice (`upstream_proxy`), for the chaining tests: the
// parent's audit trail shows exactly what the child asked it for, and its policy can refuse.
import type http from 'node:http';
import net from 'node:net';
import { eventually, type TestSluice } from './harness.js';
import { decisions, mapResolver } from './observe-helpers.js';
import { originFor, sluiceFor, type T } from './proxy-helpers.js';

export interface Chain {
  parent: TestSluice;
  child: TestSluice;
  token: string;
  origin: { host: string; port: number; authority: string; requests: http.IncomingMessage[] };
}

/**
 * origin on 127.0.0.2 <- parent (container `edge`, allowed only the origin) <- child
 * (container `build-1`, allowed app.test -> 127.0.0.2, and 127.0.0.3 which the parent
 * refuses), over the parent's SOCKS5 or HTTP listener.
 */
export async function chain(t: T, scheme: 'socks5' | 'http'): Promise<Chain> {
  const origin = await originFor(t);
  const parent = await sluiceFor(t);
  const edge = await parent.createSession({ container_name: 'edge', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(origin.port) }] });
  const port = scheme === 'socks5' ? parent.sluice.socks.port : parent.sluice.http.port;
  const child = await sluiceFor(t, {
    resolver: mapResolver({ 'app.test': '127.0.0.2', 'other.test': '127.0.0.3' }),
    config: { upstream_proxy: `${scheme}://edge:${edge.proxy_token}@127.0.0.1:${port}` },
  });
  const session = await child.createSession({
    container_name: 'build-1',
    network_rules: [
      { destination_pattern: 'app.test', port_pattern: '*' },
      { destination_pattern: 'other.test', port_pattern: '*' },
    ],
  });
  return { parent, child, token: session.proxy_token, origin };
}

/** The parent's first `n` decisions for the child (container `edge`). */
export async function parentDecisions(parent: TestSluice, n: number) {
  let rows: Awaited<ReturnType<typeof decisions>> = [];
  await eventually(async () => (rows = await decisions(parent, { container: 'edge' })).length >= n, 3000, `${n} parent decisions`);
  return rows;
}

/** A raw HTTP parent on 127.0.0.1: reads each CONNECT's header block (kept in `heads`) and lets `answer` reply on the raw socket. */
export async function rawParent(t: T, answer: (sock: net.Socket, head: string) => void): Promise<{ port: number; heads: string[] }> {
  const heads: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString('latin1');
      if (!text.includes('\r\n\r\n')) return;
      sock.off('data', onData);
      heads.push(text);
      answer(sock, text);
    };
    sock.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, heads };
}
