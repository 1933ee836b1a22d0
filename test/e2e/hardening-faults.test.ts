// Upstream faults the existing failure suite does not cover: origins that reset, or close
// half-way through a response or a tunnel, pipelined requests abandoned by their client,
// and floods of connections stuck in failing or slow DNS. Each maps to its documented
// status or reply, both sides end up closed, and nothing stays in the connection registry
// (or holds a limiter slot).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { basic, originFor, RawClient, sleep, sluiceFor, socks5, socks5Raw, type T } from '../helpers/proxy-helpers.js';
import type { TestSluice } from '../helpers/harness.js';

/** A raw TCP origin on 127.0.0.2 whose behaviour is chosen by the request path (or first bytes). */
async function faultyOrigin(t: T, onData: (sock: net.Socket, text: string) => void): Promise<{ port: number; closed: () => number }> {
  let closed = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    let buf = '';
    sock.on('error', () => undefined);
    sock.on('close', () => {
      closed++;
      sockets.delete(sock);
    });
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      onData(sock, buf);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(() => new Promise<void>((r) => (sockets.forEach((x) => x.destroy()), server.close(() => r()))));
  return { port: (server.address() as net.AddressInfo).port, closed: () => closed };
}

async function registryEmpty(s: TestSluice, what: string): Promise<void> {
  const deadline = Date.now() + 2000;
  while (s.sluice.connections.size > 0 && Date.now() < deadline) await sleep(20);
  assert.equal(s.sluice.connections.size, 0, `${what}: connections still registered`);
}

async function decisionRow(s: TestSluice, container: string): Promise<any> {
  const rows = (await s.api('GET', `/api/decisions?container=${container}&limit=1`)).body.decisions;
  return rows[0];
}

test('forwarded requests: an origin that resets before answering is a 502 destination_unavailable, explained', async (t) => {
  const origin = await faultyOrigin(t, (sock, text) => {
    if (text.includes('\r\n\r\n')) sock.resetAndDestroy();
  });
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'rst', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET http://127.0.0.2:${origin.port}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic('rst', sess.proxy_token)}\r\n\r\n`);
  const res = await c.takeResponse(3000);
  assert.equal(res.status, 502);
  assert.match(res.headers['proxy-status'] ?? '', /^sluice; error=destination_unavailable; details=".*closed or reset the connection before answering \(ECONNRESET\)"/);
  await registryEmpty(s, 'reset before answer');
  const row = await decisionRow(s, 'rst');
  assert.deepEqual([row.decision, row.error], ['allow', 'connect_error']);
});

test('forwarded requests: an origin that stops half-way through its body gets the client connection cut, not left waiting', async (t) => {
  const origin = await faultyOrigin(t, (sock, text) => {
    if (!text.includes('\r\n\r\n')) return;
    if (text.includes('/length')) {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + 'x'.repeat(400));
      setTimeout(() => sock.end(), 30);
    } else if (text.includes('/chunked')) {
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      setTimeout(() => sock.end(), 30);
    } else if (text.includes('/reset')) {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + 'x'.repeat(400));
      setTimeout(() => sock.resetAndDestroy(), 30);
    }
  });
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'half', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  for (const path of ['/length', '/chunked', '/reset']) {
    const c = await RawClient.connect(t, s.sluice.http.port);
    const t0 = Date.now();
    c.write(`GET http://127.0.0.2:${origin.port}${path} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic('half', sess.proxy_token)}\r\n\r\n`);
    const got = (await c.untilClosed(2000)).toString('latin1');
    assert.match(got, /^HTTP\/1\.1 200 OK\r\n/, path);
    assert.ok(Date.now() - t0 < 1500, `${path}: client connection cut after ${Date.now() - t0} ms`);
    await registryEmpty(s, path);
  }
  // The proxy itself is fine: the next request on a new connection works.
  const ok = await faultyOrigin(t, (sock, text) => {
    if (text.includes('\r\n\r\n')) sock.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET http://127.0.0.2:${ok.port}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic('half', sess.proxy_token)}\r\n\r\n`);
  assert.equal((await c.takeResponse()).body, 'ok');
});

