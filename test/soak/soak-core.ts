// The soak run shared by `node dist/test/soak/soak.js --minutes N` and the short version in
// the default suite (test/e2e/soak-short.test.ts). Sluice runs in this process; workers,
// one container each, churn sessions (create with random rules, heartbeat, delete or let
// expire) while opening tunnels (CONNECT, SOCKS5, SOCKS4a) and forwarded requests through
// them. At the end every decision in the audit trail is replayed against the reference
// resolver (test/unit/policy/reference.ts), and handles, timers and memory are compared
// with their values before the churn. Only loopback is ever dialled.
import http from 'node:http';
import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startTestSluice, type TestSluice } from '../helpers/harness.js';
import {
  IMPLEMENTATION_REFINEMENTS,
  refAddressDenial,
  refDecide,
  type RefRule,
  type RefSession,
  type RefWorld,
} from '../unit/policy/reference.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

export interface SoakOptions {
  readonly durationMs: number;
  /** Concurrent workers (containers). */
  readonly workers: number;
  /** Called with a line of progress now and then. */
  readonly log?: (line: string) => void;
}

export interface SoakReport {
  readonly durationMs: number;
  readonly sessionsCreated: number;
  readonly sessionsDeleted: number;
  readonly sessionsExpired: number;
  readonly heartbeats: number;
  readonly tunnels: number;
  readonly forwards: number;
  readonly decisionsReplayed: number;
  readonly mismatches: string[];
  readonly problems: string[];
  readonly rssMiB: { readonly start: number; readonly warm: number; readonly end: number; readonly max: number; readonly trend: number[] };
  readonly heapMiB: { readonly warm: number; readonly end: number };
  /** Memory outside the JS heap at the end (Buffers, SQLite and other native allocations are in RSS only). */
  readonly externalMiB: { readonly external: number; readonly arrayBuffers: number };
  /**
   * How late the event loop ran (sluice and this harness share it). The workers' timing
   * (use a session only while it has 700 ms left) assumes far less than that; a run on a
   * machine busy enough to stall the loop for longer reports expired-session refusals.
   */
  readonly eventLoopDelayMs: { readonly p99: number; readonly max: number };
  readonly handles: { readonly baseline: Record<string, number>; readonly end: Record<string, number> };
}

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const chance = (p: number): boolean => Math.random() < p;

function resources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

// ------------------------------------------------------------------ origins

interface Origins {
  readonly echoA: number; // on 127.0.0.2
  readonly echoB: number; // on 127.0.0.3
  readonly web: number; // HTTP on 127.0.0.2
  close(): Promise<void>;
}

