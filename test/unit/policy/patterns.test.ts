import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHost } from '../../../src/policy/host.js';
import {
  containerMatches,
  containerRank,
  destinationMatches,
  destinationRank,
  isValidName,
  parseContainerPattern,
  parseDestinationPattern,
  parsePortPattern,
  PatternError,
  portMatches,
  portRank,
  specificity,
  type DestinationMatcher,
} from '../../../src/policy/patterns.js';
import { canonicalisePatterns, compileRule, outranks } from '../../../src/policy/rules.js';
import type { RuleRecord } from '../../../src/policy/rules.js';

function kindOf(m: DestinationMatcher): string {
  switch (m.kind) {
    case 'any':
      return 'any';
    case 'host':
      return 'host';
    case 'suffix':
      return m.apex ? 'suffix+apex' : 'suffix';
    case 'ip':
      return `ip:${m.ip.kind()}`;
    case 'cidr':
      return `cidr:${m.network.kind()}`;
  }
}

// ---- destination patterns: accepted ---------------------------------------------------

const DEST_OK: ReadonlyArray<readonly [input: string, canonical: string, kind: string]> = [
  ['*', '*', 'any'],
  ['api.github.com', 'api.github.com', 'host'],
  ['API.GitHub.COM', 'api.github.com', 'host'],
  ['api.github.com.', 'api.github.com', 'host'],
  ['localhost', 'localhost', 'host'],
  ['_acme.example.com', '_acme.example.com', 'host'],
  ['bücher.example', 'xn--bcher-kva.example', 'host'],
  ['BÜCHER.EXAMPLE', 'xn--bcher-kva.example', 'host'],
  ['*.example.com', '*.example.com', 'suffix'],
  ['*.Example.COM.', '*.example.com', 'suffix'],
  ['**.example.com', '**.example.com', 'suffix+apex'],
  ['**.EXAMPLE.com', '**.example.com', 'suffix+apex'],
  ['*.bücher.example', '*.xn--bcher-kva.example', 'suffix'],
  ['**.bücher.example', '**.xn--bcher-kva.example', 'suffix+apex'],
  ['*.co.uk', '*.co.uk', 'suffix'],
  ['*.a.b.example.com', '*.a.b.example.com', 'suffix'],
  ['10.0.0.1', '10.0.0.1', 'ip:ipv4'],
  ['127.1', '127.0.0.1', 'ip:ipv4'],
  ['2130706433', '127.0.0.1', 'ip:ipv4'],
  ['0x7f.1', '127.0.0.1', 'ip:ipv4'],
  ['::1', '::1', 'ip:ipv6'],
  ['[::1]', '::1', 'ip:ipv6'],
  ['2001:DB8:0:0::1', '2001:db8::1', 'ip:ipv6'],
  ['::ffff:10.0.0.1', '10.0.0.1', 'ip:ipv4'],
  ['10.0.0.0/8', '10.0.0.0/8', 'cidr:ipv4'],
  ['10.1.2.3/8', '10.0.0.0/8', 'cidr:ipv4'],
  ['192.168.1.255/23', '192.168.0.0/23', 'cidr:ipv4'],
  ['172.16.5.4/12', '172.16.0.0/12', 'cidr:ipv4'],
  ['10.0.0.1/31', '10.0.0.0/31', 'cidr:ipv4'],
  ['0.0.0.0/0', '0.0.0.0/0', 'cidr:ipv4'],
  ['1.2.3.4/0', '0.0.0.0/0', 'cidr:ipv4'],
  ['10.0.0.1/32', '10.0.0.1', 'ip:ipv4'],
  ['2001:db8::/32', '2001:db8::/32', 'cidr:ipv6'],
  ['2001:db8:1:2::5/32', '2001:db8::/32', 'cidr:ipv6'],
  ['2001:DB8::/48', '2001:db8::/48', 'cidr:ipv6'],
  ['::/0', '::/0', 'cidr:ipv6'],
  ['2001:db8::1/128', '2001:db8::1', 'ip:ipv6'],
  ['::ffff:10.0.0.0/104', '10.0.0.0/8', 'cidr:ipv4'],
  ['::ffff:10.0.0.1/128', '10.0.0.1', 'ip:ipv4'],
];

