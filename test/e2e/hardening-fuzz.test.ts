// Protocol fuzzing of the proxy entry points: fast-check generates byte sequences from HTTP,
// SOCKS5 and SOCKS4 grammars (truncated and oversized handshakes, wrong versions, bad address
// types, 0- and 255-byte names, invalid ports, pipelined bytes, header floods, smuggling
// shapes, bad Basic credentials) and mutates them. After every case the connection got a
// well-formed reply of its protocol or was closed; no exception escaped (process tripwire);
// memory stays bounded; no connection is left behind; and a well-formed client is served.
//
// Only one destination can ever be dialled: the test's own origins on 127.0.0.2 (global
// deny rules cover the rest of loopback; every other destination is denied before DNS, and
// DNS is a fixed table). Cases run in concurrent batches so the suite stays fast.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import fc from 'fast-check';
import { startOrigin, startTestSluice, type Origin, type SessionCreated, type TestSluice } from '../helpers/harness.js';
import { basic, RawClient, socks5, socks5Raw } from '../helpers/proxy-helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const HANDSHAKE_MS = 250;
const MAX_HEADER_BYTES = 4096;
const BATCH = 24;
const RUNS = Number(process.env.SLUICE_FUZZ_RUNS ?? 6);

// ------------------------------------------------------------------ tripwire

const escaped: unknown[] = [];
const onEscape = (err: unknown): void => void escaped.push(err);
process.on('uncaughtException', onEscape);
process.on('unhandledRejection', onEscape);

// ------------------------------------------------------------------ the world

let s: TestSluice;
let origin: Origin;
let echo: net.Server;
let echoPort: number;
let session: SessionCreated;
const echoSockets = new Set<net.Socket>();

