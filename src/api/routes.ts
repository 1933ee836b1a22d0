// Route table of the control API. Handlers only parse input and call the control plane.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { describeOutcome } from '../proxy/outcomes.js';
import type { Gate } from '../proxy/gate.js';
import type { Control } from '../control/control.js';
import type { AuditLog } from '../audit/audit-log.js';
import { ruleJson } from '../control/control.js';
import { isoTime } from '../control/iso-time.js';
import {
  checkSchema,
  learningSchema,
  nameSchema,
  ruleCreateSchema,
  ruleIdSchema,
  ruleListQuerySchema,
  rulePatchSchema,
  sessionCreateSchema,
} from '../control/schemas.js';
import { BadInput, parseInput } from './input.js';

export interface RouteDeps {
  readonly control: Control;
  readonly gate: Gate;
  readonly audit: AuditLog;
}

type RuleJson = ReturnType<typeof ruleJson>;

const idParams = z.object({ id: nameSchema });
const ruleParams = z.object({ id: ruleIdSchema });
const nameParams = z.object({ name: nameSchema });

export function registerRoutes(app: FastifyInstance, { control, gate, audit }: RouteDeps): void {
  // Usage counters come from the audit batches (flushed first, so they are current).
  const withUsage = (rules: RuleJson[]) => {
    const usage = audit.ruleUsage();
    return rules.map((r) => {
      const u = usage.get(r.id);
      return { ...r, hit_count: u?.hitCount ?? 0, last_used_at: u?.lastUsedAt ? isoTime(u.lastUsedAt) : null };
    });
  };

  app.post('/api/sessions', async (req) => control.createSession(parseInput(sessionCreateSchema, req.body, '')));
  app.get('/api/sessions', async () => control.listSessions());
  app.get('/api/sessions/:id', async (req) => control.getSession(parseInput(idParams, req.params, 'path').id));
  app.post('/api/sessions/:id/heartbeat', async (req) => control.heartbeat(parseInput(idParams, req.params, 'path').id));
  app.delete('/api/sessions/:id', async (req) => control.deleteSession(parseInput(idParams, req.params, 'path').id));

  app.get('/api/rules', async (req) => ({ rules: withUsage(control.listRules(parseInput(ruleListQuerySchema, req.query, 'query')).rules) }));
  app.post('/api/rules', async (req) => withUsage([control.createRule(parseInput(ruleCreateSchema, req.body, ''))])[0]);
  app.get('/api/rules/:id', async (req) => withUsage([control.getRule(parseInput(ruleParams, req.params, 'path').id)])[0]);
  app.patch('/api/rules/:id', async (req) => withUsage([control.updateRule(parseInput(ruleParams, req.params, 'path').id, parseInput(rulePatchSchema, req.body, ''))])[0]);
  app.delete('/api/rules/:id', async (req) => control.deleteRule(parseInput(ruleParams, req.params, 'path').id));

  app.get('/api/containers', async () => control.containers());
  app.get('/api/containers/:name', async (req) => control.container(parseInput(nameParams, req.params, 'path').name));
  app.put('/api/containers/:name/learning', async (req) =>
    control.setLearning(parseInput(nameParams, req.params, 'path').name, parseInput(learningSchema, req.body, '')),
  );

  // The same evaluation the proxy runs before dialling, minus the connection.
  app.post('/api/check', async (req) => {
    const input = parseInput(checkSchema, req.body, '');
    const e = await gate.evaluate(input.container_name, input.destination, input.port, input.resolve);
    // A destination no proxy request could carry is a mistake in the question, not a verdict.
    if (e.kind === 'bad_request') throw new BadInput([`destination: ${e.detail}`]);
    const v = e.verdict;
    const base = {
      destination: e.destination.host,
      port: input.port,
      session_id: v.sessionId,
      learning: v.learning,
      would_be: v.wouldBe ? { decision: v.wouldBe.action, layer: v.wouldBe.layer, rule: v.wouldBe.rule ? ruleJson(v.wouldBe.rule) : null } : null,
    };
    switch (e.kind) {
      case 'denied':
        return { decision: 'deny', layer: e.outcome.layer, rule: e.outcome.rule ? ruleJson(e.outcome.rule) : null, reason: e.reason, explanation: e.failure.detail, ...base };
      case 'unresolved':
        return { decision: v.action, layer: v.layer, rule: v.rule ? ruleJson(v.rule) : null, reason: v.reason, explanation: e.failure.detail, dns_error: e.failure.kind, ...base };
      case 'allowed':
        return {
          decision: 'allow',
          layer: v.layer,
          rule: v.rule ? ruleJson(v.rule) : null,
          reason: v.reason,
          explanation: v.reason === 'learning' ? 'learning mode: allowed and recorded' : describeOutcome(v),
          addresses: e.addresses.map((a) => a.toString()),
          ...base,
        };
    }
  });
}
