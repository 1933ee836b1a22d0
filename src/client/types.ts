// Request and response shapes of the sluice control API, for launchers written in
// TypeScript. Request types come straight from the server's zod schemas (their *input*
// side: defaults are optional), so a field the server adds or renames shows up here at
// compile time. Response types mirror what src/control/control.ts and the API routes return.
import type { z } from 'zod';
import type {
  checkSchema,
  learningSchema,
  networkRuleSchema,
  ruleCreateSchema,
  ruleListQuerySchema,
  rulePatchSchema,
  sessionCreateSchema,
} from '../control/schemas.js';

// ---- requests ------------------------------------------------------------------

/** `POST /api/sessions`. Re-posting with the same `session_id` updates it in place (same token). */
export type SessionCreateRequest = z.input<typeof sessionCreateSchema>;
/** One entry of `network_rules`. */
export type NetworkRuleInput = z.input<typeof networkRuleSchema>;
/** `POST /api/rules` (a global rule). */
export type RuleCreateRequest = z.input<typeof ruleCreateSchema>;
/** `PATCH /api/rules/{id}`. */
export type RulePatchRequest = z.input<typeof rulePatchSchema>;
/** `GET /api/rules?...` */
export type RuleListQuery = z.input<typeof ruleListQuerySchema>;
/** `PUT /api/containers/{name}/learning`. */
export type LearningRequest = z.input<typeof learningSchema>;
/** `POST /api/check`. */
export type CheckRequest = z.input<typeof checkSchema>;

/** `GET /api/decisions?...`. Times are ISO 8601 text, epoch milliseconds or a Date. */
export interface DecisionQuery {
  container?: string;
  session_id?: string;
  decision?: Action;
  destination?: string;
  since?: string | number | Date;
  until?: string | number | Date;
  /** 1-1000, server default 100. */
  limit?: number;
  /** `next_cursor` of the previous page. */
  cursor?: string;
}

/** `GET /api/events?...` */
export interface EventQuery {
  /** Event types to receive (`decision`, `session.created`, ...); all when absent. */
  types?: readonly string[] | string;
  container?: string;
  /** Aborting ends the stream (the iterator finishes without an error). */
  signal?: AbortSignal;
  /**
   * Called once the server has accepted the subscription (before any event), so a caller
   * can read history knowing that nothing after this point will be missed.
   */
  onOpen?: () => void;
}

/** `POST /api/containers/{name}/learned/promote`. */
export interface PromoteRequest {
  /** `container` (default): global rules for this container only; `global`: for every container. */
  scope?: 'container' | 'global';
  /** Only these learned destinations (default: all of them). */
  destinations?: string[];
  /** Group two or more siblings (a.cdn.x, b.cdn.x) into `*.cdn.x`, never over a public suffix. */
  collapse_subdomains?: boolean;
}

/** `GET /api/connections?...` */
export interface ConnectionQuery {
  container?: string;
}

// ---- responses -----------------------------------------------------------------

export type Action = 'allow' | 'deny';
export type Layer = 'global' | 'session' | 'builtin';

export interface Rule {
  id: number;
  layer: Layer;
  session_id: string | null;
  container_pattern: string;
  destination_pattern: string;
  port_pattern: string;
  action: Action;
  /** ISO 8601, or null for no expiry. */
  expires_at: string | null;
  notes: string | null;
  created_at: string | null;
}

/** Proxy URLs with the session's credentials embedded, ready for HTTP_PROXY / ALL_PROXY. */
export interface ProxyUrls {
  /** `http://<container>:<token>@host:port` */
  http: string;
  /** `socks5h://<container>:<token>@host:port` */
  socks5: string;
}

export interface SessionCreated {
  session_id: string;
  container_name: string;
  created_at: string | null;
  expires_at: string | null;
  rules_created: number;
  allow_all: boolean;
  /** The proxy password for this session (username = container name). */
  proxy_token: string;
  proxy: ProxyUrls;
}

