// A typed client for sluice's control API, for launchers and tools written in TypeScript
// or JavaScript (`import { SluiceClient } from 'sluice'`). It needs Node's fetch and zod,
// and the CLI's client commands use it too. Every answer is checked against the API's
// response schemas (src/api/responses.ts): a launcher talking to something that is not a
// matching sluice gets a SluiceResponseError naming the field, not undefined later on.
import type { z } from 'zod';
import {
  checkResultSchema,
  connectionClosedSchema,
  connectionListSchema,
  containerInfoSchema,
  containerListSchema,
  decisionPageSchema,
  healthSchema,
  heartbeatResultSchema,
  learnedReportSchema,
  promoteResultSchema,
  ruleDeletedSchema,
  ruleListSchema,
  ruleWithUsageSchema,
  sessionCreatedSchema,
  sessionDeletedSchema,
  sessionDetailSchema,
  sessionListSchema,
} from '../api/responses.js';
import { SluiceApiError, SluiceUnreachableError, checkResponse } from './errors.js';
import { ManagedSession, type ManagedSessionOptions } from './managed-session.js';
import { SseParser, type RawServerEvent } from './sse.js';
import type {
  CheckRequest,
  CheckResult,
  ConnectionClosedResult,
  ConnectionList,
  ConnectionQuery,
  ContainerInfo,
  ContainerList,
  DecisionPage,
  DecisionQuery,
  Decision,
  EventQuery,
  Health,
  HeartbeatResult,
  LearnedReport,
  LearningRequest,
  PromoteRequest,
  PromoteResult,
  RuleCreateRequest,
  RuleDeleted,
  RuleList,
  RuleListQuery,
  RulePatchRequest,
  RuleWithUsage,
  SessionCreated,
  SessionCreateRequest,
  SessionDeleted,
  SessionDetail,
  SessionList,
  SluiceEvent,
} from './types.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface SluiceClientOptions {
  /**
   * The API's base URL, e.g. `http://127.0.0.1:9080` (a path prefix is kept:
   * `http://host/sluice` -> `/sluice/api/...`). A function is asked before every request,
   * so a launcher can follow a proxy that moved (see also `setBaseUrl`).
   * Default: `http://127.0.0.1:9080`.
   */
  baseUrl?: string | URL | (() => string | URL);
  /** Bearer token for `/api` (the server's `api_token` or `<data-dir>/api-token`). */
  token?: string | (() => string | undefined);
  /** Per request (not for the event stream); a hung server should not hang a launcher forever. Default 30 s. */
  timeoutMs?: number;
  /** Replaces the global fetch (tests, custom agents). */
  fetch?: typeof globalThis.fetch;
}

export const DEFAULT_API_URL = 'http://127.0.0.1:9080';
const DEFAULT_TIMEOUT_MS = 30_000;

type Query = Record<string, string | number | boolean | Date | readonly string[] | undefined>;

export class SluiceClient {
  private baseUrlSource: string | URL | (() => string | URL);
  private readonly token: string | (() => string | undefined) | undefined;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof globalThis.fetch;

  constructor(options: SluiceClientOptions = {}) {
    this.baseUrlSource = options.baseUrl ?? DEFAULT_API_URL;
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    this.base(); // fail fast on a malformed fixed URL
  }

  /** The base URL requests go to now (without a trailing slash). */
  get baseUrl(): string {
    return this.base().href.replace(/\/$/, '');
  }

  /** Points the client (and every ManagedSession using it) at another API address. */
  setBaseUrl(baseUrl: string | URL | (() => string | URL)): void {
    this.baseUrlSource = baseUrl;
    this.base();
  }

  // ---- sessions ----

  createSession(body: SessionCreateRequest): Promise<SessionCreated> {
    return this.call(sessionCreatedSchema, 'POST', '/api/sessions', body);
  }

  /**
   * Creates a session and keeps it alive: heartbeats every `ttl/3` (or
   * `heartbeatIntervalMs`), re-registers it under the same id when it is gone or the API
   * was unreachable, and deletes it on `close()`. Rejects if the first creation fails.
   */
  startSession(body: SessionCreateRequest, options: ManagedSessionOptions = {}): Promise<ManagedSession> {
    return ManagedSession.start(this, body, options);
  }

  getSession(id: string): Promise<SessionDetail> {
    return this.call(sessionDetailSchema, 'GET', `/api/sessions/${seg(id)}`);
  }

  listSessions(): Promise<SessionList> {
    return this.call(sessionListSchema, 'GET', '/api/sessions');
  }

  /** Extends the session by its TTL; a 404 SluiceApiError when it is gone or expired. */
  heartbeat(id: string): Promise<HeartbeatResult> {
    return this.call(heartbeatResultSchema, 'POST', `/api/sessions/${seg(id)}/heartbeat`);
  }

