// Where a decision goes once made: the audit trail, the learning report, metrics, live
// events and the log. Everything here is an in-memory append; nothing waits on I/O.
import type { Logger } from 'pino';
import type { DecisionRecord } from '../proxy/gate.js';
import type { EventBus } from '../events/bus.js';
import type { Metrics } from '../metrics/metrics.js';
import type { AuditLog } from './audit-log.js';

export interface DecisionSinkDeps {
  readonly audit: AuditLog;
  readonly metrics: Metrics;
  readonly bus: EventBus;
  /** Null when per-decision log lines are switched off. */
  readonly log: Logger | null;
}

export function decisionEvent(r: DecisionRecord): Record<string, unknown> {
  return {
    decision_id: r.id,
    session_id: r.sessionId,
    protocol: r.protocol,
    client_address: r.clientAddress,
    destination: r.destination,
    port: r.port,
    address: r.address,
    decision: r.decision,
    reason: r.reason,
    layer: r.layer,
    rule_id: r.ruleId,
  };
}

export function createDecisionSink({ audit, metrics, bus, log }: DecisionSinkDeps): (r: DecisionRecord) => void {
  return (r) => {
    audit.decision(r);
    if (r.learning !== null && r.decision === 'allow' && r.container !== null) {
      const would = r.wouldBe;
      audit.learnedHit({
        container: r.container,
        destination: r.destination,
        port: r.port,
        time: r.time,
        wouldBe: would ? would.action : r.decision,
        wouldBeLayer: would ? would.layer : r.layer,
        wouldBeRuleId: would ? (would.rule?.id ?? null) : r.ruleId,
      });
    }
    metrics.countDecision(r.decision, r.layer ?? 'none', r.reason);
    if (bus.wants('decision')) bus.publish('decision', r.container, decisionEvent(r));
    log?.info(
      {
        id: r.id,
        container: r.container,
        session: r.sessionId,
        protocol: r.protocol,
        client: r.clientAddress,
        destination: r.destination,
        port: r.port,
        resolved: r.address,
        decision: r.decision,
        reason: r.reason,
        layer: r.layer,
        rule: r.ruleId,
      },
      'decision',
    );
  };
}
