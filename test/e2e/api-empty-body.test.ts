import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestSluice } from '../helpers/harness.js';

test('a JSON content type with an empty body is "no body", while malformed JSON is still a 400', async (t) => {
  const s = await startTestSluice();
  t.after(() => s.close(true));
  const session = await s.createSession({ container_name: 'c1' });
  const url = `http://127.0.0.1:${s.sluice.api.port}/api/sessions/${session.session_id}`;
  const headers = { authorization: `Bearer ${s.sluice.apiToken}`, 'content-type': 'application/json' };
  const hb = await fetch(`${url}/heartbeat`, { method: 'POST', headers });
  assert.equal(hb.status, 200);
  const del = await fetch(url, { method: 'DELETE', headers });
  assert.equal(del.status, 200);
  assert.deepEqual(await del.json(), { session_id: session.session_id, deleted: true });
  const bad = await s.api('POST', '/api/sessions', '{"container_name": ');
  assert.equal(bad.status, 400);
  assert.equal(typeof bad.body.error, 'string');
  const poisoned = await s.api('POST', '/api/sessions', '{"container_name":"c2","__proto__":{"x":1}}');
  assert.equal(poisoned.status, 400);
});
