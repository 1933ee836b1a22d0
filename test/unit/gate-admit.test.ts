// Gate.admit's bookkeeping (decision records, observed times, busy/settled, the limiter
// slot) must be the same whether the decision needed DNS (a promise) or not (synchronous).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Gate, type AdmitResult, type DecisionRecord } from '../../src/proxy/gate.js';
import { SelfGuard } from '../../src/proxy/self-guard.js';
import { Limiter } from '../../src/limits/limiter.js';
import { MALFORMED_CREDENTIALS, parseBasicAuth } from '../../src/identity/identify.js';
import { allow, NOW, World } from './policy/fixtures.js';

function setup(): { gate: Gate; decisions: DecisionRecord[]; observed: number[]; limiter: Limiter } {
  const w = new World();
  w.global(allow('93.184.216.34'));
  w.global(allow('example.test'));
  const decisions: DecisionRecord[] = [];
  const observed: number[] = [];
  const limiter = new Limiter(100, () => NOW);
  let id = 1;
  const gate = new Gate(w.state, {
    identityMode: 'username',
    dnsTimeoutMs: 1000,
    clock: () => NOW,
    resolver: async (h) => (h === 'example.test' ? ['93.184.216.34'] : []),
    selfGuard: new SelfGuard(),
    guardSpecialRanges: true,
    limiter,
    defaultLimits: { maxConnections: 1, connectionsPerSecond: 0 },
    nextDecisionId: () => id++,
    onDecision: (r) => void decisions.push(r),
    onUpstreamFailure: () => undefined,
    observeDecisionSeconds: (s) => void observed.push(s),
  });
  return { gate, decisions, observed, limiter };
}

const settledNow = async (gate: Gate): Promise<boolean> => {
  let done = false;
  void gate.settled(60_000).then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
};

test('an IP literal is admitted synchronously, recorded and observed once, and the gate settles after one release', async () => {
  const { gate, decisions, observed } = setup();
  const r = gate.admit('web', 'connect', '10.0.0.9', '93.184.216.34', 443);
  assert.ok(!(r instanceof Promise), 'no DNS needed: no promise');
  const result = r as AdmitResult;
  assert.ok(result.ok);
  assert.equal(decisions.length, 1);
  assert.equal(decisions[0]!.decision, 'allow');
  assert.equal(decisions[0]!.address, '93.184.216.34');
  assert.equal(observed.length, 1);
  assert.equal(await settledNow(gate), false, 'an admitted connection keeps the gate busy');
  // The limit is one connection: the slot is held until release, and release is idempotent.
  const second = await gate.admit('web', 'connect', '10.0.0.9', '93.184.216.34', 443);
  assert.ok(!second.ok);
  assert.equal(second.failure.kind, 'limited');
  result.admission.release();
  result.admission.release();
  assert.equal(await settledNow(gate), true);
  const third = await gate.admit('web', 'connect', '10.0.0.9', '93.184.216.34', 443);
  assert.ok(third.ok);
  third.admission.release();
  assert.equal(await settledNow(gate), true);
});

test('a hostname is admitted through DNS with the same records, and a denial frees the slot at once', async () => {
  const { gate, decisions, observed } = setup();
  const p = gate.admit('web', 'connect', '10.0.0.9', 'example.test', 443);
  assert.ok(p instanceof Promise, 'DNS needed: a promise');
  const result = await p;
  assert.ok(result.ok);
  assert.equal(decisions.at(-1)!.destination, 'example.test');
  assert.equal(decisions.at(-1)!.address, '93.184.216.34');
  assert.equal(observed.length, 1);
  result.admission.release();
  const denied = await gate.admit('web', 'connect', '10.0.0.9', '198.51.100.7', 443);
  assert.ok(!denied.ok);
  assert.equal(denied.failure.kind, 'denied');
  assert.equal(observed.length, 2);
  assert.equal(await settledNow(gate), true);
  // The denied attempt released its slot: the one allowed connection is still available.
  const again = await gate.admit('web', 'connect', '10.0.0.9', '93.184.216.34', 443);
  assert.ok(again.ok);
  again.admission.release();
});

test('parsed proxy credentials are shared between connections and cannot be altered', () => {
  const header = `Basic ${Buffer.from('web:s3cret').toString('base64')}`;
  const a = parseBasicAuth(header);
  const b = parseBasicAuth(header);
  assert.deepEqual(a, { username: 'web', password: 's3cret' });
  assert.ok(Object.isFrozen(a), 'a remembered result must not be changeable by one caller for the next');
  assert.equal(a, b);
  assert.equal(parseBasicAuth('Basic !!!'), MALFORMED_CREDENTIALS);
  assert.equal(parseBasicAuth('Basic !!!'), MALFORMED_CREDENTIALS);
  assert.equal(parseBasicAuth(undefined), null);
  assert.deepEqual(parseBasicAuth(`basic ${Buffer.from('other:x:y').toString('base64')}`), { username: 'other', password: 'x:y' });
});
