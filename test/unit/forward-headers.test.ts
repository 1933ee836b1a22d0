// The pure parts of the forwarding path: hop-by-hop filtering, the forwarded head's size
// (audit bytes_up), and the per-connection memo of parsed credentials and hosts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { endToEndRawHeaders, isHopByHop, upstreamRequestHeaders } from '../../src/proxy/forward-headers.js';
import { ForwardConn } from '../../src/proxy/forward-conn.js';
import { requestHeadBytes } from '../../src/proxy/connections.js';
import { MALFORMED_CREDENTIALS } from '../../src/identity/identify.js';

test('upstreamRequestHeaders drops hop-by-hop fields and the ones Connection names, and leaves its input alone', () => {
  const input: http.IncomingHttpHeaders = {
    host: 'a.test',
    connection: 'keep-alive, X-Hop, close',
    'keep-alive': 'timeout=5',
    'proxy-authorization': 'Basic eDp5',
    'proxy-connection': 'keep-alive',
    'proxy-authenticate': 'Basic',
    te: 'trailers',
    trailer: 'x',
    upgrade: 'websocket',
    'x-hop': 'secret',
    'set-cookie': ['a=1', 'b=2'],
    accept: '*/*',
  };
  const copy = structuredClone(input);
  const out = upstreamRequestHeaders(input, false);
  assert.deepEqual(out, { host: 'a.test', 'set-cookie': ['a=1', 'b=2'], accept: '*/*' });
  assert.deepEqual(input, copy, 'the input object is not modified');
});

test('upstreamRequestHeaders for a WebSocket handshake keeps Connection and Upgrade, drops the rest', () => {
  const out = upstreamRequestHeaders({ host: 'a.test', connection: 'Upgrade, X-Hop', upgrade: 'websocket', 'x-hop': '1', 'keep-alive': '1', 'proxy-authorization': 'Basic eDp5', 'sec-websocket-key': 'k' }, true);
  assert.deepEqual(out, { host: 'a.test', connection: 'Upgrade, X-Hop', upgrade: 'websocket', 'sec-websocket-key': 'k' });
  // As before: a Connection header that names itself takes itself out, handshake or not.
  assert.deepEqual(upstreamRequestHeaders({ connection: 'connection', upgrade: 'websocket' }, true), { upgrade: 'websocket' });
});

test('upstreamRequestHeaders without a Connection field, and with empty list members', () => {
  assert.deepEqual(upstreamRequestHeaders({ a: '1', te: 'gzip' }, false), { a: '1' });
  assert.deepEqual(upstreamRequestHeaders({ connection: ' , ,X-A ,', 'x-a': '1', 'x-b': '2' }, false), { 'x-b': '2' });
  for (const h of ['connection', 'keep-alive', 'proxy-authorization', 'proxy-authenticate', 'proxy-connection', 'te', 'trailer', 'upgrade']) assert.ok(isHopByHop(h), h);
  for (const h of ['transfer-encoding', 'host', 'authorization', 'content-length']) assert.ok(!isHopByHop(h), h);
});

test('upstreamRequestHeaders lists the fields last to first (http-proxy copies them back into order)', () => {
  const out = upstreamRequestHeaders({ host: 'a.test', 'user-agent': 'u', connection: 'x-a', 'x-a': '1', accept: '*/*', 'x-z': 'z' }, false);
  assert.deepEqual(Object.keys(out), ['x-z', 'accept', 'user-agent', 'host']);
});

