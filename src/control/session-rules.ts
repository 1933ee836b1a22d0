// A session's network rules, parsed once. Validating a pattern means parsing it, and the
// parse also yields the matchers the in-memory index needs; keeping them saves parsing
// every pattern a second time (compileRule) when the session goes into memory, which was
// a tenth of the CPU of a session create.
import {
  parseContainerPattern,
  parseDestinationPattern,
  parsePortPattern,
  PatternError,
  specificity,
  type ContainerMatcher,
  type DestinationMatcher,
  type PortMatcher,
} from '../policy/patterns.js';
import type { CompiledRule, RuleRecord } from '../policy/rules.js';
import type { NewRule } from '../store/store.js';
import type { SessionCreate } from './schemas.js';
import { ParseCache } from './pattern-cache.js';

// A few thousand distinct destinations cover the rule sets of many kinds of sandboxes, at
// well under a megabyte; port patterns repeat even more.
const destinations = new ParseCache(parseDestinationPattern, 4096);
const ports = new ParseCache(parsePortPattern, 512);

export type SessionRuleRow = Omit<NewRule, 'layer' | 'sessionId'>;

export interface PreparedRules {
  /** What the store writes: canonical patterns. */
  readonly rows: SessionRuleRow[];
  /** Problems, one per bad rule (`network_rules.<i>: ...`); nothing is written if any. */
  readonly errors: string[];
  /** Turns the stored records (same order as `rows`) into compiled rules without re-parsing. */
  compile(records: readonly RuleRecord[]): CompiledRule[];
}

interface Matchers {
  readonly destination: DestinationMatcher;
  readonly ports: PortMatcher;
}

export function prepareSessionRules(container: string, rules: SessionCreate['network_rules']): PreparedRules {
  const rows: SessionRuleRow[] = [];
  const matchers: Matchers[] = [];
  const errors: string[] = [];
  let owner: ContainerMatcher;
  try {
    owner = parseContainerPattern(container);
  } catch (err) {
    if (!(err instanceof PatternError)) throw err;
    return { rows, errors: [`container_name: ${err.message}`], compile: () => [] };
  }
  rules.forEach((r, i) => {
    try {
      const destination = destinations.get(r.destination_pattern);
      const portSet = ports.get(r.port_pattern);
      rows.push({
        containerPattern: container,
        destinationPattern: destination.canonical,
        portPattern: portSet.canonical,
        action: r.action,
        expiresAt: null,
        notes: r.notes ?? null,
      });
      matchers.push({ destination: destination.matcher, ports: portSet.matcher });
    } catch (err) {
      if (!(err instanceof PatternError)) throw err;
      errors.push(`network_rules.${i}: ${err.message}`);
    }
  });
  return {
    rows,
    errors,
    // Field for field what compileRule(record) builds from the canonical text: parsing the
    // canonical form gives the same matchers as parsing the input it came from.
    compile: (records) =>
      records.map((record, i) => {
        const { destination, ports } = matchers[i]!;
        return { record, container: owner, destination, ports, score: specificity(owner, destination, ports), deny: record.action === 'deny' };
      }),
  };
}
