// The DNS cache on its own: an injected clock, and resolvers that count their calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DnsCache, cachedResolver, type DnsCacheOptions } from '../../src/proxy/dns-cache.js';
import { DnsError, resolveHost, type HostResolver } from '../../src/proxy/dns.js';

class Clock {
  now = 1_000_000;
  readonly fn = (): number => this.now;
}

const nx = (name: string): Error => Object.assign(new Error(`no such host ${name}`), { code: 'ENOTFOUND' });

/** A resolver answering from `table` (missing names fail like NXDOMAIN), counting calls per name. */
function counting(table: Record<string, string[]>): { fn: HostResolver; calls: string[]; count: (name: string) => number } {
  const calls: string[] = [];
  const fn: HostResolver = async (name) => {
    calls.push(name);
    const found = table[name];
    if (found === undefined) throw nx(name);
    return found;
  };
  return { fn, calls, count: (name) => calls.filter((c) => c === name).length };
}

/** A resolver whose every call waits until the test settles it. */
function manual(): { fn: HostResolver; pending: Array<{ name: string; answer: (a: string[]) => void; fail: (e: unknown) => void }> } {
  const pending: Array<{ name: string; answer: (a: string[]) => void; fail: (e: unknown) => void }> = [];
  const fn: HostResolver = (name) => new Promise((answer, fail) => pending.push({ name, answer, fail }));
  return { fn, pending };
}

function cacheOf(resolver: HostResolver, clock: Clock, opts: Partial<DnsCacheOptions> = {}): DnsCache {
  return new DnsCache(resolver, { ttlMs: 30_000, negativeTtlMs: 5_000, maxEntries: 100, inFlightMs: 5_000, clock: clock.fn, ...opts });
}

/** Settles every pending promise callback (a few microtask turns are not enough under load). */
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('an answer is reused for ttlMs and asked again from then on', async () => {
  const clock = new Clock();
  const r = counting({ 'api.test': ['127.0.0.2', '::1'] });
  const cache = cacheOf(r.fn, clock);
  assert.deepEqual(await cache.resolve('api.test'), ['127.0.0.2', '::1']);
  assert.deepEqual(await cache.resolve('api.test'), ['127.0.0.2', '::1']);
  clock.now += 29_999;
  assert.deepEqual(await cache.resolve('api.test'), ['127.0.0.2', '::1']);
  assert.equal(r.count('api.test'), 1, 'one lookup inside the TTL');
  clock.now += 1;
  await cache.resolve('api.test');
  assert.equal(r.count('api.test'), 2, 'asked again once the TTL is over');
  await cache.resolve('api.test');
  assert.equal(r.count('api.test'), 2, 'and that answer is cached in turn');
  assert.deepEqual(cache.stats, { hits: 3, shared: 0, misses: 2 });
});

test('the TTL counts from when the answer arrived, not from when it was asked', async () => {
  const clock = new Clock();
  const m = manual();
  const cache = cacheOf(m.fn, clock, { ttlMs: 1_000, inFlightMs: 10_000 });
  const first = cache.resolve('slow.test');
  clock.now += 900;
  m.pending[0]!.answer(['127.0.0.2']);
  await first;
  clock.now += 999;
  void cache.resolve('slow.test');
  assert.equal(m.pending.length, 1, 'still fresh 999 ms after the answer');
  clock.now += 1;
  void cache.resolve('slow.test');
  assert.equal(m.pending.length, 2);
});

test('NXDOMAIN is cached for negativeTtlMs and replayed with the same code and text', async () => {
  const clock = new Clock();
  const r = counting({});
  const cache = cacheOf(r.fn, clock);
  for (let i = 0; i < 3; i++) {
    await assert.rejects(resolveHost(cache.resolve, 'gone.test', 1000), (err: unknown) => {
      assert.ok(err instanceof DnsError);
      assert.equal(err.kind, 'dns_error');
      assert.equal(err.message, 'cannot resolve gone.test (ENOTFOUND)');
      return true;
    });
  }
  assert.equal(r.count('gone.test'), 1);
  clock.now += 4_999;
  await assert.rejects(cache.resolve('gone.test'), { code: 'ENOTFOUND' });
  assert.equal(r.count('gone.test'), 1);
  clock.now += 1;
  await assert.rejects(cache.resolve('gone.test'), { code: 'ENOTFOUND' });
  assert.equal(r.count('gone.test'), 2, 'the negative TTL is shorter than the positive one');
});

