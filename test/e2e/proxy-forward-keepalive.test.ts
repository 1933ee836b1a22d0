// Plain HTTP forwarding over keep-alive connections, both hops: every request on a client
// connection is identified and decided by what it carries (parsing is remembered per
// connection, decisions are not), the client hop's Connection handling, the response relay
// (backpressure, a client leaving half-way), the upstream pool, and the audit's bytes_up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { eventually, type TestSluice } from '../helpers/harness.js';
import { basic, originFor, rawOriginFor, RawClient, sessionFor, sleep, sluiceFor, type T } from '../helpers/proxy-helpers.js';
import { decisions } from '../helpers/observe-helpers.js';

function get(authority: string, path: string, auth: string | null, extra = ''): string {
  return `GET http://${authority}${path} HTTP/1.1\r\nHost: ${authority}\r\n${auth === null ? '' : `Proxy-Authorization: ${auth}\r\n`}${extra}\r\n`;
}

async function registryEmpty(s: TestSluice, what: string): Promise<void> {
  await eventually(() => s.sluice.connections.size === 0, 2000, `${what}: the connection registry to empty`);
}

test('one keep-alive connection: each request is identified and decided by its own credentials and destination', async (t) => {
  const origin = await originFor(t, '127.0.0.2');
  const other = await originFor(t, '127.0.0.3');
  const s = await sluiceFor(t);
  const a = await sessionFor(s, 'fwd-a', origin);
  const b = await sessionFor(s, 'fwd-b', other);
  const c = await RawClient.connect(t, s.sluice.http.port);
  const authA = basic('fwd-a', a.proxy_token);
  const steps: Array<[string, string, string | null, number]> = [
    ['valid credentials', origin.authority, authA, 200],
    ['a wrong token', origin.authority, basic('fwd-a', 'not-the-token'), 407],
    ['no credentials', origin.authority, null, 407],
    ['valid again', origin.authority, authA, 200],
    ["another container's credentials, its own destination", other.authority, basic('fwd-b', b.proxy_token), 200],
    ["another container's credentials, a destination only fwd-a may reach", origin.authority, basic('fwd-b', b.proxy_token), 403],
    ['fwd-a to a destination it may not reach', other.authority, authA, 403],
    ['fwd-a once more', origin.authority, authA, 200],
  ];
  for (const [what, authority, auth, status] of steps) {
    c.write(get(authority, '/step', auth));
    const res = await c.takeResponse();
    assert.equal(res.status, status, `${what}: ${res.status} ${res.body}`);
    assert.equal(c.closed, false, `${what}: the connection stays open`);
  }
  assert.equal(origin.requests.length, 3);
  assert.equal(other.requests.length, 1);
  // Every request was decided, and audited, on its own.
  await eventually(async () => (await decisions(s)).length === steps.length, 2000, 'one decision per request');
  const rows = (await decisions(s)).reverse();
  assert.deepEqual(
    rows.map((r) => [r.container, r.decision, r.reason]),
    [
      ['fwd-a', 'allow', 'rule'],
      [null, 'deny', 'identity_required'],
      [null, 'deny', 'identity_required'],
      ['fwd-a', 'allow', 'rule'],
      ['fwd-b', 'allow', 'rule'],
      ['fwd-b', 'deny', 'default_deny'],
      ['fwd-a', 'deny', 'default_deny'],
      ['fwd-a', 'allow', 'rule'],
    ],
  );
});

test('a session deleted between two requests on one connection: the second is refused', async (t) => {
  const origin = await originFor(t, '127.0.0.2');
  const s = await sluiceFor(t);
  const a = await sessionFor(s, 'fwd-del', origin);
  const c = await RawClient.connect(t, s.sluice.http.port);
  const auth = basic('fwd-del', a.proxy_token);
  c.write(get(origin.authority, '/1', auth));
  assert.equal((await c.takeResponse()).status, 200);
  assert.equal((await s.api('DELETE', `/api/sessions/${a.session_id}`)).status < 300, true);
  c.write(get(origin.authority, '/2', auth));
  assert.equal((await c.takeResponse()).status, 407);
  assert.equal(origin.requests.length, 1);
});

