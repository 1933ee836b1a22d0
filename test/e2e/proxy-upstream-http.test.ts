// Chaining to a parent HTTP proxy (`upstream_proxy: http://...`), which is asked for each
// connection with CONNECT. The parent is a second sluice (its audit shows what the child
// asked for) or, for answers a sluice never gives, a scripted raw parent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { curl, startTestSluice, tempDir } from '../helpers/harness.js';
import { connectVia, decisions } from '../helpers/observe-helpers.js';
import { chain, parentDecisions, rawParent } from '../helpers/upstream-helpers.js';
import { RawClient, basic, closedPort, getOverTunnel, originFor, proxyUrl, sluiceFor, socks5, socks5Raw, socksConnect, type T } from '../helpers/proxy-helpers.js';

/** A child whose parent is `parentPort` over http://, with a session of build-1 allowed 127.0.0.2 on any port. */
async function childOf(t: T, parentUrl: string, opts: { logger?: pino.Logger } = {}) {
  const child = await sluiceFor(t, { config: { upstream_proxy: parentUrl }, ...opts });
  const session = await child.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: '*' }] });
  return { child, token: session.proxy_token };
}

/** A pino logger at debug whose lines are kept in `lines`. */
function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

// CONNECT through an HTTP parent, with the parent's audit checked: test/e2e/proxy-upstream.test.ts.

test('SOCKS5 clients and forwarded http:// requests go through the HTTP parent too', async (t) => {
  const { parent, child, token, origin } = await chain(t, 'http');
  const v5 = await socksConnect(child.sluice.socks.port, { host: 'app.test', port: origin.port }, { type: 5, userId: 'build-1', password: token });
  assert.match(await getOverTunnel(v5.socket, `app.test:${origin.port}`, '/socks5'), /GET \/socks5/);
  const url = `http://app.test:${origin.port}`;
  const r = await curl(['-x', proxyUrl(child.sluice.http.port, 'build-1', token), `${url}/one`, `${url}/two`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /GET \/one/);
  assert.match(r.stdout, /GET \/two/);
  // One CONNECT for the SOCKS tunnel, one for the pooled forwarding connection both requests used.
  const rows = await parentDecisions(parent, 2);
  assert.equal(rows.length, 2);
  assert.ok(rows.every((row) => row.protocol === 'connect' && row.destination === '127.0.0.2'));
  assert.equal(origin.requests.length, 3);
});

// The parent's policy refusing and a refused connection behind it: proxy-upstream.test.ts.

test("a parent that refuses sluice's credentials (407) is named, and the credentials appear nowhere", async (t) => {
  const parent = await sluiceFor(t);
  await parent.createSession({ container_name: 'edge', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: '*' }] });
  // Wrong and missing credentials (407).
  const origin = await originFor(t);
  for (const [credentials, expected] of [
    ['edge:wrong-token@', /refused sluice's credentials \(407 Proxy Authentication Required\)/],
    ['', /requires credentials and none are configured \(407 Proxy Authentication Required\)/],
  ] as const) {
    const { logger, lines } = capturingLogger();
    const { child: c2, token: t2 } = await childOf(t, `http://${credentials}127.0.0.1:${parent.sluice.http.port}`, { logger });
    const { res } = await connectVia(t, c2, 'build-1', t2, origin.authority);
    assert.equal(res.status, 502, res.statusLine);
    assert.match(res.headers['proxy-status'] ?? '', expected);
    const forwarded = await curl(['-sS', '-i', '-x', proxyUrl(c2.sluice.http.port, 'build-1', t2), `http://${origin.authority}/x`]);
    assert.match(forwarded.stdout, /^HTTP\/1\.1 502/);
    const audit = JSON.stringify(await decisions(c2));
    assert.match(audit, /connect_error/);
    const everything = [JSON.stringify(res), forwarded.stdout, audit, ...lines].join('\n');
    assert.match(lines.join(''), /upstream proxy http:\/\/127\.0\.0\.1/, 'the log names the parent');
    for (const secret of ['wrong-token', Buffer.from('edge:wrong-token').toString('base64')]) {
      assert.ok(!everything.includes(secret), `credentials never appear in errors, audit or logs (${secret})`);
    }
  }
});

