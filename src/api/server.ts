// The control API: fastify for routing and body handling, zod for every input, and one
// error shape ({error, details}) for everything that goes wrong.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { safeEqual } from '../identity/tokens.js';
import { ControlError } from '../control/control.js';
import { storeUnavailable } from '../store/database.js';
import { BadInput } from './input.js';
import { registerRoutes, type RouteDeps } from './routes.js';
import { registerObserveRoutes, type ObserveDeps } from './routes-observe.js';

export interface ApiOptions extends RouteDeps, ObserveDeps {
  readonly token: string;
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  /** Extra fields for /healthz (store state, open tunnels...). */
  readonly health: () => Record<string, unknown>;
}

/**
 * Judged on the route the router matched, not on the raw request target: the router also
 * routes `/%61pi/rules` and absolute-form `http://host/api/rules` to /api/rules, and
 * neither of those starts with "/api/". Unmatched targets answer 404 and expose nothing.
 */
function isApiPath(path: string): boolean {
  return path.startsWith('/api/') || path === '/api';
}

export function createApiServer(opts: ApiOptions): FastifyInstance {
  const app = Fastify({
    // Requests are not logged one by one; failures are logged by the error handler.
    logger: false,
    bodyLimit: opts.maxBodyBytes,
    // Deeply nested JSON is rejected by the parser's own limits rather than recursing.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    forceCloseConnections: true,
    routerOptions: { maxParamLength: 256 },
    // Unparseable targets (bad percent-encoding such as `%c0%ae`) are refused by the
    // router before any hook runs; answer them in the API's one error shape too.
    frameworkErrors: (err, _req, reply) => {
      void (reply as FastifyReply).code(400).send({ error: 'invalid request', details: [err.message] });
    },
  });

  app.get('/healthz', async () => ({ status: 'ok', ...opts.health() }));

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (!isApiPath(req.routeOptions.url ?? req.url)) return;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    if (!m || !safeEqual(m[1]!, opts.token)) {
      reply.header('WWW-Authenticate', 'Bearer realm="sluice"');
      await reply.code(401).send({ error: 'missing or invalid API token', details: ['send Authorization: Bearer <token>'] });
    }
  });

  // Many HTTP clients send `Content-Type: application/json` on every request, body or not;
  // an empty body means "no body" (e.g. DELETE, heartbeat), not malformed JSON.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if ((body as string).trim() === '') return done(null, undefined);
    jsonParser(req, body as string, done);
  });

  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: 'not found', details: [`no route for ${req.method} ${req.url.split('?')[0]}`] });
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof BadInput) return reply.code(400).send({ error: 'invalid request', details: err.details });
    if (err instanceof ControlError) return reply.code(err.status).send({ error: err.message, details: err.details });
    // Disk full, read-only, I/O error: nothing was changed; the proxy keeps deciding from memory.
    const unavailable = storeUnavailable(err);
    if (unavailable) {
      opts.logger.warn({ err: unavailable }, 'api write refused: store unavailable');
      return reply
        .code(503)
        .header('Retry-After', '5')
        .send({ error: 'store unavailable', details: [unavailable.message, 'nothing was changed; the proxy keeps deciding from the last stored state; retry later'] });
    }
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      opts.logger.error({ err }, 'api error');
      return reply.code(500).send({ error: 'internal error', details: [] });
    }
    // fastify's own 4xx: malformed JSON, body too large (413), wrong content type (415).
    return reply.code(status).send({ error: err.message, details: err.code ? [err.code] : [] });
  });

  registerRoutes(app, opts);
  registerObserveRoutes(app, opts);
  return app;
}
