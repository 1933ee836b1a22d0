// The CONNECT fast path's parser: it takes only heads it can read exactly, and hands every
// other byte sequence to Node's HTTP parser (null), so it never accepts more than that does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConnectHead } from '../../src/proxy/connect-head.js';

const head = (s: string): Buffer => Buffer.from(s, 'latin1');

test('a plain CONNECT head yields its target, Proxy-Authorization and length', () => {
  const text = 'CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\nproxy-authorization:  Basic YTpi \t\r\n\r\n';
  const r = parseConnectHead(head(text + '\x16\x03\x01'), 8192);
  assert.deepEqual(r, { target: 'example.test:443', proxyAuthorization: 'Basic YTpi', length: text.length });
});

test('HTTP/1.0 and IPv6 authorities are taken; no credentials is undefined', () => {
  assert.deepEqual(parseConnectHead(head('CONNECT [::1]:8080 HTTP/1.0\r\n\r\n'), 8192), { target: '[::1]:8080', proxyAuthorization: undefined, length: 31 });
});

test('anything unusual is left to the full parser', () => {
  const cases = [
    'GET http://x/ HTTP/1.1\r\n\r\n', // not CONNECT
    'connect x:1 HTTP/1.1\r\n\r\n', // methods are case-sensitive
    'CONNECT x:1 HTTP/1.1\r\nHost: x', // incomplete head (split across packets)
    'CONNECT x:1 HTTP/2.0\r\n\r\n',
    'CONNECT  x:1 HTTP/1.1\r\n\r\n', // double space
    'CONNECT x:1 HTTP/1.1\r\nFolded: a\r\n b\r\n\r\n', // obs-fold
    'CONNECT x:1 HTTP/1.1\r\nNo-Colon\r\n\r\n',
    'CONNECT x:1 HTTP/1.1\r\nBad Name: v\r\n\r\n',
    'CONNECT x:1 HTTP/1.1\r\nX: a\x00b\r\n\r\n', // control byte in a value
    'CONNECT x:1 HTTP/1.1\r\nX: a\rb\r\n\r\n', // bare CR
    'CONNECT x:1 HTTP/1.1\nHost: x\n\n', // bare LF line ends
    'CONNECT x:1 HTTP/1.1\r\nProxy-Authorization: Basic YTpi\r\nProxy-Authorization: Basic Yzpk\r\n\r\n', // duplicate credentials
    'CONNECT x:1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello', // a body
    'CONNECT x:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n',
  ];
  for (const c of cases) assert.equal(parseConnectHead(head(c), 8192), null, JSON.stringify(c));
});

test('a head longer than the header limit is left to the full parser (which answers 431)', () => {
  const text = `CONNECT x:1 HTTP/1.1\r\nX-Pad: ${'a'.repeat(200)}\r\n\r\n`;
  assert.equal(parseConnectHead(head(text), 100), null);
  assert.notEqual(parseConnectHead(head(text), text.length), null);
});
