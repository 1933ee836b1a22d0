// Assembles a running sluice from a validated config: store -> state -> gate -> listeners
// and API. Also owns shutdown order: stop accepting, drain connections, flush the audit
// trail, close the store.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { resolve as resolvePath } from 'node:path';
import pino, { type Logger } from 'pino';
import type { Config } from './config/schema.js';
import { Control, type ChangeEvent } from './control/control.js';
import { LearningService } from './control/learning.js';
import { Revoker } from './control/revoker.js';
import { PolicyState } from './policy/state.js';
import { formatHostPort } from './policy/host.js';
import { readOrCreateSecretFile } from './identity/tokens.js';
import { openDatabase } from './store/database.js';
import { Store } from './store/store.js';
import { AuditLog } from './audit/audit-log.js';
import { createDecisionSink } from './audit/decision-sink.js';
import { EventBus } from './events/bus.js';
import { WebhookSink } from './events/webhook.js';
import { Limiter } from './limits/limiter.js';
import { Metrics } from './metrics/metrics.js';
import { Gate } from './proxy/gate.js';
import { systemResolver, type HostResolver } from './proxy/dns.js';
import { cachedResolver } from './proxy/dns-cache.js';
import { SelfGuard } from './proxy/self-guard.js';
import { refuseProxyLoop } from './proxy/upstream-proxy.js';
import { Connections, type ConnectionClosed } from './proxy/connections.js';
import { createHttpHandler } from './proxy/http-handler.js';
import { createProxyListener } from './proxy/listener.js';
import { createConnectHandler } from './proxy/connect-handler.js';
import { createApiServer } from './api/server.js';

export interface SluiceOptions {
  readonly logger?: Logger;
  /** Replaces system DNS (tests inject slow or failing resolvers). */
  readonly resolver?: HostResolver;
  readonly clock?: () => number;
}

export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

export interface Sluice {
  readonly http: Endpoint;
  readonly socks: Endpoint;
  readonly api: Endpoint;
  readonly apiToken: string;
  readonly apiTokenFile: string | null;
  readonly dataDir: string;
  readonly control: Control;
  readonly connections: Connections;
  readonly audit: AuditLog;
  close(): Promise<void>;
}

function splitListen(address: string): Endpoint {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(address.slice(colon + 1)) };
}

function listen(server: net.Server, at: Endpoint): Promise<Endpoint> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: at.host, port: at.port }, () => {
      server.off('error', reject);
      const a = server.address() as net.AddressInfo;
      resolve({ host: a.address, port: a.port });
    });
  });
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** The event published for a control-plane change. */
function changeEvent(e: ChangeEvent): { container: string | null; data: Record<string, unknown> } {
  if ('rule' in e) {
    const r = e.rule;
    return { container: null, data: { rule_id: r.id, layer: r.layer, session_id: r.sessionId, container_pattern: r.containerPattern, destination_pattern: r.destinationPattern, port_pattern: r.portPattern, action: r.action } };
  }
  if (e.type === 'learning.changed') return { container: e.container, data: { enabled: e.enabled } };
  return { container: e.container, data: { session_id: e.sessionId } };
}

