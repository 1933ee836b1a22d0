// Parsed rule patterns are kept by their text (see src/control/pattern-cache.ts): a text
// is parsed once while it stays in the cache, never more than `capacity` parses are kept,
// and an invalid pattern is never kept (it fails again, with the same error, every time).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ParseCache } from '../../src/control/pattern-cache.js';
import { prepareSessionRules } from '../../src/control/session-rules.js';
import { compileRule, type RuleRecord } from '../../src/policy/rules.js';
import { parseDestinationPattern, PatternError } from '../../src/policy/patterns.js';

test('a text is parsed once while cached; the cache never holds more than its capacity, and texts in use stay', () => {
  const parsed: string[] = [];
  const cache = new ParseCache((text: string) => {
    parsed.push(text);
    return { canonical: text.toLowerCase() };
  }, 4);
  const a = cache.get('A');
  assert.equal(cache.get('A'), a, 'the same parse is handed out again');
  cache.get('B');
  cache.get('A');
  cache.get('B');
  assert.deepEqual(parsed, ['A', 'B']);
  // A stream of new texts, with one text used all along: only the stream is parsed.
  for (let i = 0; i < 1000; i++) {
    assert.equal(cache.get('A'), a);
    cache.get(`x${i}`);
    assert.ok(cache.size <= 4, `size ${cache.size}`);
  }
  assert.equal(parsed.length, 2 + 1000);
  assert.equal(parsed.filter((t) => t === 'A').length, 1);
  // Texts not used for a while are dropped, and parsed again when they come back.
  cache.get('B');
  assert.equal(parsed.at(-1), 'B');
});

test('an invalid pattern is never cached: each attempt fails with the parser error', () => {
  let calls = 0;
  const cache = new ParseCache((text: string) => {
    calls++;
    return parseDestinationPattern(text);
  }, 10);
  for (let i = 0; i < 3; i++) assert.throws(() => cache.get('https://x.example'), (e: unknown) => e instanceof PatternError && /URL/.test(e.message));
  assert.equal(calls, 3);
  assert.equal(cache.size, 0);
});

test('sessions built from cached parses compile exactly as from fresh ones', () => {
  const input = ['Pkg.Example.IO', '*.Mirror.example.org', '10.9.8.7/16', '[2001:db8::1]', '*'].flatMap((d) =>
    ['443', '80,443', '8000-8999'].map((p) => ({ destination_pattern: d, port_pattern: p, action: 'allow' as const })),
  );
  const compiled = (container: string, base: number) => {
    const prepared = prepareSessionRules(container, input);
    assert.deepEqual(prepared.errors, []);
    const records: RuleRecord[] = prepared.rows.map((row, i) => ({ ...row, id: base + i, layer: 'session', sessionId: container, createdAt: 1 }));
    const rules = prepared.compile(records);
    assert.deepEqual(rules, records.map(compileRule), container);
    return rules;
  };
  const first = compiled('first', 1);
  const second = compiled('second', 1000); // same texts: served from the cache
  assert.equal(second[0]!.destination, first[0]!.destination, 'the cached matcher itself is reused');
  for (const r of second) assert.equal(r.container.kind === 'exact' && r.container.name, 'second');
});
