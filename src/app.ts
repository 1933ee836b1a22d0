// Assembles a running sluice from a validated config: store -> state -> gate -> listeners
// and API. Also owns shutdown order: stop accepting, drain tunnels, close the store.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { resolve as resolvePath } from 'node:path';
import pino, { type Logger } from 'pino';
import type { Config } from './config/schema.js';
import { Control } from './control/control.js';
import { PolicyState } from './policy/state.js';
import { formatHostPort } from './policy/host.js';
import { readOrCreateSecretFile } from './identity/tokens.js';
import { openDatabase } from './store/database.js';
import { Store } from './store/store.js';
import { Gate, type DecisionRecord } from './proxy/gate.js';
import { systemResolver, type HostResolver } from './proxy/dns.js';
import { SelfGuard } from './proxy/self-guard.js';
import { Tunnels, type TunnelClosed } from './proxy/tunnels.js';
import { createHttpHandler } from './proxy/http-handler.js';
import { createProxyListener } from './proxy/listener.js';
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
  readonly tunnels: Tunnels;
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

export async function startSluice(config: Config, options: SluiceOptions = {}): Promise<Sluice> {
  const logger = options.logger ?? pino({ level: config.log.level, base: { service: 'sluice' } });
  const clock = options.clock ?? Date.now;
  const dataDir = resolvePath(config.data_dir);
  const db = openDatabase(dataDir);
  const store = new Store(db);

  // SLUICE_API_TOKEN reaches here as config.api_token (see config/load.ts).
  let apiToken = config.api_token;
  let apiTokenFile: string | null = null;
  if (!apiToken) {
    const t = readOrCreateSecretFile(dataDir, 'api-token', () => randomBytes(32).toString('base64url'));
    apiToken = t.value;
    apiTokenFile = t.path;
  }
  const tokenSecret = Buffer.from(readOrCreateSecretFile(dataDir, 'token-secret', () => randomBytes(32).toString('hex')).value, 'hex');

  if (config.identity === 'username') {
    logger.warn('identity: username — proxy passwords are NOT checked; any client can claim any container name. Use only with launchers that cannot send session tokens.');
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

  const decisionLog = logger.child({ component: 'decision' });
  const onDecision = config.log.decisions
    ? (r: DecisionRecord): void =>
        decisionLog.info(
          {
            container: r.container,
            session: r.sessionId,
            protocol: r.protocol,
            client: r.clientAddress,
            destination: r.destination,
            port: r.port,
            resolved: r.address,
            decision: r.decision,
            reason: r.reason,
            layer: r.layer,
            rule: r.ruleId,
          },
          'decision',
        )
    : (): void => undefined;
  const onTunnelClosed = config.log.decisions
    ? (c: TunnelClosed): void =>
        decisionLog.info(
          {
            container: c.info.admission.container,
            session: c.info.admission.record.sessionId,
            protocol: c.info.protocol,
            destination: formatHostPort(c.info.admission.destination.host, c.info.admission.port),
            resolved: c.info.address,
            bytes_up: c.bytesUp,
            bytes_down: c.bytesDown,
            duration_ms: c.durationMs,
            close_reason: c.reason,
          },
          'tunnel closed',
        )
    : (): void => undefined;

  const selfGuard = new SelfGuard();
  const gate = new Gate(state, {
    identityMode: config.identity,
    dnsTimeoutMs: config.timeouts.dns_ms,
    clock,
    resolver: options.resolver ?? systemResolver,
    selfGuard,
    onDecision,
  });
  const tunnels = new Tunnels(clock, config.timeouts.idle_ms, onTunnelClosed);
  const handlerOpts = { gate, tunnels, connectTimeoutMs: config.timeouts.connect_ms, handshakeTimeoutMs: config.timeouts.handshake_ms };
  const httpHandler = createHttpHandler({ ...handlerOpts, maxHeaderBytes: config.limits.max_header_bytes });
  const httpListener = createProxyListener(httpHandler, handlerOpts);
  const socksListener = createProxyListener(httpHandler, handlerOpts);

  let storeHealthy = true;
  const api = createApiServer({
    control,
    gate,
    token: apiToken,
    maxBodyBytes: config.limits.max_api_body_bytes,
    logger: logger.child({ component: 'api' }),
    health: () => ({ store: storeHealthy ? 'ok' : 'degraded', open_tunnels: tunnels.size }),
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
  } catch (err) {
    httpListener.close();
    socksListener.close();
    await api.close();
    db.close();
    throw err;
  }
  bound.http = httpEnd;
  bound.socks = socksEnd;
  for (const e of [httpEnd, socksEnd, apiEnd]) selfGuard.add(e.host, e.port);

  const sweeper = setInterval(() => {
    try {
      control.sweep();
      storeHealthy = true;
    } catch (err) {
      storeHealthy = false;
      logger.error({ err }, 'session sweep failed; decisions continue from memory');
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
    tunnels,
    close() {
      closing ??= (async () => {
        clearInterval(sweeper);
        const stopped = Promise.all([
          new Promise<void>((r) => httpListener.close(() => r())),
          new Promise<void>((r) => socksListener.close(() => r())),
        ]);
        httpHandler.closeIdleConnections();
        await api.close();
        await tunnels.drain(config.timeouts.shutdown_grace_ms);
        tunnels.closeAll('shutdown');
        httpHandler.closeAllConnections();
        await stopped;
        db.close();
        logger.info('sluice stopped');
        logger.flush?.();
      })();
      return closing;
    },
  };
}