for (const [input, canonical, kind] of DEST_OK) {
  test(`destination_pattern ${JSON.stringify(input)} => ${canonical} (${kind})`, () => {
    const p = parseDestinationPattern(input);
    assert.equal(p.canonical, canonical);
    assert.equal(kindOf(p.matcher), kind);
  });
}

test('destination_pattern canonical form is a fixed point', () => {
  for (const [input] of DEST_OK) {
    const once = parseDestinationPattern(input);
    const twice = parseDestinationPattern(once.canonical);
    assert.equal(twice.canonical, once.canonical, input);
    assert.equal(kindOf(twice.matcher), kindOf(once.matcher), input);
  }
});

test('wildcard suffix matchers record the suffix and its label count', () => {
  const m = parseDestinationPattern('*.a.B.example.com').matcher;
  assert.deepEqual(m, { kind: 'suffix', suffix: 'a.b.example.com', apex: false, labels: 4 });
  const n = parseDestinationPattern('**.example.com').matcher;
  assert.deepEqual(n, { kind: 'suffix', suffix: 'example.com', apex: true, labels: 2 });
});

test('CIDR host bits are cleared in the matcher, not only in the canonical text', () => {
  const m = parseDestinationPattern('10.1.2.3/8').matcher;
  assert.equal(m.kind, 'cidr');
  if (m.kind !== 'cidr') return;
  assert.equal(m.prefix, 8);
  assert.deepEqual(m.network.toByteArray(), [10, 0, 0, 0]);
});

// ---- destination patterns: rejected ------------------------------------------------------

const DEST_BAD: ReadonlyArray<readonly [string, string]> = [
  ['', 'empty'],
  [' ', 'a space'],
  [' example.com', 'leading space'],
  ['example.com ', 'trailing space'],
  ['exa mple.com', 'inner space'],
  ['example.com\n', 'trailing newline'],
  ['exa\u0000mple.com', 'NUL'],
  ['http://example.com', 'scheme'],
  ['https://example.com/', 'scheme and path'],
  ['//example.com', 'scheme-relative'],
  ['example.com/path', 'path'],
  ['example.com/8', 'name with a prefix length'],
  ['example.com:443', 'port'],
  ['[::1]:443', 'bracketed IPv6 with port'],
  ['user@example.com', 'userinfo'],
  ['example.com?x=1', 'query'],
  ['*.*', '*.*'],
  ['*.*.com', 'two wildcard labels'],
  ['*.*.example.com', 'two wildcard labels before a domain'],
  ['**.*.com', '** then *'],
  ['*.com', 'TLD wildcard'],
  ['**.com', 'TLD wildcard with apex'],
  ['*.com.', 'TLD wildcard with a trailing dot'],
  ['*.localhost', 'single-label wildcard'],
  ['*.', 'wildcard over nothing'],
  ['**.', 'apex wildcard over nothing'],
  ['**', 'double star alone'],
  ['***.example.com', 'triple star'],
  ['*example.com', 'star glued to a label'],
  ['ex*ample.com', 'star inside a label'],
  ['example.*', 'trailing star'],
  ['a.*.example.com', 'star in the middle'],
  ['api.*', 'star as TLD'],
  ['*.10.0.0.1', 'wildcard over an IPv4 address'],
  ['**.10.0.0.0', 'apex wildcard over an IPv4 address'],
  ['*.[::1]', 'wildcard over an IPv6 address'],
  ['*.example.123', 'wildcard over a numeric TLD'],
  ['10.0.0.0/33', 'IPv4 prefix too long'],
  ['2001:db8::/129', 'IPv6 prefix too long'],
  ['10.0.0.0/-1', 'negative prefix'],
  ['10.0.0.0/', 'missing prefix'],
  ['/8', 'missing network'],
  ['10.0.0.0/8/8', 'two prefixes'],
  ['10.0.0.0/a', 'non-numeric prefix'],
  ['10.0.0.0 /8', 'space before prefix'],
  ['256.0.0.0/8', 'bad IPv4 network'],
  ['1.2.3.4.5', 'five IPv4 parts'],
  ['256.1.1.1', 'octet out of range'],
  ['example..com', 'empty label'],
  ['.example.com', 'leading dot'],
  ['.', 'only a dot'],
  [`${'a'.repeat(64)}.example.com`, 'label over 63'],
  [[63, 63, 63, 62].map((n) => 'a'.repeat(n)).join('.'), 'name over 253'],
  ['fe80::1%eth0', 'zone id'],
  ['[fe80::1%25eth0]', 'bracketed zone id'],
  ['xn--', 'invalid punycode'],
];

