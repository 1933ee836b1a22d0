// Ships events to an HTTP endpoint (a SIEM collector) in batches. The queue is bounded:
// when the collector is down for long, the oldest events are dropped and counted rather
// than letting memory grow.
import ipaddr from 'ipaddr.js';
import type { EventBus, EventType, SluiceEvent } from './bus.js';
import { EVENT_TYPES, eventJson } from './bus.js';

export interface WebhookOptions {
  readonly url: string;
  readonly allowedHosts: readonly string[];
  readonly types: readonly string[];
  readonly batchSize: number;
  readonly flushIntervalMs: number;
  readonly maxQueue: number;
  readonly maxRetries: number;
}

export class WebhookConfigError extends Error {}

/** Only loopback or an operator-listed host may receive audit data. */
export function checkWebhookTarget(url: string, allowedHosts: readonly string[]): void {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (allowedHosts.includes(host)) return;
  if (host === 'localhost') return;
  if (ipaddr.isValid(host) && ipaddr.process(host).range() === 'loopback') return;
  throw new WebhookConfigError(`webhook.url host ${host} is not on loopback; add it to webhook.allowed_hosts to send events there`);
}

export class WebhookSink {
  /** Events waiting to be sent; the batch being sent is out of it (and put back if it fails). */
  private queue: SluiceEvent[] = [];
  private timer: NodeJS.Timeout | null = null;
  private sending: Promise<void> | null = null;
  private stopping = false;
  private failures = 0;
  private retryAt = 0;
  private unsubscribe: (() => void) | null = null;
  private readonly types: ReadonlySet<EventType>;
  dropped = 0;
  delivered = 0;

  constructor(
    private readonly opts: WebhookOptions,
    private readonly onError: (err: unknown) => void,
  ) {
    checkWebhookTarget(opts.url, opts.allowedHosts);
    // A misspelt type would silently send nothing: refuse it at start-up instead.
    const unknown = opts.types.filter((t) => !(EVENT_TYPES as readonly string[]).includes(t));
    if (unknown.length > 0) throw new WebhookConfigError(`webhook.types: unknown event type ${unknown.join(', ')} (known: ${EVENT_TYPES.join(', ')})`);
    this.types = new Set(opts.types as EventType[]);
  }

  /** Events waiting (not counting a batch being sent). */
  get queued(): number {
    return this.queue.length;
  }

  start(bus: EventBus): void {
    this.unsubscribe = bus.subscribe({ types: this.types }, (e) => {
      if (this.queue.length >= this.opts.maxQueue) {
        this.queue.shift();
        this.dropped++;
      }
      this.queue.push(e);
      return true; // the sink never slows the bus: overflow is handled by dropping above
    });
    this.timer = setInterval(() => void this.flush(), this.opts.flushIntervalMs);
    this.timer.unref();
  }

  /**
   * Sends what is queued, a batch at a time, until the queue is empty or a send fails (then
   * it backs off). One drain runs at a time; calling flush() during one waits for it.
   */
  flush(): Promise<void> {
    if (this.sending) return this.sending;
    if (this.queue.length === 0 || Date.now() < this.retryAt) return Promise.resolve();
    this.sending = this.drain().finally(() => (this.sending = null));
    return this.sending;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      // Taken out of the queue while in flight: overflow meanwhile drops the oldest
      // waiting events, never this batch (or events that were not sent).
      const batch = this.queue.splice(0, this.opts.batchSize);
      try {
        const res = await fetch(this.opts.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ events: batch.map(eventJson) }),
          signal: AbortSignal.timeout(this.stopping ? 2_000 : 10_000),
        });
        await res.body?.cancel().catch(() => undefined);
        if (!res.ok) throw new Error(`webhook answered ${res.status}`);
        this.delivered += batch.length;
        this.failures = 0;
      } catch (err) {
        this.failures++;
        this.onError(err);
        if (this.failures > this.opts.maxRetries) {
          this.dropped += batch.length;
          this.failures = 0;
        } else {
          this.requeue(batch);
          // Exponential backoff, capped at a minute.
          this.retryAt = Date.now() + Math.min(60_000, 250 * 2 ** this.failures);
        }
        return;
      }
    }
  }

  /** Puts a failed batch back in front; if the queue filled up meanwhile, the oldest go (counted). */
  private requeue(batch: SluiceEvent[]): void {
    this.queue = batch.concat(this.queue);
    const over = this.queue.length - this.opts.maxQueue;
    if (over > 0) {
      this.queue.splice(0, over);
      this.dropped += over;
    }
  }

  /** Stops listening and sends what is queued (waiting for a send in flight; no retries). */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    if (this.timer) clearInterval(this.timer);
    this.stopping = true;
    await this.sending;
    this.retryAt = 0;
    await this.flush();
  }
}