export interface SessionSummary {
  session_id: string;
  container_name: string;
  created_at: string | null;
  expires_at: string | null;
  ttl_seconds: number;
  allow_all: boolean;
  source_ips: string[];
  metadata: Record<string, unknown> | null;
  rule_count: number;
}

export interface SessionDetail extends Omit<SessionSummary, 'rule_count'> {
  rules: Rule[];
}

export interface SessionList {
  sessions: SessionSummary[];
}

export interface HeartbeatResult {
  session_id: string;
  expires_at: string | null;
}

export interface SessionDeleted {
  session_id: string;
  deleted: true;
}

export interface RuleList {
  rules: Rule[];
}

export interface RuleDeleted {
  id: number;
  deleted: true;
}

export interface ContainerInfo {
  container_name: string;
  current_session: SessionSummary | null;
  active_sessions: string[];
  learning: {
    active: boolean;
    /** Why learning is on (`session`, `operator`), or null. */
    source: string | null;
    operator_switch: { enabled: boolean; expires_at: string | null };
  };
  rule_counts: { session: number; global: number };
}

export interface ContainerList {
  containers: ContainerInfo[];
}

export interface CheckResult {
  decision: Action;
  layer: Layer | null;
  rule: Rule | null;
  reason: string;
  explanation: string;
  destination?: string;
  port?: number;
  session_id?: string | null;
  learning?: unknown;
  would_be?: { decision: Action; layer: Layer | null; rule: Rule | null } | null;
  /** Addresses the proxy would dial (allowed, resolved checks). */
  addresses?: string[];
  dns_error?: string;
}

export interface Decision {
  id: number;
  time: string | null;
  container: string | null;
  session_id: string | null;
  protocol: string;
  client_address: string;
  destination: string;
  port: number;
  address: string | null;
  decision: Action;
  reason: string;
  layer: string | null;
  rule_id: number | null;
  error: string | null;
  bytes_up: number | null;
  bytes_down: number | null;
  duration_ms: number | null;
  close_reason: string | null;
}

export interface DecisionPage {
  decisions: Decision[];
  /** Pass as `cursor` for the next (older) page; null on the last page. */
  next_cursor: string | null;
}

/** One destination a container reached in learning mode. */
export interface LearnedEntry {
  destination: string;
  port: number;
  /** ISO 8601. */
  first_seen: string;
  last_seen: string;
  count: number;
  /** What the rules alone (without learning mode) would have decided. */
  would_be: { decision: Action; layer: Layer | null; rule_id: number | null };
}

export interface LearnedReport {
  container_name: string;
  learning: ContainerInfo['learning'];
  learned: LearnedEntry[];
}

export interface PromoteResult {
  container_name: string;
  /** The rules created (global layer; container-scoped unless `scope: global`). */
  created: Rule[];
  /** Learned destinations left alone, e.g. `already allowed`. */
  skipped: Array<{ destination: string; port: number; reason: string }>;
}

/** An open tunnel or in-flight forwarded request. */
export interface OpenConnection {
  id: number;
  /** The decision record that admitted it (see `decisions()`). */
  decision_id: number;
  kind: 'tunnel' | 'forward';
  protocol: string;
  container: string;
  session_id: string | null;
  destination: string;
  port: number;
  /** The address dialled. */
  address: string;
  /** ISO 8601. */
  since: string | null;
  bytes_up: number;
  bytes_down: number;
  layer: string | null;
  rule_id: number | null;
  reason: string;
}

export interface ConnectionList {
  connections: OpenConnection[];
}

export interface ConnectionClosedResult {
  id: number;
  closed: true;
}

/** One server-sent event from `GET /api/events`. */
export interface SluiceEvent {
  /** The SSE `event:` field (`decision`, `session.created`, ...). */
  type: string;
  /** The SSE `id:` field, when sent. */
  id: string | undefined;
  /** The `data:` JSON: `{type, time, container, ...}`. */
  data: { type?: string; time?: string | null; container?: string | null; [key: string]: unknown };
}

export interface Health {
  status: string;
  [key: string]: unknown;
}