for (const [input, why] of DEST_BAD) {
  test(`destination_pattern rejects ${why}: ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + '…' : input)}`, () => {
    assert.throws(() => parseDestinationPattern(input), PatternError);
  });
}

// Spec: zone ids are rejected and "anything else" than host/wildcard/IP/CIDR is rejected.
// parseDestinationPattern hands CIDRs straight to ipaddr.parseCIDR, which accepts a zone id
// and then silently drops it.
test('destination_pattern rejects an IPv6 CIDR carrying a zone id', () => {
  assert.throws(() => parseDestinationPattern('fe80::%eth0/64'), PatternError);
  assert.throws(() => parseDestinationPattern('fe80::1%eth0/128'), PatternError);
});

// Same ipaddr.js quirk as in host.test.ts: `::a.b.c.d` is ::(a.b):(c.d), not ::ffff:a.b.c.d.
test('destination_pattern ::a.b.c.d is the IPv6 address it denotes (same as ::7f00:1)', () => {
  for (const input of ['::127.0.0.1', '::127.0.0.1/128']) {
    const p = parseDestinationPattern(input);
    assert.equal(p.canonical, '::7f00:1', input);
    assert.equal(kindOf(p.matcher), 'ip:ipv6', input);
  }
  assert.equal(parseDestinationPattern('::10.0.0.0/104').canonical, '::a00:0/104');
});

// ---- destination matching -------------------------------------------------------------------

const MATCH: ReadonlyArray<readonly [pattern: string, host: string, expected: boolean]> = [
  ['*', 'example.com', true],
  ['*', '10.0.0.1', true],
  ['*', '::1', true],
  ['example.com', 'example.com', true],
  ['example.com', 'EXAMPLE.COM.', true],
  ['example.com', 'www.example.com', false],
  ['example.com', 'example.co', false],
  ['bücher.example', 'xn--bcher-kva.example', true],
  ['xn--bcher-kva.example', 'BÜCHER.example', true],
  ['*.example.com', 'api.example.com', true],
  ['*.example.com', 'a.b.c.example.com', true],
  ['*.example.com', 'example.com', false],
  ['*.example.com', 'badexample.com', false],
  ['*.example.com', 'example.com.evil.net', false],
  ['*.example.com', 'xexample.com', false],
  ['**.example.com', 'example.com', true],
  ['**.example.com', 'api.example.com', true],
  ['**.example.com', 'a.b.example.com', true],
  ['**.example.com', 'notexample.com', false],
  ['**.example.com', 'com', false],
  ['10.0.0.1', '10.0.0.1', true],
  ['10.0.0.1', '167772161', true],
  ['10.0.0.1', '::ffff:10.0.0.1', true],
  ['10.0.0.1', '10.0.0.2', false],
  ['::1', '[::1]', true],
  ['::1', '0:0:0:0:0:0:0:1', true],
  ['10.0.0.0/8', '10.255.255.255', true],
  ['10.0.0.0/8', '10.0.0.0', true],
  ['10.0.0.0/8', '11.0.0.0', false],
  ['10.0.0.0/8', '9.255.255.255', false],
  ['10.0.0.0/8', '::ffff:10.1.2.3', true],
  ['10.0.0.0/8', '0xa.1', true],
  ['0.0.0.0/0', '8.8.8.8', true],
  ['0.0.0.0/0', '::1', false],
  ['::/0', '::1', true],
  ['::/0', '1.2.3.4', false],
  ['2001:db8::/32', '2001:db8:ffff::1', true],
  ['2001:db8::/32', '2001:db9::1', false],
  ['::ffff:10.0.0.0/104', '10.9.9.9', true],
  // hostnames never match IP rules and IPs never match host rules
  ['10.0.0.0/8', 'ten.example.com', false],
  ['10.0.0.1', 'example.com', false],
  ['localhost', '127.0.0.1', false],
  ['*.example.com', '10.0.0.1', false],
];

