// Session rules are parsed once (to validate and canonicalise them) and the matchers from
// that parse go into memory. They must be exactly what compileRule builds from the stored,
// canonical text, or a session would match differently before and after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prepareSessionRules } from '../../src/control/session-rules.js';
import { canonicalisePatterns, compileRule, type RuleRecord } from '../../src/policy/rules.js';

const DESTINATIONS = [
  'API.Example.COM.',
  'bücher.example',
  '*.Example.org',
  '**.mirror.example.net',
  '10.1.2.3/8',
  '10.1.2.3/32',
  '0.0.0.0/0',
  '192.168.1.1',
  '[2001:DB8::1]',
  '2001:db8::/32',
  '::ffff:10.0.0.1/120',
  '::ffff:127.0.0.1',
  '*',
];
const PORTS = ['*', '443', ' 443 , 80 ', '8000-8999,22', '1-65535', '80,80'];

test('prepared session rules compile to exactly what compileRule makes of the stored text', () => {
  const input = DESTINATIONS.flatMap((d, i) => PORTS.map((p, j) => ({ destination_pattern: d, port_pattern: p, action: (i + j) % 3 === 0 ? ('deny' as const) : ('allow' as const), notes: j === 2 ? 'n' : undefined })));
  const prepared = prepareSessionRules('build-42', input);
  assert.deepEqual(prepared.errors, []);
  const records: RuleRecord[] = prepared.rows.map((row, i) => ({ ...row, id: 100 + i, layer: 'session', sessionId: 's', createdAt: 5 }));
  input.forEach((r, i) => {
    const canonical = canonicalisePatterns({ containerPattern: 'build-42', destinationPattern: r.destination_pattern, portPattern: r.port_pattern });
    assert.deepEqual(
      { containerPattern: records[i]!.containerPattern, destinationPattern: records[i]!.destinationPattern, portPattern: records[i]!.portPattern },
      canonical,
      `${r.destination_pattern} ${r.port_pattern}`,
    );
    assert.equal(records[i]!.notes, r.notes ?? null);
  });
  assert.deepEqual(prepared.compile(records), records.map(compileRule));
});

test('bad rules are reported by index and nothing is prepared for them', () => {
  const prepared = prepareSessionRules('c', [
    { destination_pattern: 'ok.example', port_pattern: '443', action: 'allow' },
    { destination_pattern: 'https://x.example', port_pattern: '443', action: 'allow' },
    { destination_pattern: 'ok.example', port_pattern: '0', action: 'allow' },
  ]);
  assert.equal(prepared.rows.length, 1);
  assert.equal(prepared.errors.length, 2);
  assert.match(prepared.errors[0]!, /^network_rules\.1: .*URL/);
  assert.match(prepared.errors[1]!, /^network_rules\.2: ports must be within/);
});
