// Slow and stalled peers: slowloris headers, SOCKS clients that trickle or stall, and
// tunnels or forwarded responses whose reader never reads. Slow peers are cut at
// handshake_ms; a reader that does not read stops the writer (backpressure), so the bytes
// sluice holds for one connection stay bounded however much the other side has to send.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { basic, RawClient, sleep, sluiceFor, socks5, type T } from '../helpers/proxy-helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const HANDSHAKE_MS = 400;

/** An origin that writes as fast as the connection takes it, until told to stop; counts what the kernel accepted. */
interface Firehose {
  readonly host: string;
  readonly port: number;
  /** Bytes the origin handed to the kernel so far (written minus still buffered in the process). */
  sent(): number;
  close(): Promise<void>;
}

async function firehoseFor(t: T, mode: 'raw' | 'http'): Promise<Firehose> {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const sockets = new Set<net.Socket>();
  let written = 0;
  let current: net.Socket | null = null;
  const pump = (sock: net.Socket): void => {
    current = sock;
    const go = (): void => {
      while (!sock.destroyed) {
        written += chunk.length;
        if (!sock.write(chunk)) {
          sock.once('drain', go);
          return;
        }
      }
    };
    go();
  };
  const server =
    mode === 'raw'
      ? net.createServer((sock) => {
          sockets.add(sock);
          sock.on('error', () => undefined);
          sock.on('close', () => sockets.delete(sock));
          pump(sock);
        })
      : http.createServer((_req, res) => {
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          pump(res.socket!);
        });
  if (mode === 'http') {
    server.on('connection', (sock: net.Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  const f: Firehose = {
    host: '127.0.0.2',
    port: (server.address() as net.AddressInfo).port,
    sent: () => written - (current?.writableLength ?? 0),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  t.after(() => f.close());
  return f;
}

/** Samples `value` until it has not grown for `quietMs` (a stall), or fails after `timeoutMs`. */
async function plateau(value: () => number, quietMs: number, timeoutMs: number, what: string): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = value();
  let since = Date.now();
  while (Date.now() < deadline) {
    await sleep(50);
    const v = value();
    if (v !== last) {
      last = v;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) {
      return v;
    }
  }
  throw new Error(`${what} never stopped growing (at ${last} bytes after ${timeoutMs} ms)`);
}

const MiB = 1024 * 1024;

test('slowloris: clients trickling header bytes are cut with 408 after handshake_ms, and never delay a normal client', async (t) => {
  const s = await sluiceFor(t, { config: { timeouts: { handshake_ms: HANDSHAKE_MS } } });
  const session = await s.createSession({ container_name: 'slow', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const echo = net.createServer((sock) => sock.pipe(sock).on('error', () => undefined));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.2', r));
  t.after(() => new Promise<void>((r) => echo.close(() => r())));
  const port = (echo.address() as net.AddressInfo).port;

  const slow = await Promise.all(Array.from({ length: 40 }, () => RawClient.connect(t, s.sluice.http.port)));
  const started = Date.now();
  let stop = false;
  const request = Buffer.from(`GET http://127.0.0.2:${port}/ HTTP/1.1\r\nHost: 127.0.0.2\r\n${'X-Pad: ' + 'p'.repeat(2000)}\r\n\r\n`);
  const trickle = (async () => {
    for (let i = 0; !stop && i < request.length; i++) {
      for (const c of slow) if (!c.closed) c.write(request.subarray(i, i + 1));
      await sleep(25);
    }
  })();

  // While they trickle, a normal CONNECT goes through at once.
  const c = await RawClient.connect(t, s.sluice.http.port);
  const t0 = Date.now();
  c.write(`CONNECT 127.0.0.2:${port} HTTP/1.1\r\nProxy-Authorization: ${basic('slow', session.proxy_token)}\r\n\r\n`);
  assert.equal((await c.takeResponse(2000)).status, 200);
  c.write('hi');
  assert.equal((await c.take(2)).toString(), 'hi');
  assert.ok(Date.now() - t0 < 500, `a normal client waited ${Date.now() - t0} ms behind the slow ones`);
  c.close();

  for (const sc of slow) {
    const res = await sc.takeResponse(HANDSHAKE_MS + 1500);
    assert.equal(res.status, 408, res.statusLine);
    await sc.untilClosed(1000);
  }
  stop = true;
  await trickle;
  const elapsed = Date.now() - started;
  assert.ok(elapsed < HANDSHAKE_MS + 1500, `slow clients held their sockets for ${elapsed} ms`);
});

test('SOCKS5 clients that trickle their greeting, or stall after authenticating, are closed after handshake_ms', async (t) => {
  const s = await sluiceFor(t, { config: { timeouts: { handshake_ms: HANDSHAKE_MS } } });
  const session = await s.createSession({ container_name: 'slow', network_rules: [{ destination_pattern: '127.0.0.2' }] });

  // Greeting announcing 255 methods, sent one byte every 30 ms: the deadline is from the
  // first byte, so trickling does not extend it.
  const trickler = await RawClient.connect(t, s.sluice.socks.port);
  const started = Date.now();
  trickler.write(Buffer.from([0x05, 0xff]));
  const drip = (async () => {
    for (let i = 0; i < 255 && !trickler.closed; i++) {
      trickler.write(Buffer.from([0x80]));
      await sleep(30);
    }
  })();
  const got = await trickler.untilClosed(HANDSHAKE_MS + 1000);
  assert.equal(got.length, 0, 'no reply to a handshake that never completed');
  assert.ok(Date.now() - started < HANDSHAKE_MS + 500, `closed after ${Date.now() - started} ms`);
  await drip;

  // Authenticated, then nothing: the request never comes.
  const staller = await RawClient.connect(t, s.sluice.socks.port);
  staller.write(socks5.greeting(0x02));
  assert.deepEqual([...(await staller.take(2))], [0x05, 0x02]);
  staller.write(socks5.auth('slow', session.proxy_token));
  assert.deepEqual([...(await staller.take(2))], [0x01, 0x00]);
  staller.write(Buffer.from([0x05, 0x01, 0x00, 0x03, 0x20, 0x61])); // a domain request, 30 bytes short
  await staller.untilClosed(HANDSHAKE_MS + 1000);

  // A client that half-closes mid-handshake is closed at once, not after the deadline.
  const quitter = await RawClient.connect(t, s.sluice.socks.port);
  const q0 = Date.now();
  quitter.write(Buffer.from([0x05, 0x01]));
  quitter.socket.end();
  await quitter.untilClosed(HANDSHAKE_MS);
  assert.ok(Date.now() - q0 < HANDSHAKE_MS / 2, `half-closed client held for ${Date.now() - q0} ms`);
  // So is one that half-closes without sending a byte, on either port.
  for (const port of [s.sluice.http.port, s.sluice.socks.port]) {
    const silent = await RawClient.connect(t, port);
    const s0 = Date.now();
    silent.socket.end();
    await silent.untilClosed(HANDSHAKE_MS);
    assert.ok(Date.now() - s0 < HANDSHAKE_MS / 2, `silent half-closed client held for ${Date.now() - s0} ms`);
  }
  assert.equal(s.sluice.connections.size, 0);
});

test('a tunnel whose client never reads: the origin is stopped by backpressure, sluice buffers a bounded amount, and reading resumes the flow', async (t) => {
  const s = await sluiceFor(t);
  const origin = await firehoseFor(t, 'raw');
  const session = await s.createSession({ container_name: 'bp', network_rules: [{ destination_pattern: origin.host }] });
  gc();
  const heapBefore = process.memoryUsage();
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT ${origin.host}:${origin.port} HTTP/1.1\r\nProxy-Authorization: ${basic('bp', session.proxy_token)}\r\n\r\n`);
  await c.takeThrough('\r\n\r\n');
  // From here on the client reads nothing (its socket stops reading from the kernel).
  c.socket.pause();

  const proxyRead = (): number => s.sluice.connections.entries()[0]?.bytesDown ?? 0;
  const sent = await plateau(() => origin.sent(), 400, 8000, "the origin's writes");
  const read = await plateau(proxyRead, 400, 2000, 'what sluice reads from the origin');
  // What sits in kernel socket buffers on loopback is a few MiB; without backpressure the
  // origin would have pushed hundreds of MiB by now.
  assert.ok(sent < 64 * MiB, `the origin pushed ${(sent / MiB).toFixed(1)} MiB into a tunnel nobody reads`);
  assert.ok(read < 64 * MiB, `sluice read ${(read / MiB).toFixed(1)} MiB from the origin for a client that reads nothing`);
  gc();
  const heapAfter = process.memoryUsage();
  const held = heapAfter.arrayBuffers - heapBefore.arrayBuffers + (heapAfter.heapUsed - heapBefore.heapUsed);
  assert.ok(held < 32 * MiB, `memory held for one stalled tunnel: ${(held / MiB).toFixed(1)} MiB`);

  // The client starts reading: the flow resumes.
  let received = c.received.length;
  c.socket.on('data', (d: Buffer) => (received += d.length));
  c.socket.resume();
  const target = read + 16 * MiB;
  const deadline = Date.now() + 5000;
  while (proxyRead() < target && Date.now() < deadline) await sleep(20);
  assert.ok(proxyRead() >= target, `flow did not resume: sluice read ${proxyRead()} of ${target}`);
  assert.ok(received > 16 * MiB, `client received ${received} bytes after resuming`);
  c.close();
  await plateau(() => s.sluice.connections.size, 100, 2000, 'open connections');
  assert.equal(s.sluice.connections.size, 0);
});

test('an upload into an origin that never reads stalls the client instead of filling sluice', async (t) => {
  const s = await sluiceFor(t);
  const sink: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sock.pause(); // never reads
    sock.on('error', () => undefined);
    sink.push(sock);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
  t.after(() => new Promise<void>((r) => (sink.forEach((x) => x.destroy()), server.close(() => r()))));
  const port = (server.address() as net.AddressInfo).port;
  const session = await s.createSession({ container_name: 'up', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT 127.0.0.2:${port} HTTP/1.1\r\nProxy-Authorization: ${basic('up', session.proxy_token)}\r\n\r\n`);
  await c.takeThrough('\r\n\r\n');
  const chunk = Buffer.alloc(64 * 1024, 0x62);
  let written = 0;
  const pump = (): void => {
    while (!c.socket.destroyed) {
      written += chunk.length;
      if (!c.socket.write(chunk)) {
        c.socket.once('drain', pump);
        return;
      }
    }
  };
  pump();
  const accepted = await plateau(() => written - c.socket.writableLength, 400, 8000, "the client's writes");
  const up = await plateau(() => s.sluice.connections.entries()[0]?.bytesUp ?? 0, 400, 2000, 'what sluice writes to the origin');
  assert.ok(accepted < 64 * MiB, `the client pushed ${(accepted / MiB).toFixed(1)} MiB at an origin that reads nothing`);
  assert.ok(up < 64 * MiB, `sluice wrote ${(up / MiB).toFixed(1)} MiB towards it`);
  c.close();
});

test('a forwarded response to a client that never reads: backpressure reaches the origin too', async (t) => {
  const s = await sluiceFor(t);
  const origin = await firehoseFor(t, 'http');
  const session = await s.createSession({ container_name: 'fwd', network_rules: [{ destination_pattern: origin.host }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`GET http://${origin.host}:${origin.port}/big HTTP/1.1\r\nHost: ${origin.host}\r\nProxy-Authorization: ${basic('fwd', session.proxy_token)}\r\n\r\n`);
  await c.until((b) => b.includes('\r\n\r\n'), 3000, 'response head');
  c.socket.pause();
  const sent = await plateau(() => origin.sent(), 400, 8000, "the origin's writes");
  assert.ok(sent < 64 * MiB, `the origin pushed ${(sent / MiB).toFixed(1)} MiB into a response nobody reads`);
  c.close();
  await plateau(() => s.sluice.connections.size, 100, 2000, 'open connections');
  assert.equal(s.sluice.connections.size, 0, 'the forwarded request ends with its client');
});