test('endToEndRawHeaders keeps order, spelling and repeats, drops hop-by-hop fields in any case and those Connection names', () => {
  const raw = ['X-Z', 'z', 'CONNECTION', 'Keep-Alive, X-Hop', 'Link', '<a>', 'x-hop', 'gone', 'Keep-Alive', 'timeout=5', 'Link', '<b>', 'TE', 'trailers', 'Proxy-Authenticate', 'Basic', 'Set-Cookie', 'a=1', 'Transfer-Encoding', 'chunked'];
  const copy = [...raw];
  assert.deepEqual(endToEndRawHeaders(raw, false), ['X-Z', 'z', 'Link', '<a>', 'Link', '<b>', 'Set-Cookie', 'a=1', 'Transfer-Encoding', 'chunked']);
  assert.deepEqual(raw, copy, 'the input is not modified');
  // For an HTTP/1.0 client Transfer-Encoding goes too (Node re-frames the body).
  assert.deepEqual(endToEndRawHeaders(['transfer-ENCODING', 'chunked', 'A', '1'], true), ['A', '1']);
  // A Connection field naming a field that comes before it, and two Connection fields.
  assert.deepEqual(endToEndRawHeaders(['X-Early', '1', 'Connection', 'x-early', 'B', '2', 'connection', 'close, b'], false), []);
  // Same-length names that are not hop-by-hop stay (length only decides whether to look).
  assert.deepEqual(endToEndRawHeaders(['Te', 'x', 'Tx', 'y', 'Content-Type', 'text/plain', 'Upgradez', '1', 'Upgrade', 'h2c'], false), ['Tx', 'y', 'Content-Type', 'text/plain', 'Upgradez', '1']);
  assert.deepEqual(endToEndRawHeaders([], false), []);
});

/**
 * A request parsed by Node's server (as sluice's is), measured by requestHeadBytes, and
 * the head Node's client then writes for it the way http-proxy forwards it (its method,
 * url and parsed headers).
 */
async function measuredAndForwarded(method: string, path: string, headers: Record<string, string | string[]>): Promise<{ head: string; counted: number }> {
  let resolveHead: (h: string) => void;
  const gotHead = new Promise<string>((r) => (resolveHead = r));
  const sink = net.createServer((s) => {
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end >= 0) {
        resolveHead(buf.slice(0, end + 4));
        s.end('HTTP/1.1 204 No Content\r\n\r\n');
      }
    });
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  const sinkPort = (sink.address() as net.AddressInfo).port;
  let counted = -1;
  const server = http.createServer((req, res) => {
    counted = requestHeadBytes(req);
    const fwd = http.request({ host: '127.0.0.1', port: sinkPort, method: req.method, path: req.url, headers: req.headers, agent: false, setHost: false }, (up) => {
      up.resume();
      up.on('end', () => res.end());
    });
    fwd.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await new Promise<void>((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, method, path, headers, agent: false }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      r.on('error', reject);
      r.end();
    });
    return { head: await gotHead, counted };
  } finally {
    server.close();
    sink.close();
  }
}

test('requestHeadBytes is the size of the head as forwarded (one byte per latin1 character)', async () => {
  const headers = { Host: 'a.test:8080', 'User-Agent': '\u00fc-agent/1.0', 'X-Many': ['1', '22'], Cookie: ['a=1', 'b=2'], Connection: 'close' };
  const { head, counted } = await measuredAndForwarded('GET', '/p?q=%C3%BC', headers);
  assert.equal(counted, Buffer.byteLength(head, 'latin1'), head);
});

test('ForwardConn re-parses credentials and hosts only when they change', () => {
  const socket = new net.Socket();
  const conn = new ForwardConn(socket);
  assert.equal(conn.from, '');
  const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
  const a = conn.credentials(basic('c1', 'tok'));
  assert.deepEqual(a, { username: 'c1', password: 'tok' });
  assert.equal(conn.credentials(basic('c1', 'tok')), a, 'the same header is not parsed again');
  assert.deepEqual(conn.credentials(basic('c2', 'other')), { username: 'c2', password: 'other' });
  assert.equal(conn.credentials(undefined), null, 'no header: no credentials');
  assert.equal(conn.credentials('Bearer x'), MALFORMED_CREDENTIALS);
  assert.deepEqual(conn.credentials(basic('c1', 'tok')), { username: 'c1', password: 'tok' });

  const d = conn.destination('Example.TEST.');
  assert.deepEqual(d, { kind: 'host', host: 'example.test' });
  assert.equal(conn.destination('Example.TEST.'), d);
  const ip = conn.destination('127.0.0.2');
  assert.equal(typeof ip === 'object' && ip.kind, 'ip');
  assert.equal(conn.destination('bad host'), 'bad host', 'an unparsable host is handed on as sent, for the gate to refuse');
});