export async function startSluice(config: Config, options: SluiceOptions = {}): Promise<Sluice> {
  const logger = options.logger ?? pino({ level: config.log.level, base: { service: 'sluice' } });
  const clock = options.clock ?? Date.now;
  const dataDir = resolvePath(config.data_dir);
  // Validated before anything is opened, so a bad webhook setting leaves nothing behind.
  let webhook: WebhookSink | null = null;
  if (config.webhook.url) {
    webhook = new WebhookSink(
      {
        url: config.webhook.url,
        allowedHosts: config.webhook.allowed_hosts,
        types: config.webhook.types,
        batchSize: config.webhook.batch_size,
        flushIntervalMs: config.webhook.flush_interval_ms,
        maxQueue: config.webhook.max_queue,
        maxRetries: config.webhook.max_retries,
      },
      (err) => logger.warn({ err }, 'webhook delivery failed'),
    );
  }
  const db = openDatabase(dataDir);
  const store = new Store(db);

  // SLUICE_API_TOKEN and SLUICE_API_TOKEN_FILE reach here as config.api_token (config/load.ts).
  let apiToken = config.api_token;
  let apiTokenFile: string | null = null;
  let tokenSecret: Buffer;
  try {
    if (!apiToken) {
      const t = readOrCreateSecretFile(dataDir, 'api-token', () => randomBytes(32).toString('base64url'));
      apiToken = t.value;
      apiTokenFile = t.path;
    }
    tokenSecret = Buffer.from(readOrCreateSecretFile(dataDir, 'token-secret', () => randomBytes(32).toString('hex')).value, 'hex');
  } catch (err) {
    // A full or read-only data dir: fail start-up without leaving the database open.
    db.close();
    throw err;
  }

  if (config.identity === 'username') {
    logger.warn('identity: username — proxy passwords are NOT checked; any client can claim any container name. Use only with launchers that cannot send session tokens.');
  }
  if (!config.guard_special_ranges) {
    logger.warn('guard_special_ranges: false — wildcard rules and learning mode can reach private, link-local and metadata addresses.');
  }

  const state = new PolicyState();
  const httpAt = splitListen(config.listen.http);
  const socksAt = splitListen(config.listen.socks);
  const apiAt = splitListen(config.listen.api);
  // Filled once the listeners are bound (port 0 resolves then).
  const bound = { http: httpAt, socks: socksAt };
  const advertise = (e: Endpoint): string => {
    const host = config.advertise_host ?? (e.host === '0.0.0.0' || e.host === '::' ? '127.0.0.1' : e.host);
    return `${urlHost(host)}:${e.port}`;
  };
  const control = new Control(store, state, clock, {
    defaultTtlSeconds: config.sessions.default_ttl_seconds,
    maxRulesPerSession: config.sessions.max_rules_per_session,
    tokenSecret,
    proxyUrls: (container, token) => {
      const cred = `${encodeURIComponent(container)}:${encodeURIComponent(token)}`;
      return { http: `http://${cred}@${advertise(bound.http)}`, socks5: `socks5h://${cred}@${advertise(bound.socks)}` };
    },
  });
  control.load();

  let storeHealthy = true;
  const storeError = (what: string) => (err: unknown) => {
    storeHealthy = false;
    logger.error({ err }, `${what} failed; decisions continue from memory`);
  };
  const audit = new AuditLog(
    db,
    {
      flushIntervalMs: config.audit.flush_interval_ms,
      flushBatch: config.audit.flush_batch,
      maxQueue: config.audit.max_queue,
      retentionDays: config.audit.retention_days,
      maxRows: config.audit.max_rows,
    },
    storeError('audit write'),
    (failed) => logger.info({ failedFlushes: failed }, 'audit writes recovered; the decisions queued meanwhile are stored'),
  );
  const bus = new EventBus(clock);
  const limiter = new Limiter(config.limits.max_limiter_keys, clock);
  // `connections` is created below; the metric sources only read it at scrape time.
  let connections: Connections | null = null;
  const dns = cachedResolver(options.resolver ?? systemResolver, config.dns, config.timeouts.dns_ms, clock);
  const dnsCache = dns.cache;
  const metrics = new Metrics({
    sessionsActive: () => control.listSessions().sessions.length,
    rulesByLayer: () => ({ global: state.global.size, builtin: state.builtin.size, session: [...state.allSessions()].reduce((n, e) => n + e.rules.size, 0) }),
    openConnections: () => connections?.size ?? 0,
    auditQueueDepth: () => audit.queueDepth,
    auditDropped: () => audit.dropped,
    eventSubscribers: () => bus.subscriberCount,
    eventSubscribersDropped: () => bus.droppedSubscribers,
    limiterKeys: () => limiter.keyCount,
    limiterKeysRejected: () => limiter.keysRejected,
    dnsCache: dnsCache ? () => ({ ...dnsCache.stats, entries: dnsCache.size }) : undefined,
  });
  const decisionLog = config.log.decisions ? logger.child({ component: 'decision' }) : null;

  const onClosed = (c: ConnectionClosed): void => {
    const a = c.info.admission;
    a.release();
    // Only the figures: the record queued until the next flush must not hold the admission.
    audit.closed(a.record.id, { bytesUp: c.bytesUp, bytesDown: c.bytesDown, durationMs: c.durationMs, reason: c.reason });
    metrics.addBytes(c.bytesUp, c.bytesDown);
    const published = bus.wants('connection.closed');
    if (!published && !decisionLog) return;
    const data = {
      connection_id: c.info.id,
      decision_id: a.record.id,
      session_id: a.record.sessionId,
      protocol: c.info.protocol,
      destination: formatHostPort(a.destination.host, a.port),
      address: c.info.address,
      bytes_up: c.bytesUp,
      bytes_down: c.bytesDown,
      duration_ms: c.durationMs,
      close_reason: c.reason,
    };
    if (published) bus.publish('connection.closed', a.container, data);
    decisionLog?.info({ container: a.container, ...data }, 'connection closed');
  };
  connections = new Connections(clock, config.timeouts.idle_ms, onClosed);
  const openConnections = connections;

  const selfGuard = new SelfGuard();
  const gate = new Gate(state, {
    identityMode: config.identity,
    dnsTimeoutMs: config.timeouts.dns_ms,
    clock,
    resolver: dns.resolver,
    selfGuard,
    guardSpecialRanges: config.guard_special_ranges,
    limiter,
    defaultLimits: { maxConnections: config.limits.max_connections, connectionsPerSecond: config.limits.connections_per_second },
    nextDecisionId: () => audit.newDecisionId(),
    onDecision: createDecisionSink({ audit, metrics, bus, log: decisionLog }),
    observeDecisionSeconds: (seconds) => metrics.decisionSeconds.observe(seconds),
    onUpstreamFailure: (record, failure) => {
      audit.failed(record.id, failure.kind);
      decisionLog?.info({ id: record.id, container: record.container, destination: record.destination, port: record.port, error: failure.kind, detail: failure.detail }, 'upstream failure');
    },
  });

  const revoker = new Revoker(
    state,
    { open: () => openConnections.infos(), close: (id, reason) => openConnections.close(id, reason) },
    clock,
    (c, why) => {
      metrics.revoked.inc();
      logger.info({ connection_id: c.id, container: c.admission.container, destination: formatHostPort(c.admission.destination.host, c.admission.port), why }, 'connection revoked');
    },
  );
  control.onChange((e) => {
    if (bus.wants(e.type)) {
      const { container, data } = changeEvent(e);
      bus.publish(e.type, container, data);
    }
    // Only a change that can take access away needs the open connections re-decided: a new
    // allow rule cannot, and neither can a heartbeat (it only extends a session's life).
    if (e.type === 'session.heartbeat' || (e.type === 'rule.created' && e.rule.action === 'allow')) return;
    // Session and learning changes touch one container; a rule can touch any.
    revoker.schedule('container' in e && e.container !== '' ? e.container : null);
  });

  const handlerOpts = {
    gate,
    connections,
    connectTimeoutMs: config.timeouts.connect_ms,
    upstreamIdleMs: config.timeouts.upstream_idle_ms,
    handshakeTimeoutMs: config.timeouts.handshake_ms,
    observeConnectSeconds: (seconds: number) => metrics.connectSeconds.observe(seconds),
    onRetry: () => metrics.forwardRetries.inc(),
    upstreamProxy: config.upstream_proxy ?? null,
  };
  const connect = createConnectHandler(handlerOpts);
  const listenerOpts = { ...handlerOpts, connect, maxHeaderBytes: config.limits.max_header_bytes };
  const httpHandler = createHttpHandler(listenerOpts);
  const httpListener = createProxyListener(httpHandler, listenerOpts);
  const socksListener = createProxyListener(httpHandler, listenerOpts);

  webhook?.start(bus);

  const api = createApiServer({
    control,
    gate,
    audit,
    bus,
    metrics,
    learning: new LearningService(audit, control, clock),
    connections: {
      list: (container) =>
        openConnections
          .entries()
          .filter((c) => container === undefined || c.admission.container === container)
          .map((c) => ({
            id: c.id,
            decisionId: c.admission.record.id,
            kind: c.kind,
            protocol: c.protocol,
            container: c.admission.container,
            sessionId: c.admission.record.sessionId,
            destination: c.admission.destination.host,
            port: c.admission.port,
            address: c.address,
            since: c.since,
            bytesUp: c.bytesUp,
            bytesDown: c.bytesDown,
            layer: c.admission.verdict.layer,
            ruleId: c.admission.verdict.rule?.id ?? null,
            reason: c.admission.verdict.reason,
          })),
      close: (id, reason) => openConnections.close(id, reason),
    },
    maxEventBufferBytes: config.events.max_buffer_bytes,
    token: apiToken,
    maxBodyBytes: config.limits.max_api_body_bytes,
    logger: logger.child({ component: 'api' }),
    health: () => ({ store: storeHealthy && audit.healthy ? 'ok' : 'degraded', open_connections: openConnections.size }),
  });

  let httpEnd: Endpoint;
  let socksEnd: Endpoint;
  let apiEnd: Endpoint;
  try {
    httpEnd = await listen(httpListener, httpAt);
    socksEnd = await listen(socksListener, socksAt);
    await api.listen({ host: apiAt.host, port: apiAt.port });
    const a = api.server.address() as net.AddressInfo;
    apiEnd = { host: a.address, port: a.port };
    for (const e of [httpEnd, socksEnd, apiEnd]) selfGuard.add(e.host, e.port);
    refuseProxyLoop(config.upstream_proxy, selfGuard);
  } catch (err) {
    httpListener.close();
    socksListener.close();
    await api.close();
    db.close();
    throw err;
  }
  bound.http = httpEnd;
  bound.socks = socksEnd;
  audit.start();

  // Expiry is time-driven: each tick deletes what expired (a learning switch or a rule that
  // ran out included), and each deletion re-decides the open connections it touches.
  let lastRetention = 0;
  const sweeper = setInterval(() => {
    const now = clock();
    let announced = true;
    try {
      control.sweep();
      storeHealthy = true;
    } catch (err) {
      storeError('session sweep')(err);
      announced = false;
    }
    revoker.tick(!announced);
    limiter.evictIdle(now);
    if (now - lastRetention >= 60_000) {
      lastRetention = now;
      audit.enforceRetention(now);
    }
  }, config.sessions.sweep_interval_ms);
  sweeper.unref();

  logger.info(
    {
      http_proxy: formatHostPort(httpEnd.host, httpEnd.port),
      socks_proxy: formatHostPort(socksEnd.host, socksEnd.port),
      api: `http://${formatHostPort(apiEnd.host, apiEnd.port)}`,
      data_dir: dataDir,
      api_token: apiTokenFile ? `in ${apiTokenFile}` : 'from configuration',
      upstream_proxy: config.upstream_proxy?.label ?? 'none (direct)',
    },
    'sluice listening',
  );

  let closing: Promise<void> | null = null;
  return {
    http: httpEnd,
    socks: socksEnd,
    api: apiEnd,
    apiToken,
    apiTokenFile,
    dataDir,
    control,
    connections: openConnections,
    audit,
    close() {
      closing ??= (async () => {
        clearInterval(sweeper);
        const stopped = Promise.all([
          new Promise<void>((r) => httpListener.close(() => r())),
          new Promise<void>((r) => socksListener.close(() => r())),
        ]);
        httpHandler.closeIdleConnections();
        await api.close();
        await openConnections.drain(config.timeouts.shutdown_grace_ms);
        openConnections.closeAll('shutdown');
        httpHandler.closeAllConnections();
        // Stops the header-timeout checker the handler runs (it never listened itself).
        httpHandler.close(() => undefined);
        await stopped;
        // A client that left while its decision waited for DNS holds no socket, but its
        // decision (and the close of what it admitted) is still coming: wait for it before
        // the audit closes. DNS and dialling have their own deadlines.
        await gate.settled(config.timeouts.dns_ms + config.timeouts.connect_ms);
        await webhook?.stop();
        audit.stop();
        db.close();
        logger.info('sluice stopped');
        logger.flush?.();
      })();
      return closing;
    },
  };
}