  deleteSession(id: string): Promise<SessionDeleted> {
    return this.call(sessionDeletedSchema, 'DELETE', `/api/sessions/${seg(id)}`);
  }

  // ---- rules ----

  listRules(query: RuleListQuery = {}): Promise<RuleList> {
    return this.call(ruleListSchema, 'GET', `/api/rules${queryString({ ...query })}`);
  }

  getRule(id: number): Promise<RuleWithUsage> {
    return this.call(ruleWithUsageSchema, 'GET', `/api/rules/${seg(String(id))}`);
  }

  createRule(body: RuleCreateRequest): Promise<RuleWithUsage> {
    return this.call(ruleWithUsageSchema, 'POST', '/api/rules', body);
  }

  updateRule(id: number, patch: RulePatchRequest): Promise<RuleWithUsage> {
    return this.call(ruleWithUsageSchema, 'PATCH', `/api/rules/${seg(String(id))}`, patch);
  }

  deleteRule(id: number): Promise<RuleDeleted> {
    return this.call(ruleDeletedSchema, 'DELETE', `/api/rules/${seg(String(id))}`);
  }

  // ---- containers and learning ----

  listContainers(): Promise<ContainerList> {
    return this.call(containerListSchema, 'GET', '/api/containers');
  }

  getContainer(name: string): Promise<ContainerInfo> {
    return this.call(containerInfoSchema, 'GET', `/api/containers/${seg(name)}`);
  }

  setLearning(container: string, body: LearningRequest): Promise<ContainerInfo> {
    return this.call(containerInfoSchema, 'PUT', `/api/containers/${seg(container)}/learning`, body);
  }

  /** Learning mode on: allow (and record) everything not denied by a global rule. */
  learningOn(container: string, ttlSeconds?: number): Promise<ContainerInfo> {
    return this.setLearning(container, { enabled: true, ...(ttlSeconds !== undefined && { ttl_seconds: ttlSeconds }) });
  }

  learningOff(container: string): Promise<ContainerInfo> {
    return this.setLearning(container, { enabled: false });
  }

  /** What the container reached in learning mode, with what the rules alone would have decided. */
  learned(container: string): Promise<LearnedReport> {
    return this.call(learnedReportSchema, 'GET', `/api/containers/${seg(container)}/learned`);
  }

  /** Turns learned destinations into allow rules (skipping what is already allowed); returns what it created. */
  promoteLearned(container: string, body: PromoteRequest = {}): Promise<PromoteResult> {
    return this.call(promoteResultSchema, 'POST', `/api/containers/${seg(container)}/learned/promote`, body);
  }

  // ---- policy ----

  /** What the proxy would decide for this connection, through the proxy's own code path. */
  check(body: CheckRequest): Promise<CheckResult> {
    return this.call(checkResultSchema, 'POST', '/api/check', body);
  }

  // ---- observing ----

  /** One page of the decision log, newest first. */
  decisions(query: DecisionQuery = {}): Promise<DecisionPage> {
    return this.call(decisionPageSchema, 'GET', `/api/decisions${queryString({ ...query })}`);
  }

  /** Every decision matching `query`, following `next_cursor` page by page. */
  async *allDecisions(query: DecisionQuery = {}): AsyncGenerator<Decision> {
    let cursor = query.cursor;
    for (;;) {
      const page = await this.decisions({ ...query, cursor });
      yield* page.decisions;
      if (page.next_cursor === null || page.decisions.length === 0) return;
      cursor = page.next_cursor;
    }
  }

  /** Open tunnels and in-flight forwarded requests. */
  connections(query: ConnectionQuery = {}): Promise<ConnectionList> {
    return this.call(connectionListSchema, 'GET', `/api/connections${queryString({ ...query })}`);
  }

  /** Closes one open connection (recorded with close reason `closed_by_operator`). */
  closeConnection(id: number): Promise<ConnectionClosedResult> {
    return this.call(connectionClosedSchema, 'DELETE', `/api/connections/${seg(String(id))}`);
  }

