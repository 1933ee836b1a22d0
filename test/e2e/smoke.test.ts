import { test } from 'node:test';
import assert from 'node:assert/strict';
import { curl, startOrigin, startTestSluice } from '../helpers/harness.js';

test('a session reaches its allowed origin over HTTP, CONNECT and SOCKS5, and is refused elsewhere', async (t) => {
  const origin = await startOrigin('127.0.0.2');
  const other = await startOrigin('127.0.0.3');
  const s = await startTestSluice();
  t.after(async () => {
    await s.close(true);
    await origin.close();
    await other.close();
  });
  const session = await s.createSession({ container_name: 'build-42', network_rules: [{ destination_pattern: '127.0.0.2', port_pattern: String(origin.port) }] });
  const ok = await curl(['-x', session.proxy.http, `http://${origin.authority}/plain`]);
  assert.match(ok.stdout, /origin 127\.0\.0\.2:\d+ GET \/plain/);
  const tunnel = await curl(['-p', '-x', session.proxy.http, `http://${origin.authority}/tunnel`]);
  assert.match(tunnel.stdout, /GET \/tunnel/);
  const socks = await curl(['-x', session.proxy.socks5, `http://${origin.authority}/socks`]);
  assert.match(socks.stdout, /GET \/socks/);
  const denied = await curl(['-i', '-x', session.proxy.http, `http://${other.authority}/`]);
  assert.match(denied.stdout, /^HTTP\/1\.1 403/);
  assert.match(denied.stdout, /Proxy-Status: sluice; error=http_request_denied/);
  assert.equal(other.requests.length, 0);
});
