import { test } from 'node:test';
import assert from 'node:assert/strict';
import ipaddr from 'ipaddr.js';
import {
  formatHostPort,
  HostError,
  ipDestination,
  normaliseIp,
  parseAuthority,
  parseHost,
  parsePort,
  type Destination,
} from '../../../src/policy/host.js';

function describeDest(d: Destination): string {
  return d.kind === 'ip' ? `ip:${d.ip.kind()}:${d.host}` : `host:${d.host}`;
}

// ---- parseHost: accepted spellings -------------------------------------------

const LOOPBACK_SPELLINGS = [
  '127.0.0.1',
  '127.0.0.1.',
  '127.1',
  '127.0.1',
  '0x7f.1',
  '0X7F.0.0.1',
  '0x7f.0x0.0x0.0x1',
  '0x7f000001',
  '2130706433',
  '0177.0.0.1',
  '0177.1',
  '017700000001',
  '\uff11\uff12\uff17.\uff10.\uff10.\uff11', // fullwidth digits
  '127\u30020\u30020\u30021', // ideographic full stops
  '::ffff:127.0.0.1',
  '[::ffff:127.0.0.1]',
  '::ffff:7f00:1',
  '[::FFFF:7F00:1]',
  '0:0:0:0:0:ffff:7f00:1',
];

for (const spelling of LOOPBACK_SPELLINGS) {
  test(`parseHost: ${JSON.stringify(spelling)} is the IPv4 address 127.0.0.1`, () => {
    const d = parseHost(spelling);
    assert.equal(describeDest(d), 'ip:ipv4:127.0.0.1');
  });
}

const ACCEPT: ReadonlyArray<readonly [string, string]> = [
  ['example.com', 'host:example.com'],
  ['EXAMPLE.Com', 'host:example.com'],
  ['example.com.', 'host:example.com'],
  ['API.GitHub.com.', 'host:api.github.com'],
  ['bücher.example', 'host:xn--bcher-kva.example'],
  ['BÜCHER.example', 'host:xn--bcher-kva.example'],
  ['xn--bcher-kva.example', 'host:xn--bcher-kva.example'],
  ['example\u3002com', 'host:example.com'],
  ['_dmarc.example.com', 'host:_dmarc.example.com'],
  ['localhost', 'host:localhost'],
  ['LOCALHOST.', 'host:localhost'],
  ['a-b.example', 'host:a-b.example'],
  ['10.0.0.1', 'ip:ipv4:10.0.0.1'],
  ['167772161', 'ip:ipv4:10.0.0.1'],
  ['10.1', 'ip:ipv4:10.0.0.1'],
  ['1.2.3', 'ip:ipv4:1.2.0.3'],
  ['010.0.0.1', 'ip:ipv4:8.0.0.1'], // WHATWG: a leading zero means octal
  ['0', 'ip:ipv4:0.0.0.0'],
  ['255.255.255.255', 'ip:ipv4:255.255.255.255'],
  ['::1', 'ip:ipv6:::1'],
  ['[::1]', 'ip:ipv6:::1'],
  ['[0:0:0:0:0:0:0:1]', 'ip:ipv6:::1'],
  ['2001:DB8::1', 'ip:ipv6:2001:db8::1'],
  ['[2001:db8:0:0:0:0:0:1]', 'ip:ipv6:2001:db8::1'],
  ['::', 'ip:ipv6:::'],
  ['::ffff:10.0.0.1', 'ip:ipv4:10.0.0.1'],
];

for (const [input, expected] of ACCEPT) {
  test(`parseHost: ${JSON.stringify(input)} => ${expected}`, () => {
    assert.equal(describeDest(parseHost(input)), expected);
  });
}

test('parseHost: an IP destination carries the parsed, normalised address', () => {
  const d = parseHost('[::ffff:10.1.2.3]');
  assert.equal(d.kind, 'ip');
  if (d.kind !== 'ip') return;
  assert.equal(d.ip.kind(), 'ipv4');
  assert.deepEqual(d.ip.toByteArray(), [10, 1, 2, 3]);
  assert.equal(d.host, d.ip.toString());
});