  /**
   * Live events (`GET /api/events`, server-sent events). Iterate with `for await`; break
   * out of the loop or abort `query.signal` to disconnect.
   */
  async *events(query: EventQuery = {}): AsyncGenerator<SluiceEvent> {
    const types = typeof query.types === 'string' ? query.types : query.types?.join(',');
    const url = this.url(`/api/events${queryString({ types: types === '' ? undefined : types, container: query.container })}`);
    const controller = new AbortController();
    const outer = query.signal;
    const onAbort = (): void => controller.abort();
    if (outer?.aborted) return;
    outer?.addEventListener('abort', onAbort, { once: true });
    try {
      let res: Response;
      try {
        res = await this.fetchImpl(url, { headers: this.headers('text/event-stream', false), signal: controller.signal });
      } catch (err) {
        if (outer?.aborted) return;
        throw new SluiceUnreachableError(this.baseUrl, networkErrorCode(err));
      }
      if (!res.ok) throw toApiError(res, await res.text());
      if (!res.body) return;
      query.onOpen?.();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (outer?.aborted) return;
          throw new SluiceUnreachableError(this.baseUrl, networkErrorCode(err) ?? 'stream ended');
        }
        if (chunk.done) return;
        for (const e of parser.push(decoder.decode(chunk.value, { stream: true }))) yield toEvent(e);
      }
    } finally {
      outer?.removeEventListener('abort', onAbort);
      controller.abort();
    }
  }

  /** `GET /healthz` (no token needed). */
  health(): Promise<Health> {
    return this.call(healthSchema, 'GET', '/healthz');
  }

  // ---- transport ----

  /**
   * One JSON request. `path` is relative to the base URL (leading "/" optional); callers
   * encode path segments. Throws SluiceApiError on a non-2xx answer, SluiceUnreachableError
   * when there is none. The answer is not checked: `T` is the caller's word for it.
   */
  async request<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
    const url = this.url(path);
    let res: Response;
    try {
      res = await this.fetchImpl(url, {
        method,
        headers: this.headers('application/json', body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new SluiceUnreachableError(this.baseUrl, networkErrorCode(err));
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new SluiceUnreachableError(this.baseUrl, networkErrorCode(err));
    }
    if (!res.ok) throw toApiError(res, text);
    return (text === '' ? undefined : parseJson(text)) as T;
  }

  /** `request`, with the answer checked against the route's response schema. */
  private async call<S extends z.ZodType>(schema: S, method: HttpMethod, path: string, body?: unknown): Promise<z.output<S>> {
    return checkResponse(schema, await this.request<unknown>(method, path, body), `${method} ${path.split('?')[0]}`);
  }

  private base(): URL {
    const raw = typeof this.baseUrlSource === 'function' ? this.baseUrlSource() : this.baseUrlSource;
    const text = String(raw);
    // A trailing slash makes relative resolution append to a path prefix instead of replacing it.
    const url = new URL(text.endsWith('/') ? text : `${text}/`);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`sluice API URL must be http:// or https://, got ${text}`);
    return url;
  }

  private url(path: string): URL {
    return new URL(path.replace(/^\/+/, ''), this.base());
  }

  private headers(accept: string, json: boolean): Record<string, string> {
    const headers: Record<string, string> = { accept };
    const token = typeof this.token === 'function' ? this.token() : this.token;
    if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`;
    if (json) headers['content-type'] = 'application/json';
    return headers;
  }
}

function seg(value: string): string {
  return encodeURIComponent(value);
}

function queryString(query: Query): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    if (value instanceof Date) params.set(key, value.toISOString());
    else if (Array.isArray(value)) params.set(key, value.join(','));
    else params.set(key, String(value));
  }
  return params.size > 0 ? `?${params.toString()}` : '';
}

function toEvent(e: RawServerEvent): SluiceEvent {
  let data: SluiceEvent['data'];
  try {
    const parsed: unknown = JSON.parse(e.data);
    data = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as SluiceEvent['data']) : { value: parsed };
  } catch {
    data = { raw: e.data };
  }
  return { type: e.event, id: e.id, data };
}

function toApiError(res: Response, text: string): SluiceApiError {
  const body = text === '' ? undefined : safeParseJson(text);
  if (typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string') {
    const { error, details } = body as { error: string; details?: unknown };
    return new SluiceApiError(res.status, error, details);
  }
  // Not sluice's JSON (a reverse proxy's HTML page, say): the status and a bit of the text.
  const snippet = text.trim().slice(0, 200);
  return new SluiceApiError(res.status, res.statusText || 'error', snippet === '' ? undefined : snippet);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`the sluice API answered with something that is not JSON: ${text.slice(0, 200)}`);
  }
}

function safeParseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// fetch wraps socket errors as TypeError('fetch failed', { cause }); the cause has the code.
function networkErrorCode(err: unknown): string | undefined {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timeout';
  let cur: unknown = err;
  for (let depth = 0; depth < 4 && typeof cur === 'object' && cur !== null; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    // undici reports "connect ECONNREFUSED" from several attempts (IPv4 and IPv6) as an AggregateError.
    cur = cur instanceof AggregateError ? cur.errors[0] : (cur as { cause?: unknown }).cause;
  }
  return undefined;
}
