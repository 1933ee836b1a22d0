// Inside a layer the most specific rule wins, through the real proxy: container, then
// destination, then port; wildcard apex behaviour; IP/CIDR rules for IP literals; and
// address rules applied to what a hostname resolves to.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin, startTestSluice, type Origin, type TestSluice } from '../helpers/harness.js';
import { addRule, expectBlocked, expectReach, viaProxy, originUrl } from '../helpers/api-helpers.js';

let s: TestSluice;
let o2: Origin;
let o3: Origin;
let o4: Origin;

before(async () => {
  [o2, o3, o4] = await Promise.all([startOrigin('127.0.0.2'), startOrigin('127.0.0.3'), startOrigin('127.0.0.4')]);
  s = await startTestSluice({
    resolver: async (host) => {
      if (host === 'three.example.test') return ['127.0.0.3'];
      // Two answers: the first is denied in the tests below, the second is the origin.
      if (host === 'multi.example.test') return ['127.0.0.3', '127.0.0.2'];
      if (host === 'example.test' || host.endsWith('.example.test') || host === 'badexample.test') return ['127.0.0.2'];
      return [];
    },
  });
});
after(async () => {
  await s.close(true);
  await Promise.all([o2.close(), o3.close(), o4.close()]);
});

type Rule = { destination_pattern: string; port_pattern?: string; action?: 'allow' | 'deny' };

/** A session for a fresh container with these rules; returns its proxy URL and rule ids by "dest port action". */
async function session(container: string, rules: Rule[]): Promise<{ proxy: string; id: (dest: string, ports?: string) => number }> {
  const created = await s.createSession({ session_id: container, container_name: container, network_rules: rules });
  const stored = (await s.api('GET', `/api/sessions/${container}`)).body.rules as Array<{ id: number; destination_pattern: string; port_pattern: string }>;
  return {
    proxy: created.proxy.http,
    id: (dest, ports) => {
      const r = stored.find((x) => x.destination_pattern === dest && (ports === undefined || x.port_pattern === ports));
      assert.ok(r, `no stored rule ${dest} ${ports ?? ''}`);
      return r.id;
    },
  };
}

// ---- container ------------------------------------------------------------------------

test('container: exact name beats glob beats *', async () => {
  const star = await addRule(s, { destination_pattern: '127.0.0.2', action: 'deny', notes: 'everyone' });
  const glob = await addRule(s, { container_pattern: 'spc-*', destination_pattern: '127.0.0.2', action: 'allow' });
  const exact = await addRule(s, { container_pattern: 'spc-exact', destination_pattern: '127.0.0.2', action: 'deny' });
  const exactProxy = (await s.createSession({ container_name: 'spc-exact' })).proxy.http;
  const globProxy = (await s.createSession({ container_name: 'spc-other' })).proxy.http;
  const plainProxy = (await s.createSession({ container_name: 'unrelated' })).proxy.http;
  await expectBlocked(exactProxy, o2, { layer: 'global', ruleId: exact });
  await expectReach(globProxy, o2);
  await expectBlocked(plainProxy, o2, { layer: 'global', ruleId: star });
  for (const id of [star, glob, exact]) await s.api('DELETE', `/api/rules/${id}`);
});

test('container is compared before destination, destination before port', async () => {
  // Exact container with `*` destination beats `*` container with an exact destination.
  const byDest = await addRule(s, { destination_pattern: '127.0.0.2', port_pattern: String(o2.port), action: 'deny' });
  const byContainer = await addRule(s, { container_pattern: 'order-c', destination_pattern: '*', action: 'allow' });
  const proxy = (await s.createSession({ container_name: 'order-c' })).proxy.http;
  await expectReach(proxy, o2);
  const other = (await s.createSession({ container_name: 'order-x' })).proxy.http;
  await expectBlocked(other, o2, { layer: 'global', ruleId: byDest });
  for (const id of [byDest, byContainer]) await s.api('DELETE', `/api/rules/${id}`);

  // An exact destination on any port beats a CIDR on the exact port.
  const sess = await session('order-d', [
    { destination_pattern: '127.0.0.2', port_pattern: '*', action: 'allow' },
    { destination_pattern: '127.0.0.0/8', port_pattern: String(o2.port), action: 'deny' },
  ]);
  await expectReach(sess.proxy, o2);
});

// ---- destination ----------------------------------------------------------------------