test('answers with no usable address are failures: cached for the negative TTL only', async () => {
  const clock = new Clock();
  const r = counting({ 'empty.test': [], 'junk.test': ['not-an-address'] });
  const cache = cacheOf(r.fn, clock);
  for (const name of ['empty.test', 'junk.test']) {
    await assert.rejects(resolveHost(cache.resolve, name, 1000), /has no addresses/);
    await assert.rejects(resolveHost(cache.resolve, name, 1000), /has no addresses/);
    assert.equal(r.count(name), 1, name);
  }
  clock.now += 5_000;
  await assert.rejects(resolveHost(cache.resolve, 'junk.test', 1000), /has no addresses/);
  assert.equal(r.count('junk.test'), 2);
});

test('negativeTtlMs 0: failures are never cached (answers still are)', async () => {
  const clock = new Clock();
  const r = counting({ 'api.test': ['127.0.0.2'] });
  const cache = cacheOf(r.fn, clock, { negativeTtlMs: 0 });
  for (let i = 0; i < 3; i++) await assert.rejects(cache.resolve('gone.test'));
  await cache.resolve('api.test');
  await cache.resolve('api.test');
  assert.equal(r.count('gone.test'), 3);
  assert.equal(r.count('api.test'), 1);
  assert.equal(cache.size, 1);
});

test('transient failures (EAI_AGAIN, SERVFAIL, no code) are not cached', async () => {
  const clock = new Clock();
  let calls = 0;
  const errors = [Object.assign(new Error('temporary'), { code: 'EAI_AGAIN' }), Object.assign(new Error('servfail'), { code: 'ESERVFAIL' }), new Error('boom')];
  const cache = cacheOf(async () => {
    throw errors[calls++ % errors.length];
  }, clock);
  for (let i = 0; i < 6; i++) await assert.rejects(cache.resolve('flaky.test'));
  assert.equal(calls, 6);
  assert.equal(cache.size, 0);
});

test('a timeout is not cached: the next request after the DNS timeout asks again', async () => {
  const clock = new Clock();
  const m = manual();
  const cache = cacheOf(m.fn, clock, { inFlightMs: 50 });
  await assert.rejects(resolveHost(cache.resolve, 'hung.test', 50), (err: unknown) => err instanceof DnsError && err.kind === 'dns_timeout');
  assert.equal(cache.size, 0, 'nothing stored for a timeout');
  clock.now += 50;
  await assert.rejects(resolveHost(cache.resolve, 'hung.test', 50), (err: unknown) => err instanceof DnsError && err.kind === 'dns_timeout');
  assert.equal(m.pending.length, 2, 'a lookup older than the DNS timeout is not joined');
});

test('lookups that never answer are forgotten once older than the DNS timeout', async () => {
  const clock = new Clock();
  const m = manual();
  const cache = cacheOf(m.fn, clock, { maxEntries: 2, inFlightMs: 50 });
  void cache.resolve('a.test');
  void cache.resolve('b.test');
  clock.now += 50;
  // a and b are dropped from the in-flight table, so c fits in it and is shared.
  void cache.resolve('c.test');
  void cache.resolve('c.test');
  assert.deepEqual(
    m.pending.map((p) => p.name),
    ['a.test', 'b.test', 'c.test'],
  );
});

test('concurrent lookups of one name share one resolution, answer or failure', async () => {
  const clock = new Clock();
  const m = manual();
  const cache = cacheOf(m.fn, clock);
  const answers = Array.from({ length: 20 }, () => cache.resolve('api.test'));
  const failures = Array.from({ length: 5 }, () => cache.resolve('gone.test'));
  assert.deepEqual(
    m.pending.map((p) => p.name),
    ['api.test', 'gone.test'],
  );
  m.pending[0]!.answer(['127.0.0.2']);
  m.pending[1]!.fail(nx('gone.test'));
  for (const a of await Promise.all(answers)) assert.deepEqual(a, ['127.0.0.2']);
  for (const f of await Promise.allSettled(failures)) assert.equal(f.status, 'rejected');
  assert.deepEqual(cache.stats, { hits: 0, shared: 23, misses: 2 });
  await cache.resolve('api.test');
  assert.equal(m.pending.length, 2, 'and the shared answer is cached');
});

