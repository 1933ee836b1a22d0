// Ships events to an HTTP endpoint (a SIEM collector) in batches. The queue is bounded:
// when the collector is down for long, the oldest events are dropped and counted rather
// than letting memory grow.
import ipaddr from 'ipaddr.js';
import type { EventBus, EventType, SluiceEvent } from './bus.js';
import { EVENT_TYPES } from './bus.js';

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
  private queue: SluiceEvent[] = [];
  private timer: NodeJS.Timeout | null = null;
  private sending = false;
  private failures = 0;
  private retryAt = 0;
  private unsubscribe: (() => void) | null = null;
  dropped = 0;
  delivered = 0;

  constructor(
    private readonly opts: WebhookOptions,
    private readonly onError: (err: unknown) => void,
  ) {
    checkWebhookTarget(opts.url, opts.allowedHosts);
  }

  start(bus: EventBus): void {
    const types = new Set(this.opts.types.filter((t): t is EventType => (EVENT_TYPES as readonly string[]).includes(t)));
    this.unsubscribe = bus.subscribe({ types }, (e) => {
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

  async flush(): Promise<void> {
    if (this.sending || this.queue.length === 0 || Date.now() < this.retryAt) return;
    this.sending = true;
    const batch = this.queue.slice(0, this.opts.batchSize);
    try {
      const res = await fetch(this.opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ events: batch }),
        signal: AbortSignal.timeout(10_000),
      });
      if (!res.ok) throw new Error(`webhook answered ${res.status}`);
      this.queue.splice(0, batch.length);
      this.delivered += batch.length;
      this.failures = 0;
    } catch (err) {
      this.failures++;
      this.onError(err);
      if (this.failures > this.opts.maxRetries) {
        this.queue.splice(0, batch.length);
        this.dropped += batch.length;
        this.failures = 0;
      } else {
        // Exponential backoff, capped at a minute.
        this.retryAt = Date.now() + Math.min(60_000, 250 * 2 ** this.failures);
      }
    } finally {
      this.sending = false;
    }
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    if (this.timer) clearInterval(this.timer);
    this.retryAt = 0;
    await this.flush();
  }
}