for (const [pattern, host, expected] of MATCH) {
  test(`destinationMatches(${pattern}, ${JSON.stringify(host)}) === ${expected}`, () => {
    assert.equal(destinationMatches(parseDestinationPattern(pattern).matcher, parseHost(host)), expected);
  });
}

// ---- port patterns ----------------------------------------------------------------------------

const PORT_OK: ReadonlyArray<readonly [input: string, canonical: string, kind: string]> = [
  ['*', '*', 'any'],
  ['443', '443', 'exact'],
  ['1', '1', 'exact'],
  ['65535', '65535', 'exact'],
  ['0443', '443', 'exact'],
  ['443-443', '443', 'exact'],
  ['80,443', '80,443', 'set'],
  ['443,80', '80,443', 'set'],
  ['80, 443', '80,443', 'set'],
  [' 80 , 443 ', '80,443', 'set'],
  ['8000-8999', '8000-8999', 'set'],
  ['1-65535', '1-65535', 'set'],
  ['9000-9100,22,80', '22,80,9000-9100', 'set'],
];

for (const [input, canonical, kind] of PORT_OK) {
  test(`port_pattern ${JSON.stringify(input)} => ${canonical} (${kind})`, () => {
    const p = parsePortPattern(input);
    assert.equal(p.canonical, canonical);
    assert.equal(p.matcher.kind, kind);
    assert.equal(parsePortPattern(p.canonical).canonical, canonical, 'canonical form is a fixed point');
  });
}

const PORT_BAD: readonly string[] = [
  '',
  ' ',
  '0',
  '65536',
  '99999',
  '100000',
  '0-80',
  '80-65536',
  '5-3',
  '-1',
  '-5',
  '1-',
  '80-90-100',
  '80,',
  ',80',
  '80,,443',
  '*,80',
  '80,*',
  '**',
  'abc',
  '80;443',
  '80 443',
  '0x50',
  '+80',
  '8.0',
  Array.from({ length: 65 }, (_, i) => String(i + 1)).join(','),
];

for (const input of PORT_BAD) {
  test(`port_pattern rejects ${JSON.stringify(input.length > 30 ? input.slice(0, 30) + '…' : input)}`, () => {
    assert.throws(() => parsePortPattern(input), PatternError);
  });
}

test('port_pattern allows up to 64 items', () => {
  const p = parsePortPattern(Array.from({ length: 64 }, (_, i) => String(i + 1)).join(','));
  assert.equal(p.matcher.kind, 'set');
});

test('portMatches: exact, list and range boundaries', () => {
  const exact = parsePortPattern('443').matcher;
  assert.equal(portMatches(exact, 443), true);
  assert.equal(portMatches(exact, 80), false);
  const list = parsePortPattern('80,443').matcher;
  assert.equal(portMatches(list, 80), true);
  assert.equal(portMatches(list, 443), true);
  assert.equal(portMatches(list, 81), false);
  const range = parsePortPattern('8000-8999').matcher;
  for (const [port, expected] of [[7999, false], [8000, true], [8500, true], [8999, true], [9000, false]] as const) {
    assert.equal(portMatches(range, port), expected, String(port));
  }
  const mixed = parsePortPattern('22,8000-8001').matcher;
  assert.deepEqual([21, 22, 23, 7999, 8000, 8001, 8002].map((p) => portMatches(mixed, p)), [false, true, false, false, true, true, false]);
  const any = parsePortPattern('*').matcher;
  assert.equal(portMatches(any, 1), true);
  assert.equal(portMatches(any, 65535), true);
});

// ---- container patterns -------------------------------------------------------------------------