before(async () => {
  origin = await startOrigin('127.0.0.2');
  echo = net.createServer((sock) => {
    echoSockets.add(sock);
    sock.on('close', () => echoSockets.delete(sock));
    sock.on('error', () => undefined);
    sock.pipe(sock);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.2', r));
  echoPort = (echo.address() as net.AddressInfo).port;
  s = await startTestSluice({
    config: { timeouts: { handshake_ms: HANDSHAKE_MS, connect_ms: 1000, dns_ms: 300 }, limits: { max_header_bytes: MAX_HEADER_BYTES } },
    resolver: async (h) => (h === 'echo.test' ? ['127.0.0.2'] : h === 'slow.test' ? new Promise(() => undefined) : []),
  });
  // Nothing on loopback but the two origins is reachable, whatever port a mutation produces.
  for (const dest of ['127.0.0.0/8', '::1', 'localhost']) {
    assert.equal((await s.api('POST', '/api/rules', { destination_pattern: dest, action: 'deny' })).status, 200);
  }
  for (const port of [origin.port, echoPort]) {
    assert.equal((await s.api('POST', '/api/rules', { destination_pattern: '127.0.0.2', port_pattern: String(port), action: 'allow' })).status, 200);
  }
  session = await s.createSession({
    container_name: 'fz',
    network_rules: [{ destination_pattern: 'echo.test' }, { destination_pattern: 'slow.test' }, { destination_pattern: '*.fuzz.test' }],
  });
});

after(async () => {
  await s.close(true);
  await origin.close();
  for (const sock of echoSockets) sock.destroy();
  await new Promise<void>((r) => echo.close(() => r()));
  process.off('uncaughtException', onEscape);
  process.off('unhandledRejection', onEscape);
});

// ------------------------------------------------------------------ running a case

interface Case {
  /** Which listener: both sniff the protocol, so either must cope with anything. */
  readonly port: 'http' | 'socks';
  readonly chunks: Buffer[];
  /** Half-close after sending. */
  readonly end: boolean;
}

interface Outcome {
  readonly received: Buffer;
  readonly closed: boolean;
  /** The client had to half-close before anything happened (a request still waiting for body bytes, say). */
  readonly nudged: boolean;
}

async function run(c: Case): Promise<Outcome> {
  const port = c.port === 'http' ? s.sluice.http.port : s.sluice.socks.port;
  const client = await RawClient.connect(null, port);
  client.socket.setNoDelay(true);
  try {
    for (const chunk of c.chunks) {
      if (client.closed) break;
      client.write(chunk);
      await new Promise((r) => setImmediate(r));
    }
    if (c.end) client.socket.end();
    const settled = (b: Buffer, closed: boolean): boolean => closed || tunnelled(b);
    try {
      await client.until(settled, HANDSHAKE_MS + 500, 'close');
      return { received: client.received, closed: client.closed, nudged: false };
    } catch {
      // Silent and open: tell it we are done and give it the same time again.
      if (!c.end) client.socket.end();
      await client.until(settled, HANDSHAKE_MS + 500, 'close').catch(() => undefined);
      return { received: client.received, closed: client.closed, nudged: true };
    }
  } finally {
    client.close();
  }
}

/** A tunnel opened (HTTP 200 to CONNECT, 101, SOCKS success): it stays open by design. */
function tunnelled(b: Buffer): boolean {
  const text = b.toString('latin1');
  if (/^HTTP\/1\.1 (200 Connection Established|101 )/m.test(text)) return true;
  return (b[0] === 5 && socks5Verdict(b).tunnel) || (b[0] === 0 && b[1] === 0x5a);
}

// ------------------------------------------------------------------ reply validators

// 417: Node's own answer to an Expect it does not know.
const HTTP_STATUSES = new Set([100, 200, 400, 403, 407, 408, 417, 429, 431, 502, 504]);

/** Every byte received must be a sequence of complete, well-formed HTTP/1.1 responses (or a tunnel). */
function httpVerdict(buf: Buffer): { ok: boolean; why?: string; statuses: number[] } {
  let rest = buf.toString('latin1');
  const statuses: number[] = [];
  while (rest.length > 0) {
    const m = /^HTTP\/1\.1 (\d{3}) [^\r\n]*\r\n/.exec(rest);
    if (!m) return { ok: false, why: `not a status line: ${JSON.stringify(rest.slice(0, 80))}`, statuses };
    const status = Number(m[1]);
    statuses.push(status);
    if (!HTTP_STATUSES.has(status)) return { ok: false, why: `unexpected status ${status}`, statuses };
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return { ok: false, why: 'incomplete response head', statuses };
    const head = rest.slice(0, end);
    if (/^HTTP\/1\.1 (200 Connection Established|101 )/.test(head)) return { ok: true, statuses };
    rest = rest.slice(end + 4);
    if (status === 100) continue;
    const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
    if (cl) {
      const len = Number(cl[1]);
      if (rest.length < len) return { ok: false, why: `body shorter than its Content-Length ${len}`, statuses };
      rest = rest.slice(len);
    } else if (/\r\ntransfer-encoding:[ \t]*chunked/i.test(head)) {
      for (;;) {
        const line = /^([0-9a-f]+)\r\n/i.exec(rest);
        if (!line) return { ok: false, why: 'bad chunk', statuses };
        const size = parseInt(line[1]!, 16);
        rest = rest.slice(line[0].length + size + 2);
        if (size === 0) break;
      }
    } else {
      return { ok: true, statuses }; // delimited by close
    }
  }
  return { ok: true, statuses };
}

/** SOCKS5 server messages in order: method choice, auth status, request reply; then a tunnel or nothing. */
function socks5Verdict(b: Buffer): { ok: boolean; tunnel: boolean; why?: string } {
  const bad = (why: string) => ({ ok: false, tunnel: false, why });
  if (b.length === 0) return { ok: true, tunnel: false };
  if (b.length < 2 || b[0] !== 5 || ![0x00, 0x02, 0xff].includes(b[1]!)) return bad(`bad method reply ${b.subarray(0, 2).toString('hex')}`);
  let i = 2;
  if (b[1] === 0xff) return b.length === 2 ? { ok: true, tunnel: false } : bad('bytes after NONE ACCEPTABLE');
  if (b[1] === 0x02) {
    if (b.length === i) return { ok: true, tunnel: false };
    if (b.length < i + 2 || b[i] !== 1 || b[i + 1]! > 1) return bad(`bad auth status ${b.subarray(i, i + 2).toString('hex')}`);
    if (b[i + 1] === 1) return b.length === i + 2 ? { ok: true, tunnel: false } : bad('bytes after auth failure');
    i += 2;
  }
  if (b.length === i) return { ok: true, tunnel: false };
  if (b.length < i + 4 || b[i] !== 5 || b[i + 1]! > 8 || b[i + 2] !== 0 || ![1, 4].includes(b[i + 3]!)) return bad(`bad request reply ${b.subarray(i).toString('hex')}`);
  const end = i + 4 + (b[i + 3] === 1 ? 4 : 16) + 2;
  if (b.length < end) return bad('truncated request reply');
  if (b[i + 1] === 0) return { ok: true, tunnel: true };
  return b.length === end ? { ok: true, tunnel: false } : bad('bytes after a failure reply');
}

function socks4Verdict(b: Buffer): { ok: boolean; why?: string } {
  if (b.length === 0) return { ok: true };
  if (b.length < 8 || b[0] !== 0 || (b[1] !== 0x5a && b[1] !== 0x5b)) return { ok: false, why: `bad SOCKS4 reply ${b.toString('hex')}` };
  return b[1] === 0x5a || b.length === 8 ? { ok: true } : { ok: false, why: 'bytes after a rejection' };
}

/** What a case ended as, to show (and assert) that the generators reach every stage. */
function classify(c: Case, o: Outcome): string {
  const first = c.chunks.find((x) => x.length > 0)?.[0];
  if (first === 5) {
    const b = o.received;
    const reply = b[1] === 0x02 ? b.subarray(4, 6) : b.subarray(2, 4);
    if (b.length <= 2) return b.length === 2 ? `socks5 method ${b[1]}` : 'socks5 closed';
    if (b[1] === 0x02 && b[3] === 1) return 'socks5 auth failed';
    return reply.length === 2 ? `socks5 reply ${reply[1]}` : 'socks5 authenticated';
  }
  if (first === 4) return o.received.length >= 2 ? `socks4 ${o.received[1]!.toString(16)}` : 'socks4 closed';
  const statuses = httpVerdict(o.received).statuses;
  if (statuses.length === 0) return 'http closed';
  return /Connection Established/.test(o.received.toString('latin1')) ? 'http tunnel' : `http ${statuses.join('+')}`;
}

function judge(c: Case, o: Outcome): string | null {
  const first = c.chunks.find((x) => x.length > 0)?.[0];
  const text = (b: Buffer) => JSON.stringify(b.toString('latin1').slice(0, 200));
  if (first === 5) {
    const v = socks5Verdict(o.received);
    if (!v.ok) return `SOCKS5: ${v.why}`;
    if (!o.closed && !v.tunnel) return `SOCKS5: neither closed nor tunnelled, got ${o.received.toString('hex')}`;
  } else if (first === 4) {
    const v = socks4Verdict(o.received);
    if (!v.ok) return `SOCKS4: ${v.why}`;
    if (!o.closed && !(o.received[1] === 0x5a)) return `SOCKS4: neither closed nor tunnelled, got ${o.received.toString('hex')}`;
  } else {
    const v = httpVerdict(o.received);
    if (!v.ok) return `HTTP: ${v.why}; got ${text(o.received)}`;
    if (v.statuses.some((st) => st >= 500 && st !== 502 && st !== 504)) return `HTTP: server error ${text(o.received)}`;
    // Open and silent even after the client half-closed: the proxy is holding a socket for nothing.
    if (!o.closed && o.received.length === 0) return 'HTTP: no reply and not closed';
  }
  return null;
}

// ------------------------------------------------------------------ grammars

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');
const anyBytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

/** What is done to a well-formed message before it is sent. */
function mutate(msg: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 10, arbitrary: msg },
    { weight: 2, arbitrary: fc.tuple(msg, fc.nat()).map(([m, n]) => m.subarray(0, m.length === 0 ? 0 : n % m.length)) }, // truncated
    {
      weight: 2,
      arbitrary: fc.tuple(msg, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 })).map(([m, flips]) => {
        const out = Buffer.from(m);
        for (const [at, v] of flips) if (out.length > 0) out[at % out.length] = v;
        return out;
      }),
    },
    { weight: 1, arbitrary: fc.tuple(msg, anyBytes(64)).map(([m, extra]) => Buffer.concat([m, extra])) }, // pipelined junk
  );
}

