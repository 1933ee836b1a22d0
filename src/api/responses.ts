// What the control API answers, as zod schemas: the one definition of its JSON bodies.
// (What it accepts is in src/control/schemas.ts.)
//
// - The client's response types are z.infer of these (src/client/types.ts), and the
//   client checks every answer against them (SluiceClient, SluiceResponseError).
// - test/e2e/api-responses.test.ts calls every route in ROUTE_RESPONSES on a real server
//   and parses each answer here, so the handlers and this file cannot drift apart.
//
// Objects are strict: a field the server adds or drops fails that test. The client lets
// added fields through (an older client talking to a newer server), nothing else.
// A field is nullable exactly when the server can send null for it.
//
// Vocabularies that are fixed (allow/deny, layers) are enums; ones that grow with the
// proxy's features (reasons, protocols, close reasons, error kinds) are strings, so a
// newer server does not break an older launcher.
//
// The server does not parse its own answers (that would cost every request); the routes
// that build bodies here in src/api are typed with these types instead.
// Loaded by the client: this module must import nothing but zod at run time.
import { z } from 'zod';
import type { EventType } from '../events/bus.js';
import type { LearningSource } from '../policy/state.js';
import type { Action as PolicyAction, Layer as PolicyLayer } from '../policy/rules.js';

/** Times are ISO 8601 in UTC, as Date#toISOString() writes them (src/control/iso-time.ts). */
const time = z.iso.datetime();
export type ApiTime = z.infer<typeof time>;
const id = z.number().int().min(1);
const count = z.number().int().min(0);
const port = z.number().int().min(1).max(65_535);

export const actionSchema = z.enum(['allow', 'deny']);
export const layerSchema = z.enum(['global', 'session', 'builtin']);
export const learningSourceSchema = z.enum(['session', 'operator']);

// ---- rules -----------------------------------------------------------------------

/** A rule as sessions, checks and promotions show it. */
export const ruleSchema = z.strictObject({
  id,
  layer: layerSchema,
  /** The owning session (session rules only). */
  session_id: z.string().nullable(),
  container_pattern: z.string(),
  destination_pattern: z.string(),
  port_pattern: z.string(),
  action: actionSchema,
  /** Null: no expiry. */
  expires_at: time.nullable(),
  notes: z.string().nullable(),
  created_at: time,
});

/** A rule as `/api/rules` shows it: with its usage counters. */
export const ruleWithUsageSchema = ruleSchema.extend({
  /** Connection attempts this rule decided. */
  hit_count: count,
  /** Null until the rule first decides something. */
  last_used_at: time.nullable(),
});

export const ruleListSchema = z.strictObject({ rules: z.array(ruleWithUsageSchema) });
export const ruleDeletedSchema = z.strictObject({ id, deleted: z.literal(true) });

// ---- sessions --------------------------------------------------------------------

/** Proxy URLs with the session's credentials embedded, ready for HTTP_PROXY / ALL_PROXY. */
export const proxyUrlsSchema = z.strictObject({
  /** `http://<container>:<token>@host:port` */
  http: z.string(),
  /** `socks5h://<container>:<token>@host:port` */
  socks5: z.string(),
});

export const sessionCreatedSchema = z.strictObject({
  session_id: z.string(),
  container_name: z.string(),
  created_at: time,
  expires_at: time,
  rules_created: count,
  allow_all: z.boolean(),
  /** The proxy password for this session (username = container name). */
  proxy_token: z.string(),
  proxy: proxyUrlsSchema,
});

/** A session's own connection limits; null fields fall back to the configured ones. */
export const sessionLimitsInfoSchema = z.strictObject({
  max_connections: count.nullable(),
  connections_per_second: z.number().min(0).nullable(),
});

const sessionSchema = z.strictObject({
  session_id: z.string(),
  container_name: z.string(),
  created_at: time,
  expires_at: time,
  ttl_seconds: z.number().int().min(1),
  allow_all: z.boolean(),
  source_ips: z.array(z.string()),
  metadata: z.record(z.string(), z.unknown()).nullable(),
  /** Null: the configured per-container limits apply. */
  limits: sessionLimitsInfoSchema.nullable(),
});

export const sessionSummarySchema = sessionSchema.extend({ rule_count: count });
export const sessionDetailSchema = sessionSchema.extend({ rules: z.array(ruleSchema) });
export const sessionListSchema = z.strictObject({ sessions: z.array(sessionSummarySchema) });
export const heartbeatResultSchema = z.strictObject({ session_id: z.string(), expires_at: time });
export const sessionDeletedSchema = z.strictObject({ session_id: z.string(), deleted: z.literal(true) });

