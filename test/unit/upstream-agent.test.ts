// The pool's reading of an origin's Keep-Alive field (how long it keeps an idle connection).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keepAliveHintMs } from '../../src/proxy/upstream-agent.js';

test("keepAliveHintMs reads the first Keep-Alive field's timeout, in any case of the name", () => {
  assert.equal(keepAliveHintMs(undefined), null);
  assert.equal(keepAliveHintMs([]), null);
  assert.equal(keepAliveHintMs(['Content-Length', '2', 'Connection', 'keep-alive']), null);
  assert.equal(keepAliveHintMs(['Keep-Alive', 'timeout=5, max=100']), 5000);
  assert.equal(keepAliveHintMs(['KEEP-ALIVE', 'timeout=2']), 2000);
  assert.equal(keepAliveHintMs(['keep-alive', 'max=100, timeout=5']), null, 'as Node: only a value that starts with timeout=');
  assert.equal(keepAliveHintMs(['keep-alive', 'timeout=x']), null);
  assert.equal(keepAliveHintMs(['Keep-Alive', 'timeout=1', 'Keep-Alive', 'timeout=9']), 1000);
  // A value that is not a Keep-Alive field is never read as one, whatever it says.
  assert.equal(keepAliveHintMs(['X-Keep-Alive', 'timeout=1', 'Keep-Alives', 'timeout=1']), null);
});
