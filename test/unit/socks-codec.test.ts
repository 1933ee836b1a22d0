import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  parseSocks4Request,
  parseSocks5Auth,
  parseSocks5Greeting,
  parseSocks5Request,
  socks4Reply,
  socks5AuthReply,
  socks5MethodReply,
  socks5Reply,
  SOCKS4_REPLY,
  SOCKS5_METHOD,
  SOCKS5_REPLY,
  type ParseResult,
} from '../../src/proxy/socks-codec.js';

type Parser<T> = (buf: Buffer) => ParseResult<T>;

const parsers: Array<[string, Parser<unknown>]> = [
  ['parseSocks5Greeting', parseSocks5Greeting],
  ['parseSocks5Auth', parseSocks5Auth],
  ['parseSocks5Request', parseSocks5Request],
  ['parseSocks4Request', parseSocks4Request],
];

const b = (...parts: Array<number | number[] | string | Uint8Array>): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(typeof p === 'number' ? [p] : p))));

/** Feeds `msg` one byte at a time, then with trailing bytes; returns the parsed value. */
function parseWhole<T>(parse: Parser<T>, msg: Buffer): T {
  for (let i = 0; i < msg.length; i++) {
    assert.deepEqual(parse(msg.subarray(0, i)), { status: 'incomplete' }, `prefix of length ${i}`);
  }
  const res = parse(msg);
  assert.equal(res.status, 'ok', JSON.stringify(res));
  assert.ok(res.status === 'ok');
  assert.equal(res.consumed, msg.length);
  const pipelined = parse(Buffer.concat([msg, b(0x16, 0x03, 0x01, 0x00)]));
  assert.deepEqual(pipelined, res, 'trailing bytes must be left unconsumed');
  return res.value;
}

function expectError<T>(res: ParseResult<T>, reply?: Buffer): void {
  assert.equal(res.status, 'error', JSON.stringify(res));
  assert.ok(res.status === 'error');
  assert.deepEqual(res.reply, reply);
}

// ------------------------------------------------------------------ SOCKS5 greeting / auth

test('socks5 greeting: incremental parse and trailing bytes', () => {
  assert.deepEqual(parseWhole(parseSocks5Greeting, b(5, 2, 0x00, 0x02)), { methods: [0, 2] });
  assert.deepEqual(parseWhole(parseSocks5Greeting, b(5, 255, new Array(255).fill(7))).methods.length, 255);
});

test('socks5 greeting: errors', () => {
  expectError(parseSocks5Greeting(b(4)));
  expectError(parseSocks5Greeting(b(0x47, 0x45, 0x54)));
  expectError(parseSocks5Greeting(b(5, 0)), b(5, 0xff));
});

test('socks5 method/auth replies', () => {
  assert.deepEqual(socks5MethodReply(SOCKS5_METHOD.NO_AUTH), b(5, 0));
  assert.deepEqual(socks5MethodReply(SOCKS5_METHOD.USER_PASS), b(5, 2));
  assert.deepEqual(socks5MethodReply(SOCKS5_METHOD.NONE_ACCEPTABLE), b(5, 0xff));
  assert.deepEqual(socks5AuthReply(true), b(1, 0));
  assert.deepEqual(socks5AuthReply(false), b(1, 1));
  assert.throws(() => socks5MethodReply(256), RangeError);
});

test('socks5 auth: incremental parse, UTF-8, empty password, max lengths', () => {
  assert.deepEqual(parseWhole(parseSocks5Auth, b(1, 5, 'alice', 6, 's3cret')), { username: 'alice', password: 's3cret' });
  assert.deepEqual(parseWhole(parseSocks5Auth, b(1, 1, 'u', 0)), { username: 'u', password: '' });
  const user = 'ü'.repeat(2); // 4 bytes
  assert.deepEqual(parseWhole(parseSocks5Auth, b(1, 4, user, 1, 'p')), { username: user, password: 'p' });
  const long = 'x'.repeat(255);
  assert.deepEqual(parseWhole(parseSocks5Auth, b(1, 255, long, 255, long)), { username: long, password: long });
});

