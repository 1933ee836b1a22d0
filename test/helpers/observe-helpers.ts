// Shared pieces of the observe end-to-end tests (test/e2e/observe-*.test.ts): tunnels held
// open over CONNECT and SOCKS5, an injectable resolver, the decision log, live events and
// the metrics text.
import assert from 'node:assert/strict';
import { connectionListSchema, decisionPageSchema } from '../../src/api/responses.js';
import { SluiceClient } from '../../src/client/sluice-client.js';
import type { Decision, DecisionPage, OpenConnection, SluiceEvent } from '../../src/client/types.js';
import type { HostResolver } from '../../src/proxy/dns.js';
import { eventually, expectBody, type TestSluice } from './harness.js';
import { RawClient, basic, socks5, socks5Raw, type HttpResponse, type T } from './proxy-helpers.js';

/** A resolver answering from a table (anything else fails like NXDOMAIN). */
export function mapResolver(table: Record<string, string | string[]>): HostResolver {
  return async (hostname) => {
    const found = table[hostname.toLowerCase()];
    if (found === undefined) throw Object.assign(new Error(`no such host ${hostname}`), { code: 'ENOTFOUND' });
    return Array.isArray(found) ? found : [found];
  };
}

export function clientOf(s: TestSluice): SluiceClient {
  return new SluiceClient({ baseUrl: `http://127.0.0.1:${s.sluice.api.port}`, token: s.sluice.apiToken });
}

/** A CONNECT request with credentials; returns the client and the proxy's answer. */
export async function connectVia(t: T, s: TestSluice, user: string, token: string, authority: string): Promise<{ c: RawClient; res: HttpResponse }> {
  const c = await RawClient.connect(t, s.sluice.http.port);
  c.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${basic(user, token)}\r\n\r\n`);
  const res = await c.takeResponse();
  return { c, res };
}

/** An open CONNECT tunnel to an echo server, checked by a round trip. */
export async function connectTunnel(t: T, s: TestSluice, user: string, token: string, authority: string): Promise<RawClient> {
  const { c, res } = await connectVia(t, s, user, token, authority);
  assert.equal(res.status, 200, `CONNECT ${authority} as ${user}: ${res.statusLine} ${res.body}`);
  await roundTrip(c, 'hello-connect');
  return c;
}

/** An open SOCKS5 tunnel (IPv4 literal or hostname) to an echo server, checked by a round trip. */
export async function socksTunnel(t: T, s: TestSluice, user: string, token: string, host: string, port: number): Promise<RawClient> {
  const req = /^[0-9.]+$/.test(host) ? socks5.ipv4(host, port) : socks5.domain(host, port);
  const { c, rep } = await socks5Raw(t, s.sluice.socks.port, user, token, req);
  assert.equal(rep, 0, `SOCKS5 CONNECT ${host}:${port} as ${user}: reply ${rep}`);
  await roundTrip(c, 'hello-socks');
  return c;
}

/** Sends `text` through an echo tunnel and waits for it to come back. */
export async function roundTrip(c: RawClient, text: string): Promise<void> {
  c.write(text);
  await c.takeThrough(text);
}

/** One page of GET /api/decisions (asserting 200 and the response schema). */
export async function decisionsPage(s: TestSluice, query: Record<string, string | number> = {}): Promise<DecisionPage> {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  const res = await s.api('GET', `/api/decisions${qs ? `?${qs}` : ''}`);
  assert.equal(res.status, 200, `GET /api/decisions?${qs}: ${res.status} ${JSON.stringify(res.body)}`);
  return expectBody(decisionPageSchema, res.body, `GET /api/decisions?${qs}`);
}

export async function decisions(s: TestSluice, query: Record<string, string | number> = {}): Promise<Decision[]> {
  return (await decisionsPage(s, { limit: 1000, ...query })).decisions;
}

/** The decision row with this id (closing stats land asynchronously: poll with eventually()). */
export async function decisionById(s: TestSluice, id: number): Promise<Decision | undefined> {
  return (await decisions(s, { cursor: id + 1, limit: 1 })).find((d) => d.id === id);
}

/** Open connections as GET /api/connections lists them (asserting 200 and the response schema). */
export async function openConnections(s: TestSluice, container?: string): Promise<OpenConnection[]> {
  const res = await s.api('GET', `/api/connections${container ? `?container=${container}` : ''}`);
  assert.equal(res.status, 200);
  return expectBody(connectionListSchema, res.body, 'GET /api/connections').connections;
}

/** Events from GET /api/events, collected in the background until close(). */
export interface EventTap {
  readonly events: SluiceEvent[];
  /** Waits until `pred` holds for the events so far. */
  until(pred: (events: SluiceEvent[]) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  close(): Promise<void>;
}

export async function tapEvents(t: T, s: TestSluice, query: { types?: string[]; container?: string } = {}): Promise<EventTap> {
  const controller = new AbortController();
  const events: SluiceEvent[] = [];
  let opened!: () => void;
  const open = new Promise<void>((r) => (opened = r));
  const done = (async () => {
    for await (const e of clientOf(s).events({ ...query, signal: controller.signal, onOpen: opened })) events.push(e);
  })().catch(() => undefined);
  await Promise.race([open, done]);
  const close = async (): Promise<void> => {
    controller.abort();
    await done;
  };
  t.after(close);
  return {
    events,
    until: (pred, timeoutMs = 2000, what = 'events') => eventually(() => pred(events), timeoutMs, `${what}; got ${JSON.stringify(events.map((e) => e.type))}`),
    close,
  };
}

/** GET /metrics (no token) as text. */
export async function metricsText(s: TestSluice): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${s.sluice.api.port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

/** The value of one sample (`name{labels}`), or undefined when absent. Labels must all match. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have: Record<string, string> = {};
    for (const pair of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have[pair[1]!] = pair[2]!;
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}