test('the client hop: keep-alive by default without a Keep-Alive field; Connection: close is honoured; HTTP/1.0 closes', async (t) => {
  const origin = await originFor(t, '127.0.0.2', (_req, res) => {
    res.setHeader('Keep-Alive', 'timeout=1');
    res.end('ok');
  });
  const s = await sluiceFor(t);
  const sess = await sessionFor(s, 'fwd-conn', origin);
  const auth = basic('fwd-conn', sess.proxy_token);

  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(get(origin.authority, '/ka', auth));
  const ka = await c.takeResponse();
  assert.equal(ka.status, 200);
  assert.equal(ka.headers.connection, 'keep-alive');
  assert.equal(ka.headers['keep-alive'], undefined, "the origin's Keep-Alive is not passed on");
  c.write(get(origin.authority, '/close', auth, 'Connection: close\r\n'));
  const closing = await c.takeResponse();
  assert.equal(closing.status, 200);
  assert.equal(closing.headers.connection, 'close');
  await c.untilClosed(2000);

  const old = await RawClient.connect(t, s.sluice.http.port);
  old.write(`GET http://${origin.authority}/old HTTP/1.0\r\nHost: ${origin.authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
  const res = parseHead((await old.untilClosed(2000)).toString('latin1'));
  assert.match(res.statusLine, /^HTTP\/1\.1 200 /);
  assert.equal(res.headers.connection, 'close');
  assert.equal(res.headers['transfer-encoding'], undefined);
  await registryEmpty(s, 'after the connection tests');
});

/** The data of a complete chunked body (no trailers). */
function dechunk(body: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    const size = parseInt(body.slice(at, eol), 16);
    if (!size) return out;
    out += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

function parseHead(text: string): { statusLine: string; headers: Record<string, string>; body: string } {
  const end = text.indexOf('\r\n\r\n');
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
  return { statusLine, headers, body: text.slice(end + 4) };
}

test('a large response reaches a slow client intact (backpressure), and the upstream connection is reused after it', async (t) => {
  const body = randomBytes(8 * 1024 * 1024);
  const origin = await originFor(t, '127.0.0.2', (req, res) => {
    if (req.url === '/big') {
      res.setHeader('content-type', 'application/octet-stream');
      res.end(body);
    } else res.end(String(req.socket.remotePort));
  });
  const s = await sluiceFor(t);
  const sess = await sessionFor(s, 'fwd-big', origin);
  const auth = basic('fwd-big', sess.proxy_token);
  const port = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: s.sluice.http.port, path: `http://${origin.authority}/port`, headers: { 'proxy-authorization': auth }, agent: false }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(text));
      });
      r.on('error', reject);
      r.end();
    });
  const before = await port();

  const sock = net.connect({ host: '127.0.0.1', port: s.sluice.http.port });
  t.after(() => sock.destroy());
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(get(origin.authority, '/big', auth));
  // Read nothing for a while: the proxy must stop reading the origin, not buffer 8 MiB.
  sock.pause();
  await sleep(300);
  const chunks: Buffer[] = [];
  let total = 0;
  await new Promise<void>((resolve) => {
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      total += c.length;
      const all = Buffer.concat(chunks);
      const headEnd = all.indexOf('\r\n\r\n');
      if (headEnd >= 0 && all.length - headEnd - 4 >= body.length) resolve();
    });
    sock.resume();
  });
  const all = Buffer.concat(chunks);
  const headEnd = all.indexOf('\r\n\r\n');
  const head = parseHead(all.subarray(0, headEnd + 4).toString('latin1'));
  assert.equal(head.headers['content-length'], String(body.length));
  const got = all.subarray(headEnd + 4);
  assert.equal(got.length, body.length);
  assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(body).digest('hex'));
  assert.ok(total > body.length);
  // The pool: the next request goes over an upstream connection that already existed.
  const after = await port();
  assert.equal(after, before, 'one upstream connection served all three requests');
});

test('a client that leaves half-way through a response: the upstream connection is dropped and nothing stays registered', async (t) => {
  const origin = await rawOriginFor(t, (sock, text) => {
    if (text.endsWith('\r\n\r\n')) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(1000));
  });
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'fwd-leave', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(get(`127.0.0.2:${origin.port}`, '/slow', basic('fwd-leave', sess.proxy_token)));
  await c.takeThrough('xxxx');
  c.close();
  await eventually(() => origin.sockets.length === 1 && origin.sockets[0]!.destroyed, 2000, 'the origin connection to close');
  await registryEmpty(s, 'client left');
  const row = (await decisions(s, { container: 'fwd-leave' }))[0]!;
  await eventually(async () => (await decisions(s, { container: 'fwd-leave' }))[0]?.close_reason != null, 2000, 'the close to be audited');
  assert.equal((await decisions(s, { container: 'fwd-leave' }))[0]!.close_reason, 'client_closed', JSON.stringify(row));
});