test('socks5 auth: errors answer with failure status', () => {
  const fail = b(1, 1);
  expectError(parseSocks5Auth(b(5)), fail);
  expectError(parseSocks5Auth(b(1, 0, 0)), fail);
  expectError(parseSocks5Auth(b(1, 1, 0xff, 1, 'p')), fail);
  expectError(parseSocks5Auth(b(1, 1, 'u', 2, [0xc3, 0x28])), fail);
});

// ------------------------------------------------------------------ SOCKS5 request

test('socks5 request: IPv4', () => {
  assert.deepEqual(parseWhole(parseSocks5Request, b(5, 1, 0, 1, [10, 0, 0, 1], [0x01, 0xbb])), {
    command: 1,
    addressType: 'ipv4',
    host: '10.0.0.1',
    port: 443,
  });
});

test('socks5 request: IPv6 in compressed lowercase form', () => {
  const v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd];
  assert.deepEqual(parseWhole(parseSocks5Request, b(5, 1, 0, 4, v6, [0, 80])), {
    command: 1,
    addressType: 'ipv6',
    host: '2001:db8::abcd',
    port: 80,
  });
  const loopback = parseWhole(parseSocks5Request, b(5, 1, 0, 4, [...new Array(15).fill(0), 1], [0, 22]));
  assert.equal(loopback.host, '::1');
});

test('socks5 request: domain, including 1- and 255-byte names', () => {
  assert.deepEqual(parseWhole(parseSocks5Request, b(5, 1, 0, 3, 11, 'example.com', [0x1f, 0x90])), {
    command: 1,
    addressType: 'domain',
    host: 'example.com',
    port: 8080,
  });
  assert.equal(parseWhole(parseSocks5Request, b(5, 1, 0, 3, 1, 'a', [0, 1])).host, 'a');
  const long = 'a'.repeat(63) + '.' + 'b'.repeat(63) + '.' + 'c'.repeat(63) + '.' + 'd'.repeat(63);
  assert.equal(long.length, 255);
  assert.equal(parseWhole(parseSocks5Request, b(5, 1, 0, 3, 255, long, [0, 80])).host, long);
  assert.equal(parseWhole(parseSocks5Request, b(5, 1, 0, 3, 10, 'bücher.de', [0, 80])).host, 'bücher.de');
});

test('socks5 request: unknown command still parses; port 0 allowed only where RFC permits', () => {
  assert.equal(parseWhole(parseSocks5Request, b(5, 9, 0, 1, [1, 2, 3, 4], [0, 80])).command, 9);
  assert.equal(parseWhole(parseSocks5Request, b(5, 3, 0, 1, [0, 0, 0, 0], [0, 0])).port, 0);
  const generalFailure = socks5Reply(SOCKS5_REPLY.GENERAL_FAILURE);
  expectError(parseSocks5Request(b(5, 1, 0, 1, [1, 2, 3, 4], [0, 0])), generalFailure);
  expectError(parseSocks5Request(b(5, 2, 0, 3, 1, 'a', [0, 0])), generalFailure);
});

test('socks5 request: protocol errors', () => {
  // Wrong version / reserved byte: detected as soon as the byte arrives, no reply.
  expectError(parseSocks5Request(b(4)));
  expectError(parseSocks5Request(b(5, 1, 1)));
  // Unknown ATYP: detected without waiting for an address we could not size.
  expectError(parseSocks5Request(b(5, 1, 0, 2)), b(5, 8, 0, 1, 0, 0, 0, 0, 0, 0));
  const generalFailure = b(5, 1, 0, 1, 0, 0, 0, 0, 0, 0);
  expectError(parseSocks5Request(b(5, 1, 0, 3, 0)), generalFailure);
  expectError(parseSocks5Request(b(5, 1, 0, 3, 2, [0xc3, 0x28], [0, 80])), generalFailure);
  expectError(parseSocks5Request(b(5, 1, 0, 3, 3, [0xed, 0xa0, 0x80], [0, 80])), generalFailure); // lone surrogate
  expectError(parseSocks5Request(b(5, 1, 0, 3, 9, 'a.com\0.io', [0, 80])), generalFailure);
  expectError(parseSocks5Request(b(5, 1, 0, 3, 6, 'a.com\n', [0, 80])), generalFailure);
});