test('container_pattern kinds', () => {
  assert.deepEqual(parseContainerPattern('*'), { kind: 'any' });
  assert.deepEqual(parseContainerPattern('**'), { kind: 'any' });
  assert.deepEqual(parseContainerPattern('web'), { kind: 'exact', name: 'web' });
  assert.deepEqual(parseContainerPattern('Web-1.prod_x'), { kind: 'exact', name: 'Web-1.prod_x' });
  assert.equal(parseContainerPattern('web-*').kind, 'glob');
  assert.equal(parseContainerPattern('web-?').kind, 'glob');
  assert.equal(parseContainerPattern('*-1').kind, 'glob');
  assert.equal(parseContainerPattern('a'.repeat(128)).kind, 'exact');
});

for (const bad of ['', ' ', 'a b', 'web/1', 'web:1', 'web[1]', 'wéb', 'a'.repeat(129), '*'.repeat(129), 'web\u0000', 'web\n']) {
  test(`container_pattern rejects ${JSON.stringify(bad.length > 30 ? bad.slice(0, 30) + '…' : bad)}`, () => {
    assert.throws(() => parseContainerPattern(bad), PatternError);
  });
}

const CONTAINER_MATCH: ReadonlyArray<readonly [pattern: string, name: string, expected: boolean]> = [
  ['*', 'anything', true],
  ['web', 'web', true],
  ['web', 'web-1', false],
  ['web', 'Web', false],
  ['web-*', 'web-1', true],
  ['web-*', 'web-', true],
  ['web-*', 'web-1.prod', true],
  ['web-*', 'web', false],
  ['web-*', 'xweb-1', false],
  ['web-?', 'web-1', true],
  ['web-?', 'web-12', false],
  ['web-?', 'web-', false],
  ['*-1', 'web-1', true],
  ['*-1', 'web-1-1', true],
  ['*-1', 'web-11', false],
  ['*-1', 'web-12', false],
  ['a.b*', 'a.bc', true],
  ['a.b*', 'axbc', false], // "." is literal
  ['w*b*', 'web', true],
  ['w*b*', 'wxyzb', true],
  ['w*b*', 'wx', false],
];

for (const [pattern, name, expected] of CONTAINER_MATCH) {
  test(`containerMatches(${pattern}, ${name}) === ${expected}`, () => {
    assert.equal(containerMatches(parseContainerPattern(pattern), name), expected);
  });
}

test('isValidName', () => {
  assert.equal(isValidName('web-1.prod_x'), true);
  assert.equal(isValidName('a'.repeat(128)), true);
  assert.equal(isValidName('a'.repeat(129)), false);
  assert.equal(isValidName(''), false);
  assert.equal(isValidName('web*'), false);
  assert.equal(isValidName('a b'), false);
});

// ---- specificity ranks -------------------------------------------------------------------------

const d = (p: string): DestinationMatcher => parseDestinationPattern(p).matcher;

test('containerRank: exact > glob > *', () => {
  const exact = containerRank(parseContainerPattern('web'));
  const glob = containerRank(parseContainerPattern('web-*'));
  const shortGlob = containerRank(parseContainerPattern('?'));
  const longestGlob = containerRank(parseContainerPattern('a'.repeat(127) + '*'));
  const any = containerRank(parseContainerPattern('*'));
  assert.ok(exact > glob && glob > any);
  assert.ok(exact > longestGlob, 'even a glob with 127 literal characters ranks below an exact name');
  assert.ok(shortGlob > any, 'even a glob with no literal characters ranks above *');
});

test('destinationRank: exact host = exact IP > longer suffix > shorter suffix > CIDR long > CIDR short > *', () => {
  const order = [
    ['api.example.com', '10.0.0.1', '::1'],
    ['*.a.b.example.com'],
    ['*.b.example.com'],
    ['**.b.example.com'],
    ['*.example.com'],
    ['**.example.com'],
    ['2001:db8::/127'],
    ['10.0.0.0/24'],
    ['10.0.0.0/8'],
    ['0.0.0.0/0', '::/0'],
    ['*'],
  ];
  for (let i = 0; i < order.length; i++) {
    const here = order[i]!.map((p) => destinationRank(d(p)));
    assert.ok(here.every((r) => r === here[0]), `equal ranks in group ${i}`);
    if (i + 1 < order.length) {
      const next = destinationRank(d(order[i + 1]![0]!));
      assert.ok(here[0]! > next, `${order[i]![0]} outranks ${order[i + 1]![0]}`);
    }
  }
  // the longest possible suffix still ranks below an exact host, and the shortest above any CIDR
  const longSuffix = '*.' + Array.from({ length: 126 }, () => 'a').join('.');
  assert.ok(destinationRank(d(longSuffix)) < destinationRank(d('a.com')));
  assert.ok(destinationRank(d('**.co.uk')) > destinationRank(d('2001:db8::/127')));
});

