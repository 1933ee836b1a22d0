// Builds the effective configuration: file < environment < flags, then one validation pass
// through the schema so every source gets the same checks and the same error format.
import { readFileSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config, type ConfigInput } from './schema.js';

export interface ConfigSources {
  /** Config file path; when absent, SLUICE_CONFIG from `env` is used. */
  file?: string;
  /** Environment to read SLUICE_* from. Absent = none (callers pass process.env explicitly). */
  env?: NodeJS.ProcessEnv;
  /** Already-shaped partial config from CLI flags; undefined leaves are ignored. */
  flags?: ConfigInput;
}

export class ConfigError extends Error {
  /** One `path.to.field: message` entry per problem (empty for file errors). */
  readonly issues: readonly string[];

  constructor(message: string, issues: readonly string[] = []) {
    super(message);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

type Path = readonly string[];
type Tree = Record<string, unknown>;

/** Env var -> config path. Kept as data so errors can say which variable a bad value came from. */
const ENV_FIELDS: ReadonlyArray<readonly [string, Path]> = [
  ['SLUICE_DATA_DIR', ['data_dir']],
  ['SLUICE_LISTEN_HTTP', ['listen', 'http']],
  ['SLUICE_LISTEN_SOCKS', ['listen', 'socks']],
  ['SLUICE_LISTEN_API', ['listen', 'api']],
  ['SLUICE_ADVERTISE_HOST', ['advertise_host']],
  ['SLUICE_API_TOKEN', ['api_token']],
  ['SLUICE_IDENTITY', ['identity']],
  ['SLUICE_UPSTREAM_PROXY', ['upstream_proxy']],
  ['SLUICE_LOG_LEVEL', ['log', 'level']],
];

export function loadConfig(sources: ConfigSources): Config {
  const env = sources.env ?? {};
  const file = sources.file ?? nonEmpty(env.SLUICE_CONFIG);
  const layers: Layer[] = [];
  if (file !== undefined) layers.push({ tree: readConfigFile(file), origin: () => file });
  layers.push({ tree: envTree(env), origin: (path) => envOrigin(path, env) });
  if (sources.flags !== undefined) {
    layers.push({ tree: asTree(sources.flags, 'flags'), origin: () => 'command-line flags' });
  }

  const merged = layers.reduce<Tree>((acc, layer) => deepMerge(acc, layer.tree), {});
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    // Zod runs every check on a field, so one bad value can fail several; the first says enough.
    const issues = unique(result.error.issues.flatMap((issue) => describeIssue(issue, layers)), (line) => line.split(': ')[0]);
    throw new ConfigError(`invalid config: ${issues.join('; ')}`, issues);
  }
  return { ...result.data, data_dir: resolve(process.cwd(), result.data.data_dir) };
}

// ---- sources ---------------------------------------------------------------

interface Layer {
  readonly tree: Tree;
  /** Where a value at `path` came from, for error messages. */
  readonly origin: (path: Path) => string | undefined;
}

function readConfigFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${errorText(err)}`);
  }
  let parsed: unknown;
  try {
    // YAML is a superset of JSON, so unknown extensions go through the YAML parser;
    // .json still uses JSON.parse so a JSON file gets JSON's stricter syntax errors.
    parsed = extname(file).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(`cannot parse config file ${file}: ${errorText(err)}`);
  }
  // An empty YAML document parses to null; treat it as "no settings" rather than an error.
  if (parsed === null || parsed === undefined) return {};
  return asTree(parsed, `config file ${file}`);
}

function envTree(env: NodeJS.ProcessEnv): Tree {
  const tree: Tree = {};
  for (const [name, path] of ENV_FIELDS) {
    const value = nonEmpty(env[name]);
    if (value !== undefined) setPath(tree, path, value);
  }
  const tokenFile = nonEmpty(env.SLUICE_API_TOKEN_FILE);
  if (tokenFile !== undefined) tree.api_token = readTokenFile(tokenFile, env);
  return tree;
}

/**
 * SLUICE_API_TOKEN_FILE: the API token from a file (a Docker/Kubernetes secret), trimmed.
 * Setting it together with SLUICE_API_TOKEN is ambiguous, so it is an error.
 */
function readTokenFile(file: string, env: NodeJS.ProcessEnv): string {
  if (nonEmpty(env.SLUICE_API_TOKEN) !== undefined) {
    throw new ConfigError('SLUICE_API_TOKEN and SLUICE_API_TOKEN_FILE are both set; set only one of them');
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`SLUICE_API_TOKEN_FILE: cannot read ${file}: ${errorText(err)}`);
  }
  const token = text.trim();
  if (token === '') throw new ConfigError(`SLUICE_API_TOKEN_FILE: ${file} is empty`);
  return token;
}

function envOrigin(path: Path, env: NodeJS.ProcessEnv): string | undefined {
  const key = path.join('.');
  if (key === 'api_token' && nonEmpty(env.SLUICE_API_TOKEN_FILE) !== undefined) return 'SLUICE_API_TOKEN_FILE';
  return ENV_FIELDS.find(([, p]) => p.join('.') === key)?.[0];
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function asTree(value: unknown, what: string): Tree {
  if (!isPlainObject(value)) throw new ConfigError(`${what} must contain a mapping of settings, not ${describeType(value)}`);
  return value;
}

// ---- merging ---------------------------------------------------------------

function isPlainObject(value: unknown): value is Tree {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Objects merge key by key; anything else in `over` replaces `base`; undefined never overrides. */
export function deepMerge(base: Tree, over: Tree): Tree {
  const out: Tree = {};
  for (const [key, value] of Object.entries(base)) defineKey(out, key, value);
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    const prev = Object.hasOwn(out, key) ? out[key] : undefined;
    defineKey(out, key, isPlainObject(prev) && isPlainObject(value) ? deepMerge(prev, value) : value);
  }
  return out;
}

// Plain assignment of a "__proto__" key from a YAML file would set the prototype instead of
// a field; defining it keeps it an ordinary key, which the strict schema then rejects.
function defineKey(target: Tree, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function setPath(tree: Tree, path: Path, value: unknown): void {
  let node = tree;
  path.forEach((key, i) => {
    if (i === path.length - 1) {
      node[key] = value;
      return;
    }
    const next = node[key];
    node = isPlainObject(next) ? next : (node[key] = {});
  });
}

function hasPath(tree: Tree, path: Path): boolean {
  let node: unknown = tree;
  for (const key of path) {
    if (!isPlainObject(node) || !Object.hasOwn(node, key)) return false;
    node = node[key];
  }
  return true;
}

// ---- errors ----------------------------------------------------------------

function describeIssue(issue: z.core.$ZodIssue, layers: readonly Layer[]): string[] {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => withOrigin(`${formatPath([...path, key])}: unknown field`, [...path, key], layers));
  }
  return [withOrigin(`${formatPath(path)}: ${issue.message}`, path, layers)];
}

/** Names the highest-precedence source that set the field, since that is the value that failed. */
function withOrigin(text: string, path: Path, layers: readonly Layer[]): string {
  if (path.length === 0) return text;
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i];
    if (layer && hasPath(layer.tree, path)) {
      const origin = layer.origin(path);
      return origin === undefined ? text : `${text} (from ${origin})`;
    }
  }
  return text;
}

function unique<T>(items: readonly T[], key: (item: T) => unknown): T[] {
  const seen = new Set<unknown>();
  return items.filter((item) => {
    const k = key(item);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function formatPath(path: Path): string {
  return path.length === 0 ? '(root)' : path.join('.');
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return `a ${typeof value}`;
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    // fs messages end with ", open '<path>'", which repeats what our message already says.
    return typeof (err as NodeJS.ErrnoException).syscall === 'string' ? (err.message.split(', ')[0] ?? err.message) : err.message;
  }
  return String(err);
}