test('socks5 request: a leading BOM is kept, not silently stripped', () => {
  const host = parseWhole(parseSocks5Request, b(5, 1, 0, 3, 14, [0xef, 0xbb, 0xbf], 'example.com', [0, 80])).host;
  assert.equal(host, '\ufeffexample.com');
});

test('socks5 reply encodings', () => {
  assert.deepEqual(socks5Reply(SOCKS5_REPLY.SUCCEEDED), b(5, 0, 0, 1, 0, 0, 0, 0, 0, 0));
  assert.deepEqual(socks5Reply(SOCKS5_REPLY.NOT_ALLOWED), b(5, 2, 0, 1, 0, 0, 0, 0, 0, 0));
  assert.deepEqual(socks5Reply(0, { host: '192.168.1.20', port: 0xabcd }), b(5, 0, 0, 1, [192, 168, 1, 20], [0xab, 0xcd]));
  assert.deepEqual(
    socks5Reply(0, { host: '2001:db8::1', port: 1080 }),
    b(5, 0, 0, 4, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0x04, 0x38]),
  );
  assert.deepEqual(socks5Reply(0, { host: '::ffff:127.0.0.1', port: 1 }), b(5, 0, 0, 1, [127, 0, 0, 1], [0, 1]));
  assert.deepEqual(socks5Reply(0, { host: 'fe80::1%eth0', port: 1 }).length, 22);
  assert.throws(() => socks5Reply(0, { host: 'example.com', port: 1 }), TypeError);
  assert.throws(() => socks5Reply(0, { host: '1.2.3.4', port: 65536 }), RangeError);
  assert.throws(() => socks5Reply(300), RangeError);
});

// ------------------------------------------------------------------ SOCKS4 / 4a

test('socks4: plain request with and without user id', () => {
  assert.deepEqual(parseWhole(parseSocks4Request, b(4, 1, [0, 80], [93, 184, 216, 34], 'bob', 0)), {
    command: 1,
    host: '93.184.216.34',
    port: 80,
    userId: 'bob',
    isSocks4a: false,
  });
  const anon = parseWhole(parseSocks4Request, b(4, 1, [0x01, 0xbb], [1, 2, 3, 4], 0));
  assert.equal(anon.userId, '');
  // 0.0.0.0 is not the 4a marker (x must be non-zero).
  assert.equal(parseWhole(parseSocks4Request, b(4, 1, [0, 80], [0, 0, 0, 0], 0)).isSocks4a, false);
});

test('socks4a: domain after the user id', () => {
  assert.deepEqual(parseWhole(parseSocks4Request, b(4, 1, [0x01, 0xbb], [0, 0, 0, 1], 'bob', 0, 'example.com', 0)), {
    command: 1,
    host: 'example.com',
    port: 443,
    userId: 'bob',
    isSocks4a: true,
  });
  const long = 'd'.repeat(255);
  const res = parseWhole(parseSocks4Request, b(4, 1, [0, 80], [0, 0, 0, 255], 'u'.repeat(255), 0, long, 0));
  assert.equal(res.host, long);
  assert.equal(res.userId.length, 255);
});