test('the upstream pool: separate origins get separate connections; a pooled connection the origin closed is not used again', async (t) => {
  const a = await originFor(t, '127.0.0.2', (req, res) => res.end(`a ${req.socket.remotePort}`));
  const b = await originFor(t, '127.0.0.3', (req, res) => {
    // Closes its side right after answering: the pooled socket dies while idle.
    res.setHeader('connection', 'close');
    res.end(`b ${req.socket.remotePort}`);
  });
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'fwd-pool', network_rules: [{ destination_pattern: '127.0.0.2' }, { destination_pattern: '127.0.0.3' }] });
  const auth = basic('fwd-pool', sess.proxy_token);
  const c = await RawClient.connect(t, s.sluice.http.port);
  const ask = async (authority: string): Promise<string> => {
    c.write(get(authority, '/', auth));
    const res = await c.takeResponse();
    assert.equal(res.status, 200, res.body);
    return res.body;
  };
  const a1 = await ask(a.authority);
  const b1 = await ask(b.authority);
  await sleep(50);
  const a2 = await ask(a.authority);
  const b2 = await ask(b.authority);
  assert.match(a1, /^a \d+$/);
  assert.equal(a2, a1, 'origin a: one pooled connection');
  assert.match(b2, /^b \d+$/);
  assert.notEqual(b2, b1, 'origin b closed its connection: a new one was dialled');
  assert.equal(b.requests.length, 2);
});