test('a raw HTTP parent gets CONNECT ip:port with Basic credentials, and its 503/504 answers are mapped', async (t) => {
  let status = '503 Service Unavailable\r\nX-Squid-Error: ERR_CONNECT_FAIL 111';
  const raw = await rawParent(t, (sock) => sock.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\n\r\n`));
  const { child, token } = await childOf(t, `http://squid%20user:p%40ss@127.0.0.1:${raw.port}`);
  const refused = await connectVia(t, child, 'build-1', token, '127.0.0.2:443');
  assert.equal(refused.res.status, 502);
  assert.match(refused.res.headers['proxy-status'] ?? '', /error=connection_refused; details="upstream proxy http:\/\/127\.0\.0\.1:\d+ could not connect to 127\.0\.0\.2:443 \(503 Service Unavailable, connection_refused\)"/);
  const [head] = raw.heads;
  assert.match(head!, /^CONNECT 127\.0\.0\.2:443 HTTP\/1\.1\r\n/);
  assert.ok(head!.includes(`\r\nProxy-Authorization: ${basic('squid user', 'p@ss')}\r\n`), head);
  status = '504 Gateway Timeout';
  const slow = await connectVia(t, child, 'build-1', token, '127.0.0.2:443');
  assert.equal(slow.res.status, 504);
  assert.match(slow.res.headers['proxy-status'] ?? '', /error=connection_timeout; details=".*\(504 Gateway Timeout, connection_timeout\)"/);
  status = '418 Teapot';
  const odd = await connectVia(t, child, 'build-1', token, '127.0.0.2:443');
  assert.equal(odd.res.status, 502);
  assert.match(odd.res.headers['proxy-status'] ?? '', /error=destination_unavailable; details=".*could not connect to 127\.0\.0\.2:443 \(HTTP 418\)"/);
  assert.doesNotMatch(odd.res.headers['proxy-status'] ?? '', /Teapot/, "the parent's own reason text is not passed on");
});

test('a parent that answers garbage, an endless header block or nothing fails that connection at once, and sluice keeps serving', async (t) => {
  const cases: Array<[string, (sock: net.Socket) => void, RegExp]> = [
    ['garbage', (sock) => sock.write('SSH-2.0-OpenSSH_9.6\r\n'), /its answer is not HTTP/],
    ['bad status line', (sock) => sock.write('HTTP/1.1 2OO OK\r\n'), /malformed status line/],
    ['bad header', (sock) => sock.write('HTTP/1.1 200 OK\r\nno colon here\r\n\r\n'), /malformed header line/],
    ['folded header', (sock) => sock.write('HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\n\r\n'), /malformed header line/],
    ['oversized', (sock) => sock.write(`HTTP/1.1 200 OK\r\n${'X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(400)}`), /header block is larger than 16384 bytes/],
    ['closed', (sock) => sock.end(), /closed the connection before answering/],
  ];
  for (const [name, answer, expected] of cases) {
    const raw = await rawParent(t, answer);
    // A long connect timeout: the failure must come from the answer, not from waiting it out.
    const child = await sluiceFor(t, { config: { upstream_proxy: `http://127.0.0.1:${raw.port}`, timeouts: { connect_ms: 30_000 } } });
    const session = await child.createSession({ container_name: 'build-1', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: '*' }] });
    const { res } = await connectVia(t, child, 'build-1', session.proxy_token, '127.0.0.2:22');
    assert.equal(res.status, 502, name);
    assert.match(res.headers['proxy-status'] ?? '', expected, name);
    assert.match(res.headers['proxy-status'] ?? '', /details="upstream proxy http:\/\/127\.0\.0\.1:\d+ /, name);
  }
});

test("server-first bytes that arrive in the same packet as the parent's 200 reach the client first, in order", async (t) => {
  const raw = await rawParent(t, (sock) => {
    sock.write('HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-banner\r\n');
    setTimeout(() => sock.end('second line\r\n'), 50);
  });
  const { child, token } = await childOf(t, `http://127.0.0.1:${raw.port}`);
  const c = await RawClient.connect(t, child.sluice.http.port);
  c.write(`CONNECT 127.0.0.2:22 HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', token)}\r\n\r\n`);
  await c.takeThrough('\r\n\r\n');
  await c.untilClosed(3000);
  assert.equal(c.text(), 'SSH-2.0-banner\r\nsecond line\r\n');
  // SOCKS5 the same.
  const { c: s5, rep } = await socks5Raw(t, child.sluice.socks.port, 'build-1', token, socks5.ipv4('127.0.0.2', 22));
  assert.equal(rep, 0);
  await s5.untilClosed(3000);
  assert.equal(s5.text(), 'SSH-2.0-banner\r\nsecond line\r\n');
  // The 200, a short answer and the FIN all at once.
  const quick = await rawParent(t, (sock) => sock.end('HTTP/1.1 200 OK\r\n\r\n220 done\r\n'));
  const { child: c2, token: t2 } = await childOf(t, `http://127.0.0.1:${quick.port}`);
  const q = await RawClient.connect(t, c2.sluice.http.port);
  q.write(`CONNECT 127.0.0.2:25 HTTP/1.1\r\nProxy-Authorization: ${basic('build-1', t2)}\r\n\r\n`);
  await q.takeThrough('\r\n\r\n');
  await q.untilClosed(3000);
  assert.equal(q.text(), '220 done\r\n');
});

test("an http:// upstream_proxy that is sluice's own listener is refused at start (a proxy loop)", async (t) => {
  const port = await closedPort('127.0.0.1');
  const dataDir = tempDir();
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  await assert.rejects(
    startTestSluice({ dataDir, config: { listen: { http: `127.0.0.1:${port}` }, upstream_proxy: `http://127.0.0.1:${port}` } }),
    /upstream_proxy http:\/\/127\.0\.0\.1:\d+ is one of this sluice's own listeners/,
  );
});
