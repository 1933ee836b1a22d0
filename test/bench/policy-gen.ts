// Deterministic, realistic-looking rule sets: blocklists of exact hosts, wildcard
// domains, IPv4/IPv6 networks and single addresses, with mixed port and container
// patterns. Seeded, so every run (and every repetition) measures the same policy.
// No generated network contains 127.0.0.0/8, so the origin (127.0.0.2) is decided only by
// the explicit allow the bench adds.

export interface RuleSpec {
  readonly container: string;
  readonly destination: string;
  readonly port: string;
  readonly action: 'allow' | 'deny';
}

/** mulberry32: tiny, fast, good enough to spread test data. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const int = (rnd: () => number, n: number): number => Math.floor(rnd() * n);
const PORTS = ['*', '*', '*', '*', '443', '443', '443', '80,443', '80,443', '8000-8999'];

/** A first octet that is routable-looking and never loopback or "this network". */
function firstOctet(rnd: () => number): number {
  for (;;) {
    const o = 1 + int(rnd, 223);
    if (o !== 127) return o;
  }
}

function ipv4(rnd: () => number): string {
  return `${firstOctet(rnd)}.${int(rnd, 256)}.${int(rnd, 256)}.${1 + int(rnd, 254)}`;
}

function maskedCidr4(rnd: () => number): string {
  const prefix = [8, 12, 16, 16, 20, 24, 24, 24, 28, 32][int(rnd, 10)]!;
  const n = ((firstOctet(rnd) << 24) | (int(rnd, 256) << 16) | (int(rnd, 256) << 8) | int(rnd, 256)) >>> 0;
  const masked = prefix === 0 ? 0 : (n & (0xffffffff << (32 - prefix))) >>> 0;
  return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${prefix}`;
}

function containerPattern(rnd: () => number, i: number): string {
  const r = rnd();
  if (r < 0.85) return '*';
  if (r < 0.95) return `team${i % 40}-*`;
  return `build-${i % 500}`;
}

/**
 * `n` global rules: 40% exact hosts, 25% wildcards (`*.x` / `**.x`), 25% IPv4 CIDRs,
 * 5% IPv6 CIDRs, 5% single IPv4 addresses; 70% deny (an operator blocklist), 30% allow.
 */
export function globalRules(n: number, seed = 42): RuleSpec[] {
  const rnd = prng(seed);
  const out: RuleSpec[] = [];
  for (let i = 0; i < n; i++) {
    const kind = rnd();
    let destination: string;
    if (kind < 0.4) destination = `api-${i}.team-${i % 97}.corp${i % 13}.example.com`;
    else if (kind < 0.65) destination = `${i % 2 === 0 ? '*' : '**'}.zone-${i}.example${i % 7}.net`;
    else if (kind < 0.9) destination = maskedCidr4(rnd);
    else if (kind < 0.95) destination = `2001:db8:${(i % 65536).toString(16)}::/48`;
    else destination = ipv4(rnd);
    out.push({ container: containerPattern(rnd, i), destination, port: PORTS[int(rnd, PORTS.length)]!, action: rnd() < 0.7 ? 'deny' : 'allow' });
  }
  return out;
}

/** A sandbox's own rules: what a CI job or agent typically asks for. */
export function sessionRules(container: string, n: number, seed: number): RuleSpec[] {
  const rnd = prng(seed);
  const out: RuleSpec[] = [];
  for (let j = 0; j < n; j++) {
    const kind = rnd();
    let destination: string;
    if (kind < 0.5) destination = `pkg-${j}.registry-${seed % 211}.example.io`;
    else if (kind < 0.75) destination = `**.mirror-${j}-${seed % 89}.example.org`;
    else if (kind < 0.9) destination = maskedCidr4(rnd);
    else destination = ipv4(rnd);
    out.push({ container, destination, port: PORTS[int(rnd, PORTS.length)]!, action: rnd() < 0.8 ? 'allow' : 'deny' });
  }
  return out;
}

/** A random address inside `a.b.c.d/p` (for queries that should hit a CIDR rule). */
export function addressInside(cidr: string, rnd: () => number): string {
  const [net, p] = cidr.split('/') as [string, string];
  const prefix = Number(p);
  const base = net.split('.').reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
  const span = prefix >= 32 ? 1 : 2 ** (32 - prefix);
  const n = (base + Math.floor(rnd() * span)) >>> 0;
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}