test('parseHost: a 63-character label and a 253-character name are accepted (trailing dot too)', () => {
  const label63 = 'a'.repeat(63);
  assert.equal(describeDest(parseHost(`${label63}.example`)), `host:${label63}.example`);
  // 4 labels of 63 + 3 dots = 255; build exactly 253: 63+1+63+1+63+1+61 = 253
  const name253 = [label63, label63, label63, 'b'.repeat(61)].join('.');
  assert.equal(name253.length, 253);
  assert.equal(describeDest(parseHost(name253)), `host:${name253}`);
  assert.equal(describeDest(parseHost(`${name253}.`)), `host:${name253}`);
  assert.equal(describeDest(parseHost(name253.toUpperCase())), `host:${name253}`);
});

// ---- parseHost: rejected ---------------------------------------------------------

const REJECT: ReadonlyArray<readonly [string, string]> = [
  ['', 'empty'],
  ['.', 'only a dot'],
  ['..', 'two dots'],
  ['.example.com', 'leading empty label'],
  ['example..com', 'empty label'],
  ['example.com..', 'two trailing dots'],
  ['exa\u0000mple.com', 'NUL'],
  ['example.com\u0000', 'trailing NUL'],
  ['\u0000', 'only NUL'],
  ['\u0001example.com', 'SOH'],
  ['exa\tmple.com', 'tab'],
  ['exa\nmple.com', 'LF'],
  ['exa\rmple.com', 'CR'],
  ['example.com\r\n', 'CRLF'],
  ['exa\u001fmple.com', 'unit separator'],
  ['exa\u007fmple.com', 'DEL'],
  ['exa\u0085mple.com', 'C1 NEL'],
  ['exa\u009bmple.com', 'C1 CSI'],
  [' example.com', 'leading space'],
  ['example.com ', 'trailing space'],
  ['exa mple.com', 'inner space'],
  ['exa%41mple.com', 'percent-encoding'],
  ['example.com%00', 'percent-encoded NUL'],
  ['example.com/path', 'path'],
  ['example.com\\path', 'backslash'],
  ['user@example.com', 'userinfo'],
  ['example.com?q', 'query'],
  ['example.com#f', 'fragment'],
  ['example.com:443', 'port in a host'],
  ['http://example.com', 'scheme'],
  ['<example.com>', 'angle brackets'],
  ['a|b.com', 'pipe'],
  ['a^b.com', 'caret'],
  ['*.example.com', 'wildcard'],
  ['xn--', 'invalid punycode'],
  ['1.2.3.4.5', 'five IPv4 parts'],
  ['256.0.0.1', 'IPv4 octet out of range'],
  ['1.2.3.256', 'IPv4 last octet out of range'],
  ['4294967296', 'IPv4 number out of range'],
  ['0x100000000', 'IPv4 hex out of range'],
  ['09.1.1.1', 'invalid octal'],
  ['example.123', 'numeric final label'],
  ['[', 'lone bracket'],
  ['[::1', 'unterminated bracket'],
  ['::1]', 'stray closing bracket'],
  ['[]', 'empty brackets'],
  ['[127.0.0.1]', 'IPv4 in brackets'],
  ['[example.com]', 'name in brackets'],
  ['fe80::1%eth0', 'zone id'],
  ['fe80::1%25eth0', 'encoded zone id'],
  ['[fe80::1%eth0]', 'bracketed zone id'],
  ['[fe80::1%25eth0]', 'bracketed encoded zone id'],
  ['[::ffff:127.0.0.1%1]', 'zone id on a mapped address'],
  ['1:2:3:4:5:6:7:8:9', 'too many IPv6 groups'],
  ['::g', 'non-hex IPv6'],
  ['a:b', 'colon in a name'],
  ['-', 'lone hyphen'],
  ['-a.example', 'label starting with a hyphen'],
  ['a-.example', 'label ending with a hyphen'],
  [`${'a'.repeat(64)}.example`, 'label over 63'],
  [`www.${'a'.repeat(64)}`, 'final label over 63'],
  [[63, 63, 63, 62].map((n) => 'a'.repeat(n)).join('.'), 'name of 254'],
  ['a.'.repeat(150) + 'com', 'name of 303'],
  ['a'.repeat(10_000), 'very long'],
  [`${'ü'.repeat(60)}.example`, 'IDN label over 63 after punycode'],
];

