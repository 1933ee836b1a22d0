// What a forwarded request and its response look like on the far side: the request target
// exactly as the client wrote it (no slash folding, no backslash rewriting), the client's
// header fields in the client's order, and the origin's response fields in the origin's
// order and spelling, repeated ones kept, hop-by-hop ones (and those Connection names) gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { basic, rawOriginFor, RawClient, sluiceFor, type T } from '../helpers/proxy-helpers.js';

/** A raw origin on 127.0.0.2 answering every request head with `response`; heads are kept. */
async function rawOrigin(t: T, response: string): Promise<{ port: number; heads: string[] }> {
  const heads: string[] = [];
  const answered = new Map<net.Socket, number>();
  const { port } = await rawOriginFor(t, (sock, text) => {
    const complete = text.split('\r\n\r\n').slice(0, -1);
    for (let i = answered.get(sock) ?? 0; i < complete.length; i++) {
      heads.push(`${complete[i]}\r\n\r\n`);
      sock.write(response);
    }
    answered.set(sock, complete.length);
  });
  return { port, heads };
}

function fieldLines(head: string): string[] {
  return head.split('\r\n').slice(1).filter((l) => l.length > 0);
}

test('the request target reaches the origin exactly as sent', async (t) => {
  const origin = await rawOrigin(t, 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'fid-path', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const auth = basic('fid-path', sess.proxy_token);
  const authority = `127.0.0.2:${origin.port}`;
  const c = await RawClient.connect(t, s.sluice.http.port);
  const paths = ['//double//slashes/', '/a/./b/../c', '/enc%2Fslash%20x?q=//v&r=a%2Fb', '/back\\slash\\x?y=\\z', '/?', '/p?a=1?b=2#frag', '/~user/{x}|y^'];
  for (const p of paths) {
    c.write(`GET http://${authority}${p} HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
    const res = await c.takeResponse();
    assert.equal(res.status, 200, `${p}: ${res.statusLine} ${res.body}`);
  }
  // The fragment is the client's business (never sent by real clients); everything else is verbatim.
  const expected = paths.map((p) => p.replace(/#.*/, ''));
  assert.deepEqual(
    origin.heads.map((h) => /^GET (\S+) HTTP\/1\.1\r\n/.exec(h)?.[1]),
    expected,
  );
  // http://host?q has an empty path: origin-form spells it /?q (RFC 9112 3.2.1).
  c.write(`GET http://${authority}?only=query HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
  assert.equal((await c.takeResponse()).status, 200);
  assert.match(origin.heads.at(-1)!, /^GET \/\?only=query HTTP\/1\.1\r\n/);
});

test("the client's header fields reach the origin in the client's order, hop-by-hop ones removed", async (t) => {
  const origin = await rawOrigin(t, 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'fid-order', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const authority = `127.0.0.2:${origin.port}`;
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(
    `GET http://${authority}/order HTTP/1.1\r\nHost: ${authority}\r\nUser-Agent: fid/1\r\nProxy-Authorization: ${basic('fid-order', sess.proxy_token)}\r\n` +
      'Accept: */*\r\nConnection: keep-alive, X-Hop\r\nX-Hop: gone\r\nX-First: 1\r\nCookie: a=1\r\nTE: trailers\r\nX-Last: 2\r\n\r\n',
  );
  assert.equal((await c.takeResponse()).status, 200);
  const names = fieldLines(origin.heads[0]!).map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
  // Node's client adds its own Connection field for the upstream hop, last.
  assert.deepEqual(names, ['host', 'user-agent', 'accept', 'x-first', 'cookie', 'x-last', 'connection']);
  assert.match(origin.heads[0]!, /\r\nhost: 127\.0\.0\.2:\d+\r\n/i);
});

test("the origin's response fields reach the client in its order and spelling, repeats kept, hop-by-hop ones removed", async (t) => {
  const origin = await rawOrigin(
    t,
    'HTTP/1.1 200 Fine\r\nX-Zeta: z\r\nServer: raw\r\nLink: <a>; rel=x\r\nLink: <b>; rel=y\r\nConnection: keep-alive, X-Hop-Res\r\nX-Hop-Res: gone\r\n' +
      'Keep-Alive: timeout=30\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nProxy-Authenticate: Basic\r\nX-MiXeD-CaSe: v\r\nContent-Length: 2\r\n\r\nok',
  );
  const s = await sluiceFor(t);
  const sess = await s.createSession({ container_name: 'fid-res', network_rules: [{ destination_pattern: '127.0.0.2' }] });
  const authority = `127.0.0.2:${origin.port}`;
  const c = await RawClient.connect(t, s.sluice.http.port);
  const ask = async (): Promise<string[]> => {
    c.write(`GET http://${authority}/res HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${basic('fid-res', sess.proxy_token)}\r\n\r\n`);
    const head = await c.takeThrough('\r\n\r\n');
    assert.equal((await c.take(2)).toString(), 'ok');
    assert.match(head, /^HTTP\/1\.1 200 Fine\r\n/);
    return fieldLines(head);
  };
  const lines = await ask();
  assert.deepEqual(
    lines.filter((l) => !/^date:/i.test(l)),
    ['X-Zeta: z', 'Server: raw', 'Link: <a>; rel=x', 'Link: <b>; rel=y', 'Set-Cookie: a=1', 'Set-Cookie: b=2', 'X-MiXeD-CaSe: v', 'Content-Length: 2', 'Connection: keep-alive'],
  );
  // The upstream connection went back to the pool (the origin's Keep-Alive hint allows it).
  await ask();
  assert.equal(origin.heads.length, 2);
});