async function startOrigins(): Promise<Origins> {
  const sockets = new Set<net.Socket>();
  const echo = (host: string): Promise<net.Server> =>
    new Promise((resolve) => {
      const server = net.createServer((sock) => {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => undefined);
        sock.pipe(sock);
      });
      server.listen(0, host, () => resolve(server));
    });
  const a = await echo('127.0.0.2');
  const b = await echo('127.0.0.3');
  const web = http.createServer((_req, res) => res.end('ok'));
  // Pooled upstream connections end soon after use, so the end-of-run handle count is exact.
  web.keepAliveTimeout = 100;
  await new Promise<void>((r) => web.listen(0, '127.0.0.2', r));
  const port = (s: net.Server | http.Server) => (s.address() as net.AddressInfo).port;
  return {
    echoA: port(a),
    echoB: port(b),
    web: port(web),
    close: async () => {
      for (const s of sockets) s.destroy();
      web.closeAllConnections();
      await Promise.all([a, b, web].map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

// ------------------------------------------------------------------ API client (no lingering pool)

function apiClient(s: TestSluice, agent: http.Agent) {
  return (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        {
          host: '127.0.0.1',
          port: s.sluice.api.port,
          method,
          path,
          agent,
          headers: { authorization: `Bearer ${s.sluice.apiToken}`, ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error(`API ${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
}

// ------------------------------------------------------------------ proxy clients

const basic = (user: string, pass: string): string => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

/** Reads from a socket until `done(buffer)` or close; resolves with what was read. */
function readUntil(sock: net.Socket, done: (b: Buffer) => boolean, ms: number): Promise<Buffer> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const finish = (): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', finish);
      resolve(buf);
    };
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      if (done(buf)) finish();
    };
    const timer = setTimeout(finish, ms);
    sock.on('data', onData);
    sock.once('close', finish);
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, noDelay: true });
    sock.once('connect', () => {
      sock.off('error', reject);
      sock.on('error', () => undefined);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

type Via = 'connect' | 'socks5' | 'socks4a' | 'forward';

/** Opens one tunnel (or forwards one request); returns whether data went through. */
async function throughProxy(s: TestSluice, via: Via, container: string, token: string, host: string, port: number, holdMs: number): Promise<'ok' | 'refused'> {
  const sock = await connect(via === 'connect' || via === 'forward' ? s.sluice.http.port : s.sluice.socks.port);
  try {
    if (via === 'forward') {
      sock.write(`GET http://${host}:${port}/ HTTP/1.1\r\nHost: ${host}\r\nProxy-Authorization: ${basic(container, token)}\r\nConnection: close\r\n\r\n`);
      const res = await readUntil(sock, () => false, 5000);
      return /^HTTP\/1\.1 200 /.test(res.toString('latin1')) && res.toString('latin1').endsWith('ok') ? 'ok' : 'refused';
    }
    if (via === 'connect') {
      sock.write(`CONNECT ${host}:${port} HTTP/1.1\r\nProxy-Authorization: ${basic(container, token)}\r\n\r\n`);
      const head = await readUntil(sock, (b) => b.includes('\r\n\r\n'), 5000);
      if (!/^HTTP\/1\.1 200 /.test(head.toString('latin1'))) return 'refused';
    } else if (via === 'socks5') {
      sock.write(Buffer.from([5, 1, 2]));
      await readUntil(sock, (b) => b.length >= 2, 5000);
      const u = Buffer.from(container);
      const p = Buffer.from(token);
      sock.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
      const auth = await readUntil(sock, (b) => b.length >= 2, 5000);
      if (auth[1] !== 0) return 'refused';
      const h = Buffer.from(host);
      sock.write(Buffer.concat([Buffer.from([5, 1, 0, 3, h.length]), h, Buffer.from([port >> 8, port & 0xff])]));
      const rep = await readUntil(sock, (b) => b.length >= 10, 5000);
      if (rep[1] !== 0) return 'refused';
    } else {
      sock.write(Buffer.concat([Buffer.from([4, 1, port >> 8, port & 0xff, 0, 0, 0, 1]), Buffer.from(`${container}:${token}\0${host}\0`)]));
      const rep = await readUntil(sock, (b) => b.length >= 8, 5000);
      if (rep[1] !== 0x5a) return 'refused';
    }
    const probe = `ping-${Math.random()}`;
    sock.write(probe);
    const echoed = await readUntil(sock, (b) => b.length >= probe.length, 5000);
    if (echoed.toString() !== probe) throw new Error(`${via} ${host}:${port}: echo mismatch ${JSON.stringify(echoed.toString())}`);
    if (holdMs > 0) await sleep(holdMs);
    return 'ok';
  } finally {
    sock.destroy();
  }
}

// ------------------------------------------------------------------ the run

interface LiveSession {
  readonly ref: RefSession;
}

export async function runSoak(opts: SoakOptions): Promise<SoakReport> {
  const log = opts.log ?? (() => undefined);
  const problems: string[] = [];
  const origins = await startOrigins();
  const DNS: Record<string, string[]> = {
    'echo-a.soak.test': ['127.0.0.2'],
    'echo-b.soak.test': ['127.0.0.3'],
    'multi.soak.test': ['127.0.0.3', '127.0.0.2'],
    'x.blocked.soak.test': ['127.0.0.2'],
  };
  const s = await startTestSluice({
    config: { sessions: { sweep_interval_ms: 200 }, audit: { flush_interval_ms: 50, max_queue: 10_000_000 }, timeouts: { dns_ms: 500, connect_ms: 2000 } },
    resolver: async (h) => {
      const a = DNS[h];
      if (!a) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      return a;
    },
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const api = apiClient(s, agent);
  const { echoA, echoB, web } = origins;

  // Fixed global rules and the built-ins, for the reference world.
  const globals: RefRule[] = [];
  for (const g of [
    { destination_pattern: '**.blocked.soak.test', action: 'deny' },
    { container_pattern: 'w-1*', destination_pattern: '127.0.0.3', port_pattern: String(echoB), action: 'deny' },
    { container_pattern: 'w-2?', destination_pattern: 'echo-a.soak.test', action: 'allow' },
  ]) {
    const r = await api('POST', '/api/rules', g);
    if (r.status !== 200) throw new Error(`global rule: ${JSON.stringify(r.body)}`);
    globals.push({ id: r.body.id, containerPattern: r.body.container_pattern, destinationPattern: r.body.destination_pattern, portPattern: r.body.port_pattern, action: r.body.action, expiresAt: null });
  }
  const builtin: RefRule[] = (await api('GET', '/api/rules?layer=builtin')).body.rules.map((r: any) => ({
    id: r.id,
    containerPattern: r.container_pattern,
    destinationPattern: r.destination_pattern,
    portPattern: r.port_pattern,
    action: r.action,
    expiresAt: null,
  }));

  const destPool = ['echo-a.soak.test', 'echo-b.soak.test', '*.soak.test', '**.soak.test', 'multi.soak.test', '127.0.0.2', '127.0.0.3', '127.0.0.0/30', '127.0.0.2/32', '*', '**.blocked.soak.test'];
  const portPool = [String(echoA), String(echoB), String(web), '*', `${Math.min(echoA, echoB)}-${Math.max(echoA, echoB)}`, `${echoA},${web}`];
  const targets: Array<[string, number]> = [
    ['echo-a.soak.test', echoA],
    ['echo-b.soak.test', echoB],
    ['multi.soak.test', echoA],
    ['multi.soak.test', echoB],
    ['x.blocked.soak.test', echoA],
    ['127.0.0.2', echoA],
    ['127.0.0.3', echoB],
    ['0x7f.2', echoA],
    ['gone.soak.test', echoA],
  ];

  // The reference copy of every session a decision may still be replayed against. A session
  // is dropped once it has ended and the replay has passed its end: kept for the whole run,
  // this harness bookkeeping (not sluice) was what grew the heap of long soaks.
  const sessions = new Map<string, RefSession>();
  const ended = new Map<string, number>();
  const counters = { created: 0, deleted: 0, expired: 0, heartbeats: 0, tunnels: 0, forwards: 0 };
  let seq = 0;

  // Warm up briefly, then take the baseline the end state must return to.
  gc();
  const rss = { start: process.memoryUsage().rss, warm: 0, end: 0, max: 0 };
  // RSS at every tenth of the run, to show whether it is flat after warm-up.
  const trend: number[] = [];
  const baseline = resources();
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  const started = Date.now();
  const deadline = started + opts.durationMs;
  const warmAt = started + Math.min(opts.durationMs * 0.3, 60_000);
  let heapWarm = 0;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    rss.max = Math.max(rss.max, m.rss);
    if (Date.now() - started >= (trend.length * opts.durationMs) / 10) trend.push(Math.round(m.rss / MiB));
    if (rss.warm === 0 && Date.now() >= warmAt) {
      gc();
      rss.warm = process.memoryUsage().rss;
      heapWarm = process.memoryUsage().heapUsed;
    }
  }, 250);
  const progress = setInterval(() => log(`${Math.round((Date.now() - started) / 1000)} s: ${JSON.stringify(counters)} rss ${(process.memoryUsage().rss / MiB).toFixed(0)} MiB (heap ${(process.memoryUsage().heapUsed / MiB).toFixed(0)}, external ${(process.memoryUsage().external / MiB).toFixed(0)}), open ${s.sluice.connections.size}`), 10_000);

  // ---- replay every decision against the reference, as the run goes (see `sessions`)
  const mismatches: string[] = [];
  const world = (session: RefSession | undefined): RefWorld => ({ global: globals, builtin, sessions: session ? [session] : [], learning: [] });
  let replayed = 0;
  const replayRow = (r: any): void => {
    if (r.container === null || !String(r.container).startsWith('w-')) return;
    const session = r.session_id ? sessions.get(r.session_id) : undefined;
    const what = `decision #${r.id} ${r.container} ${r.protocol} ${r.destination}:${r.port}`;
    if (!session || session.container !== r.container) {
      mismatches.push(`${what}: made under session ${r.session_id}, which this container never had`);
      return;
    }
    replayed++;
    const now = Date.parse(r.time);
    const w = world(session);
    const v = refDecide(w, r.container, r.destination, r.port, now, IMPLEMENTATION_REFINEMENTS);
    let decision = v.action;
    let reason: string = v.reason;
    let winners = v.winners;
    let address: string | null = null;
    if (v.action === 'allow') {
      const answers = net.isIP(r.destination) ? [r.destination] : (DNS[r.destination] ?? null);
      if (answers) {
        const passing = net.isIP(r.destination) ? answers : answers.filter((ip) => refAddressDenial(w, r.container, ip, r.port, now, IMPLEMENTATION_REFINEMENTS) === null);
        if (passing.length === 0) {
          const denial = refAddressDenial(w, r.container, answers[0]!, r.port, now, IMPLEMENTATION_REFINEMENTS)!;
          decision = 'deny';
          reason = 'address_denied';
          winners = denial.winners;
        } else {
          address = passing[0]!;
        }
      }
    }
    const reasonOk = reason === 'rule_or_learning' ? r.reason === 'rule' || r.reason === 'learning' : r.reason === reason;
    const ruleOk = winners.length === 0 ? r.rule_id === null || reason === 'rule_or_learning' : winners.includes(r.rule_id) || (reason === 'rule_or_learning' && r.rule_id === null);
    if (r.decision !== decision || !reasonOk || !ruleOk || (address !== null && r.address !== address)) {
      mismatches.push(`${what}: got ${r.decision}/${r.reason}/rule ${r.rule_id}/${r.address}, reference ${decision}/${reason}/rules ${JSON.stringify(winners)}/${address}`);
    }
  };
  let lastId = 0;
  /** Replays decisions newer than the last replayed one, oldest first, then forgets sessions it is past. */
  const replayNew = async (): Promise<void> => {
    const fresh: any[] = [];
    let cursor: string | null = null;
    // Pages come newest first; stop at the first page that reaches what was replayed.
    for (;;) {
      const page: { status: number; body: any } = await api('GET', `/api/decisions?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      const rows = page.body.decisions as any[];
      for (const r of rows) if (r.id > lastId) fresh.push(r);
      cursor = page.body.next_cursor;
      if (!cursor || rows.length === 0 || rows[rows.length - 1].id <= lastId) break;
    }
    fresh.sort((a, b) => a.id - b.id);
    for (const r of fresh) replayRow(r);
    if (fresh.length === 0) return;
    lastId = fresh[fresh.length - 1].id;
    // Decision ids follow decision time, so nothing older than the last replayed decision can
    // still arrive: a session that ended before it (with a margin for the clock) is done.
    const replayedUpTo = Date.parse(fresh[fresh.length - 1].time) - 2000;
    for (const [id, at] of ended) {
      if (at >= replayedUpTo) continue;
      sessions.delete(id);
      ended.delete(id);
    }
  };
  let replaying = Promise.resolve();
  const replayer = setInterval(() => {
    replaying = replaying.then(replayNew).catch((err: Error) => void problems.push(`replay: ${err.message}`));
  }, 10_000);

  const worker = async (k: number): Promise<void> => {
    const container = `w-${k}`;
    while (Date.now() < deadline - 500) {
      const allowAll = chance(0.1);
      const rules = Array.from({ length: Math.floor(Math.random() * 6) }, () => ({ destination_pattern: pick(destPool), port_pattern: pick(portPool), action: chance(0.7) ? 'allow' : 'deny' }));
      const ttl = 1 + Math.floor(Math.random() * 2);
      const id = `s-${k}-${seq++}`;
      const created = await api('POST', '/api/sessions', { session_id: id, container_name: container, ttl_seconds: ttl, network_rules: rules, allow_all: allowAll });
      if (created.status !== 200) {
        problems.push(`create ${id}: ${created.status} ${JSON.stringify(created.body)}`);
        return;
      }
      counters.created++;
      const read = await api('GET', `/api/sessions/${id}`);
      if (read.status !== 200) {
        // Only a loop stalled for longer than the TTL lets a fresh session expire before this.
        problems.push(`reading session ${id} right after creating it: ${read.status}`);
        continue;
      }
      const detail = read.body;
      const ref: RefSession = {
        id,
        container,
        seq: counters.created,
        expiresAt: Number.MAX_SAFE_INTEGER,
        allowAll,
        rules: detail.rules.map((r: any) => ({ id: r.id, containerPattern: r.container_pattern, destinationPattern: r.destination_pattern, portPattern: r.port_pattern, action: r.action, expiresAt: null })),
      };
      sessions.set(id, ref);
      const token = created.body.proxy_token as string;
      let expiresAt = Date.parse(created.body.expires_at);
      // Use the session while it is safely alive, heartbeating now and then.
      const uses = 1 + Math.floor(Math.random() * 4);
      // A 404 is right once the session has expired (the sweeper may already have removed it).
      const expiredBy = (at: number): boolean => at >= expiresAt - 50;
      for (let u = 0; u < uses && Date.now() < deadline - 500; u++) {
        if (expiresAt - Date.now() < 700) break;
        if (chance(0.3)) {
          const sent = Date.now();
          const hb = await api('POST', `/api/sessions/${id}/heartbeat`);
          if (hb.status === 200) {
            counters.heartbeats++;
            expiresAt = Date.parse(hb.body.expires_at);
          } else if (!(hb.status === 404 && expiredBy(sent))) problems.push(`heartbeat ${id}: ${hb.status}`);
        }
        if (expiresAt - Date.now() < 700) break;
        await Promise.all(
          Array.from({ length: 1 + Math.floor(Math.random() * 3) }, async () => {
            const via: Via = pick(['connect', 'socks5', 'socks4a', 'forward']);
            const [host, port] = via === 'forward' ? (pick([['echo-a.soak.test', web], ['127.0.0.2', web], ['x.blocked.soak.test', web]] as const) as [string, number]) : pick(targets);
            try {
              await throughProxy(s, via, container, token, host, port, chance(0.2) ? 150 : 0);
              if (via === 'forward') counters.forwards++;
              else counters.tunnels++;
            } catch (err) {
              problems.push(`${via} ${host}:${port}: ${(err as Error).message}`);
            }
          }),
        );
      }
      if (chance(0.75) || expiresAt + 400 > deadline) {
        const sent = Date.now();
        const del = await api('DELETE', `/api/sessions/${id}`);
        if (del.status === 200) counters.deleted++;
        else if (del.status === 404 && expiredBy(sent)) counters.expired++;
        else problems.push(`delete ${id}: ${del.status}`);
        ended.set(id, Date.now());
      } else {
        // Let it expire: the sweeper must remove it (and its rules) by itself.
        await sleep(Math.max(0, expiresAt - Date.now()) + 400);
        const gone = await api('GET', `/api/sessions/${id}`);
        if (gone.status !== 404) problems.push(`expired session ${id} still answers ${gone.status}`);
        else counters.expired++;
        ended.set(id, Date.now());
      }
    }
  };
  await Promise.all(Array.from({ length: opts.workers }, (_, k) => worker(k)));
  clearInterval(progress);
  clearInterval(sampler);
  clearInterval(replayer);
  await replaying;
  loopDelay.disable();
  const durationMs = Date.now() - started;

  // ---- the churn is over: memory now, before the replay below allocates its own
  for (const id of (await api('GET', '/api/sessions')).body.sessions.map((x: { session_id: string }) => x.session_id)) await api('DELETE', `/api/sessions/${id}`);
  const settle = Date.now() + 5000;
  while (s.sluice.connections.size > 0 && Date.now() < settle) await sleep(50);
  if (s.sluice.connections.size > 0) problems.push(`${s.sluice.connections.size} connections still open at the end`);
  gc();
  const m = process.memoryUsage();
  rss.end = m.rss;

  await replayNew();

  // ---- every socket and timer back to where it started
  agent.destroy();
  // Pooled upstream connections close with the origin's keep-alive timeout; closing sockets need a tick.
  await sleep(400);
  const end = resources();
  for (const kind of new Set([...Object.keys(baseline), ...Object.keys(end)])) {
    if ((end[kind] ?? 0) > (baseline[kind] ?? 0)) problems.push(`leaked ${kind}: ${baseline[kind] ?? 0} before the churn, ${end[kind]} after`);
  }
  const report: SoakReport = {
    durationMs,
    sessionsCreated: counters.created,
    sessionsDeleted: counters.deleted,
    sessionsExpired: counters.expired,
    heartbeats: counters.heartbeats,
    tunnels: counters.tunnels,
    forwards: counters.forwards,
    decisionsReplayed: replayed,
    mismatches,
    problems,
    rssMiB: { start: rss.start / MiB, warm: rss.warm / MiB, end: rss.end / MiB, max: rss.max / MiB, trend },
    heapMiB: { warm: heapWarm / MiB, end: m.heapUsed / MiB },
    externalMiB: { external: m.external / MiB, arrayBuffers: m.arrayBuffers / MiB },
    eventLoopDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
    handles: { baseline, end },
  };
  await s.close(true);
  await origins.close();
  return report;
}

/** The report's verdict: problems that make the run fail (empty = pass). */
export function verdict(r: SoakReport, opts: { maxHeapGrowthMiB: number }): string[] {
  const out = [...r.problems, ...r.mismatches.slice(0, 20)];
  if (r.mismatches.length > 20) out.push(`... and ${r.mismatches.length - 20} more mismatches`);
  if (r.decisionsReplayed === 0) out.push('no decisions were replayed');
  const growth = r.heapMiB.end - r.heapMiB.warm;
  if (r.heapMiB.warm > 0 && growth > opts.maxHeapGrowthMiB) out.push(`heap grew by ${growth.toFixed(1)} MiB after warm-up (limit ${opts.maxHeapGrowthMiB})`);
  return out;
}