for (const [input, why] of REJECT) {
  test(`parseHost rejects ${why}: ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + '…' : input)}`, () => {
    assert.throws(() => parseHost(input), HostError);
  });
}

// ---- normaliseIp / ipDestination ---------------------------------------------------

test('normaliseIp turns IPv4-mapped IPv6 into IPv4 and leaves other addresses alone', () => {
  assert.equal(normaliseIp(ipaddr.parse('::ffff:1.2.3.4')).toString(), '1.2.3.4');
  assert.equal(normaliseIp(ipaddr.parse('::ffff:1.2.3.4')).kind(), 'ipv4');
  assert.equal(normaliseIp(ipaddr.parse('1.2.3.4')).toString(), '1.2.3.4');
  assert.equal(normaliseIp(ipaddr.parse('2001:db8::1')).toString(), '2001:db8::1');
  assert.equal(normaliseIp(ipaddr.parse('::1')).kind(), 'ipv6');
});

test('ipDestination builds a normalised ip destination', () => {
  assert.equal(describeDest(ipDestination(ipaddr.parse('::ffff:a00:1'))), 'ip:ipv4:10.0.0.1');
  assert.equal(describeDest(ipDestination(ipaddr.parse('2001:0db8:0000::0001'))), 'ip:ipv6:2001:db8::1');
});

// ---- parseAuthority ----------------------------------------------------------------

const AUTHORITY_OK: ReadonlyArray<readonly [string, string, number]> = [
  ['example.com:443', 'host:example.com', 443],
  ['EXAMPLE.com.:80', 'host:example.com', 80],
  ['bücher.example:8080', 'host:xn--bcher-kva.example', 8080],
  ['[::1]:443', 'ip:ipv6:::1', 443],
  ['[2001:DB8::1]:1', 'ip:ipv6:2001:db8::1', 1],
  ['[::ffff:127.0.0.1]:8080', 'ip:ipv4:127.0.0.1', 8080],
  ['127.1:22', 'ip:ipv4:127.0.0.1', 22],
  ['2130706433:443', 'ip:ipv4:127.0.0.1', 443],
  ['0x7f.1:65535', 'ip:ipv4:127.0.0.1', 65535],
  ['10.0.0.1:00443', 'ip:ipv4:10.0.0.1', 443],
];

for (const [input, dest, port] of AUTHORITY_OK) {
  test(`parseAuthority: ${JSON.stringify(input)} => ${dest} port ${port}`, () => {
    const a = parseAuthority(input);
    assert.equal(describeDest(a.destination), dest);
    assert.equal(a.port, port);
  });
}

const AUTHORITY_BAD: readonly string[] = [
  '',
  'example.com',
  'example.com:',
  ':443',
  'example.com:0',
  'example.com:65536',
  'example.com:99999',
  'example.com:123456',
  'example.com:-1',
  'example.com:+443',
  'example.com: 443',
  'example.com:443 ',
  'example.com:443abc',
  'example.com:4 43',
  'example.com:0x1bb',
  '[::1]',
  '[::1]443',
  '[::1]:',
  '[::1]:0',
  '[::1:443',
  '[fe80::1%25eth0]:443',
  '[fe80::1%eth0]:443',
  '[127.0.0.1]:443',
  'exa\u0000mple.com:443',
  'exa mple.com:443',
  'user@example.com:443',
  'http://example.com:443',
];

for (const input of AUTHORITY_BAD) {
  test(`parseAuthority rejects ${JSON.stringify(input)}`, () => {
    assert.throws(() => parseAuthority(input), HostError);
  });
}

