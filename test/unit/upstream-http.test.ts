import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_REPLY_BYTES, parseConnectReply, refusalOf } from '../../src/proxy/upstream-http.js';

const parse = (text: string) => parseConnectReply(Buffer.from(text, 'latin1'));

test("a parent's answer is parsed once its header block is complete, whatever the chunking", () => {
  const answer = 'HTTP/1.1 200 Connection established\r\nVia: 1.1 squid\r\nvia:  other \r\n\r\nSSH-2.0-x\r\n';
  const end = answer.indexOf('\r\n\r\n') + 4;
  for (let i = 0; i < end; i++) assert.deepEqual(parse(answer.slice(0, i)), { state: 'more' }, `after ${i} bytes`);
  const done = parse(answer);
  assert.equal(done.state, 'done');
  if (done.state !== 'done') return;
  assert.equal(done.status, 200);
  assert.equal(done.headerBytes, end);
  assert.equal(done.headers.get('via'), '1.1 squid, other');
  assert.equal(parse('HTTP/1.0 407\r\n\r\n').state, 'done');
});

test('anything but plain HTTP/1.x is refused as early as the bytes show it', () => {
  for (const [text, why] of [
    ['SSH', /not HTTP/],
    ['HTTP/2 200\r\n\r\n', /not HTTP/],
    ['HTTP/1.1 20\r\n', /malformed status line/],
    ['HTTP/1.1 200 OK\nVia: x\n\n', /malformed status line/],
    ['HTTP/1.1 200 OK\r\nbad\x00name: x\r\n\r\n', /malformed header line/],
    ['HTTP/1.1 200 OK\r\nName : x\r\n\r\n', /malformed header line/],
    ['HTTP/1.1 200 OK\r\nX: 1\r\n\tfolded\r\n\r\n', /malformed header line/],
    [`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(MAX_REPLY_BYTES)}`, /larger than/],
    [`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(MAX_REPLY_BYTES)}\r\n\r\n`, /larger than/],
  ] as const) {
    const r = parse(text);
    assert.equal(r.state, 'bad', JSON.stringify(text.slice(0, 40)));
    if (r.state === 'bad') assert.match(r.why, why);
  }
});

test("refusals are mapped by status, then by the parent's stated reason, never its reason text", () => {
  const parent = { host: '10.0.0.1', port: 3128, authorization: 'Basic c2VjcmV0', label: 'http://10.0.0.1:3128' };
  const none = new Map<string, string>();
  assert.deepEqual(refusalOf(parent, 407, none, '1.2.3.4:443'), { kind: 'connect_error', detail: "upstream proxy http://10.0.0.1:3128 refused sluice's credentials (407 Proxy Authentication Required)" });
  assert.match(refusalOf({ ...parent, authorization: null }, 407, none, 'x').detail, /requires credentials and none are configured/);
  assert.equal(refusalOf(parent, 403, none, 'x').kind, 'connect_error');
  assert.equal(refusalOf(parent, 502, none, 'x').kind, 'connect_error');
  assert.equal(refusalOf(parent, 503, none, 'x').kind, 'connect_error');
  assert.equal(refusalOf(parent, 504, none, 'x').kind, 'connection_timeout');
  assert.equal(refusalOf(parent, 502, new Map([['proxy-status', 'squid; error=connection_refused']]), 'x').kind, 'connection_refused');
  assert.equal(refusalOf(parent, 503, new Map([['x-squid-error', 'ERR_CONNECT_FAIL 110']]), 'x').kind, 'connection_timeout');
  assert.equal(refusalOf(parent, 503, new Map([['x-squid-error', 'ERR_CONNECT_FAIL 113']]), 'x').kind, 'unreachable');
  assert.equal(refusalOf(parent, 599, none, 'x').detail, 'upstream proxy http://10.0.0.1:3128 could not connect to x (HTTP 599)');
  assert.doesNotMatch(JSON.stringify(refusalOf(parent, 407, none, 'x')), /c2VjcmV0/);
});