test('socks4: bounded fields and other errors', () => {
  const rejected = b(0, 0x5b, 0, 0, 0, 0, 0, 0);
  // 256 user-id bytes without a NUL: give up rather than keep buffering.
  const head = b(4, 1, [0, 80], [1, 2, 3, 4]);
  assert.equal(parseSocks4Request(b(head, 'u'.repeat(255))).status, 'incomplete');
  expectError(parseSocks4Request(b(head, 'u'.repeat(256))), rejected);
  const head4a = b(4, 1, [0, 80], [0, 0, 0, 1], 0);
  assert.equal(parseSocks4Request(b(head4a, 'd'.repeat(255))).status, 'incomplete');
  expectError(parseSocks4Request(b(head4a, 'd'.repeat(256))), rejected);
  expectError(parseSocks4Request(b(head4a, 0)), rejected);
  expectError(parseSocks4Request(b(head4a, 'a.com\r', 0)), rejected);
  expectError(parseSocks4Request(b(head, [0xff], 0)), rejected);
  expectError(parseSocks4Request(b(4, 1, [0, 0])), rejected);
  expectError(parseSocks4Request(b(5)));
  assert.equal(parseWhole(parseSocks4Request, b(4, 7, [0, 0], [1, 2, 3, 4], 0)).command, 7);
});

test('socks4 reply encodings', () => {
  assert.deepEqual(socks4Reply(SOCKS4_REPLY.GRANTED), b(0, 0x5a, 0, 0, 0, 0, 0, 0));
  assert.deepEqual(socks4Reply(SOCKS4_REPLY.REJECTED), b(0, 0x5b, 0, 0, 0, 0, 0, 0));
  assert.deepEqual(socks4Reply(0x5a, { host: '10.1.2.3', port: 8080 }), b(0, 0x5a, [0x1f, 0x90], [10, 1, 2, 3]));
  assert.deepEqual(socks4Reply(0x5a, { host: '::ffff:10.1.2.3', port: 1 }), b(0, 0x5a, [0, 1], [10, 1, 2, 3]));
  assert.throws(() => socks4Reply(0x5a, { host: '2001:db8::1', port: 1 }), TypeError);
});

// ------------------------------------------------------------------ properties

// Valid message heads followed by bytes biased towards small values (lengths, NULs,
// ASCII) so the generated inputs regularly reach the deeper branches and 'ok'.
const heads = [[], [5], [5, 2], [1], [1, 3], [5, 1, 0, 1], [5, 1, 0, 3], [5, 1, 0, 4], [4, 1, 0, 80], [4, 1, 0, 80, 0, 0, 0, 1]];
const tailByte = fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0x61, max: 0x7a }), fc.integer({ min: 0, max: 255 }));
const input = fc
  .tuple(fc.constantFrom(...heads), fc.array(tailByte, { maxLength: 300 }))
  .map(([head, tail]) => Buffer.from([...head, ...tail]));
const anyInput = fc.oneof(input, fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)));

test('property: parsers never throw and report a sane status', () => {
  fc.assert(
    fc.property(anyInput, (buf) => {
      for (const [name, parse] of parsers) {
        const res = parse(buf);
        assert.ok(['incomplete', 'ok', 'error'].includes(res.status), name);
        if (res.status === 'ok') assert.ok(res.consumed > 0 && res.consumed <= buf.length, name);
        if (res.status === 'error') assert.ok(!res.message.startsWith('internal'), `${name}: ${res.message}`);
      }
    }),
    { numRuns: 3000 },
  );
});

test('property: results are stable as more bytes arrive', () => {
  fc.assert(
    fc.property(input, (buf) => {
      for (const [name, parse] of parsers) {
        let settled: ParseResult<unknown> | undefined;
        for (let i = 0; i <= buf.length; i++) {
          const res = parse(buf.subarray(0, i));
          if (settled === undefined) {
            if (res.status !== 'incomplete') settled = res;
          } else {
            // Once an answer exists, extra bytes must not change it.
            assert.deepEqual(res, settled, `${name} at length ${i}`);
          }
        }
      }
    }),
    { numRuns: 300 },
  );
});