// ---- containers and learning -------------------------------------------------------

export const learningStateSchema = z.strictObject({
  active: z.boolean(),
  /** Why learning is on (the session asked, or the operator switch), or null when off. */
  source: learningSourceSchema.nullable(),
  operator_switch: z.strictObject({
    enabled: z.boolean(),
    /** Null: off, or on without a TTL. */
    expires_at: time.nullable(),
  }),
});

export const containerInfoSchema = z.strictObject({
  container_name: z.string(),
  /** The session whose rules count for this container now, if any. */
  current_session: sessionSummarySchema.nullable(),
  active_sessions: z.array(z.string()),
  learning: learningStateSchema,
  rule_counts: z.strictObject({ session: count, global: count }),
});

export const containerListSchema = z.strictObject({ containers: z.array(containerInfoSchema) });

/** One destination a container reached in learning mode. */
export const learnedEntrySchema = z.strictObject({
  destination: z.string(),
  port,
  first_seen: time,
  last_seen: time,
  count,
  /** What the rules alone (without learning mode) would have decided. */
  would_be: z.strictObject({ decision: actionSchema, layer: layerSchema.nullable(), rule_id: id.nullable() }),
});

export const learnedReportSchema = z.strictObject({
  container_name: z.string(),
  learning: learningStateSchema,
  learned: z.array(learnedEntrySchema),
});

export const promoteResultSchema = z.strictObject({
  container_name: z.string(),
  /** The rules created (global layer; container-scoped unless `scope: global`). */
  created: z.array(ruleSchema),
  /** Learned destinations left alone, e.g. `already allowed`. */
  skipped: z.array(z.strictObject({ destination: z.string(), port, reason: z.string() })),
});

// ---- policy --------------------------------------------------------------------------

export const checkResultSchema = z.strictObject({
  decision: actionSchema,
  /** The deciding layer; null for the default deny and for learning mode. */
  layer: layerSchema.nullable(),
  rule: ruleSchema.nullable(),
  /** `rule`, `default_deny`, `learning`, `address_denied`, ... */
  reason: z.string(),
  /** One human-readable line. */
  explanation: z.string(),
  /** The destination as the proxy reads it (canonical host). */
  destination: z.string(),
  port,
  /** The container's current session, whose rules counted. */
  session_id: z.string().nullable(),
  learning: learningSourceSchema.nullable(),
  /** In learning mode: what the rules alone would have decided. */
  would_be: z.strictObject({ decision: actionSchema, layer: layerSchema.nullable(), rule: ruleSchema.nullable() }).nullable(),
  /** Allowed `resolve: true` checks: the addresses the proxy would dial. */
  addresses: z.array(z.string()).optional(),
  /** Checks whose name did not resolve: `dns_error` or `dns_timeout`. */
  dns_error: z.string().optional(),
});

// ---- observing -------------------------------------------------------------------------

/** One connection attempt as decided: the audit trail's rows and `decision` events share these. */
const attempt = {
  /** Null when the client could not be identified. */
  container: z.string().nullable(),
  session_id: z.string().nullable(),
  /** `http`, `connect`, `socks5`, `socks4`. */
  protocol: z.string(),
  client_address: z.string(),
  destination: z.string(),
  port: z.number().int().min(0).max(65_535),
  /** The address dialled (or refused); null when it never came to an address. */
  address: z.string().nullable(),
  decision: actionSchema,
  reason: z.string(),
  layer: layerSchema.nullable(),
  rule_id: id.nullable(),
};

export const decisionSchema = z.strictObject({
  id,
  time,
  ...attempt,
  /** Why an allowed connection failed upstream (`connection_refused`, ...). */
  error: z.string().nullable(),
  /** The connection's totals, once it closed. */
  bytes_up: count.nullable(),
  bytes_down: count.nullable(),
  duration_ms: z.number().min(0).nullable(),
  close_reason: z.string().nullable(),
});

export const decisionPageSchema = z.strictObject({
  decisions: z.array(decisionSchema),
  /** Pass as `cursor` for the next (older) page; null on the last page. */
  next_cursor: z.string().nullable(),
});

/** An open tunnel or in-flight forwarded request. */
export const openConnectionSchema = z.strictObject({
  id,
  /** The decision record that admitted it. */
  decision_id: id,
  kind: z.enum(['tunnel', 'forward']),
  protocol: z.string(),
  container: z.string(),
  session_id: z.string().nullable(),
  destination: z.string(),
  port,
  /** The address dialled. */
  address: z.string(),
  since: time,
  bytes_up: count,
  bytes_down: count,
  /** Null when learning mode let it through. */
  layer: layerSchema.nullable(),
  rule_id: id.nullable(),
  reason: z.string(),
});