test('destination: exact host beats *.suffix beats `*`', async () => {
  const sess = await session('dst-host', [
    { destination_pattern: '*', action: 'deny' },
    { destination_pattern: '*.example.test', action: 'allow' },
    { destination_pattern: 'bad.example.test', action: 'deny' },
  ]);
  await expectReach(sess.proxy, o2, 'good.example.test');
  await expectBlocked(sess.proxy, o2, { layer: 'session', ruleId: sess.id('bad.example.test') }, 'bad.example.test');
  await expectBlocked(sess.proxy, o2, { layer: 'session', ruleId: sess.id('*') }, 'example.test', 'the apex is not covered by *.');
});

test('destination: a longer wildcard suffix beats a shorter one', async () => {
  const sess = await session('dst-suffix', [
    { destination_pattern: '**.example.test', action: 'deny' },
    { destination_pattern: '*.sub.example.test', action: 'allow' },
    { destination_pattern: '*.deep.sub.example.test', action: 'deny' },
  ]);
  await expectReach(sess.proxy, o2, 'a.sub.example.test');
  await expectReach(sess.proxy, o2, 'x.y.sub.example.test', 'any depth');
  await expectBlocked(sess.proxy, o2, { layer: 'session', ruleId: sess.id('*.deep.sub.example.test') }, 'a.deep.sub.example.test');
  await expectBlocked(sess.proxy, o2, { layer: 'session', ruleId: sess.id('**.example.test') }, 'sub.example.test', 'apex of *.sub is not covered by it');
  await expectBlocked(sess.proxy, o2, { layer: 'session', ruleId: sess.id('**.example.test') }, 'other.example.test');
});

test('wildcards: *.x covers subdomains at any depth but not x; **.x covers x too; neither crosses a label boundary', async () => {
  const one = await session('wild-1', [{ destination_pattern: '*.example.test' }]);
  await expectReach(one.proxy, o2, 'a.example.test');
  await expectReach(one.proxy, o2, 'a.b.c.example.test');
  await expectReach(one.proxy, o2, 'A.Example.Test.', 'names are compared lowercased, without the root dot');
  await expectBlocked(one.proxy, o2, null, 'example.test');
  await expectBlocked(one.proxy, o2, null, 'badexample.test');

  const two = await session('wild-2', [{ destination_pattern: '**.example.test' }]);
  await expectReach(two.proxy, o2, 'example.test');
  await expectReach(two.proxy, o2, 'a.example.test');
  await expectReach(two.proxy, o2, 'a.b.example.test');
  await expectBlocked(two.proxy, o2, null, 'badexample.test');
});

test('destination: IP rules: exact IP beats a longer CIDR beats a shorter CIDR beats `*`', async () => {
  const sess = await session('dst-ip', [
    { destination_pattern: '*', action: 'allow' },
    { destination_pattern: '127.0.0.0/16', action: 'deny' },
    { destination_pattern: '127.0.0.0/30', action: 'allow' },
    { destination_pattern: '127.0.0.3', action: 'deny' },
  ]);
  await expectReach(sess.proxy, o2, undefined, '/30 beats /16');
  await expectBlocked(sess.proxy, o3, { layer: 'session', ruleId: sess.id('127.0.0.3') });
  await expectBlocked(sess.proxy, o4, { layer: 'session', ruleId: sess.id('127.0.0.0/16') }, undefined, '.4 is outside the /30');
});

test('IP literals match IP/CIDR rules (in any spelling), not host rules; hostnames match host rules, not IP rules', async () => {
  const byIp = await session('lit-ip', [{ destination_pattern: '127.0.0.0/30' }]);
  await expectReach(byIp.proxy, o2);
  await expectReach(byIp.proxy, o2, '::ffff:127.0.0.2', 'an IPv4-mapped IPv6 literal is the IPv4 address');
  await expectBlocked(byIp.proxy, o4, null);
  await expectBlocked(byIp.proxy, o2, null, 'a.example.test', 'a hostname is not matched by an IP rule, even if it resolves into it');

  const byHost = await session('lit-host', [{ destination_pattern: 'a.example.test' }]);
  await expectReach(byHost.proxy, o2, 'a.example.test');
  await expectBlocked(byHost.proxy, o2, null, undefined, 'an IP literal is not matched by a host rule');

  const denyMapped = await session('lit-deny', [
    { destination_pattern: '*', action: 'allow' },
    { destination_pattern: '::ffff:127.0.0.2', action: 'deny' },
  ]);
  await expectBlocked(denyMapped.proxy, o2, { layer: 'session', ruleId: denyMapped.id('127.0.0.2') }, undefined, 'the rule was stored as 127.0.0.2');
  await expectBlocked(denyMapped.proxy, o2, { layer: 'session', ruleId: denyMapped.id('127.0.0.2') }, '::ffff:7f00:2');
});

// ---- ports ----------------------------------------------------------------------------

