// The special-range guard (SSRF defence) against the issue text: which addresses are
// special, which rules may reach them, and the same answers from admission (Gate.evaluate)
// and live revocation (recheck). Property tests compare with a reference written from the
// text with plain integer arithmetic (no code shared with src/policy/special-ranges.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { parseHost, type IpAddress } from '../../src/policy/host.js';
import { addressOutcome, decide, recheck, subjectFor } from '../../src/policy/resolver.js';
import { specialRange } from '../../src/policy/special-ranges.js';
import { Gate, type Evaluation } from '../../src/proxy/gate.js';
import { SelfGuard } from '../../src/proxy/self-guard.js';
import { Revoker } from '../../src/control/revoker.js';
import { allow, deny, NOW, World, type RuleSpec } from './policy/fixtures.js';

// ------------------------------------------------------------------ reference

const V4_BLOCKS: ReadonlyArray<readonly [string, number, string]> = [
  // From the issue: link-local (cloud metadata), private (RFC 1918), CGNAT, unspecified, multicast, broadcast.
  ['255.255.255.255', 32, 'broadcast'],
  ['169.254.0.0', 16, 'link-local'],
  ['10.0.0.0', 8, 'private'],
  ['172.16.0.0', 12, 'private'],
  ['192.168.0.0', 16, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['0.0.0.0', 8, 'unspecified'],
  ['224.0.0.0', 4, 'multicast'],
  // Also special in the implementation (IANA special-purpose, never a public destination).
  ['192.0.0.0', 24, 'ietf-protocol'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['240.0.0.0', 4, 'reserved'],
];
const V6_BLOCKS: ReadonlyArray<readonly [string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['fe80::', 10, 'link-local'],
  ['fc00::', 7, 'unique-local'],
  ['ff00::', 8, 'multicast'],
];

const big = (ip: string): bigint => ipaddr.parse(ip).toByteArray().reduce((n, b) => (n << 8n) | BigInt(b), 0n);
const v4Range = (net: string, bits: number): [bigint, bigint] => {
  const lo = big(net);
  return [lo, lo + (1n << BigInt(32 - bits)) - 1n];
};
const v6Range = (net: string, bits: number): [bigint, bigint] => {
  const lo = big(net);
  return [lo, lo + (1n << BigInt(128 - bits)) - 1n];
};
const REF_V4 = V4_BLOCKS.map(([net, bits, name]) => ({ range: v4Range(net, bits), name }));
const REF_V6 = V6_BLOCKS.map(([net, bits, name]) => ({ range: v6Range(net, bits), name }));

type RefBlock = { name: string; range: [bigint, bigint] };

function refV4Block(n: bigint): RefBlock | null {
  const b = REF_V4.find(({ range }) => n >= range[0] && n <= range[1]);
  if (!b) return null;
  // Broadcast is named on its own but lies inside 240.0.0.0/4: a rule naming that block names it too.
  return { name: b.name, range: b.name === 'broadcast' ? v4Range('240.0.0.0', 4) : b.range };
}

/** The embedded IPv4 of an IPv6 address per RFC 4291/6052/3056/4380/8215, with the v6 range its block spans (when contiguous). */
function refEmbedded(n: bigint): { v4: bigint; toV6?: (v4: bigint) => bigint } | null {
  const top = (bits: number): bigint => n >> BigInt(128 - bits);
  const low32 = n & 0xffffffffn;
  if (top(96) === 0xffffn) return { v4: low32, toV6: (v) => 0xffff00000000n | v }; // ::ffff:a.b.c.d
  if (top(96) === big('64:ff9b::') >> 32n) return { v4: low32, toV6: (v) => big('64:ff9b::') | v };
  if (top(48) === big('64:ff9b:1::') >> 80n) {
    // /48 layout: v4 bits 0-15 at bits 48-63, then the zero "u" octet, then v4 bits 16-31.
    return { v4: (((n >> 64n) & 0xffffn) << 16n) | ((n >> 40n) & 0xffffn) };
  }
  if (top(16) === 0x2002n) return { v4: (n >> 80n) & 0xffffffffn, toV6: (v) => (0x2002n << 112n) | (v << 80n) };
  if (top(32) === 0x20010000n) return { v4: low32 ^ 0xffffffffn };
  if (top(96) === 0xffff0000n) return { v4: low32, toV6: (v) => 0xffff000000000000n | v }; // ::ffff:0:a.b.c.d
  if (top(96) === 0n && n > 1n) return { v4: low32, toV6: (v) => v }; // ::a.b.c.d (not :: or ::1)
  return null;
}

/** The reference special block of an address (IPv4-mapped IPv6 already normalised), with the range a rule must stay inside. */
function refBlock(ip: string): RefBlock | null {
  const addr = ipaddr.parse(ip);
  const n = big(ip);
  if (addr.kind() === 'ipv4') return refV4Block(n);
  const plain = REF_V6.find(({ range }) => n >= range[0] && n <= range[1]);
  if (plain) return { name: plain.name, range: plain.range };
  const e = refEmbedded(n);
  if (!e) return null;
  const inner = refV4Block(e.v4);
  if (!inner) return null;
  // A non-contiguous embedding (Teredo, local NAT64): no CIDR rule in the pools below lies inside it.
  const range: [bigint, bigint] = e.toV6 ? [e.toV6(inner.range[0]), e.toV6(inner.range[1])] : [1n, 0n];
  return { name: `${inner.name} (embedded in IPv6)`, range };
}

/** Whether a rule's destination pattern names the special address `ip`: the IP itself or a CIDR inside its block. */
function refNames(pattern: string, ip: string, block: RefBlock): boolean {
  const slash = pattern.indexOf('/');
  if (slash < 0) return ipaddr.isValid(pattern) && big(pattern) === big(ip);
  const net = pattern.slice(0, slash);
  const bits = Number(pattern.slice(slash + 1));
  if ((ipaddr.parse(net).kind() === 'ipv4') !== (ipaddr.parse(ip).kind() === 'ipv4')) return false;
  const [lo, hi] = ipaddr.parse(net).kind() === 'ipv4' ? v4Range(net, bits) : v6Range(net, bits);
  return lo >= block.range[0] && hi <= block.range[1];
}

const canon = (text: string): IpAddress => {
  const d = parseHost(text);
  assert.equal(d.kind, 'ip', text);
  return (d as { ip: IpAddress }).ip;
};

// ------------------------------------------------------------------ the ranges themselves

test('every range named in the issue is special; its neighbours are not', () => {
  const special: Array<[string, string]> = [
    ['169.254.169.254', 'link-local'], // cloud metadata
    ['169.254.0.0', 'link-local'],
    ['169.254.255.255', 'link-local'],
    ['fe80::1', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fd00:ec2::254', 'unique-local'], // AWS metadata over IPv6
    ['fc00::1', 'unique-local'],
    ['10.0.0.0', 'private'],
    ['10.255.255.255', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.0.1', 'private'],
    ['100.64.0.0', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    // Other spellings reach the same address before the check.
    ['2852039166', 'link-local'],
    ['0xa9fea9fe', 'link-local'],
    ['0251.0376.0251.0376', 'link-local'],
    ['169.254.43518', 'link-local'],
    ['[::ffff:169.254.169.254]', 'link-local'],
    ['::ffff:a9fe:a9fe', 'link-local'],
    // IPv4 embedded in IPv6, checked by the embedded address.
    ['64:ff9b::a9fe:a9fe', 'link-local (embedded in IPv6)'],
    ['64:ff9b::10.1.2.3', 'private (embedded in IPv6)'],
    ['64:ff9b:1:a9fe:a9:fe00::', 'link-local (embedded in IPv6)'],
    ['2002:a9fe:a9fe::1', 'link-local (embedded in IPv6)'],
    ['2002:c0a8:101:1::1', 'private (embedded in IPv6)'],
    ['2001:0:4136:e378:8000:63bf:5601:5601', 'link-local (embedded in IPv6)'], // Teredo, client 169.254.169.254 (stored inverted)
    ['::ffff:0:a00:1', 'private (embedded in IPv6)'],
    ['::a9fe:a9fe', 'link-local (embedded in IPv6)'],
  ];
  for (const [text, name] of special) assert.equal(specialRange(canon(text)), name, text);
  const ordinary = [
    '8.8.8.8',
    '169.253.255.255',
    '169.255.0.0',
    '172.15.255.255',
    '172.32.0.0',
    '100.63.255.255',
    '100.128.0.0',
    '11.0.0.0',
    '223.255.255.255',
    '2001:4860:4860::8888',
    'fec0::1', // deprecated site-local: not in the list
    '64:ff9b::808:808',
    '2002:808:808::1',
    '2001:0:4136:e378:8000:63bf:f7f7:f7f7', // Teredo client 8.8.8.8
    '::ffff:0:808:808',
    // Loopback is not a special range: the built-in rules allow 127.0.0.1 and ::1 by name.
    '127.0.0.1',
    '::1',
  ];
  for (const text of ordinary) assert.equal(specialRange(canon(text)), null, text);
});

/** Addresses near the edges of every block, plain or embedded in IPv6, and random ones. */
function addressArb(): fc.Arbitrary<string> {
  const edges = [...V4_BLOCKS.flatMap(([net, bits]) => v4Range(net, bits)), 0n, 0xffffffffn];
  const v4 = fc.oneof(
    fc.tuple(fc.constantFrom(...edges), fc.integer({ min: -3, max: 3 })).map(([e, d]) => {
      const n = e + BigInt(d);
      return n < 0n ? 0n : n > 0xffffffffn ? 0xffffffffn : n;
    }),
    fc.bigInt({ min: 0n, max: 0xffffffffn }),
  );
  const v4Text = (n: bigint): string => [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
  const v6Text = (n: bigint): string => ipaddr.fromByteArray([...Array(16)].map((_, i) => Number((n >> BigInt(8 * (15 - i))) & 0xffn))).toString();
  const rest = (bits: number): fc.Arbitrary<bigint> => fc.bigInt({ min: 0n, max: (1n << BigInt(bits)) - 1n });
  return fc.oneof(
    v4.map(v4Text),
    v4.map((n) => v6Text(big('64:ff9b::') | n)),
    fc.tuple(v4, fc.constantFrom(0n, 0xffn)).map(([n, u]) => v6Text(big('64:ff9b:1::') | ((n >> 16n) << 64n) | (u << 56n) | ((n & 0xffffn) << 40n))),
    fc.tuple(v4, rest(80)).map(([n, r]) => v6Text((0x2002n << 112n) | (n << 80n) | r)),
    fc.tuple(v4, rest(64)).map(([n, r]) => v6Text((0x20010000n << 96n) | (r << 32n) | (n ^ 0xffffffffn))),
    v4.map((n) => v6Text(0xffff000000000000n | n)),
    v4.map((n) => v6Text(n)),
    fc.tuple(fc.constantFrom(...V6_BLOCKS.flatMap(([net, bits]) => v6Range(net, bits))), fc.integer({ min: -2, max: 2 })).map(([e, d]) => v6Text(e + BigInt(d) < 0n ? 0n : e + BigInt(d) > (1n << 128n) - 1n ? (1n << 128n) - 1n : e + BigInt(d))),
    rest(128).map(v6Text),
  );
}

test('property: specialRange agrees with the reference on block edges, embeddings and random addresses', () => {
  fc.assert(
    fc.property(addressArb(), (text) => {
      const ip = canon(text);
      assert.equal(specialRange(ip), refBlock(ip.toString())?.name ?? null, `${text} (${ip.toString()})`);
    }),
    { numRuns: 3000 },
  );
});

// ------------------------------------------------------------------ which rules reach them

/** A gate with only what evaluate() needs, resolving through a fixed table. */
function gateFor(w: World, dns: Record<string, string[]>, guard = true): Gate {
  return new Gate(w.state, {
    identityMode: 'credentials',
    dnsTimeoutMs: 1000,
    clock: () => NOW,
    resolver: async (h) => dns[h] ?? [],
    selfGuard: new SelfGuard(),
    guardSpecialRanges: guard,
    limiter: null as never,
    defaultLimits: { maxConnections: 0, connectionsPerSecond: 0 },
    nextDecisionId: () => 1,
    onDecision: () => undefined,
    onUpstreamFailure: () => undefined,
  });
}

function summary(e: Evaluation): string {
  if (e.kind === 'allowed') return `allow ${e.addresses.map((a) => a.toString()).join(',')}`;
  if (e.kind === 'denied') return `deny ${e.reason}`;
  return e.kind;
}

test('a wildcard, `*`, learning mode or a CIDR wider than the range never reaches a special address; a rule naming it does', async () => {
  const dns = { 'meta.corp.test': ['169.254.169.254'], 'db.corp.test': ['10.1.2.3'], 'pub.corp.test': ['8.8.8.8'], 'v6.corp.test': ['fd00:ec2::254'] };
  const cases: Array<[RuleSpec[], string, string, string]> = [
    // [session rules, destination, expected, why]
    [[allow('*')], '169.254.169.254', 'deny address_guarded', '`*` on an IP literal'],
    [[allow('*')], 'meta.corp.test', 'deny address_guarded', '`*` on a hostname resolving there'],
    [[allow('*.corp.test')], 'meta.corp.test', 'deny address_guarded', '`*.x`'],
    [[allow('**.corp.test')], 'db.corp.test', 'deny address_guarded', '`**.x`'],
    [[allow('0.0.0.0/0')], '169.254.169.254', 'deny address_guarded', '0.0.0.0/0 is a wildcard'],
    [[allow('0.0.0.0/1')], '10.1.2.3', 'deny address_guarded', 'a CIDR wider than 10/8'],
    [[allow('169.254.0.0/15')], '169.254.169.254', 'deny address_guarded', 'a CIDR wider than 169.254/16'],
    [[allow('::/0')], 'fd00:ec2::254', 'deny address_guarded', '::/0'],
    [[allow('::/0')], '64:ff9b::a9fe:a9fe', 'deny address_guarded', '::/0 over NAT64'],
    [[allow('64:ff9b::/96')], '64:ff9b::a9fe:a9fe', 'deny address_guarded', 'all of NAT64 is not the metadata address'],
    [[allow('*.corp.test'), allow('0.0.0.0/0')], 'meta.corp.test', 'deny address_guarded', 'wildcard host + 0.0.0.0/0 address rule'],
    [[allow('169.254.169.254')], '169.254.169.254', 'allow 169.254.169.254', 'the exact address'],
    [[allow('169.254.0.0/16')], '169.254.169.254', 'allow 169.254.169.254', 'the range itself'],
    [[allow('10.1.0.0/16')], '10.1.2.3', 'allow 10.1.2.3', 'a network inside the range'],
    [[allow('fd00:ec2::254')], 'fd00:ec2::254', 'allow fd00:ec2::254', 'the exact IPv6 address'],
    [[allow('fd00::/8')], 'fd00:ec2::254', 'allow fd00:ec2::254', 'an IPv6 network inside fc00::/7'],
    [[allow('64:ff9b::a9fe:a9fe')], '64:ff9b::a9fe:a9fe', 'allow 64:ff9b::a9fe:a9fe', 'the exact NAT64 address'],
    [[allow('meta.corp.test')], 'meta.corp.test', 'allow 169.254.169.254', 'the exact hostname'],
    [[allow('*.corp.test'), allow('10.1.2.3')], 'db.corp.test', 'allow 10.1.2.3', 'wildcard host + an address rule naming it'],
    [[allow('*.corp.test'), allow('10.0.0.0/8')], 'db.corp.test', 'allow 10.1.2.3', 'wildcard host + a CIDR inside the range'],
    [[allow('*.corp.test')], 'pub.corp.test', 'allow 8.8.8.8', 'a public address through a wildcard'],
    [[allow('*')], '8.8.8.8', 'allow 8.8.8.8', 'a public literal through `*`'],
    [[allow('meta.corp.test'), deny('169.254.169.254')], 'meta.corp.test', 'deny address_denied', 'an address deny still wins'],
  ];
  for (const [rules, dest, expected, why] of cases) {
    const w = new World();
    w.builtins();
    w.session('web', rules);
    const e = await gateFor(w, dns).evaluate('web', dest, 80);
    assert.equal(summary(e), expected, `${why}: ${dest} with ${rules.map((r) => `${r.action} ${r.dest}`).join(', ')}`);
    if (e.kind === 'denied' && e.reason === 'address_guarded') {
      assert.match(e.failure.detail, /is in the [a-z-]+( \(embedded in IPv6\))? range: only a rule naming that address, a network inside that range, or the exact hostname reaches it/, why);
    }
  }
});

test('learning mode never reaches a special address, not even by hostname; a global rule naming it still does', async () => {
  const dns = { 'meta.corp.test': ['169.254.169.254'], 'pub.corp.test': ['8.8.8.8'] };
  const w = new World();
  w.builtins();
  w.session('web', [], { allowAll: true });
  const g = gateFor(w, dns);
  assert.equal(summary(await g.evaluate('web', 'meta.corp.test', 80)), 'deny address_guarded');
  assert.equal(summary(await g.evaluate('web', '10.0.0.1', 80)), 'deny address_guarded');
  assert.equal(summary(await g.evaluate('web', 'pub.corp.test', 80)), 'allow 8.8.8.8');
  w.global(allow('169.254.169.254', { container: 'web' }));
  assert.equal(summary(await g.evaluate('web', '169.254.169.254', 80)), 'allow 169.254.169.254');
});

test('guard_special_ranges: false lets wildcards and learning mode through (the documented opt-out)', async () => {
  const w = new World();
  w.session('web', [allow('*')]);
  assert.equal(summary(await gateFor(w, { 'meta.corp.test': ['169.254.169.254'] }, false).evaluate('web', 'meta.corp.test', 80)), 'allow 169.254.169.254');
});

test('live revocation re-applies the guard: a tunnel opened by an exact rule ends when only a wildcard is left', () => {
  const w = new World();
  w.builtins();
  const dest = parseHost('db.corp.test');
  const dialled = canon('10.1.2.3');
  w.session('web', [allow('db.corp.test')], { id: 'one' });
  assert.equal(recheck(w.state, 'web', dest, dialled, 5432, NOW).action, 'allow');
  // The session is re-posted with a wildcard instead: the name still resolves to 10.1.2.3.
  w.session('web', [allow('*.corp.test')], { id: 'one' });
  assert.equal(recheck(w.state, 'web', dest, dialled, 5432, NOW).action, 'deny');
  assert.equal(recheck(w.state, 'web', parseHost('10.1.2.3'), dialled, 5432, NOW).action, 'deny');
  // The revocation says why: the range, not "no rule allows it".
  const reasons: string[] = [];
  const open = [{ id: 1, admission: { container: 'web', destination: dest, port: 5432 }, address: '10.1.2.3', since: NOW }];
  new Revoker(w.state, { open: () => open, close: () => true }, () => NOW, (_c, why) => reasons.push(why)).sweep();
  assert.equal(reasons.length, 1);
  assert.match(reasons[0]!, /10\.1\.2\.3 is in the private range/);
  // With the guard switched off, the wildcard keeps it open, as admission would have allowed it.
  w.state.guardSpecialRanges = false;
  assert.equal(recheck(w.state, 'web', dest, dialled, 5432, NOW).action, 'allow');
});

// ------------------------------------------------------------------ property: guard vs reference

const RULE_DESTS = [
  '*',
  '*.corp.test',
  '**.corp.test',
  'db.corp.test',
  'meta.corp.test',
  '169.254.169.254',
  '169.254.0.0/16',
  '169.254.0.0/15',
  '10.0.0.0/8',
  '10.1.0.0/16',
  '0.0.0.0/0',
  '0.0.0.0/1',
  '8.8.8.8',
  '8.0.0.0/8',
  '100.64.0.0/10',
  '::/0',
  'fd00::/8',
  'fc00::/7',
  'fd00:ec2::254',
  'fe80::/10',
  '64:ff9b::/96',
  '64:ff9b::a9fe:a9fe',
  '2002::/16',
  '2001:4860::/32',
  '240.0.0.0/4',
] as const;
const QUERY_IPS = [
  '169.254.169.254',
  '10.1.2.3',
  '10.200.0.1',
  '8.8.8.8',
  '100.64.0.1',
  '192.168.1.1',
  'fd00:ec2::254',
  'fe80::1',
  '64:ff9b::a9fe:a9fe',
  '64:ff9b::808:808',
  '2002:a01:203::1',
  '2001:4860::8888',
  '2001:0:4136:e378:8000:63bf:5601:5601',
  '255.255.255.255',
  '241.0.0.1',
] as const;
const QUERY_HOSTS = ['db.corp.test', 'meta.corp.test', 'x.corp.test', 'corp.test', 'public.example'] as const;

test('property: admission allows a special address exactly when the reference guard does', async () => {
  const rule = fc.record({
    action: fc.constantFrom<'allow' | 'deny'>('allow', 'allow', 'allow', 'deny'),
    dest: fc.constantFrom(...RULE_DESTS),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        globals: fc.array(rule, { maxLength: 2 }),
        session: fc.array(rule, { maxLength: 5 }),
        learning: fc.boolean(),
        queries: fc.array(fc.record({ dest: fc.constantFrom(...QUERY_HOSTS, ...QUERY_IPS), resolved: fc.constantFrom(...QUERY_IPS) }), { minLength: 1, maxLength: 6 }),
      }),
      async (s) => {
        const w = new World();
        w.builtins();
        for (const r of s.globals) w.global({ action: r.action, dest: r.dest });
        w.session('web', s.session.map((r) => ({ action: r.action, dest: r.dest })), { allowAll: s.learning });
        for (const q of s.queries) {
          const gate = gateFor(w, { [q.dest]: [q.resolved] });
          const e = await gate.evaluate('web', q.dest, 443);
          const dest = parseHost(q.dest);
          const subject = subjectFor(w.state, 'web', NOW);
          const v = decide(w.state, subject, dest, 443, NOW);
          const ip = dest.kind === 'ip' ? dest.ip : canon(q.resolved);
          const what = `${q.dest}${dest.kind === 'host' ? ` -> ${q.resolved}` : ''} (learning=${s.learning}, rules: ${JSON.stringify(s)})`;
          if (v.action === 'deny') {
            assert.equal(e.kind, 'denied', what);
            continue;
          }
          const byAddress = addressOutcome(w.state, subject, ip, 443, NOW);
          if (dest.kind === 'host' && byAddress?.action === 'deny') {
            assert.equal(summary(e), 'deny address_denied', what);
            continue;
          }
          const block = refBlock(ip.toString());
          let guarded = false;
          if (block) {
            if (v.reason === 'learning' || !v.rule) guarded = true;
            else if (dest.kind === 'ip') guarded = !refNames(v.rule.destinationPattern, ip.toString(), block);
            else if (/[*/:]|^\d+\.\d+\.\d+\.\d+$/.test(v.rule.destinationPattern)) {
              guarded = !(byAddress?.action === 'allow' && byAddress.rule && refNames(byAddress.rule.destinationPattern, ip.toString(), block));
            }
          }
          assert.equal(summary(e), guarded ? 'deny address_guarded' : `allow ${ip.toString()}`, what);
        }
      },
    ),
    { numRuns: 400 },
  );
});
