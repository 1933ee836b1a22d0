// A hostname whose first address refuses: every protocol must move on to the next
// allowed address, plain forwarding included (its keep-alive pool dials like a tunnel).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { curl, startOrigin, startTestSluice } from '../helpers/harness.js';

test('forwarded requests, CONNECT and SOCKS5 fall back to the next resolved address', async (t) => {
  const origin = await startOrigin('127.0.0.2');
  const s = await startTestSluice({ resolver: async (name) => (name === 'app.test' ? ['127.0.0.3', '127.0.0.2'] : []) });
  t.after(async () => {
    await s.close(true);
    await origin.close();
  });
  const session = await s.createSession({ container_name: 'c1', network_rules: [{ destination_pattern: 'app.test', port_pattern: String(origin.port) }] });
  const target = `http://app.test:${origin.port}`;
  const plain = await curl(['--noproxy', '', '-x', session.proxy.http, `${target}/plain`]);
  assert.match(plain.stdout, /GET \/plain/, plain.stderr);
  const again = await curl(['--noproxy', '', '-x', session.proxy.http, `${target}/again`, `${target}/and-again`]);
  assert.match(again.stdout, /GET \/again[\s\S]*GET \/and-again/);
  const tunnel = await curl(['--noproxy', '', '-p', '-x', session.proxy.http, `${target}/tunnel`]);
  assert.match(tunnel.stdout, /GET \/tunnel/);
  const socks = await curl(['--noproxy', '', '-x', session.proxy.socks5, `${target}/socks`]);
  assert.match(socks.stdout, /GET \/socks/);
  assert.equal(origin.requests.length, 5);
});