// ---- parsePort / formatHostPort --------------------------------------------------------

test('parsePort accepts 1..65535 in decimal', () => {
  assert.equal(parsePort('1'), 1);
  assert.equal(parsePort('443'), 443);
  assert.equal(parsePort('65535'), 65535);
  assert.equal(parsePort('00080'), 80);
});

for (const bad of ['', '0', '00000', '65536', '99999', '100000', '-1', '+1', '1.0', ' 1', '1 ', '0x50', '١٢٣', 'NaN']) {
  test(`parsePort rejects ${JSON.stringify(bad)}`, () => {
    assert.throws(() => parsePort(bad), HostError);
  });
}

test('formatHostPort brackets IPv6 only', () => {
  assert.equal(formatHostPort('example.com', 443), 'example.com:443');
  assert.equal(formatHostPort('10.0.0.1', 80), '10.0.0.1:80');
  assert.equal(formatHostPort('::1', 443), '[::1]:443');
  assert.equal(formatHostPort('2001:db8::1', 8080), '[2001:db8::1]:8080');
});

test('formatHostPort round-trips through parseAuthority', () => {
  for (const host of ['example.com', '10.0.0.1', '::1', '2001:db8::1']) {
    const a = parseAuthority(formatHostPort(host, 8443));
    assert.equal(a.destination.host, host);
    assert.equal(a.port, 8443);
  }
});

// ---- IPv6 literals with an embedded IPv4 tail ----------------------------------------------------
// RFC 4291 2.2(3), WHATWG URL and inet_pton all read `::a.b.c.d` as the IPv6 address
// ::(a.b):(c.d) (the deprecated "IPv4-compatible" form), NOT as IPv4-mapped ::ffff:a.b.c.d.
// ipaddr.js (lib/ipaddr.js, `deprecatedTransitional`) rewrites it to ::ffff:a.b.c.d, so
// parseHost turns `[::127.0.0.1]` into the IPv4 address 127.0.0.1.

test('parseHost: ::a.b.c.d is the IPv6 address ::7f00:1 (same as its hex spelling), not IPv4', () => {
  const hex = describeDest(parseHost('::7f00:1'));
  assert.equal(hex, 'ip:ipv6:::7f00:1');
  assert.equal(describeDest(parseHost('::127.0.0.1')), hex);
  assert.equal(describeDest(parseHost('[::127.0.0.1]')), hex);
  assert.equal(describeDest(parseHost('[::10.0.0.1]')), 'ip:ipv6:::a00:1');
});

// inet_pton and the WHATWG parser only accept a dotted-decimal tail without leading zeros;
// ipaddr.js also accepts hex and leading zeros, and reads them differently from the IPv4
// path: `127.0.0.010` is 127.0.0.8 (WHATWG octal) but `::ffff:127.0.0.010` came out 127.0.0.10.
for (const spelling of ['::ffff:0x7f.0.0.1', '[::ffff:0x7f.0.0.1]', '::ffff:127.0.0.010', '::ffff:127.0.0.01', '::ffff:0177.0.0.1']) {
  test(`parseHost rejects a non-standard IPv4 tail in an IPv6 literal: ${spelling}`, () => {
    assert.throws(() => parseHost(spelling), HostError);
  });
}

// ---- trailing dot written as a full-width / ideographic full stop ----------------------------------
// `example.com.` is accepted (trailing dot removed), but the IDNA mapping turns U+3002, U+FF0E and
// U+FF61 into "." only after parseHost has stripped the trailing dot, so these are rejected
// with "host has an empty label" (while `127.0.0.1。` is accepted). Fail-closed, low severity.
for (const dot of ['\u3002', '\uff0e', '\uff61']) {
  test(`parseHost removes a trailing dot written as U+${dot.charCodeAt(0).toString(16).toUpperCase()}`, () => {
    assert.equal(describeDest(parseHost(`example.com${dot}`)), 'host:example.com');
  });
}
