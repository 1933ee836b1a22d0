// Request and response shapes of the sluice control API, for launchers written in
// TypeScript. Both come from the server's zod schemas: requests from their *input* side
// (src/control/schemas.ts, src/api/routes-observe.ts: defaults are optional), responses
// from src/api/responses.ts, which the client also checks every answer against. A field
// the server adds, renames or makes nullable shows up here at compile time.
import type { z } from 'zod';
import type * as api from '../api/responses.js';
import type { connectionsQuerySchema, promoteSchema } from '../api/routes-observe.js';
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
export type PromoteRequest = z.input<typeof promoteSchema>;

/** `GET /api/connections?...` */
export type ConnectionQuery = z.input<typeof connectionsQuerySchema>;

// ---- responses (see src/api/responses.ts for what each field means) --------------

export type Action = z.infer<typeof api.actionSchema>;
export type Layer = z.infer<typeof api.layerSchema>;

/** A rule as sessions, checks and promotions show it. */
export type Rule = z.infer<typeof api.ruleSchema>;
/** A rule as `/api/rules` shows it: with `hit_count` and `last_used_at`. */
export type RuleWithUsage = z.infer<typeof api.ruleWithUsageSchema>;
export type RuleList = z.infer<typeof api.ruleListSchema>;
export type RuleDeleted = z.infer<typeof api.ruleDeletedSchema>;

/** Proxy URLs with the session's credentials embedded, ready for HTTP_PROXY / ALL_PROXY. */
export type ProxyUrls = z.infer<typeof api.proxyUrlsSchema>;
export type SessionCreated = z.infer<typeof api.sessionCreatedSchema>;
export type SessionSummary = z.infer<typeof api.sessionSummarySchema>;
export type SessionDetail = z.infer<typeof api.sessionDetailSchema>;
export type SessionList = z.infer<typeof api.sessionListSchema>;
export type HeartbeatResult = z.infer<typeof api.heartbeatResultSchema>;
export type SessionDeleted = z.infer<typeof api.sessionDeletedSchema>;

export type LearningState = z.infer<typeof api.learningStateSchema>;
export type ContainerInfo = z.infer<typeof api.containerInfoSchema>;
export type ContainerList = z.infer<typeof api.containerListSchema>;
/** One destination a container reached in learning mode. */
export type LearnedEntry = z.infer<typeof api.learnedEntrySchema>;
export type LearnedReport = z.infer<typeof api.learnedReportSchema>;
export type PromoteResult = z.infer<typeof api.promoteResultSchema>;

export type CheckResult = z.infer<typeof api.checkResultSchema>;

export type Decision = z.infer<typeof api.decisionSchema>;
export type DecisionPage = z.infer<typeof api.decisionPageSchema>;
/** An open tunnel or in-flight forwarded request. */
export type OpenConnection = z.infer<typeof api.openConnectionSchema>;
export type ConnectionList = z.infer<typeof api.connectionListSchema>;
export type ConnectionClosedResult = z.infer<typeof api.connectionClosedSchema>;

/** The `data:` of one live event (and one entry of a webhook POST), told apart by `type`. */
export type EventData = z.infer<typeof api.eventDataSchema>;
/** The body of each webhook POST. */
export type WebhookBatch = z.infer<typeof api.webhookBatchSchema>;

/** One server-sent event from `GET /api/events`. */
export interface SluiceEvent {
  /** The SSE `event:` field (`decision`, `session.created`, ...). */
  type: string;
  /** The SSE `id:` field, when sent. */
  id: string | undefined;
  /**
   * The `data:` JSON as received: not checked, so that one odd event cannot end the
   * stream. What sluice sends is an `EventData`.
   */
  data: { type?: string; time?: string; container?: string | null; [key: string]: unknown };
}

/** Every non-2xx answer from sluice itself (`SluiceApiError` carries it). */
export type ApiErrorBody = z.infer<typeof api.apiErrorSchema>;
export type Health = z.infer<typeof api.healthSchema>;
