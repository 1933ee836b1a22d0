// Summarises a V8 .cpuprofile (from `npm run bench -- --profile DIR`): self time per
// function, self time per module (sluice source, each npm package, Node internals, GC),
// and inclusive time of the heaviest call paths' functions.
// Usage: node dist/test/bench/profile-summary.js FILE.cpuprofile [--top N]
import { existsSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function moduleOf(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  if (url.startsWith('node:')) return 'node internals';
  const nm = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `npm ${nm[1]}`;
  const src = /\/dist\/(src\/.*)$/.exec(url);
  if (src) return src[1]!.replace(/\.js$/, '.ts');
  return url.replace(/^file:\/\//, '');
}

const maps = new Map<string, SourceMap | null>();

/** The TypeScript line of a compiled dist/ frame, through the .js.map tsc wrote beside it. */
function original(f: CallFrame): string | null {
  if (!f.url.startsWith('file://') || !f.url.includes('/dist/')) return null;
  let map = maps.get(f.url);
  if (map === undefined) {
    const file = `${fileURLToPath(f.url)}.map`;
    map = existsSync(file) ? new SourceMap(JSON.parse(readFileSync(file, 'utf8'))) : null;
    maps.set(f.url, map);
  }
  const e = map?.findEntry(f.lineNumber, f.columnNumber) as { originalSource?: string; originalLine?: number } | undefined;
  if (!e?.originalSource || e.originalLine === undefined) return null;
  return `${e.originalSource.replace(/^.*?\/((src|test)\/)/, '$1')}:${e.originalLine + 1}`;
}

function label(f: CallFrame): string {
  const name = f.functionName || '(anonymous)';
  if (!f.url) return name;
  return `${name}  ${original(f) ?? `${moduleOf(f.url, name)}:${f.lineNumber + 1}`}`;
}

export function summarise(profile: Profile, top: number): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attribute it to that sample's node.
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = [...self.entries()].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);
  const busy = total - idle;

  const fnSelf = new Map<string, number>();
  const modSelf = new Map<string, number>();
  for (const [id, t] of self) {
    const f = byId.get(id)!.callFrame;
    if (f.functionName === '(idle)') continue;
    fnSelf.set(label(f), (fnSelf.get(label(f)) ?? 0) + t);
    const mod = moduleOf(f.url, f.functionName);
    modSelf.set(mod, (modSelf.get(mod) ?? 0) + t);
  }

  // Inclusive time per function, counting each function once per stack (recursion-safe).
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  for (const [id, t] of self) {
    if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const l = label(byId.get(cur)!.callFrame);
      if (seen.has(l)) continue;
      seen.add(l);
      incl.set(l, (incl.get(l) ?? 0) + t);
    }
  }

  const pct = (t: number): string => `${((100 * t) / busy).toFixed(1).padStart(5)}%`;
  const ms = (t: number): string => `${(t / 1000).toFixed(0).padStart(7)} ms`;
  const rank = (m: Map<string, number>, n: number): string[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, t]) => `  ${pct(t)} ${ms(t)}  ${k}`);
  return [
    `profile: ${((profile.endTime - profile.startTime) / 1e6).toFixed(1)} s wall, ${(busy / 1e6).toFixed(1)} s busy (${((100 * busy) / total).toFixed(0)}% of samples), percentages are of busy time`,
    '',
    'self time by module:',
    ...rank(modSelf, 15),
    '',
    `top ${top} functions by self time:`,
    ...rank(fnSelf, top),
    '',
    `top ${top} functions by inclusive time:`,
    ...rank(
      new Map([...incl.entries()].filter(([k]) => !k.startsWith('(root)'))),
      top,
    ),
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  const topIdx = args.indexOf('--top');
  const top = topIdx >= 0 ? Number(args[topIdx + 1]) : 30;
  if (!file) {
    process.stderr.write('usage: node dist/test/bench/profile-summary.js FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  process.stdout.write(summarise(JSON.parse(readFileSync(file, 'utf8')) as Profile, top) + '\n');
}
