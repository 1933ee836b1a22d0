// Pure SOCKS4/4a/5 wire-format codec. No I/O: the socket handler buffers incoming
// chunks and calls a parser until it stops returning 'incomplete'. Each parser
// re-parses from the start of `buf`, which is cheap because every message here is
// bounded (< 600 bytes), and keeps the parsers stateless.
import ipaddr from 'ipaddr.js';

export type ParseResult<T> =
  | { status: 'incomplete' }
  | { status: 'ok'; value: T; consumed: number }
  | { status: 'error'; message: string; reply?: Buffer };

type ParseError = Extract<ParseResult<never>, { status: 'error' }>;

const INCOMPLETE = { status: 'incomplete' } as const;

function ok<T>(value: T, consumed: number): ParseResult<T> {
  return { status: 'ok', value, consumed };
}

function fail(message: string, reply?: Buffer): ParseError {
  return reply ? { status: 'error', message, reply } : { status: 'error', message };
}

// Callers' socket 'data' handlers must never see an exception from us, so a bug in a
// parser degrades to a protocol error instead of crashing the process.
function guarded<T>(parse: (buf: Buffer) => ParseResult<T>): (buf: Buffer) => ParseResult<T> {
  return (buf) => {
    try {
      return parse(buf);
    } catch (err) {
      return fail(`internal codec error: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
}

// fatal: replacement characters would let two different byte strings map to the same
// name. ignoreBOM: the default silently strips a leading U+FEFF, which would make
// "\uFEFFexample.com" on the wire look like "example.com" to the policy layer.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

// Control characters (NUL especially) in a hostname can make the policy matcher and
// the resolver disagree about which name is meant; no legitimate name contains them.
function decodeDomain(bytes: Uint8Array): string | undefined {
  const name = decodeUtf8(bytes);
  return name === undefined || /[\x00-\x1f\x7f]/.test(name) ? undefined : name;
}

function checkByte(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xff) throw new RangeError(`${what} must be a byte, got ${n}`);
  return n;
}

function checkPort(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`port must be 0..65535, got ${n}`);
  return n;
}

// Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; clients expect the IPv4 form.
function ipBytes(host: string): number[] {
  if (ipaddr.IPv4.isValidFourPartDecimal(host)) return ipaddr.IPv4.parse(host).toByteArray();
  if (ipaddr.IPv6.isValid(host)) {
    const addr = ipaddr.IPv6.parse(host);
    return addr.isIPv4MappedAddress() ? addr.toIPv4Address().toByteArray() : addr.toByteArray();
  }
  throw new TypeError(`bound host must be an IP address, got ${JSON.stringify(host)}`);
}

const CMD_CONNECT = 0x01;
const CMD_BIND = 0x02;

// Port 0 is meaningless as a destination for CONNECT/BIND. UDP ASSOCIATE legitimately
// sends all zeros (RFC 1928 §4), and unknown commands are left for the handler to
// answer "command not supported" rather than masking that with a port error.
function portRequired(command: number): boolean {
  return command === CMD_CONNECT || command === CMD_BIND;
}

// Length-prefixed fields cap themselves at 255 bytes; NUL-terminated SOCKS4 fields
// need an explicit cap so a client that never sends NUL cannot make us buffer forever.
const SOCKS4_FIELD_MAX = 255;

function findNul(buf: Buffer, start: number): number | 'incomplete' | 'too-long' {
  const i = buf.subarray(start, start + SOCKS4_FIELD_MAX + 1).indexOf(0);
  if (i >= 0) return start + i;
  return buf.length > start + SOCKS4_FIELD_MAX ? 'too-long' : 'incomplete';
}

// ---------------------------------------------------------------- SOCKS5 (RFC 1928)

export const SOCKS5_METHOD = { NO_AUTH: 0x00, USER_PASS: 0x02, NONE_ACCEPTABLE: 0xff } as const;

export const SOCKS5_REPLY = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

export interface Socks5Greeting {
  methods: number[];
}

export interface Socks5Credentials {
  username: string;
  password: string;
}

export interface Socks5Request {
  command: number;
  addressType: 'ipv4' | 'domain' | 'ipv6';
  host: string;
  port: number;
}

export const parseSocks5Greeting = guarded((buf): ParseResult<Socks5Greeting> => {
  if (buf.length < 1) return INCOMPLETE;
  // No reply: a peer that is not speaking SOCKS5 would not understand one.
  if (buf[0] !== 0x05) return fail(`unsupported SOCKS version ${buf[0]}`);
  if (buf.length < 2) return INCOMPLETE;
  const count = buf[1]!;
  if (count === 0) return fail('greeting offers no methods', socks5MethodReply(SOCKS5_METHOD.NONE_ACCEPTABLE));
  const end = 2 + count;
  if (buf.length < end) return INCOMPLETE;
  return ok({ methods: [...buf.subarray(2, end)] }, end);
});

export function socks5MethodReply(method: number): Buffer {
  return Buffer.from([0x05, checkByte(method, 'method')]);
}

export function socks5AuthReply(success: boolean): Buffer {
  return Buffer.from([0x01, success ? 0x00 : 0x01]);
}

// RFC 1929. Once USER_PASS has been selected the client is waiting for a status, so
// every failure (including a wrong sub-negotiation version) answers "failure".
export const parseSocks5Auth = guarded((buf): ParseResult<Socks5Credentials> => {
  const reject = (message: string): ParseError => fail(message, socks5AuthReply(false));
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== 0x01) return reject(`unsupported auth sub-negotiation version ${buf[0]}`);
  if (buf.length < 2) return INCOMPLETE;
  const ulen = buf[1]!;
  if (ulen === 0) return reject('empty username');
  const plenAt = 2 + ulen;
  if (buf.length < plenAt + 1) return INCOMPLETE;
  const end = plenAt + 1 + buf[plenAt]!;
  if (buf.length < end) return INCOMPLETE;
  const username = decodeUtf8(buf.subarray(2, plenAt));
  const password = decodeUtf8(buf.subarray(plenAt + 1, end));
  if (username === undefined || password === undefined) return reject('credentials are not valid UTF-8');
  return ok({ username, password }, end);
});

export const parseSocks5Request = guarded((buf): ParseResult<Socks5Request> => {
  const failWith = (rep: number, message: string): ParseError => fail(message, socks5Reply(rep));
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== 0x05) return fail(`unsupported SOCKS version ${buf[0]}`);
  if (buf.length < 2) return INCOMPLETE;
  const command = buf[1]!;
  if (buf.length < 3) return INCOMPLETE;
  if (buf[2] !== 0x00) return fail(`reserved byte is ${buf[2]}, expected 0`);
  if (buf.length < 4) return INCOMPLETE;
  const atyp = buf[3]!;

  let addressType: Socks5Request['addressType'];
  let host: string;
  let portAt: number;
  switch (atyp) {
    case 0x01:
      portAt = 4 + 4;
      if (buf.length < portAt) return INCOMPLETE;
      addressType = 'ipv4';
      host = ipaddr.fromByteArray([...buf.subarray(4, portAt)]).toString();
      break;
    case 0x04:
      portAt = 4 + 16;
      if (buf.length < portAt) return INCOMPLETE;
      addressType = 'ipv6';
      host = ipaddr.fromByteArray([...buf.subarray(4, portAt)]).toString();
      break;
    case 0x03: {
      if (buf.length < 5) return INCOMPLETE;
      const len = buf[4]!;
      if (len === 0) return failWith(SOCKS5_REPLY.GENERAL_FAILURE, 'empty domain name');
      portAt = 5 + len;
      if (buf.length < portAt) return INCOMPLETE;
      const name = decodeDomain(buf.subarray(5, portAt));
      if (name === undefined) {
        return failWith(SOCKS5_REPLY.GENERAL_FAILURE, 'domain name is not valid UTF-8 or contains control characters');
      }
      addressType = 'domain';
      host = name;
      break;
    }
    default:
      return failWith(SOCKS5_REPLY.ADDRESS_TYPE_NOT_SUPPORTED, `unsupported address type ${atyp}`);
  }

  const end = portAt + 2;
  if (buf.length < end) return INCOMPLETE;
  const port = buf.readUInt16BE(portAt);
  if (port === 0 && portRequired(command)) return failWith(SOCKS5_REPLY.GENERAL_FAILURE, 'destination port 0');
  return ok({ command, addressType, host, port }, end);
});

// BND.ADDR is always an IP here: the proxy reports the socket it actually bound.
export function socks5Reply(rep: number, bound?: { host: string; port: number }): Buffer {
  const addr = bound ? ipBytes(bound.host) : [0, 0, 0, 0];
  const port = bound ? checkPort(bound.port) : 0;
  return Buffer.from([
    0x05,
    checkByte(rep, 'reply code'),
    0x00,
    addr.length === 4 ? 0x01 : 0x04,
    ...addr,
    port >> 8,
    port & 0xff,
  ]);
}

// ---------------------------------------------------------------- SOCKS4 / 4a

export const SOCKS4_REPLY = { GRANTED: 0x5a, REJECTED: 0x5b } as const;

export interface Socks4Request {
  command: number;
  host: string;
  port: number;
  userId: string;
  isSocks4a: boolean;
}

export const parseSocks4Request = guarded((buf): ParseResult<Socks4Request> => {
  const reject = (message: string): ParseError => fail(message, socks4Reply(SOCKS4_REPLY.REJECTED));
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== 0x04) return fail(`unsupported SOCKS version ${buf[0]}`);
  if (buf.length < 2) return INCOMPLETE;
  const command = buf[1]!;
  if (buf.length < 4) return INCOMPLETE;
  const port = buf.readUInt16BE(2);
  if (port === 0 && portRequired(command)) return reject('destination port 0');
  if (buf.length < 8) return INCOMPLETE;
  const ip = [...buf.subarray(4, 8)];
  // SOCKS4a marker: 0.0.0.x with x != 0 means "the real destination is the name that follows".
  const isSocks4a = ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0;

  const userEnd = findNul(buf, 8);
  if (userEnd === 'incomplete') return INCOMPLETE;
  if (userEnd === 'too-long') return reject(`user id longer than ${SOCKS4_FIELD_MAX} bytes`);
  const userId = decodeUtf8(buf.subarray(8, userEnd));
  if (userId === undefined) return reject('user id is not valid UTF-8');

  if (!isSocks4a) {
    return ok({ command, host: ipaddr.fromByteArray(ip).toString(), port, userId, isSocks4a }, userEnd + 1);
  }

  const domainStart = userEnd + 1;
  const domainEnd = findNul(buf, domainStart);
  if (domainEnd === 'incomplete') return INCOMPLETE;
  if (domainEnd === 'too-long') return reject(`domain name longer than ${SOCKS4_FIELD_MAX} bytes`);
  if (domainEnd === domainStart) return reject('empty domain name');
  const host = decodeDomain(buf.subarray(domainStart, domainEnd));
  if (host === undefined) return reject('domain name is not valid UTF-8 or contains control characters');
  return ok({ command, host, port, userId, isSocks4a }, domainEnd + 1);
});

// SOCKS4 can only carry an IPv4 address; an IPv4-mapped IPv6 address is unmapped.
export function socks4Reply(code: number, bound?: { host: string; port: number }): Buffer {
  const addr = bound ? ipBytes(bound.host) : [0, 0, 0, 0];
  if (addr.length !== 4) throw new TypeError(`SOCKS4 cannot encode IPv6 address ${bound?.host}`);
  const port = bound ? checkPort(bound.port) : 0;
  return Buffer.from([0x00, checkByte(code, 'reply code'), port >> 8, port & 0xff, ...addr]);
}
