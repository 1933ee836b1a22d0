// CONNECT heads take one of two paths: read directly by the listener (the whole head in the
// first packet) or by Node's HTTP parser (anything else). A client must not be able to tell
// which one it got: every head below is sent in one packet and split byte-wise, and the
// answers must agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rawExchange } from '../helpers/harness.js';
import { basic, basicSetup, parseResponse } from '../helpers/proxy-helpers.js';

function splitInTwo(b: Buffer): Buffer[] {
  // After "CONNECT": the first packet is never a complete head.
  return [b.subarray(0, 7), b.subarray(7)];
}

test('every CONNECT head is answered the same whether it arrives in one packet or split', async (t) => {
  const { s, origin, session } = await basicSetup(t, { config: { limits: { max_header_bytes: 2048 } } });
  const auth = `Proxy-Authorization: ${basic('build-1', session.proxy_token)}\r\n`;
  const wrong = `Proxy-Authorization: ${basic('build-1', 'not-the-token')}\r\n`;
  const get = `GET /through HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: close\r\n\r\n`;
  const cases: Array<{ name: string; head: string; status: number; reachesOrigin?: boolean }> = [
    { name: 'allowed, with a request pipelined behind the head', head: `CONNECT ${origin.authority} HTTP/1.1\r\nHost: ${origin.authority}\r\n${auth}\r\n${get}`, status: 200, reachesOrigin: true },
    { name: 'HTTP/1.0, lower-case header name, odd spacing', head: `CONNECT ${origin.authority} HTTP/1.0\r\nproxy-authorization:\t ${basic('build-1', session.proxy_token)} \r\n\r\n${get}`, status: 200, reachesOrigin: true },
    { name: 'no credentials', head: `CONNECT ${origin.authority} HTTP/1.1\r\n\r\n`, status: 407 },
    { name: 'a wrong token', head: `CONNECT ${origin.authority} HTTP/1.1\r\n${wrong}\r\n`, status: 407 },
    { name: 'a destination no rule allows', head: `CONNECT 127.0.0.3:${origin.port} HTTP/1.1\r\n${auth}\r\n`, status: 403 },
    { name: 'no port', head: `CONNECT 127.0.0.2 HTTP/1.1\r\n${auth}\r\n`, status: 400 },
    { name: 'an unbracketed IPv6 authority', head: `CONNECT ::1:${origin.port} HTTP/1.1\r\n${auth}\r\n`, status: 400 },
    { name: 'an obs-folded header', head: `CONNECT ${origin.authority} HTTP/1.1\r\nX-A: a\r\n b\r\n${auth}\r\n`, status: 400 },
    { name: 'headers over the limit', head: `CONNECT ${origin.authority} HTTP/1.1\r\nX-Pad: ${'p'.repeat(3000)}\r\n${auth}\r\n`, status: 431 },
    { name: 'duplicate credentials, the first valid', head: `CONNECT ${origin.authority} HTTP/1.1\r\n${auth}${wrong}\r\n${get}`, status: 200, reachesOrigin: true },
  ];
  for (const c of cases) {
    const bytes = Buffer.from(c.head, 'latin1');
    const answers = [];
    for (const packets of [[bytes], splitInTwo(bytes)]) {
      const before = origin.requests.length;
      const { received } = await rawExchange(s.sluice.http.port, packets, 3000);
      const text = received.toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
      answers.push(status);
      assert.equal(status, c.status, `${c.name} (${packets.length} packet(s)): ${text.slice(0, 120)}`);
      if (c.reachesOrigin) {
        assert.equal(origin.requests.length, before + 1, `${c.name}: the pipelined request reached the origin`);
        assert.match(parseResponse(text.slice(text.indexOf('\r\n\r\n') + 4)).body, /GET \/through/);
      } else {
        assert.equal(origin.requests.length, before, `${c.name}: nothing reached the origin`);
      }
    }
    assert.equal(answers[0], answers[1], c.name);
  }
});
