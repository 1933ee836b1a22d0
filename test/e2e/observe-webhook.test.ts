// The webhook sink against the real server and a local HTTP collector: batched POSTs in
// order, retries with backoff while the collector is down or failing, a bounded queue that
// never loses what is in flight, draining a backlog at once, and delivery at shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { webhookBatchSchema } from '../../src/api/responses.js';
import { eventually, expectBody, startTestSluice, type TestSluice } from '../helpers/harness.js';
import { viaProxy } from '../helpers/api-helpers.js';
import { closedPort, sleep, sluiceFor, type T } from '../helpers/proxy-helpers.js';

interface Collector {
  readonly port: number;
  readonly url: string;
  /** Bodies of the POSTs answered 2xx, in arrival order. */
  readonly accepted: Array<{ events: any[]; body: unknown; contentType: string | undefined }>;
  /** Every POST that arrived (answered or not yet). */
  arrived: number;
  events(): any[];
  close(): Promise<void>;
}

interface CollectorOptions {
  port?: number;
  /** Status for the n-th POST (0-based); default 200. */
  status?: (n: number) => number;
  /** Delay before answering. */
  delayMs?: number;
}

async function collector(t: T, opts: CollectorOptions = {}): Promise<Collector> {
  const accepted: Collector['accepted'] = [];
  let n = 0;
  const sockets = new Set<net.Socket>();
  const c: Collector = {
    port: 0,
    url: '',
    accepted,
    arrived: 0,
    events: () => accepted.flatMap((p) => p.events),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  const server = http.createServer((req, res) => {
    const index = n++;
    c.arrived++;
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      setTimeout(() => {
        const status = opts.status?.(index) ?? 200;
        if (status < 300) {
          const parsed = JSON.parse(body);
          accepted.push({ events: parsed.events, body: parsed, contentType: req.headers['content-type'] });
        }
        res.writeHead(status).end();
      }, opts.delayMs ?? 0);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(opts.port ?? 0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  Object.assign(c, { port, url: `http://127.0.0.1:${port}/hook` });
  t.after(() => c.close());
  return c;
}

/** `n` denied requests (each one `decision` event) from a fresh session of `container`. */
async function deny(s: TestSluice, container: string, n: number): Promise<void> {
  const sess = await s.createSession({ container_name: container });
  for (let i = 0; i < n; i++) assert.equal((await viaProxy(sess.proxy.http, `http://127.0.0.9:${1000 + i}/`)).status, 403);
}

function webhook(url: string, extra: Record<string, unknown> = {}) {
  return { webhook: { url, flush_interval_ms: 50, batch_size: 10, ...extra } };
}

test('events are POSTed in batches, in order, as JSON in the same shape as the SSE stream', async (t) => {
  const hook = await collector(t);
  const s = await sluiceFor(t, { config: webhook(hook.url, { types: ['decision', 'session.created'] }) });
  await deny(s, 'hooked', 24);
  await eventually(() => hook.events().length >= 25, 3000, 'all 25 events');
  const events = hook.events();
  assert.equal(events.length, 25);
  assert.deepEqual(events.map((e) => e.type), ['session.created', ...Array(24).fill('decision')]);
  for (let i = 1; i < events.length; i++) assert.ok(events[i].id > events[i - 1].id, 'in order, no repeats');
  assert.ok(hook.accepted.length >= 3, `batched: ${hook.accepted.map((p) => p.events.length)}`);
  for (const p of hook.accepted) {
    assert.ok(p.events.length >= 1 && p.events.length <= 10);
    assert.match(p.contentType ?? '', /^application\/json/);
    expectBody(webhookBatchSchema, p.body, 'a webhook POST');
  }
  const d = events[1];
  assert.deepEqual([d.container, d.decision, d.reason, d.destination, d.port, d.protocol], ['hooked', 'deny', 'default_deny', '127.0.0.9', 1000, 'http']);
  assert.ok(Date.parse(d.time) > Date.now() - 60_000, `ISO time: ${d.time}`);
  assert.equal(typeof d.decision_id, 'number');
  // Only the configured types: no connection.closed or session.updated here.
  assert.deepEqual([...new Set(events.map((e) => e.type))].sort(), ['decision', 'session.created']);
});

test('a collector that is down, then up, gets every event after retries; failing answers are retried too', async (t) => {
  const port = await closedPort('127.0.0.1');
  const s = await sluiceFor(t, { config: webhook(`http://127.0.0.1:${port}/hook`) });
  await deny(s, 'patient', 5);
  await sleep(300); // a failed attempt (and backoff) while nothing listens
  const hook = await collector(t, { port, status: (n) => (n < 1 ? 503 : 200) });
  await eventually(() => hook.events().length >= 5, 6000, 'the events after the collector came up');
  await sleep(200);
  assert.deepEqual(hook.events().map((e) => e.port), [1000, 1001, 1002, 1003, 1004], 'each once, in order');
  assert.ok(hook.arrived >= 2, 'the 503 was retried');
});

test('a batch in flight is never lost to queue overflow, nor counted against the queue', async (t) => {
  const hook = await collector(t, { delayMs: 400 });
  const s = await sluiceFor(t, { config: webhook(hook.url, { batch_size: 5, max_queue: 5, flush_interval_ms: 500 }) });
  const burst = async (container: string, base: number): Promise<void> => {
    const sess = await s.createSession({ container_name: container });
    const statuses = await Promise.all([0, 1, 2, 3, 4].map((i) => viaProxy(sess.proxy.http, `http://127.0.0.9:${base + i}/`)));
    assert.deepEqual(statuses.map((r) => r.status), [403, 403, 403, 403, 403]);
  };
  await burst('bounded', 1000); // queued before the first flush
  await eventually(() => hook.arrived >= 1, 2000, 'the first batch to be in flight');
  await burst('bounded-2', 2000); // a full queue's worth while the first five are in flight
  await eventually(() => hook.events().length >= 10, 4000, 'all ten events');
  assert.deepEqual(
    hook.events().map((e) => e.port).sort(),
    [1000, 1001, 1002, 1003, 1004, 2000, 2001, 2002, 2003, 2004],
  );
  assert.deepEqual(hook.accepted.map((p) => p.events.length), [5, 5]);
});

test('a backlog is sent at once, not one batch per flush interval', async (t) => {
  const hook = await collector(t);
  const s = await sluiceFor(t, { config: webhook(hook.url, { batch_size: 10, flush_interval_ms: 1000 }) });
  await deny(s, 'backlog', 50);
  const generated = Date.now();
  await eventually(() => hook.events().length >= 50, 3000, 'the whole backlog');
  assert.ok(Date.now() - generated < 2500, `took ${Date.now() - generated} ms`);
  assert.ok(hook.accepted.every((p) => p.events.length <= 10));
});

test('shutdown sends everything still queued', async (t) => {
  const hook = await collector(t);
  const s = await startTestSluice({ config: webhook(hook.url, { batch_size: 10, flush_interval_ms: 600_000 }) });
  t.after(() => s.close(true));
  await deny(s, 'leaving', 34);
  assert.equal(hook.arrived, 0, 'nothing sent before the (long) interval');
  await s.close();
  assert.equal(hook.events().length, 34);
});

test('a webhook off loopback or with an unknown event type stops start-up with a clear message', async () => {
  await assert.rejects(startTestSluice({ config: { webhook: { url: 'http://192.0.2.10:8080/hook' } } }), /not on loopback/);
  await assert.rejects(startTestSluice({ config: { webhook: { url: 'http://127.0.0.1:9/hook', types: ['decision', 'decisions'] } } }), /webhook\.types: unknown event type decisions/);
});