export const connectionListSchema = z.strictObject({ connections: z.array(openConnectionSchema) });
export const connectionClosedSchema = z.strictObject({ id, closed: z.literal(true) });

// ---- live events (the `data:` of GET /api/events, and webhook payloads) -----------------

const envelope = { id, time };

// Only global rules change on their own (session rules change with their session, built-ins
// never), so a rule event is always about a global rule.
const ruleEventSchema = z.strictObject({
  ...envelope,
  type: z.enum(['rule.created', 'rule.updated', 'rule.deleted']),
  /** Rules belong to no single container. */
  container: z.null(),
  rule_id: id,
  layer: z.literal('global'),
  session_id: z.null(),
  container_pattern: z.string(),
  destination_pattern: z.string(),
  port_pattern: z.string(),
  action: actionSchema,
});

/** One event, told apart by `type`. */
export const eventDataSchema = z.discriminatedUnion('type', [
  z.strictObject({ ...envelope, type: z.literal('decision'), decision_id: id, ...attempt }),
  z.strictObject({
    ...envelope,
    type: z.enum(['session.created', 'session.updated', 'session.heartbeat', 'session.expired', 'session.deleted']),
    container: z.string(),
    session_id: z.string(),
  }),
  ruleEventSchema,
  z.strictObject({ ...envelope, type: z.literal('learning.changed'), container: z.string(), enabled: z.boolean() }),
  z.strictObject({
    ...envelope,
    type: z.literal('connection.closed'),
    container: z.string(),
    connection_id: id,
    decision_id: id,
    session_id: z.string().nullable(),
    protocol: z.string(),
    /** `host:port` */
    destination: z.string(),
    address: z.string(),
    bytes_up: count,
    bytes_down: count,
    duration_ms: z.number().min(0),
    close_reason: z.string(),
  }),
]);

/** The body of each webhook POST. */
export const webhookBatchSchema = z.strictObject({ events: z.array(eventDataSchema) });

// ---- the rest ----------------------------------------------------------------------------

/** Every non-2xx answer from sluice itself. */
export const apiErrorSchema = z.strictObject({
  error: z.string(),
  details: z.array(z.string()),
});

/** `GET /healthz` (no token). `status` is `ok` whenever the API answers. */
export const healthSchema = z.strictObject({
  status: z.literal('ok'),
  /** `degraded` while the store refuses writes (the proxy keeps deciding from memory). */
  store: z.enum(['ok', 'degraded']),
  open_connections: count,
});

/**
 * Every route and its 2xx answer: a schema for JSON, or what else it sends. Any route's
 * error answer is `apiErrorSchema`.
 */
export const ROUTE_RESPONSES = {
  'POST /api/sessions': sessionCreatedSchema,
  'GET /api/sessions': sessionListSchema,
  'GET /api/sessions/:id': sessionDetailSchema,
  'POST /api/sessions/:id/heartbeat': heartbeatResultSchema,
  'DELETE /api/sessions/:id': sessionDeletedSchema,
  'GET /api/rules': ruleListSchema,
  'POST /api/rules': ruleWithUsageSchema,
  'GET /api/rules/:id': ruleWithUsageSchema,
  'PATCH /api/rules/:id': ruleWithUsageSchema,
  'DELETE /api/rules/:id': ruleDeletedSchema,
  'GET /api/containers': containerListSchema,
  'GET /api/containers/:name': containerInfoSchema,
  'PUT /api/containers/:name/learning': containerInfoSchema,
  'GET /api/containers/:name/learned': learnedReportSchema,
  'POST /api/containers/:name/learned/promote': promoteResultSchema,
  'POST /api/check': checkResultSchema,
  'GET /api/decisions': decisionPageSchema,
  'GET /api/connections': connectionListSchema,
  'DELETE /api/connections/:id': connectionClosedSchema,
  /** Server-sent events; each `data:` is `eventDataSchema`. */
  'GET /api/events': 'text/event-stream',
  /** Prometheus text. */
  'GET /metrics': 'text/plain',
  'GET /healthz': healthSchema,
} as const;

// The enums above are the server's own vocabularies; the build fails if one changes alone.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Expect<T extends true> = T;
type VocabulariesAgree = [
  Expect<Same<z.infer<typeof actionSchema>, PolicyAction>>,
  Expect<Same<z.infer<typeof layerSchema>, PolicyLayer>>,
  Expect<Same<z.infer<typeof learningSourceSchema>, LearningSource>>,
  Expect<Same<z.infer<typeof eventDataSchema>['type'], EventType>>,
];