test('pipelined requests abandoned by their client leave nothing registered (and free their limiter slots)', async (t) => {
  const origin = await faultyOrigin(t, (sock, text) => {
    // Answers each request after a pause, so the later ones are still queued when the client leaves.
    const n = text.split('\r\n\r\n').length - 1;
    const answered = (sock as net.Socket & { answered?: number }).answered ?? 0;
    for (let i = answered; i < n; i++) setTimeout(() => sock.writable && sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 200);
    (sock as net.Socket & { answered?: number }).answered = n;
  });
  const s = await sluiceFor(t, { config: { limits: { max_connections: 3 } } });
  const sess = await s.createSession({ container_name: 'pipe', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const req = (p: string): string => `GET http://127.0.0.2:${origin.port}${p} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic('pipe', sess.proxy_token)}\r\n\r\n`;
  for (let round = 0; round < 4; round++) {
    const c = await RawClient.connect(t, s.sluice.http.port);
    c.write(req('/1') + req('/2') + req('/3') + req('/4'));
    await sleep(50);
    c.close();
    await registryEmpty(s, `round ${round}`);
  }
  // Four rounds of four abandoned requests against a limit of three: the slots came back.
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(req('/after'));
  assert.equal((await c.takeResponse(3000)).status, 200);
});

test('tunnels: an origin reset mid-stream closes the client; an origin that closes after its last bytes delivers them, then the close', async (t) => {
  const origin = await faultyOrigin(t, (sock, text) => {
    if (text.endsWith('RESET')) {
      sock.write('partial');
      setTimeout(() => sock.resetAndDestroy(), 30);
    } else if (text.endsWith('BYE')) {
      sock.end('bye');
    }
  });
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'tun', network_rules: [{ destination_pattern: '127.0.0.2' }] });

  const open = async (via: 'connect' | 'socks5'): Promise<RawClient> => {
    if (via === 'connect') {
      const c = await RawClient.connect(t, s.sluice.http.port);
      c.write(`CONNECT 127.0.0.2:${origin.port} HTTP/1.1\r\nProxy-Authorization: ${basic('tun', sess.proxy_token)}\r\n\r\n`);
      await c.takeThrough('\r\n\r\n');
      return c;
    }
    const { c, rep } = await socks5Raw(t, s.sluice.socks.port, 'tun', sess.proxy_token, socks5.ipv4('127.0.0.2', origin.port));
    assert.equal(rep, 0);
    return c;
  };

  for (const via of ['connect', 'socks5'] as const) {
    const r = await open(via);
    r.write('RESET');
    const got = await r.untilClosed(2000);
    assert.equal(got.toString(), 'partial', `${via}: bytes before the reset arrive, then the close`);
    await registryEmpty(s, `${via} reset`);
    const row = await decisionRow(s, 'tun');
    assert.match(row.close_reason ?? '', /^upstream_(error|closed)$/, `${via}: ${JSON.stringify(row)}`);

    // The origin's FIN is passed on after every byte it sent; this client (like most)
    // then closes too, and the tunnel ends, recorded as ended by the origin.
    const h = await open(via);
    h.write('BYE');
    assert.equal((await h.untilClosed(2000)).toString(), 'bye', via);
    await registryEmpty(s, `${via} origin close`);
    assert.equal((await decisionRow(s, 'tun')).close_reason, 'upstream_closed');
  }
});