/** Splits a message into 1..4 chunks at arbitrary points. */
function chunked(msg: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (msg.length === 0 ? 0 : c % msg.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    out.push(msg.subarray(from, p));
    from = p;
  }
  out.push(msg.subarray(from));
  return out.filter((x) => x.length > 0);
}

function caseArb(message: fc.Arbitrary<Buffer>): fc.Arbitrary<Case> {
  return fc.record({ port: fc.constantFrom<'http' | 'socks'>('http', 'socks'), msg: mutate(message), cuts: fc.array(fc.nat(), { maxLength: 3 }), end: fc.boolean() }).map(({ port, msg, cuts, end }) => ({
    port,
    chunks: chunked(msg, cuts),
    end,
  }));
}

// ---- HTTP

/** Mostly `good` (so cases get deep into identity, policy and dialling), sometimes `bad`. */
function often<A>(good: fc.Arbitrary<A>, bad: fc.Arbitrary<A>, goodWeight = 14): fc.Arbitrary<A> {
  return fc.oneof({ weight: goodWeight, arbitrary: good }, { weight: 1, arbitrary: bad });
}

function authorities(): fc.Arbitrary<string> {
  return often(
    fc.constantFrom(
      `127.0.0.2:${origin.port}`,
      `127.0.0.2:${origin.port}`,
      `0x7f.2:${origin.port}`,
      `echo.test:${echoPort}`,
      `127.0.0.2:${echoPort}`,
      'slow.test:80',
      'a.fuzz.test:80',
      'denied.example:443',
      '169.254.169.254:80',
      '[::1]:80',
    ),
    fc.oneof(
      fc.constantFrom('[fe80::1%25eth0]:80', '127.0.0.2:0', '127.0.0.2:99999', '127.0.0.2:', ':80', '127.0.0.2', 'a..b:80', `${'a'.repeat(64)}.fuzz.test:80`, `${'a.'.repeat(130)}fuzz.test:80`, 'x\u0000y.fuzz.test:80', `${'b'.repeat(255)}.fuzz.test:80`),
      fc.string({ maxLength: 40 }).map((x) => `${x}:80`),
    ),
  );
}

