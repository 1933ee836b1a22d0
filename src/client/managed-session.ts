// A session that looks after itself for as long as its sandbox runs: heartbeats on a
// timer, re-registers under the same id when the proxy lost it or was unreachable, and is
// deleted on close(). Failures never throw out of the timer: they are recorded, emitted
// as 'error' (only when someone listens) and retried with backoff.
import { EventEmitter } from 'node:events';
import { SluiceApiError, isTransient } from './errors.js';
import type { SluiceClient } from './sluice-client.js';
import type { HeartbeatResult, ProxyUrls, SessionCreated, SessionCreateRequest } from './types.js';

export interface ManagedSessionOptions {
  /** Time between heartbeats. Default: a third of the session's TTL. */
  heartbeatIntervalMs?: number;
  /** First retry delay after a failure (doubling up to the heartbeat interval). Default 250 ms. */
  retryDelayMs?: number;
  /** Called with every failure, besides the 'error' event. */
  onError?: (err: Error) => void;
  /** Keep the Node process alive while the session is open (default false: a launcher's child or server does that). */
  keepAlive?: boolean;
}

export type RecreateReason = 'not_found' | 'reconnected';

export interface RecreatedInfo {
  /** `not_found`: a heartbeat got 404 (expired, deleted, or a proxy with fresh state); `reconnected`: the API was unreachable or failing and answers again. */
  reason: RecreateReason;
  /**
   * The proxy token changed: the session had been removed entirely, so the proxy minted a new
   * token. Sandboxes still holding the old credentials get 407 until they are given the new ones
   * (`session.proxy`); sessions identified by `source_ips` are unaffected.
   */
  tokenChanged: boolean;
}

export interface ManagedSessionEvents {
  heartbeat: [result: HeartbeatResult];
  recreated: [session: SessionCreated, info: RecreatedInfo];
  error: [err: Error];
  closed: [];
}

const MAX_RECORDED_ERRORS = 20;
const MIN_INTERVAL_MS = 50;

export class ManagedSession extends EventEmitter<ManagedSessionEvents> {
  private current: SessionCreated;
  private readonly body: SessionCreateRequest;
  private readonly intervalMs: number;
  private readonly retryDelayMs: number;
  private readonly onErrorHook: ((err: Error) => void) | undefined;
  private readonly keepAlive: boolean;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private failures = 0;
  /** After a failure we cannot be sure the proxy still has the session; re-posting is idempotent. */
  private reregister = false;
  private closing: Promise<void> | undefined;
  private recorded: Error[] = [];
  private lastExpiresAt: string;

  /** Use `SluiceClient.startSession()`. */
  static async start(client: SluiceClient, body: SessionCreateRequest, options: ManagedSessionOptions = {}): Promise<ManagedSession> {
    const created = await client.createSession(body);
    return new ManagedSession(client, body, created, options);
  }

  private constructor(
    private readonly client: SluiceClient,
    body: SessionCreateRequest,
    created: SessionCreated,
    options: ManagedSessionOptions,
  ) {
    super();
    // Every re-registration must land on the same session (and so keep its token).
    this.body = { ...body, session_id: created.session_id };
    this.current = created;
    this.lastExpiresAt = created.expires_at;
    this.intervalMs = Math.max(MIN_INTERVAL_MS, options.heartbeatIntervalMs ?? defaultInterval(body, created));
    this.retryDelayMs = Math.max(MIN_INTERVAL_MS, options.retryDelayMs ?? 250);
    this.onErrorHook = options.onError;
    this.keepAlive = options.keepAlive ?? false;
    this.schedule(this.intervalMs);
  }

  get sessionId(): string {
    return this.current.session_id;
  }

  get containerName(): string {
    return this.current.container_name;
  }

  /** The latest creation response (updated on every re-registration). */
  get session(): SessionCreated {
    return this.current;
  }

  /** Proxy URLs with this session's credentials. */
  get proxy(): ProxyUrls {
    return this.current.proxy;
  }

  get proxyToken(): string {
    return this.current.proxy_token;
  }

  /** When the session expires unless heartbeated (ISO 8601), as last reported by the API. */
  get expiresAt(): string {
    return this.lastExpiresAt;
  }

  get heartbeatIntervalMs(): number {
    return this.intervalMs;
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  /** The most recent failures (up to 20), oldest first. */
  get errors(): readonly Error[] {
    return this.recorded;
  }

  get lastError(): Error | undefined {
    return this.recorded[this.recorded.length - 1];
  }

  /** Heartbeats (or re-registers) now instead of waiting for the timer. Never rejects. */
  async refresh(): Promise<void> {
    if (this.closing) return;
    if (this.inFlight) return this.inFlight;
    this.clearTimer();
    await this.tick();
  }

  /** Stops heartbeating and deletes the session (a session already gone is fine). Rejects if the delete fails. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.clearTimer();
      await this.inFlight;
      try {
        await this.client.deleteSession(this.sessionId);
      } catch (err) {
        if (!(err instanceof SluiceApiError && err.status === 404)) throw err;
      } finally {
        this.emit('closed');
      }
    })();
    return this.closing;
  }

  private schedule(delayMs: number): void {
    if (this.closing) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.tick();
    }, delayMs);
    if (!this.keepAlive) this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private tick(): Promise<void> {
    const run = (async () => {
      try {
        if (this.reregister) {
          await this.register('reconnected');
        } else {
          try {
            const hb = await this.client.heartbeat(this.sessionId);
            this.lastExpiresAt = hb.expires_at;
            this.emit('heartbeat', hb);
          } catch (err) {
            if (!(err instanceof SluiceApiError && err.status === 404)) throw err;
            await this.register('not_found');
          }
        }
        this.failures = 0;
        this.schedule(this.intervalMs);
      } catch (err) {
        this.failures++;
        if (isTransient(err)) this.reregister = true;
        this.fail(err);
        this.schedule(Math.min(this.intervalMs, this.retryDelayMs * 2 ** Math.min(this.failures - 1, 16)));
      }
    })();
    this.inFlight = run.finally(() => {
      if (this.inFlight === tracked) this.inFlight = undefined;
    });
    const tracked = this.inFlight;
    return tracked;
  }

  private async register(reason: RecreateReason): Promise<void> {
    if (this.closing) return;
    const previousToken = this.current.proxy_token;
    const created = await this.client.createSession(this.body);
    this.current = created;
    this.lastExpiresAt = created.expires_at;
    this.reregister = false;
    this.emit('recreated', created, { reason, tokenChanged: created.proxy_token !== previousToken });
  }

  private fail(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.recorded.push(error);
    if (this.recorded.length > MAX_RECORDED_ERRORS) this.recorded.shift();
    try {
      this.onErrorHook?.(error);
    } catch {
      // A failing hook must not stop the heartbeats.
    }
    // An 'error' event with no listener would throw; recording is enough then.
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', error);
      } catch {
        // Same as above.
      }
    }
  }
}

function defaultInterval(body: SessionCreateRequest, created: SessionCreated): number {
  let ttlMs = body.ttl_seconds !== undefined ? body.ttl_seconds * 1000 : NaN;
  if (!Number.isFinite(ttlMs)) {
    ttlMs = Date.parse(created.expires_at) - Date.parse(created.created_at);
  }
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) ttlMs = 900_000;
  return Math.floor(ttlMs / 3);
}
