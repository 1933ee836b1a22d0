// The one description of sluice's configuration. File, environment and flags are merged
// (in that order of precedence, lowest first) and then validated here.
import { z } from 'zod';
import { upstreamProxySchema } from '../proxy/upstream-proxy.js';

/** `host:port` or `[v6]:port`; the host is a literal address to bind (no DNS at start-up). */
export const listenAddress = z
  .string()
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[0-9.]+|localhost):[0-9]{1,5}$/, 'expected HOST:PORT, e.g. 127.0.0.1:3128 or [::1]:3128')
  .refine((s) => {
    const port = Number(s.slice(s.lastIndexOf(':') + 1));
    return port >= 0 && port <= 65535;
  }, 'port must be 0-65535');

const ms = (def: number) => z.number().int().min(0).max(86_400_000).default(def);

export const configSchema = z
  .object({
    data_dir: z.string().min(1).default('./data'),
    listen: z
      .object({
        /** HTTP proxy listener; it also accepts SOCKS (the first byte decides). */
        http: listenAddress.default('127.0.0.1:3128'),
        /** SOCKS listener; it also accepts HTTP. */
        socks: listenAddress.default('127.0.0.1:1080'),
        api: listenAddress.default('127.0.0.1:9080'),
      })
      .strict()
      .prefault({}),
    /** Host written into the proxy URLs the API hands out; defaults to the listener's host. */
    advertise_host: z.string().min(1).optional(),
    /** Bearer token for /api; else SLUICE_API_TOKEN, else generated into <data_dir>/api-token. */
    api_token: z.string().min(16, 'api_token must be at least 16 characters').optional(),
    /**
     * `credentials`: username = container, password = that container's session token.
     * `username`: trust the username alone (for launchers that send `container:anything`).
     */
    identity: z.enum(['credentials', 'username']).default('credentials'),
    /**
     * Keep private, link-local (cloud metadata), CGNAT, multicast and similar ranges out of
     * reach of wildcard rules, `*` and learning mode: only a rule naming the address, the
     * network or the exact hostname reaches them.
     */
    guard_special_ranges: z.boolean().default(true),
    /**
     * A parent proxy that every allowed connection is dialled through: SOCKS
     * (`socks5://[user:pass@]host:port`, `socks4://`) or HTTP (`http://[user:pass@]host:port`,
     * one CONNECT per connection); absent = connect directly. Policy is unchanged: sluice
     * still resolves and checks, and asks the parent for the checked address. The URL is
     * validated by upstreamProxySchema (`https://` and remote-resolving schemes are refused).
     */
    upstream_proxy: upstreamProxySchema.optional(),
    timeouts: z
      .object({
        connect_ms: ms(10_000),
        dns_ms: ms(5_000),
        /** Time allowed for a client to send its request headers or SOCKS handshake. */
        handshake_ms: ms(10_000),
        /** Close a tunnel after this long without bytes in either direction; 0 disables. */
        idle_ms: ms(0),
        /**
         * HTTP forwarding: close a kept-alive connection to an origin after this long unused
         * (a second before the origin's announced `Keep-Alive: timeout` when that is sooner);
         * 0 sets no limit of its own. Below the usual origin timeouts (5 s in Apache and Node),
         * so a request is not sent on a connection the origin is closing.
         */
        upstream_idle_ms: ms(4_000),
        /** On SIGTERM/SIGINT, how long open tunnels may drain before they are cut. */
        shutdown_grace_ms: ms(10_000),
      })
      .strict()
      .prefault({}),
    /**
     * Cache of hostname lookups (src/proxy/dns-cache.ts). Answers are still checked against
     * the rules on every request. The TTLs are fixed: dns.lookup does not report the
     * record's TTL, so they also bound how stale an answer can get.
     */
    dns: z
      .object({
        /** How long an answer is reused; 0 turns the cache off (every request resolves). */
        cache_ttl_ms: z.number().int().min(0).max(3_600_000).default(30_000),
        /** How long "no such name" / "no addresses" is reused; 0 = not cached. Timeouts never are. */
        negative_ttl_ms: z.number().int().min(0).max(3_600_000).default(5_000),
        /** Names kept; beyond it the least recently used is dropped. */
        cache_size: z.number().int().min(1).max(1_000_000).default(10_000),
      })
      .strict()
      .prefault({}),
    sessions: z
      .object({
        default_ttl_seconds: z.number().int().min(1).max(86_400).default(900),
        sweep_interval_ms: z.number().int().min(50).max(3_600_000).default(1_000),
        max_rules_per_session: z.number().int().min(1).max(100_000).default(1_000),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        /** Largest request head (request line + headers) the HTTP proxy reads; larger gets 431. */
        max_header_bytes: z.number().int().min(1024).max(1_048_576).default(16_384),
        /** Largest API request body; larger gets 413. */
        max_api_body_bytes: z.number().int().min(1024).max(64 * 1_048_576).default(1_048_576),
        /** Per-container concurrent connections (0 = unlimited); a session's `limits` overrides it. */
        max_connections: z.number().int().min(0).max(1_000_000).default(0),
        /** Per-container new connections per second (0 = unlimited); a session's `limits` overrides it. */
        connections_per_second: z.number().min(0).max(1_000_000).default(0),
        /** Distinct containers the limiter tracks; beyond it new containers fail closed. */
        max_limiter_keys: z.number().int().min(1).max(10_000_000).default(100_000),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        flush_interval_ms: z.number().int().min(10).max(60_000).default(100),
        flush_batch: z.number().int().min(1).max(100_000).default(500),
        /** Records waiting for the disk beyond this are dropped (and counted), never buffered without bound. */
        max_queue: z.number().int().min(100).max(10_000_000).default(200_000),
        retention_days: z.number().min(0.001).max(3650).default(30),
        max_rows: z.number().int().min(1000).max(1_000_000_000).default(5_000_000),
      })
      .strict()
      .prefault({}),
    events: z
      .object({
        /** An event subscriber with more than this many bytes unsent is disconnected. */
        max_buffer_bytes: z.number().int().min(1024).max(256 * 1_048_576).default(1_048_576),
      })
      .strict()
      .prefault({}),
    webhook: z
      .object({
        /** POSTs batches of events as JSON; must be on loopback or a host listed in allowed_hosts. */
        url: z.url({ protocol: /^https?$/ }).optional(),
        allowed_hosts: z.array(z.string().min(1)).default([]),
        types: z.array(z.string()).default(['decision']),
        batch_size: z.number().int().min(1).max(10_000).default(100),
        flush_interval_ms: z.number().int().min(10).max(600_000).default(1_000),
        max_queue: z.number().int().min(1).max(10_000_000).default(10_000),
        max_retries: z.number().int().min(0).max(100).default(5),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
        /** One log line per decision and per closed tunnel. */
        decisions: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
/** What a config file, env or flags may contain before defaults are applied. */
export type ConfigInput = z.input<typeof configSchema>;
