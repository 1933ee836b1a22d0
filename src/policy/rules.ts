// A rule as the policy core sees it, and its compiled (matchable) form.
import {
  parseContainerPattern,
  parseDestinationPattern,
  parsePortPattern,
  specificity,
  type ContainerMatcher,
  type DestinationMatcher,
  type PortMatcher,
} from './patterns.js';

export type Layer = 'global' | 'session' | 'builtin';
export type Action = 'allow' | 'deny';

/** Layers from highest to lowest precedence. */
export const LAYERS: readonly Layer[] = ['global', 'session', 'builtin'];

export interface RuleRecord {
  readonly id: number;
  readonly layer: Layer;
  readonly sessionId: string | null;
  readonly containerPattern: string;
  readonly destinationPattern: string;
  readonly portPattern: string;
  readonly action: Action;
  /** Epoch milliseconds; null = never. Session rules also end with their session. */
  readonly expiresAt: number | null;
  readonly notes: string | null;
  readonly createdAt: number;
}

export interface CompiledRule {
  readonly record: RuleRecord;
  readonly container: ContainerMatcher;
  readonly destination: DestinationMatcher;
  readonly ports: PortMatcher;
  readonly score: number;
  readonly deny: boolean;
}

/** The pattern fields of a rule in canonical form; throws PatternError on invalid input. */
export interface CanonicalPatterns {
  containerPattern: string;
  destinationPattern: string;
  portPattern: string;
}

export function canonicalisePatterns(input: { containerPattern: string; destinationPattern: string; portPattern: string }): CanonicalPatterns {
  parseContainerPattern(input.containerPattern);
  return {
    containerPattern: input.containerPattern,
    destinationPattern: parseDestinationPattern(input.destinationPattern).canonical,
    portPattern: parsePortPattern(input.portPattern).canonical,
  };
}

export function compileRule(record: RuleRecord): CompiledRule {
  const container = parseContainerPattern(record.containerPattern);
  const destination = parseDestinationPattern(record.destinationPattern).matcher;
  const ports = parsePortPattern(record.portPattern).matcher;
  return {
    record,
    container,
    destination,
    ports,
    score: specificity(container, destination, ports),
    deny: record.action === 'deny',
  };
}

/** True when `a` should decide over `b`: more specific, then deny over allow, then older rule. */
export function outranks(a: CompiledRule, b: CompiledRule): boolean {
  if (a.score !== b.score) return a.score > b.score;
  if (a.deny !== b.deny) return a.deny;
  return a.record.id < b.record.id;
}