function credentials(): fc.Arbitrary<string | null> {
  return often(
    fc.constant(basic('fz', session.proxy_token)),
    fc.oneof(
      fc.constant(null),
      fc.constant(basic('fz', 'wrong-token')),
      fc.constant(basic('other', session.proxy_token)),
      fc.constantFrom('Basic', 'Basic ', 'Basic !!!!', 'Basic Zno=', 'Basic Zno6', 'Bearer abc', `Basic ${Buffer.from([0xff, 0xfe, 0x3a, 0x41]).toString('base64')}`, `Basic ${'A'.repeat(3000)}`, 'basic   Zno6eA=='),
      fc.string({ maxLength: 60 }).map((x) => `Basic ${Buffer.from(x, 'utf8').toString('base64')}`),
    ),
    2,
  );
}

function httpMessage(): fc.Arbitrary<Buffer> {
  const header = often(
    fc.constantFrom('Accept: */*', 'User-Agent: fuzz', 'Connection: keep-alive', 'Connection: close', 'Expect: 100-continue'),
    fc.oneof(
      fc.constantFrom(
        'Content-Length: -1',
        'Content-Length: 99999999999999999999',
        'Content-Length: 3\r\nContent-Length: 4',
        'Transfer-Encoding: chunked, identity',
        'Transfer-Encoding: xchunked',
        'Transfer-Encoding : chunked',
        'Transfer-Encoding:\r\n chunked',
        'Content-Length: 4\r\nTransfer-Encoding: chunked',
        'X-Folded: a\r\n b',
        'Connection: Upgrade\r\nUpgrade: websocket',
        'Connection: keep-alive, X-Drop',
        'Proxy-Connection: close',
        'Bad Header: x',
        'X-Nul: a\u0000b',
        ': empty-name',
        `X-Long: ${'v'.repeat(MAX_HEADER_BYTES)}`,
      ),
      fc.integer({ min: 1, max: 400 }).map((n) => Array.from({ length: n }, (_, i) => `X-Flood-${i}: ${'f'.repeat(20)}`).join('\r\n')),
      fc.tuple(fc.stringMatching(/^[!-~]{0,12}$/), fc.string({ maxLength: 20 })).map(([k, v]) => `${k}: ${v}`),
    ),
    3,
  );
  // A body and the header that frames it: mostly consistent, sometimes not (smuggling shapes above).
  const payload = often(
    fc.constantFrom<[string[], string]>([[], ''], [[], ''], [['Content-Length: 0'], ''], [['Content-Length: 5'], 'hello'], [['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\n\r\n']),
    fc.oneof(
      fc.constantFrom<[string[], string]>([['Content-Length: 5'], ''], [['Content-Length: 5'], 'hel'], [['Transfer-Encoding: chunked'], 'zz\r\nabc\r\n'], [['Transfer-Encoding: chunked'], '5\r\nhello']),
      fc.string({ maxLength: 30 }).map((b): [string[], string] => [[], b]),
    ),
  );
  const pipelined = fc.oneof(
    { weight: 4, arbitrary: fc.constant('') },
    { weight: 1, arbitrary: fc.constant(`GET http://127.0.0.2:${origin.port}/second HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic('fz', session.proxy_token)}\r\n\r\n`) },
    { weight: 1, arbitrary: fc.constantFrom('ping', 'GET / HTTP/1.1\r\n\r\n', '\u0000\u0001\u0002') },
  );
  return fc
    .record({
      method: often(fc.constantFrom('GET', 'POST', 'CONNECT', 'CONNECT', 'PUT', 'DELETE', 'OPTIONS'), fc.oneof(fc.constantFrom('PRI', 'G\u0000T', '', 'get'), fc.stringMatching(/^[A-Z]{1,8}$/))),
      authority: authorities(),
      form: often(fc.constant('absolute'), fc.constantFrom('origin', 'https', 'asterisk', 'ws')),
      path: often(fc.constantFrom('/', '/a?b=c'), fc.constantFrom('/%2e%2e/', '', '?q', '/\u00ff', `/${'p'.repeat(MAX_HEADER_BYTES)}`)),
      version: often(fc.constant('HTTP/1.1'), fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1x', 'HTTP/9.9', '')),
      host: often(fc.constant(true), fc.constant(false)),
      auth: credentials(),
      headers: fc.array(header, { maxLength: 2 }),
      payload,
      eol: often(fc.constant('\r\n'), fc.constant('\n')),
      pipelined,
    })
    .map((r) => {
      const target =
        r.method === 'CONNECT'
          ? r.authority
          : r.form === 'absolute'
            ? `http://${r.authority}${r.path}`
            : r.form === 'https'
              ? `https://${r.authority}${r.path}`
              : r.form === 'ws'
                ? `ws://${r.authority}${r.path}`
                : r.form === 'asterisk'
                  ? '*'
                  : r.path || '/';
      const lines = [
        `${r.method} ${target}${r.version ? ` ${r.version}` : ''}`,
        ...(r.host ? [`Host: ${r.authority}`] : []),
        ...(r.auth === null ? [] : [`Proxy-Authorization: ${r.auth}`]),
        ...r.headers,
        ...r.payload[0],
      ];
      return bytes(lines.join(r.eol) + r.eol + r.eol + r.payload[1] + r.pipelined);
    });
}

// ---- SOCKS5 and SOCKS4

const byte = fc.integer({ min: 0, max: 255 });

function socks5Message(): fc.Arbitrary<Buffer> {
  const methods = often<number[]>(fc.constantFrom<number[]>([0x02], [0x00, 0x02]), fc.oneof(fc.constantFrom<number[]>([0x00], [0x80, 0xff], []), fc.array(byte, { maxLength: 255 })));
  const greeting = fc
    .tuple(often(fc.constant(5), fc.constantFrom(4, 6, 0)), methods, often(fc.constant(0), fc.integer({ min: -2, max: 2 })))
    .map(([v, m, skew]) => Buffer.from([v, Math.max(0, Math.min(255, m.length + skew)), ...m]));
  const field = fc
    .oneof(fc.constantFrom('fz', session.proxy_token, 'wrong', '', 'x'.repeat(255), '\u00ff\u00fe'), fc.string({ maxLength: 40 }))
    .map((x) => Buffer.from(x, x.startsWith('\u00ff') ? 'latin1' : 'utf8'));
  const badAuth = fc
    .tuple(fc.constantFrom(1, 1, 0, 5), field, field)
    .map(([v, u, p]) => Buffer.concat([Buffer.from([v, Math.min(255, u.length)]), u.subarray(0, 255), Buffer.from([Math.min(255, p.length)]), p.subarray(0, 255)]));
  const auth = often(fc.constant(socks5.auth('fz', session.proxy_token)), badAuth, 6);
  const domain = often(
    fc.constantFrom('echo.test', 'echo.test', 'echo.test', 'slow.test', 'a.fuzz.test', 'denied.example', '127.0.0.2', '0x7f.2', '::1', 'localhost', '169.254.169.254'),
    fc.oneof(
      fc.constantFrom('', 'x'.repeat(255), `${'a.'.repeat(127)}b`, 'é.fuzz.test', 'a\u0000.fuzz.test', `${'a'.repeat(64)}.fuzz.test`, '[::1]', 'fe80::1%eth0'),
      fc.string({ maxLength: 30 }),
    ),
    3,
  ).map((x) => Buffer.from(x, 'utf8'));
  const ip4 = often<number[]>(fc.constantFrom<number[]>([127, 0, 0, 2], [127, 0, 0, 2], [127, 0, 0, 2], [127, 0, 0, 1], [169, 254, 169, 254], [0, 0, 0, 0], [10, 0, 0, 1]), fc.array(byte, { minLength: 4, maxLength: 4 }));
  const request = fc
    .record({
      v: often(fc.constant(5), fc.constantFrom(4, 1)),
      cmd: often(fc.constant(1), fc.constantFrom(2, 3, 9)),
      rsv: often(fc.constant(0), fc.constant(1)),
      atyp: often(fc.constantFrom(1, 3, 3, 4), fc.constantFrom(0, 2, 5, 0xff)),
      ip4,
      name: domain,
      ip6: often(fc.constant([...ipaddrBytes('::1')]), fc.array(byte, { minLength: 16, maxLength: 16 })),
      port: often(fc.constantFrom(echoPort, origin.port), fc.constantFrom(0, 80, 65535)),
      lie: often(fc.constant(0), fc.integer({ min: -3, max: 3 })),
    })
    .map((r) => {
      const addr =
        r.atyp === 1
          ? Buffer.from(r.ip4)
          : r.atyp === 4
            ? Buffer.from(r.ip6)
            : r.atyp === 3
              ? Buffer.concat([Buffer.from([Math.max(0, Math.min(255, r.name.length + r.lie))]), r.name.subarray(0, 255)])
              : Buffer.alloc(0);
      return Buffer.concat([Buffer.from([r.v, r.cmd, r.rsv, r.atyp]), addr, Buffer.from([r.port >> 8, r.port & 0xff])]);
    });
  const pipelined = fc.oneof({ weight: 3, arbitrary: fc.constant(Buffer.alloc(0)) }, { weight: 1, arbitrary: anyBytes(32) }, { weight: 1, arbitrary: fc.constant(bytes('GET / HTTP/1.1\r\n\r\n')) });
  return fc
    .tuple(greeting, auth, request, pipelined, often(fc.constant('all'), fc.constantFrom('greeting', 'auth')))
    .map(([g, a, r, p, upTo]) => Buffer.concat(upTo === 'greeting' ? [g] : upTo === 'auth' ? [g, a] : [g, a, r, p]));
}

function ipaddrBytes(ip: string): number[] {
  const d = net.isIPv6(ip) ? ip : '::1';
  const parts = d.split('::');
  const head = parts[0] ? parts[0].split(':') : [];
  const tail = parts[1] ? parts[1].split(':') : [];
  const groups = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail].map((g) => parseInt(g, 16));
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

function socks4Message(): fc.Arbitrary<Buffer> {
  const userId = often(fc.constant(`fz:${session.proxy_token}`), fc.oneof(fc.constantFrom('fz:wrong', 'fz', '', 'u'.repeat(300), 'fz:tok\u00ff'), fc.string({ maxLength: 30 })), 2);
  const host = often(fc.constantFrom('echo.test', 'a.fuzz.test', '127.0.0.2', 'denied.example'), fc.oneof(fc.constantFrom('', 'x'.repeat(300), 'a\u0001b'), fc.string({ maxLength: 30 })), 2);
  return fc
    .record({
      cmd: often(fc.constant(1), fc.constantFrom(2, 7)),
      port: often(fc.constantFrom(echoPort, origin.port), fc.constant(0)),
      ip: often<number[]>(fc.constantFrom<number[]>([127, 0, 0, 2], [0, 0, 0, 1], [0, 0, 0, 1]), fc.oneof(fc.constantFrom<number[]>([0, 0, 0, 0], [10, 1, 1, 1]), fc.array(byte, { minLength: 4, maxLength: 4 }))),
      user: userId,
      nul: often(fc.constant(true), fc.constant(false)),
      host,
      nul2: often(fc.constant(true), fc.constant(false)),
    })
    .map((r) =>
      Buffer.concat([
        Buffer.from([4, r.cmd, r.port >> 8, r.port & 0xff, ...r.ip]),
        Buffer.from(r.user, 'utf8'),
        Buffer.from(r.nul ? [0] : []),
        ...(r.ip[0] === 0 && r.ip[1] === 0 && r.ip[2] === 0 && r.ip[3] !== 0 ? [Buffer.from(r.host, 'utf8'), Buffer.from(r.nul2 ? [0] : [])] : []),
      ]),
    );
}

// ------------------------------------------------------------------ properties

function heapUsed(): number {
  gc();
  return process.memoryUsage().heapUsed;
}

/** A normal HTTP CONNECT and a SOCKS5 CONNECT through to the echo origin. */
async function wellFormedClientServed(): Promise<void> {
  const c = await RawClient.connect(null, s.sluice.http.port);
  try {
    c.write(`CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\nProxy-Authorization: ${basic('fz', session.proxy_token)}\r\n\r\n`);
    assert.equal((await c.takeResponse(3000)).status, 200);
    c.write('still-alive');
    assert.equal((await c.take(11, 3000)).toString(), 'still-alive');
  } finally {
    c.close();
  }
  const { c: sc, rep } = await socks5Raw(null as never, s.sluice.socks.port, 'fz', session.proxy_token, socks5.domain('echo.test', echoPort));
  sc.close();
  assert.equal(rep, 0);
  const res = await fetchViaProxy();
  assert.equal(res, 200);
}

function fetchViaProxy(): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: s.sluice.http.port,
      path: `http://127.0.0.2:${origin.port}/ok`,
      headers: { 'proxy-authorization': basic('fz', session.proxy_token), connection: 'close' },
      agent: false,
    });
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sockets sluice accepted on its proxy ports that are still open (tracked as connections or not). */
function proxySideSockets(): number {
  const ports = [s.sluice.http.port, s.sluice.socks.port];
  return (process as unknown as { _getActiveHandles(): Array<{ localPort?: number }> })._getActiveHandles().filter((h) => ports.includes(h.localPort ?? -1)).length;
}