test('portRank: exact > list/range > *', () => {
  assert.ok(portRank(parsePortPattern('443').matcher) > portRank(parsePortPattern('80,443').matcher));
  assert.equal(portRank(parsePortPattern('80,443').matcher), portRank(parsePortPattern('8000-8999').matcher));
  assert.ok(portRank(parsePortPattern('8000-8999').matcher) > portRank(parsePortPattern('*').matcher));
});

test('specificity is lexicographic: container first, then destination, then port', () => {
  const c = parseContainerPattern;
  const p = (x: string) => parsePortPattern(x).matcher;
  // the weakest exact-container rule beats the strongest glob-container rule
  assert.ok(specificity(c('web'), d('*'), p('*')) > specificity(c('a'.repeat(127) + '*'), d('api.example.com'), p('443')));
  // the weakest glob beats the strongest `*` rule
  assert.ok(specificity(c('?'), d('*'), p('*')) > specificity(c('*'), d('api.example.com'), p('443')));
  // destination dominates port
  assert.ok(specificity(c('*'), d('api.example.com'), p('*')) > specificity(c('*'), d('*.example.com'), p('443')));
  assert.ok(specificity(c('*'), d('0.0.0.0/0'), p('*')) > specificity(c('*'), d('*'), p('443')));
  // port breaks the remaining tie
  assert.ok(specificity(c('*'), d('*'), p('443')) > specificity(c('*'), d('*'), p('80,443')));
  assert.ok(specificity(c('*'), d('*'), p('80,443')) > specificity(c('*'), d('*'), p('*')));
});

function rec(id: number, action: 'allow' | 'deny', dest: string, container = '*', ports = '*'): RuleRecord {
  return {
    id,
    layer: 'global',
    sessionId: null,
    containerPattern: container,
    destinationPattern: dest,
    portPattern: ports,
    action,
    expiresAt: null,
    notes: null,
    createdAt: 0,
  };
}

test('outranks: more specific first, then deny over allow', () => {
  const specificAllow = compileRule(rec(1, 'allow', 'api.example.com'));
  const broadDeny = compileRule(rec(2, 'deny', '*.example.com'));
  assert.equal(outranks(specificAllow, broadDeny), true);
  assert.equal(outranks(broadDeny, specificAllow), false);
  const allow = compileRule(rec(3, 'allow', 'api.example.com'));
  const denyLaterId = compileRule(rec(9, 'deny', 'api.example.com'));
  assert.equal(outranks(denyLaterId, allow), true);
  assert.equal(outranks(allow, denyLaterId), false);
});

test('canonicalisePatterns canonicalises destination and port, validates container', () => {
  assert.deepEqual(canonicalisePatterns({ containerPattern: 'web-*', destinationPattern: '*.Bücher.Example.', portPattern: '443, 80' }), {
    containerPattern: 'web-*',
    destinationPattern: '*.xn--bcher-kva.example',
    portPattern: '80,443',
  });
  assert.deepEqual(canonicalisePatterns({ containerPattern: '*', destinationPattern: '10.9.8.7/8', portPattern: '*' }), {
    containerPattern: '*',
    destinationPattern: '10.0.0.0/8',
    portPattern: '*',
  });
  assert.throws(() => canonicalisePatterns({ containerPattern: 'a b', destinationPattern: '*', portPattern: '*' }), PatternError);
  assert.throws(() => canonicalisePatterns({ containerPattern: '*', destinationPattern: '*.com', portPattern: '*' }), PatternError);
  assert.throws(() => canonicalisePatterns({ containerPattern: '*', destinationPattern: '*', portPattern: '0' }), PatternError);
});