test("bytes_up of a forwarded request is its head as the origin received it (after the proxy's rewriting)", async (t) => {
  let head = '';
  const origin = await rawOriginFor(t, (sock, text) => {
    if (!text.endsWith('\r\n\r\n')) return;
    head = text;
    sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'fwd-bytes', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(
    `GET http://127.0.0.2:${origin.port}/p?q=1 HTTP/1.1\r\nHost: wrong.test\r\nProxy-Authorization: ${basic('fwd-bytes', sess.proxy_token)}\r\n` +
      'Proxy-Connection: keep-alive\r\nX-Val: caf\u00e9\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n',
  );
  assert.equal((await c.takeResponse()).body, 'ok');
  c.close();
  await eventually(async () => (await decisions(s, { container: 'fwd-bytes' }))[0]?.bytes_up != null, 2000, 'the close to be audited');
  const row = (await decisions(s, { container: 'fwd-bytes' }))[0]!;
  assert.equal(row.bytes_up, Buffer.byteLength(head, 'latin1'), head);
  assert.ok(!/proxy-/i.test(head), head);
});

test('responses without a body (HEAD, 204, 304), chunked ones, repeated fields and reason phrases keep their framing on one connection', async (t) => {
  const origin = await rawOriginFor(t, (sock, text) => {
    // One answer per complete request head received so far.
    const heads = text.split('\r\n\r\n').slice(0, -1);
    const done = (sock as net.Socket & { done?: number }).done ?? 0;
    for (const head of heads.slice(done)) {
      const path = /^\w+ (\S+)/.exec(head)?.[1];
      if (path === '/head') sock.write('HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Kind: head\r\n\r\n');
      else if (path === '/204') sock.write('HTTP/1.1 204 No Content\r\n\r\n');
      else if (path === '/304') sock.write('HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n');
      else if (path === '/chunked') sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
      else if (path === '/reason') sock.write('HTTP/1.1 299 Custom Reason\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok');
    }
    (sock as net.Socket & { done?: number }).done = heads.length;
  });
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'fwd-frame', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const auth = basic('fwd-frame', sess.proxy_token);
  const authority = `127.0.0.2:${origin.port}`;
  const c = await RawClient.connect(t, s.sluice.http.port);

  c.write(`HEAD http://${authority}/head HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
  const head = parseHead(await c.takeThrough('\r\n\r\n'));
  assert.match(head.statusLine, /^HTTP\/1\.1 200 OK$/);
  assert.equal(head.headers['content-length'], '12');
  assert.equal(head.headers['x-kind'], 'head');
  for (const [path, status] of [['/204', 204], ['/304', 304]] as const) {
    c.write(get(authority, path, auth));
    const res = parseHead(await c.takeThrough('\r\n\r\n'));
    assert.match(res.statusLine, new RegExp(`^HTTP/1\\.1 ${status} `), path);
  }
  c.write(get(authority, '/chunked', auth));
  const chunked = parseHead(await c.takeThrough('0\r\n\r\n'));
  assert.equal(chunked.headers['transfer-encoding'], 'chunked');
  assert.equal(dechunk(chunked.body), 'hello world');
  c.write(get(authority, '/reason', auth));
  const reason = await c.takeThrough('\r\n\r\nok');
  assert.match(reason, /^HTTP\/1\.1 299 Custom Reason\r\n/);
  assert.equal((reason.match(/^set-cookie: /gim) ?? []).length, 2, reason);
  // Nothing was left over or out of step on the connection.
  await sleep(50);
  assert.equal(c.text(), '');
  assert.equal(c.closed, false);
  assert.equal(origin.sockets.length, 1, 'one upstream connection for all of it');
});

test('pipelined requests are answered in order: a slow one, a refused one, a fast one', async (t) => {
  const origin = await originFor(t, '127.0.0.2', (req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow'), 150);
    else res.end('fast');
  });
  const s = await sluiceFor(t);
  const sess = await sessionFor(s, 'fwd-pipe', origin);
  const auth = basic('fwd-pipe', sess.proxy_token);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(get(origin.authority, '/slow', auth) + get('127.0.0.3:9', '/denied', auth) + get(origin.authority, '/fast', auth) + get(origin.authority, '/fast', null));
  const [a, b, d, e] = [await c.takeResponse(), await c.takeResponse(), await c.takeResponse(), await c.takeResponse()];
  assert.deepEqual(
    [a.status, a.body, b.status, d.status, d.body, e.status],
    [200, 'slow', 403, 200, 'fast', 407],
  );
  assert.equal(c.closed, false);
  await registryEmpty(s, 'after the pipelined requests');
});

test('forty pipelined requests behind a slow one are all answered, without a listener-leak warning', async (t) => {
  const origin = await originFor(t, '127.0.0.2', (req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow'), 150);
    else res.end(req.url);
  });
  const s = await sluiceFor(t);
  const sess = await sessionFor(s, 'fwd-pipe-many', origin);
  const auth = basic('fwd-pipe-many', sess.proxy_token);
  // sluice runs in this process: a warning it causes is emitted here (and printed to stderr).
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  const c = await RawClient.connect(t, s.sluice.http.port);
  let burst = get(origin.authority, '/slow', auth);
  for (let i = 0; i < 40; i++) burst += get(origin.authority, `/n${i}`, auth);
  c.write(burst);
  assert.equal((await c.takeResponse()).body, 'slow');
  for (let i = 0; i < 40; i++) assert.equal((await c.takeResponse()).body, `/n${i}`);
  await sleep(50); // process warnings are emitted on a later tick
  assert.deepEqual(warnings, []);
  await registryEmpty(s, 'after the pipelined requests');
});

test('a forwarded request closed by the operator while the origin holds its answer: the client is cut and the close recorded', async (t) => {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const origin = await originFor(t, '127.0.0.2', (_req, res) => void held.then(() => res.end('late')));
  t.after(() => release());
  const s = await sluiceFor(t);
  const sess = await sessionFor(s, 'fwd-op', origin);
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(get(origin.authority, '/held', basic('fwd-op', sess.proxy_token)));
  await eventually(() => s.sluice.connections.size === 1, 2000, 'the request to be registered');
  const [open] = s.sluice.connections.entries();
  assert.equal(open!.kind, 'forward');
  const del = await s.api('DELETE', `/api/connections/${open!.id}`);
  assert.equal(del.status, 200);
  await c.untilClosed(2000);
  await registryEmpty(s, 'closed by the operator');
  await eventually(async () => (await decisions(s, { container: 'fwd-op' }))[0]?.close_reason === 'closed_by_operator', 2000, 'the close to be audited');
  // The origin answering late changes nothing, and the proxy keeps serving.
  release();
  await sleep(50);
  const again = await RawClient.connect(t, s.sluice.http.port);
  again.write(get(origin.authority, '/again', basic('fwd-op', sess.proxy_token)));
  const res = await again.takeResponse();
  assert.deepEqual([res.status, res.body], [200, 'late']);
  await registryEmpty(s, 'after the second request');
  await eventually(async () => (await decisions(s, { container: 'fwd-op' })).every((d) => d.close_reason !== null), 2000, 'both closes to be audited');
  const rows = (await decisions(s, { container: 'fwd-op' })).reverse();
  assert.deepEqual(
    rows.map((r) => [r.close_reason, r.error]),
    [
      ['closed_by_operator', null],
      ['completed', null],
    ],
    'no upstream failure is made up for the request the operator closed',
  );
});
