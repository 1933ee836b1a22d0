// Live events for SSE subscribers and the webhook sink. Publishing must cost nothing when
// nobody listens (decisions are published from the hot path), and a slow subscriber is
// cut off rather than allowed to buffer without bound or slow the proxy down.

export const EVENT_TYPES = [
  'decision',
  'session.created',
  'session.updated',
  'session.heartbeat',
  'session.expired',
  'session.deleted',
  'rule.created',
  'rule.updated',
  'rule.deleted',
  'learning.changed',
  'connection.closed',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface SluiceEvent {
  readonly id: number;
  readonly type: EventType;
  readonly time: number;
  readonly container: string | null;
  readonly data: Readonly<Record<string, unknown>>;
}

export interface SubscriberFilter {
  readonly types?: ReadonlySet<EventType> | undefined;
  readonly container?: string | undefined;
}

/**
 * An event as JSON, the same for SSE (`data:`) and the webhook: the event's own fields,
 * then the envelope (id, type, ISO time, container), which nothing in the data overrides.
 */
export function eventJson(e: SluiceEvent): Record<string, unknown> {
  return { ...e.data, id: e.id, type: e.type, time: new Date(e.time).toISOString(), container: e.container };
}

/** Delivers one event; returns false when the subscriber cannot keep up and must be dropped. */
export type Deliver = (event: SluiceEvent) => boolean;

interface Subscriber {
  readonly filter: SubscriberFilter;
  readonly deliver: Deliver;
  readonly onDrop: () => void;
}

export class EventBus {
  private readonly subs = new Set<Subscriber>();
  private nextId = 1;
  /** Subscribers cut off for falling behind. */
  droppedSubscribers = 0;

  constructor(private readonly clock: () => number) {}

  get subscriberCount(): number {
    return this.subs.size;
  }

  /** Whether anyone would receive this event (lets callers skip building its payload). */
  wants(type: EventType): boolean {
    if (this.subs.size === 0) return false;
    for (const s of this.subs) if (!s.filter.types || s.filter.types.has(type)) return true;
    return false;
  }

  subscribe(filter: SubscriberFilter, deliver: Deliver, onDrop: () => void = () => undefined): () => void {
    const sub: Subscriber = { filter, deliver, onDrop };
    this.subs.add(sub);
    return () => this.subs.delete(sub);
  }

  publish(type: EventType, container: string | null, data: Record<string, unknown>): void {
    if (this.subs.size === 0) return;
    const event: SluiceEvent = { id: this.nextId++, type, time: this.clock(), container, data };
    for (const s of this.subs) {
      if (s.filter.types && !s.filter.types.has(type)) continue;
      if (s.filter.container !== undefined && s.filter.container !== container) continue;
      let ok = false;
      try {
        ok = s.deliver(event);
      } catch {
        ok = false;
      }
      if (!ok) {
        this.subs.delete(s);
        this.droppedSubscribers++;
        s.onDrop();
      }
    }
  }
}
