// Turning what a container reached in learning mode into allow rules.
import { getPublicSuffix } from 'tldts';

export interface LearnedTarget {
  readonly destination: string;
  readonly port: number;
}

export interface ProposedRule {
  readonly destinationPattern: string;
  readonly portPattern: string;
  /** The learned destinations this rule covers. */
  readonly covers: readonly string[];
}

const isIpText = (s: string): boolean => s.includes(':') || /^[0-9.]+$/.test(s);

/**
 * Whether `*.parent` would be a wildcard over a public suffix (`*.co.uk`, `*.github.io`).
 * Private suffixes count too: a wildcard over github.io would admit every user's site.
 */
function isPublicSuffix(parent: string): boolean {
  return getPublicSuffix(parent, { allowPrivateDomains: true }) === parent;
}

function portPattern(ports: Iterable<number>): string {
  return [...new Set(ports)].sort((a, b) => a - b).join(',');
}

/**
 * Groups learned (destination, port) pairs into rules: one per destination with the ports
 * seen, or with `collapse`, one `*.parent` rule for two or more siblings under a parent
 * that is not a public suffix (its ports are the union of theirs).
 */
export function proposeRules(targets: readonly LearnedTarget[], collapse: boolean): ProposedRule[] {
  const byDest = new Map<string, Set<number>>();
  for (const t of targets) {
    let ports = byDest.get(t.destination);
    if (!ports) byDest.set(t.destination, (ports = new Set()));
    ports.add(t.port);
  }
  const out: ProposedRule[] = [];
  const siblings = new Map<string, string[]>();
  for (const dest of byDest.keys()) {
    const dot = dest.indexOf('.');
    const parent = dot < 0 ? '' : dest.slice(dot + 1);
    if (!collapse || isIpText(dest) || parent.split('.').length < 2 || isPublicSuffix(parent)) {
      out.push({ destinationPattern: dest, portPattern: portPattern(byDest.get(dest)!), covers: [dest] });
      continue;
    }
    const group = siblings.get(parent) ?? [];
    group.push(dest);
    siblings.set(parent, group);
  }
  for (const [parent, members] of siblings) {
    if (members.length === 1) {
      const only = members[0]!;
      out.push({ destinationPattern: only, portPattern: portPattern(byDest.get(only)!), covers: [only] });
      continue;
    }
    const ports = members.flatMap((m) => [...byDest.get(m)!]);
    out.push({ destinationPattern: `*.${parent}`, portPattern: portPattern(ports), covers: members.sort() });
  }
  return out.sort((a, b) => a.destinationPattern.localeCompare(b.destinationPattern));
}
