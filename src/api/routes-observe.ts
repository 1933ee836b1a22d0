// Routes for seeing what happened and what is happening: the audit trail, open
// connections, live events (SSE), learning reports and metrics.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AuditLog, DecisionRow } from '../audit/audit-log.js';
import type { LearningService } from '../control/learning.js';
import { EVENT_TYPES, eventJson, type EventBus, type EventType } from '../events/bus.js';
import { lagJudge, lagLimits } from '../events/lag.js';
import type { Metrics } from '../metrics/metrics.js';
import { nameSchema } from '../control/schemas.js';
import { isoTime } from '../control/iso-time.js';
import type { Layer } from '../policy/rules.js';
import { parseInput } from './input.js';
import type { ConnectionClosedResult, ConnectionList, Decision, DecisionPage } from '../client/types.js';
import { parseHost } from '../policy/host.js';

export interface OpenConnection {
  readonly id: number;
  /** The decision record that admitted it. */
  readonly decisionId: number;
  readonly kind: 'tunnel' | 'forward';
  readonly protocol: string;
  readonly container: string;
  readonly sessionId: string | null;
  readonly destination: string;
  readonly port: number;
  readonly address: string;
  readonly since: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly layer: Layer | null;
  readonly ruleId: number | null;
  readonly reason: string;
}

export interface ConnectionRegistry {
  list(container?: string): OpenConnection[];
  close(id: number, reason: string): boolean;
}

export interface ObserveDeps {
  readonly audit: AuditLog;
  readonly bus: EventBus;
  readonly connections: ConnectionRegistry;
  readonly learning: LearningService;
  readonly metrics: Metrics;
  readonly maxEventBufferBytes: number;
}

function canonicalHost(text: string): string {
  try {
    return parseHost(text).host;
  } catch {
    return text;
  }
}

/** Accepts ISO 8601 or epoch milliseconds. */
const instant = z.union([z.coerce.number().int().min(0), z.iso.datetime({ offset: true }).transform((s) => Date.parse(s))]);

const decisionsQuery = z
  .object({
    container: nameSchema.optional(),
    session_id: nameSchema.optional(),
    decision: z.enum(['allow', 'deny']).optional(),
    // Stored canonically (lowercase, no trailing dot, IPv6 unbracketed and compressed): match that way.
    destination: z.string().min(1).max(300).transform(canonicalHost).optional(),
    since: instant.optional(),
    until: instant.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    cursor: z.coerce.number().int().min(1).optional(),
  })
  .strict();

const eventsQuery = z
  .object({
    types: z
      .string()
      .transform((s) => s.split(',').map((t) => t.trim()).filter(Boolean))
      // An empty list would be a stream that never delivers anything: leave `types` out for all.
      .pipe(z.array(z.enum(EVENT_TYPES)).min(1, 'name at least one event type, or leave types out for all'))
      .optional(),
    container: nameSchema.optional(),
  })
  .strict();

export const connectionsQuerySchema = z.object({ container: nameSchema.optional() }).strict();
const connectionParams = z.object({ id: z.coerce.number().int().min(1) });
const nameParams = z.object({ name: nameSchema });

export const promoteSchema = z
  .object({
    /** `container` (default): global rules for this container only; `global`: for every container. */
    scope: z.enum(['container', 'global']).default('container'),
    /** Only these learned destinations (default: all of them). */
    destinations: z.array(z.string().min(1).max(300)).max(10_000).optional(),
    /** Group two or more siblings (a.cdn.x, b.cdn.x) into `*.cdn.x`, never over a public suffix. */
    collapse_subdomains: z.boolean().default(false),
  })
  .strict();

export function decisionJson(r: DecisionRow): Decision {
  return {
    id: r.id,
    time: isoTime(r.time),
    container: r.container,
    session_id: r.session_id,
    protocol: r.protocol,
    client_address: r.client_address,
    destination: r.destination,
    port: r.port,
    address: r.address,
    decision: r.decision,
    reason: r.reason,
    // The audit trail stores the layer as text; only ever written from a Layer.
    layer: r.layer as Layer | null,
    rule_id: r.rule_id,
    error: r.error,
    bytes_up: r.bytes_up,
    bytes_down: r.bytes_down,
    duration_ms: r.duration_ms,
    close_reason: r.close_reason,
  };
}

export function registerObserveRoutes(app: FastifyInstance, deps: ObserveDeps): void {
  const { audit, bus, connections, learning, metrics } = deps;

  app.get('/api/decisions', async (req): Promise<DecisionPage> => {
    const q = parseInput(decisionsQuery, req.query, 'query');
    const rows = audit.query({
      container: q.container,
      sessionId: q.session_id,
      decision: q.decision,
      destination: q.destination,
      since: q.since,
      until: q.until,
      // One more than asked tells whether another page exists, so the last page says so.
      limit: q.limit + 1,
      before: q.cursor,
    });
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    return { decisions: page.map(decisionJson), next_cursor: rows.length > q.limit && last ? String(last.id) : null };
  });

  app.get('/api/connections', async (req): Promise<ConnectionList> => {
    const q = parseInput(connectionsQuerySchema, req.query, 'query');
    return {
      connections: connections.list(q.container).map((c) => ({
        id: c.id,
        decision_id: c.decisionId,
        kind: c.kind,
        protocol: c.protocol,
        container: c.container,
        session_id: c.sessionId,
        destination: c.destination,
        port: c.port,
        address: c.address,
        since: isoTime(c.since),
        bytes_up: c.bytesUp,
        bytes_down: c.bytesDown,
        layer: c.layer,
        rule_id: c.ruleId,
        reason: c.reason,
      })),
    };
  });

  app.delete('/api/connections/:id', async (req, reply) => {
    const { id } = parseInput(connectionParams, req.params, 'path');
    if (!connections.close(id, 'closed_by_operator')) return reply.code(404).send({ error: 'connection not found', details: [] });
    return { id, closed: true } satisfies ConnectionClosedResult;
  });

  app.get('/api/containers/:name/learned', async (req) => learning.report(parseInput(nameParams, req.params, 'path').name));

  app.post('/api/containers/:name/learned/promote', async (req) =>
    learning.promote(parseInput(nameParams, req.params, 'path').name, parseInput(promoteSchema, req.body ?? {}, '')),
  );

  app.get('/api/events', (req, reply) => {
    const q = parseInput(eventsQuery, req.query, 'query');
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    raw.write(': sluice events\n\n');
    const types = q.types ? new Set<EventType>(q.types) : undefined;
    const keepingUp = lagJudge(lagLimits(deps.maxEventBufferBytes), Date.now);
    const unsubscribe = bus.subscribe(
      { types, container: q.container },
      (e) => {
        // A consumer that stopped reading is cut off instead of buffering without bound.
        if (!keepingUp(raw.writableLength)) return false;
        raw.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(eventJson(e))}\n\n`);
        return true;
      },
      () => raw.destroy(),
    );
    const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
    keepAlive.unref();
    raw.on('close', () => {
      clearInterval(keepAlive);
      unsubscribe();
    });
  });

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