test('each caller gets its own copy: changing one cannot change what the next is given', async () => {
  const clock = new Clock();
  const m = manual();
  const cache = cacheOf(m.fn, clock);
  const a = cache.resolve('api.test');
  const b = cache.resolve('api.test');
  m.pending[0]!.answer(['127.0.0.2']);
  (await a).push('10.0.0.1');
  (await b)[0] = '169.254.169.254';
  const c = await cache.resolve('api.test');
  c.length = 0;
  assert.deepEqual(await cache.resolve('api.test'), ['127.0.0.2']);
});

test('bounded: the least recently used name is dropped, and a flood of names stays within the cap', async () => {
  const clock = new Clock();
  const r = counting({ 'a.test': ['127.0.0.2'], 'b.test': ['127.0.0.3'], 'c.test': ['127.0.0.4'], 'd.test': ['127.0.0.5'] });
  const cache = cacheOf(r.fn, clock, { maxEntries: 3 });
  for (const n of ['a.test', 'b.test', 'c.test']) await cache.resolve(n);
  await cache.resolve('a.test'); // a is now the most recently used; b the least
  await cache.resolve('d.test');
  assert.equal(cache.size, 3);
  await cache.resolve('a.test');
  await cache.resolve('c.test');
  await cache.resolve('d.test');
  assert.deepEqual([r.count('a.test'), r.count('c.test'), r.count('d.test')], [1, 1, 1], 'kept');
  await cache.resolve('b.test');
  assert.equal(r.count('b.test'), 2, 'b was evicted');

  const flood = cacheOf(async (name) => (name.startsWith('x') ? ['127.0.0.2'] : Promise.reject(nx(name))), clock, { maxEntries: 50 });
  for (let i = 0; i < 2_000; i++) {
    await flood.resolve(`x${i}.random.test`).catch(() => undefined);
    await flood.resolve(`y${i}.random.test`).catch(() => undefined);
    assert.ok(flood.size <= 50, `size ${flood.size} after ${i}`);
  }
  assert.equal(flood.size, 50);
});

test('a late answer from a superseded lookup does not replace a newer one', async () => {
  const clock = new Clock();
  const m = manual();
  const cache = cacheOf(m.fn, clock, { inFlightMs: 100 });
  const old = cache.resolve('flip.test');
  clock.now += 100;
  const fresh = cache.resolve('flip.test');
  assert.equal(m.pending.length, 2);
  m.pending[1]!.answer(['127.0.0.3']);
  await fresh;
  m.pending[0]!.answer(['127.0.0.2']);
  assert.deepEqual(await old, ['127.0.0.2'], 'its own caller still gets it');
  assert.deepEqual(await cache.resolve('flip.test'), ['127.0.0.3']);
  assert.equal(m.pending.length, 2);
});

test('a resolver that throws synchronously is a rejected lookup, and is not shared afterwards', async () => {
  const clock = new Clock();
  let calls = 0;
  const cache = cacheOf(() => {
    calls++;
    throw Object.assign(new Error('sync'), { code: 'EAI_AGAIN' });
  }, clock);
  await assert.rejects(cache.resolve('x.test'), /sync/);
  await tick();
  await assert.rejects(cache.resolve('x.test'), /sync/);
  assert.equal(calls, 2);
});

test('flights past the cap are not shared (a resolver that never answers cannot grow the table)', async () => {
  const clock = new Clock();
  const m = manual();
  const cache = cacheOf(m.fn, clock, { maxEntries: 2 });
  void cache.resolve('a.test');
  void cache.resolve('b.test');
  void cache.resolve('c.test');
  void cache.resolve('c.test');
  void cache.resolve('a.test');
  assert.deepEqual(
    m.pending.map((p) => p.name),
    ['a.test', 'b.test', 'c.test', 'c.test'],
  );
});

test('cachedResolver: cache_ttl_ms 0 hands back the resolver itself', async () => {
  const clock = new Clock();
  const r = counting({ 'api.test': ['127.0.0.2'] });
  const off = cachedResolver(r.fn, { cache_ttl_ms: 0, negative_ttl_ms: 5_000, cache_size: 10 }, 5_000, clock.fn);
  assert.equal(off.resolver, r.fn);
  assert.equal(off.cache, null);
  const on = cachedResolver(r.fn, { cache_ttl_ms: 1_000, negative_ttl_ms: 5_000, cache_size: 10 }, 5_000, clock.fn);
  await on.resolver('api.test');
  await on.resolver('api.test');
  assert.equal(r.count('api.test'), 1);
  assert.equal(on.cache?.size, 1);
});