test('a flood of connections stuck in slow or failing DNS: all answered (504 dns_timeout / 502 dns_error / SOCKS 0x04), none left behind, limits released', async (t) => {
  const s = await sluiceFor(t, {
    config: { timeouts: { dns_ms: 300 }, limits: { max_connections: 40 } },
    resolver: (host) => {
      if (host === 'slow.dns.test') return new Promise(() => undefined);
      if (host === 'late.dns.test') return new Promise((r) => setTimeout(() => r(['127.0.0.2']), 2000));
      return Promise.reject(Object.assign(new Error('boom'), { code: 'ENOTFOUND' }));
    },
  });
  const sess = await s.createSession({ container_name: 'dns', network_rules: [{ destination_pattern: '*.dns.test' }] });
  const auth = basic('dns', sess.proxy_token);
  const t0 = Date.now();
  const http = Array.from({ length: 30 }, async (_, i) => {
    const host = ['slow.dns.test', 'late.dns.test', 'gone.dns.test'][i % 3]!;
    const c = await RawClient.connect(t, s.sluice.http.port);
    c.write(i % 2 ? `CONNECT ${host}:443 HTTP/1.1\r\nProxy-Authorization: ${auth}\r\n\r\n` : `GET http://${host}/ HTTP/1.1\r\nHost: ${host}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
    const res = await c.takeResponse(3000);
    c.close();
    return [host, res.status, res.headers['proxy-status'] ?? ''] as const;
  });
  const socks = Array.from({ length: 10 }, async (_, i) => {
    const { c, rep } = await socks5Raw(t, s.sluice.socks.port, 'dns', sess.proxy_token, socks5.domain(i % 2 ? 'slow.dns.test' : 'gone.dns.test', 443));
    c.close();
    return rep;
  });
  for (const [host, status, ps] of await Promise.all(http)) {
    if (host === 'gone.dns.test') {
      assert.equal(status, 502, host);
      assert.match(ps, /error=dns_error/);
    } else {
      assert.equal(status, 504, host);
      assert.match(ps, /error=dns_timeout; details=".*took longer than 300 ms/);
    }
  }
  for (const rep of await Promise.all(socks)) assert.equal(rep, 0x04);
  assert.ok(Date.now() - t0 < 2000, `the flood took ${Date.now() - t0} ms to answer`);
  await registryEmpty(s, 'dns flood');
  // 40 attempts against a limit of 40 concurrent: every slot came back.
  const rows = (await s.api('GET', '/api/decisions?container=dns&limit=100')).body.decisions as Array<{ error: string | null }>;
  assert.equal(rows.length, 40);
  assert.ok(rows.every((r) => r.error === 'dns_timeout' || r.error === 'dns_error'), JSON.stringify(rows.map((r) => r.error)));
  const many = await Promise.all(
    Array.from({ length: 40 }, async () => {
      const c = await RawClient.connect(t, s.sluice.http.port);
      c.write(`CONNECT gone.dns.test:443 HTTP/1.1\r\nProxy-Authorization: ${auth}\r\n\r\n`);
      const st = (await c.takeResponse(3000)).status;
      c.close();
      return st;
    }),
  );
  assert.ok(
    many.every((st) => st === 502),
    `after the flood, 40 concurrent attempts fit the limit again: ${many.join(',')}`,
  );
});

test('refusals on raw sockets followed by more client bytes (pipelined TLS hello, a WebSocket frame): the socket still closes with its client', async (t) => {
  const origin = await originFor(t, '127.0.0.2');
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'raw', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const auth = `Proxy-Authorization: ${basic('raw', sess.proxy_token)}\r\n`;
  const upgrade = (target: string): string => `GET http://${target}/ws HTTP/1.1\r\nHost: x\r\n${auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;
  const cases: Array<[string, number, string[]]> = [
    ['denied CONNECT, then bytes', s.sluice.http.port, [`CONNECT denied.example:443 HTTP/1.1\r\n${auth}\r\n`, '\x16\x03\x01 hello']],
    ['refused CONNECT, then bytes', s.sluice.http.port, [`CONNECT 127.0.0.2:1 HTTP/1.1\r\n${auth}\r\n`, '\x16\x03\x01 hello']],
    ['upgrade the origin declines, with a frame', s.sluice.http.port, [upgrade(origin.authority) + 'frame']],
    ['upgrade the origin declines, then a frame', s.sluice.http.port, [upgrade(origin.authority), 'frame']],
    ['denied upgrade, then a frame', s.sluice.http.port, [upgrade('denied.example'), 'frame']],
    ['denied SOCKS5 request, then bytes', s.sluice.socks.port, []],
  ];
  const proxySide = (): number => (process as unknown as { _getActiveHandles(): Array<{ localPort?: number }> })._getActiveHandles().filter((h) => h.localPort === s.sluice.http.port || h.localPort === s.sluice.socks.port).length;
  for (const [what, port, parts] of cases) {
    const c = await RawClient.connect(t, port);
    if (parts.length === 0) {
      c.write(socks5.greeting(0x02));
      await c.take(2);
      c.write(socks5.auth('raw', sess.proxy_token));
      await c.take(2);
      c.write(socks5.domain('denied.example', 443));
      assert.equal((await c.take(10))[1], 0x02);
      c.write('\x16\x03\x01 hello');
    } else {
      for (const p of parts) {
        c.write(p);
        await sleep(30);
      }
      await c.until((b) => b.includes('\r\n\r\n'), 2000, `${what}: a response`);
    }
    await sleep(50);
    c.socket.end();
    await c.untilClosed(2000);
    const deadline = Date.now() + 2000;
    while (proxySide() > 0 && Date.now() < deadline) await sleep(20);
    assert.equal(proxySide(), 0, `${what}: sluice still holds the socket after its client closed`);
  }
  // And shutdown does not wait for anything.
  const t0 = Date.now();
  await s.close();
  assert.ok(Date.now() - t0 < 1500, `close took ${Date.now() - t0} ms`);
});