test('ports: exact, list and range patterns match only their ports', async () => {
  const p = o2.port;
  const cases: Array<[string, boolean]> = [
    [String(p), true],
    [String(p + 1), false],
    [`1,${p}`, true],
    [`1,2,${p + 1}`, false],
    [`${p}-${p + 10}`, true],
    [`${p - 10}-${p}`, true],
    [`${p + 1}-${p + 10}`, false],
    [`1-${p - 1},${p + 1}-65535`, false],
    ['*', true],
  ];
  let n = 0;
  for (const [ports, reach] of cases) {
    const sess = await session(`port-${n++}`, [{ destination_pattern: '127.0.0.2', port_pattern: ports }]);
    if (reach) await expectReach(sess.proxy, o2, undefined, `port_pattern ${ports}`);
    else await expectBlocked(sess.proxy, o2, null, undefined, `port_pattern ${ports}`);
  }
});

test('ports: exact beats list/range beats *; a list and a range are equally specific (deny wins)', async () => {
  const p = o2.port;
  const a = await session('prt-a', [
    { destination_pattern: '127.0.0.2', port_pattern: '*', action: 'allow' },
    { destination_pattern: '127.0.0.2', port_pattern: `1,${p}`, action: 'deny' },
  ]);
  await expectBlocked(a.proxy, o2, { layer: 'session', ruleId: a.id('127.0.0.2', `1,${p}`) }, undefined, 'list beats *');

  const b = await session('prt-b', [
    { destination_pattern: '127.0.0.2', port_pattern: `${p - 5}-${p + 5}`, action: 'deny' },
    { destination_pattern: '127.0.0.2', port_pattern: String(p), action: 'allow' },
  ]);
  await expectReach(b.proxy, o2, undefined, 'exact beats range');

  const c = await session('prt-c', [
    { destination_pattern: '127.0.0.2', port_pattern: '*', action: 'deny' },
    { destination_pattern: '127.0.0.2', port_pattern: `${p}-${p + 5}`, action: 'allow' },
  ]);
  await expectReach(c.proxy, o2, undefined, 'range beats *');

  const d = await session('prt-d', [
    { destination_pattern: '127.0.0.2', port_pattern: `${p},1`, action: 'allow' },
    { destination_pattern: '127.0.0.2', port_pattern: `${p}-${p + 5}`, action: 'deny' },
  ]);
  await expectBlocked(d.proxy, o2, { layer: 'session', ruleId: d.id('127.0.0.2', `${p}-${p + 5}`) }, undefined, 'list vs range tie: deny');
});

// ---- resolved addresses ---------------------------------------------------------------

test('a hostname allowed by a host rule but resolving into a denied CIDR is refused (session and global denies)', async () => {
  const sess = await session('res-s', [
    { destination_pattern: '**.example.test', action: 'allow' },
    { destination_pattern: '127.0.0.2/31', action: 'deny' },
  ]);
  const seen = o2.requests.length;
  const r = await expectBlocked(sess.proxy, o2, { layer: 'session', ruleId: sess.id('127.0.0.2/31') }, 'api.example.test');
  assert.match(r.body, /api\.example\.test resolves to 127\.0\.0\.2/);
  assert.equal(o2.requests.length, seen, 'the origin was never contacted');

  const open = await session('res-g', [{ destination_pattern: 'api.example.test' }]);
  await expectReach(open.proxy, o2, 'api.example.test');
  const g = await addRule(s, { container_pattern: 'res-*', destination_pattern: '127.0.0.0/24', port_pattern: String(o2.port), action: 'deny' });
  await expectBlocked(open.proxy, o2, { layer: 'global', ruleId: g }, 'api.example.test');
  // A deny for another container does not apply to this one.
  await s.api('PATCH', `/api/rules/${g}`, { container_pattern: 'someone-else' });
  await expectReach(open.proxy, o2, 'api.example.test');
  await s.api('DELETE', `/api/rules/${g}`);
});

test('denied addresses are skipped: a hostname still works through an address that is not denied', async () => {
  const sess = await session('res-multi', [
    { destination_pattern: 'multi.example.test' },
    { destination_pattern: '127.0.0.3', action: 'deny' },
  ]);
  await expectReach(sess.proxy, o2, 'multi.example.test');
  const all = await session('res-multi-all', [
    { destination_pattern: 'multi.example.test' },
    { destination_pattern: '127.0.0.2/31', action: 'deny' },
  ]);
  const r = await viaProxy(all.proxy, originUrl(o2, 'multi.example.test'));
  assert.equal(r.status, 403, r.body);
  assert.equal(r.layer, 'session');
  assert.equal(r.ruleId, all.id('127.0.0.2/31'));
});