async function noConnectionLeft(): Promise<void> {
  const deadline = Date.now() + 3000;
  while ((s.sluice.connections.size > 0 || proxySideSockets() > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(proxySideSockets(), 0, 'sockets left open on the proxy ports after every client went away');
  const left = s.sluice.connections.entries().map((c) => `${c.kind} ${c.protocol} ${c.admission.destination.host}:${c.admission.port} up=${c.bytesUp} down=${c.bytesDown}`);
  assert.deepEqual(left, [], 'connections left open after every client went away');
}

async function fuzz(t: TestContext, name: string, message: () => fc.Arbitrary<Buffer>, mustSee: RegExp[]): Promise<void> {
  const heapBefore = heapUsed();
  let cases = 0;
  const seen = new Map<string, number>();
  let problem = '';
  await fc.assert(
    fc.asyncProperty(fc.array(caseArb(message()), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
      const outcomes = await Promise.all(batch.map(run));
      cases += batch.length;
      batch.forEach((c, i) => {
        const k = classify(c, outcomes[i]!);
        seen.set(k, (seen.get(k) ?? 0) + 1);
      });
      const problems = batch.map((c, i) => judge(c, outcomes[i]!)).map((p, i) => (p ? `${p}\n  input: ${JSON.stringify(Buffer.concat(batch[i]!.chunks).toString('latin1').slice(0, 300))} end=${batch[i]!.end}` : null));
      problem = problems.find((p) => p !== null) ?? '';
      if (problem) return false;
      if (escaped.length > 0) {
        problem = `an exception escaped: ${escaped.map((e) => (e instanceof Error ? e.stack : String(e))).join('\n')}`;
        return false;
      }
      try {
        await noConnectionLeft();
      } catch (err) {
        problem = (err as Error).message;
        return false;
      }
      return true;
    }),
    {
      numRuns: RUNS,
      endOnFailure: true,
      // The batch itself is too big to print usefully; the seed replays it.
      reporter: (r) => {
        if (r.failed) throw new Error(`${name}: ${problem || r.errorInstance} (replay with seed ${r.seed}, path ${r.counterexamplePath})`);
      },
    },
  );
  t.diagnostic(`${name}: ${cases} cases: ${JSON.stringify(Object.fromEntries([...seen].sort()))}`);
  for (const re of mustSee) assert.ok([...seen.keys()].some((k) => re.test(k)), `${name}: no case reached ${re} (generators too far off the grammar?)`);
  await wellFormedClientServed();
  const grown = heapUsed() - heapBefore;
  assert.ok(grown < 32 * 1024 * 1024, `${name}: heap grew by ${(grown / 1048576).toFixed(1)} MiB over ${cases} cases`);
}

test('HTTP entry point: generated requests (smuggling shapes, floods, bad credentials, pipelining) get a defined reply or a close', async (t) => {
  await fuzz(t, 'http', httpMessage, [/^http 400/, /^http 403/, /^http 407/, /^http (tunnel|.*\b200)/]);
});

test('SOCKS5 entry point: generated handshakes (wrong versions, bad address types, 0/255-byte names, bad ports, pipelining)', async (t) => {
  await fuzz(t, 'socks5', socks5Message, [/^socks5 reply 0$/, /^socks5 reply 2$/, /^socks5 auth failed$/, /^socks5 method 255$/]);
});

test('SOCKS4/4a entry point: generated requests (long user ids, missing NULs, bad hosts, port 0)', async (t) => {
  await fuzz(t, 'socks4', socks4Message, [/^socks4 5a$/, /^socks4 5b$/]);
});

test('raw bytes on either port: whatever the first byte, a defined reply or a close', async (t) => {
  await fuzz(t, 'raw', () => anyBytes(600), [/^http 400/]);
});
