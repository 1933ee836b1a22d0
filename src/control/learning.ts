// Learning reports: what a container reached while in learning mode, and turning that
// into allow rules.
import type { AuditLog, LearnedRow } from '../audit/audit-log.js';
import { parseHost } from '../policy/host.js';
import { proposeRules } from '../policy/promote.js';
import { resolve } from '../policy/resolver.js';
import type { Control } from './control.js';
import { isoTime } from './iso-time.js';

/** A destination as the learned list stores it (`X.Example.COM.` and `x.example.com` are one host). */
function canonicalHost(text: string): string {
  try {
    return parseHost(text).host;
  } catch {
    return text.toLowerCase();
  }
}

export interface PromoteOptions {
  readonly scope: 'container' | 'global';
  readonly destinations?: readonly string[] | undefined;
  readonly collapse_subdomains: boolean;
}

export class LearningService {
  constructor(
    private readonly audit: AuditLog,
    private readonly control: Control,
    private readonly clock: () => number,
  ) {}

  report(container: string) {
    const rows = this.audit.learnedFor(container);
    return {
      container_name: container,
      learning: this.control.container(container).learning,
      learned: rows.map((r) => ({
        destination: r.destination,
        port: r.port,
        first_seen: isoTime(r.first_seen),
        last_seen: isoTime(r.last_seen),
        count: r.count,
        would_be: { decision: r.would_be, layer: r.would_be_layer, rule_id: r.would_be_rule_id },
      })),
    };
  }

  /**
   * Creates allow rules for learned destinations that the rules (ignoring learning mode)
   * would not already allow. `scope: container` makes container-scoped global rules, so
   * they survive the session that learned them.
   */
  promote(container: string, opts: PromoteOptions) {
    const wanted = opts.destinations ? new Set(opts.destinations.map(canonicalHost)) : null;
    const rows = this.audit.learnedFor(container).filter((r) => !wanted || wanted.has(r.destination));
    const skipped: Array<{ destination: string; port: number; reason: string }> = [];
    const todo: LearnedRow[] = [];
    for (const r of rows) {
      if (this.alreadyAllowed(container, r)) skipped.push({ destination: r.destination, port: r.port, reason: 'already allowed' });
      else todo.push(r);
    }
    const created = proposeRules(todo, opts.collapse_subdomains).map((p) =>
      this.control.createRule({
        container_pattern: opts.scope === 'container' ? container : '*',
        destination_pattern: p.destinationPattern,
        port_pattern: p.portPattern,
        action: 'allow',
        notes: `learned from ${container}: ${p.covers.join(', ')}`,
      }),
    );
    return { container_name: container, created, skipped };
  }

  private alreadyAllowed(container: string, r: LearnedRow): boolean {
    const now = this.clock();
    const state = this.control.state;
    const subject = { container, session: state.currentSession(container, now), learning: null };
    return resolve(state, subject, parseHost(r.destination), r.port, now).action === 'allow';
  }
}
