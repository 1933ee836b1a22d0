// The CLI subcommands that talk to a running sluice over its HTTP API. Every input is
// validated here first, so a typo costs no request and exits 2 with a precise message.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { parseHost } from '../policy/host.js';
import { LAYERS } from '../policy/rules.js';
import { NAME_RE, parseContainerPattern, parseDestinationPattern, parsePortPattern } from '../policy/patterns.js';
import { SluiceApiError, SluiceUnreachableError } from '../client/errors.js';
import { DEFAULT_API_URL, SluiceClient } from '../client/sluice-client.js';
import type { CheckResult, ContainerInfo, Rule, RuleListQuery, SessionSummary } from '../client/types.js';
import { formatCell, formatField, formatKeyValues, formatTable, formatTime, type Column } from './output.js';

export interface CliIo {
  /** Writes one line (the newline is added) to stdout. */
  out(line: string): void;
  err(line: string): void;
  env: NodeJS.ProcessEnv;
  /**
   * Ends long-running commands (`log --follow`) as SIGINT does; for callers that run the
   * CLI in-process.
   */
  signal?: AbortSignal;
}

export interface CliContext {
  readonly io: CliIo;
  /** Actions report their exit code here; commander itself has no notion of one. */
  setExitCode(code: number): void;
}

/** Bad command-line input: exit 2, no request sent. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

// ---- DEST[:PORTS] ----------------------------------------------------------

export interface DestSpec {
  destination_pattern: string;
  port_pattern?: string;
}

/**
 * Splits `DEST[:PORTS]`. Brackets delimit IPv6 (`[2001:db8::1]:443`); without brackets a
 * value with more than one ':' is a bare IPv6 address or CIDR and has no port part.
 * Both halves are checked with the same parsers the server uses.
 */
export function parseDestSpec(spec: string): DestSpec {
  const { dest, ports } = splitDestSpec(spec);
  try {
    parseDestinationPattern(dest);
    if (ports !== undefined) parsePortPattern(ports);
  } catch (err) {
    throw new UsageError(`"${spec}": ${errorMessage(err)}`);
  }
  return ports === undefined ? { destination_pattern: dest } : { destination_pattern: dest, port_pattern: ports };
}

function splitDestSpec(spec: string): { dest: string; ports: string | undefined } {
  if (spec.startsWith('[')) {
    const close = spec.indexOf(']');
    if (close < 0) throw new UsageError(`"${spec}": unterminated "[" (expected [IPv6] or [IPv6]:PORTS)`);
    const rest = spec.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new UsageError(`"${spec}": expected ":PORTS" after "]"`);
    return { dest: spec.slice(1, close), ports: rest === '' ? undefined : nonEmptyPorts(spec, rest.slice(1)) };
  }
  const colons = spec.split(':').length - 1;
  if (colons !== 1) return { dest: spec, ports: undefined };
  const at = spec.indexOf(':');
  return { dest: spec.slice(0, at), ports: nonEmptyPorts(spec, spec.slice(at + 1)) };
}

function nonEmptyPorts(spec: string, ports: string): string {
  if (ports === '') throw new UsageError(`"${spec}": empty port list after ":"`);
  return ports;
}

// ---- input schemas ---------------------------------------------------------

/** A zod string schema that runs one of the policy parsers and reports its message. */
function parsedBy<T>(parse: (text: string) => T) {
  return z.string().transform((text, ctx) => {
    try {
      return parse(text);
    } catch (err) {
      ctx.addIssue(errorMessage(err));
      return z.NEVER;
    }
  });
}

function wholeNumber(min: number, max: number) {
  return z
    .string()
    .regex(/^[0-9]+$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().int().min(min, `must be from ${min} to ${max}`).max(max, `must be from ${min} to ${max}`));
}

export const name = z.string().regex(NAME_RE, 'must be letters, digits, ".", "_" or "-" (1 to 128 characters)');
const port = wholeNumber(1, 65_535);
export const ttl = wholeNumber(1, 86_400);
// The server lets an operator leave learning on longer than any session lives.
const learningTtl = wholeNumber(1, 30 * 86_400);
// Rule expiry is not a session TTL; the cap only catches typos (ten years).
const expiresIn = wholeNumber(1, 315_360_000);
const ruleId = wholeNumber(1, Number.MAX_SAFE_INTEGER);
export const destSpec = parsedBy(parseDestSpec);
const destinationPattern = parsedBy((text) => (parseDestinationPattern(text), text));
const portPattern = parsedBy((text) => (parsePortPattern(text), text));
const containerPattern = parsedBy((text) => (parseContainerPattern(text), text));
const host = parsedBy((text) => (parseHost(text), text));
const ipLiteral = z
  .string()
  .refine((s) => ipaddr.IPv4.isValidFourPartDecimal(s) || (ipaddr.IPv6.isValid(s) && !s.includes('%')), 'must be an IPv4 or IPv6 address');

export const clientOptions = z.object({
  api: z
    .string()
    .refine((s) => URL.canParse(s) && /^https?:$/.test(new URL(s).protocol), 'must be an http:// or https:// URL')
    .optional(),
  token: z.string().min(1, 'must not be empty').optional(),
  dataDir: z.string().min(1, 'must not be empty').optional(),
  json: z.boolean().optional(),
});
export type ClientOptions = z.infer<typeof clientOptions>;

const sessionCreateInput = clientOptions.extend({
  container: name,
  id: name.optional(),
  ttl: ttl.optional(),
  allow: z.array(destSpec),
  deny: z.array(destSpec),
  allowAll: z.boolean().optional(),
  sourceIp: z.array(ipLiteral),
});

const sessionDeleteInput = clientOptions.extend({ id: name });

const ruleAddInput = clientOptions
  .extend({
    dest: destinationPattern,
    port: portPattern.optional(),
    container: containerPattern.optional(),
    allow: z.boolean().optional(),
    deny: z.boolean().optional(),
    notes: z.string().max(1000, 'must be at most 1000 characters').optional(),
    expiresIn: expiresIn.optional(),
  })
  .refine((o) => o.allow === true !== (o.deny === true), 'pass exactly one of --allow or --deny');

const ruleListInput = clientOptions.extend({
  container: name.optional(),
  layer: z.enum(LAYERS as [string, ...string[]], `must be one of ${LAYERS.join(', ')}`).optional(),
  session: name.optional(),
});

const ruleRemoveInput = clientOptions.extend({ id: ruleId });

const learnInput = clientOptions.extend({ container: name, ttl: learningTtl.optional() });

const checkInput = clientOptions.extend({ container: name, host, port, resolve: z.boolean().optional() });

/**
 * Positional arguments are named in upper case, options as flags, in error messages.
 * Zod paths are the option keys commander produced (camelCase).
 */
export function validate<S extends z.ZodType>(schema: S, input: Record<string, unknown>, positionals: readonly string[] = []): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const key = issue.path[0];
    if (key === undefined) return issue.message;
    const label = positionals.includes(String(key)) ? String(key).toUpperCase() : `--${kebab(String(key))}`;
    return `${label}: ${issue.message}`;
  });
  throw new UsageError(lines.join('\n'));
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

// ---- API access --------------------------------------------------------------

export function clientFor(opts: ClientOptions, env: NodeJS.ProcessEnv): SluiceClient {
  const baseUrl = opts.api ?? (nonEmpty(env.SLUICE_API_URL) || DEFAULT_API_URL);
  if (opts.api === undefined && !URL.canParse(baseUrl)) throw new UsageError(`SLUICE_API_URL: not a URL: ${baseUrl}`);
  return new SluiceClient({ baseUrl, token: resolveToken(opts, env) });
}

/**
 * --token, then SLUICE_API_TOKEN, then the file named by SLUICE_API_TOKEN_FILE (as the
 * server reads it), then the token file the server generates in its data dir.
 */
function resolveToken(opts: ClientOptions, env: NodeJS.ProcessEnv): string {
  const direct = opts.token ?? nonEmpty(env.SLUICE_API_TOKEN);
  if (direct !== undefined) return direct;
  const secretFile = nonEmpty(env.SLUICE_API_TOKEN_FILE);
  if (secretFile !== undefined) {
    let secret = '';
    try {
      secret = readFileSync(secretFile, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`SLUICE_API_TOKEN_FILE: cannot read ${secretFile}: ${errorMessage(err)}`);
    }
    if (secret === '') throw new UsageError(`SLUICE_API_TOKEN_FILE: ${secretFile} is empty`);
    return secret;
  }
  const dataDir = resolve(opts.dataDir ?? (nonEmpty(env.SLUICE_DATA_DIR) || './data'));
  const file = join(dataDir, 'api-token');
  let token = '';
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch {
    // Reported below together with the other ways to supply a token.
  }
  if (token === '') {
    throw new UsageError(`no API token: pass --token, set SLUICE_API_TOKEN or SLUICE_API_TOKEN_FILE, or point --data-dir at the server's data directory (${file} is missing or empty)`);
  }
  return token;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === '' ? undefined : value;
}

// ---- tables ----------------------------------------------------------------------

// Rows are what SluiceClient returns: already checked against the API's response schemas
// (src/api/responses.ts), so the columns read typed fields.
const SESSION_COLUMNS: Column<SessionSummary>[] = [
  { header: 'ID', value: (r) => r.session_id },
  { header: 'CONTAINER', value: (r) => r.container_name },
  { header: 'EXPIRES', value: (r) => formatTime(r.expires_at) },
  { header: 'RULES', value: (r) => r.rule_count },
  { header: 'ALLOW_ALL', value: (r) => r.allow_all },
  { header: 'SOURCE_IPS', value: (r) => r.source_ips },
];

export const RULE_COLUMNS: Column<Rule>[] = [
  { header: 'ID', value: (r) => r.id },
  { header: 'LAYER', value: (r) => r.layer },
  { header: 'SESSION', value: (r) => r.session_id },
  { header: 'CONTAINER', value: (r) => r.container_pattern },
  { header: 'DESTINATION', value: (r) => r.destination_pattern },
  { header: 'PORTS', value: (r) => r.port_pattern },
  { header: 'ACTION', value: (r) => r.action },
  { header: 'EXPIRES', value: (r) => formatTime(r.expires_at) },
  { header: 'NOTES', value: (r) => r.notes },
];

// ---- printing ----------------------------------------------------------------

export function printJson(io: CliIo, body: unknown): void {
  if (body !== undefined) io.out(JSON.stringify(body, null, 2));
}

function printRows<R>(io: CliIo, rows: readonly R[], columns: Column<R>[], empty: string): void {
  io.out(rows.length === 0 ? empty : formatTable(rows, columns));
}

/** `deny  (layer=global rule=12 reason=rule)`: the verdict padded so both align in logs. */
export function formatCheck(result: CheckResult): string {
  const parts: string[] = [];
  if (result.layer) parts.push(`layer=${result.layer}`);
  if (result.rule) parts.push(`rule=${result.rule.id}`);
  if (result.reason) parts.push(`reason=${result.reason}`);
  if (result.would_be) parts.push(`would_be=${result.would_be.decision}`);
  return `${result.decision.padEnd(5)} (${parts.map(formatCell).join(' ')})`;
}

function formatDetails(details: unknown): string[] {
  if (details === undefined || details === null) return [];
  if (Array.isArray(details)) return details.map((d) => `  ${detailLine(d)}`);
  if (typeof details === 'object') {
    return Object.entries(details).map(([key, value]) => `  ${key}: ${formatField(key, value)}`);
  }
  return [`  ${formatCell(details)}`];
}

// sluice's details are strings; an error body from something in front of it may hold
// {path, message} validation details instead: shown the way we show ours.
function detailLine(detail: unknown): string {
  const d = typeof detail === 'object' && detail !== null ? (detail as { path?: unknown; message?: unknown }) : undefined;
  if (d !== undefined && typeof d.message === 'string') {
    const path = Array.isArray(d.path) ? d.path.join('.') : d.path;
    return path ? `${formatCell(path)}: ${formatCell(d.message)}` : formatCell(d.message);
  }
  return formatCell(detail);
}

/** Turns whatever an action threw into output and an exit code. */
export function reportError(io: CliIo, err: unknown): number {
  if (err instanceof UsageError) {
    io.err(err.message);
    return EXIT_USAGE;
  }
  if (err instanceof SluiceApiError) {
    io.err(`error: ${err.status} ${formatCell(err.error)}`);
    for (const line of formatDetails(err.details)) io.err(line);
    return EXIT_FAILURE;
  }
  if (err instanceof SluiceUnreachableError) {
    io.err(`error: ${err.message}; is \`sluice serve\` running, and are --api / SLUICE_API_URL right?`);
    return EXIT_FAILURE;
  }
  io.err(`error: ${errorMessage(err)}`);
  return EXIT_FAILURE;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---- commands ----------------------------------------------------------------

export type Handler = (positionals: string[], opts: Record<string, unknown>) => Promise<number>;

/** Adapts a handler to commander's `(...args, opts, command)` calling convention. */
export function action(ctx: CliContext, handler: Handler, failureExit = EXIT_FAILURE) {
  return async (...args: unknown[]): Promise<void> => {
    const command = args[args.length - 1] as Command;
    const positionals = args.slice(0, -2).filter((a): a is string => typeof a === 'string');
    let code: number;
    try {
      code = await handler(positionals, command.opts());
    } catch (err) {
      code = reportError(ctx.io, err);
      if (code === EXIT_FAILURE) code = failureExit;
    }
    ctx.setExitCode(code);
  };
}

export function withClientOptions(cmd: Command, json = true): Command {
  cmd
    .option('--api <url>', `API base URL (default: $SLUICE_API_URL or ${DEFAULT_API_URL})`)
    .option('--token <token>', 'API token (default: $SLUICE_API_TOKEN, $SLUICE_API_TOKEN_FILE, else <data-dir>/api-token)')
    .option('--data-dir <dir>', 'server data directory holding api-token (default: $SLUICE_DATA_DIR or ./data)');
  return json ? cmd.option('--json', 'print the raw JSON response') : cmd;
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function registerClientCommands(program: Command, ctx: CliContext): void {
  registerSessionCommands(program, ctx);
  registerRuleCommands(program, ctx);
  registerLearnCommands(program, ctx);
  registerCheckCommand(program, ctx);
}

function registerSessionCommands(program: Command, ctx: CliContext): void {
  const { io } = ctx;
  const session = program.command('session').description('manage container sessions');

  withClientOptions(session.command('create').description('create (or renew) a session for a container'))
    .requiredOption('--container <name>', 'container name')
    .option('--id <id>', 'session id (default: chosen by the server)')
    .option('--ttl <seconds>', 'session lifetime, 1-86400')
    .option('--allow <dest[:ports]>', 'allow a destination; repeatable', collect, [])
    .option('--deny <dest[:ports]>', 'deny a destination; repeatable', collect, [])
    .option('--allow-all', 'allow every destination not denied')
    .option('--source-ip <ip>', 'client address this session may also be identified by; repeatable', collect, [])
    .action(
      action(ctx, async (_args, opts) => {
        const input = validate(sessionCreateInput, opts);
        const body = {
          ...(input.id !== undefined && { session_id: input.id }),
          container_name: input.container,
          ...(input.ttl !== undefined && { ttl_seconds: input.ttl }),
          network_rules: [
            ...input.allow.map((r) => ({ ...r, action: 'allow' as const })),
            ...input.deny.map((r) => ({ ...r, action: 'deny' as const })),
          ],
          ...(input.allowAll === true && { allow_all: true }),
          ...(input.sourceIp.length > 0 && { source_ips: input.sourceIp }),
        };
        const res = await clientFor(input, io.env).createSession(body);
        if (input.json) printJson(io, res);
        else io.out(formatKeyValues(res));
        return EXIT_OK;
      }),
    );

  withClientOptions(session.command('list').description('list active sessions')).action(
    action(ctx, async (_args, opts) => {
      const input = validate(clientOptions, opts);
      const res = await clientFor(input, io.env).listSessions();
      if (input.json) printJson(io, res);
      else printRows(io, res.sessions, SESSION_COLUMNS, 'no sessions');
      return EXIT_OK;
    }),
  );

  withClientOptions(session.command('delete').argument('<id>', 'session id').description('end a session')).action(
    action(ctx, async ([id], opts) => {
      const input = validate(sessionDeleteInput, { ...opts, id }, ['id']);
      const res = await clientFor(input, io.env).deleteSession(input.id);
      if (input.json) printJson(io, res);
      else io.out(`deleted session ${input.id}`);
      return EXIT_OK;
    }),
  );
}

function registerRuleCommands(program: Command, ctx: CliContext): void {
  const { io } = ctx;
  const rule = program.command('rule').description('manage global rules');

  withClientOptions(rule.command('add').description('add a global rule'))
    .requiredOption('--dest <pattern>', 'host, *.domain, **.domain, IP, CIDR or *')
    .option('--port <ports>', 'port, list (80,443), range (8000-8999) or * (default: *)')
    .option('--container <pattern>', 'container name or glob (default: *)')
    .option('--allow', 'allow matching connections')
    .option('--deny', 'deny matching connections')
    .option('--notes <text>', 'free text shown in listings')
    .option('--expires-in <seconds>', 'remove the rule after this many seconds')
    .action(
      action(ctx, async (_args, opts) => {
        const input = validate(ruleAddInput, opts);
        const body = {
          ...(input.container !== undefined && { container_pattern: input.container }),
          destination_pattern: input.dest,
          ...(input.port !== undefined && { port_pattern: input.port }),
          action: input.allow === true ? ('allow' as const) : ('deny' as const),
          ...(input.notes !== undefined && { notes: input.notes }),
          ...(input.expiresIn !== undefined && { expires_in_seconds: input.expiresIn }),
        };
        const res = await clientFor(input, io.env).createRule(body);
        if (input.json) printJson(io, res);
        else io.out(formatKeyValues(res));
        return EXIT_OK;
      }),
    );

  withClientOptions(rule.command('list').description('list rules'))
    .option('--container <pattern>', 'only rules for this container')
    .option('--layer <layer>', `only this layer (${LAYERS.join(', ')})`)
    .option('--session <id>', 'only rules of this session')
    .action(
      action(ctx, async (_args, opts) => {
        const input = validate(ruleListInput, opts);
        const res = await clientFor(input, io.env).listRules({
          ...(input.container !== undefined && { container: input.container }),
          ...(input.layer !== undefined && { layer: input.layer as RuleListQuery['layer'] }),
          ...(input.session !== undefined && { session_id: input.session }),
        });
        if (input.json) printJson(io, res);
        else printRows(io, res.rules, RULE_COLUMNS, 'no rules');
        return EXIT_OK;
      }),
    );

  withClientOptions(rule.command('rm').alias('remove').argument('<id>', 'rule id').description('remove a rule')).action(
    action(ctx, async ([id], opts) => {
      const input = validate(ruleRemoveInput, { ...opts, id }, ['id']);
      const res = await clientFor(input, io.env).deleteRule(input.id);
      if (input.json) printJson(io, res);
      else io.out(`deleted rule ${input.id}`);
      return EXIT_OK;
    }),
  );
}

function registerLearnCommands(program: Command, ctx: CliContext): void {
  const { io } = ctx;
  const learn = program.command('learn').description('switch learning mode (allow and log what would be denied)');

  const setLearning = async (opts: Record<string, unknown>, container: string | undefined, enabled: boolean): Promise<number> => {
    const input = validate(learnInput, { ...opts, container }, ['container']);
    const body = { enabled, ...(input.ttl !== undefined && { ttl_seconds: input.ttl }) };
    const res = await clientFor(input, io.env).setLearning(input.container, body);
    if (input.json) printJson(io, res);
    else io.out(learningLine(input.container, enabled, res));
    return EXIT_OK;
  };

  withClientOptions(learn.command('on').argument('<container>', 'container name').description('turn learning on'))
    .option('--ttl <seconds>', 'turn it off again after this many seconds (up to 30 days)')
    .action(action(ctx, async ([container], opts) => setLearning(opts, container, true)));

  withClientOptions(learn.command('off').argument('<container>', 'container name').description('turn learning off')).action(
    action(ctx, async ([container], opts) => setLearning(opts, container, false)),
  );
}

function learningLine(container: string, enabled: boolean, res: ContainerInfo): string {
  const until = res.learning.operator_switch.expires_at;
  const suffix = enabled && until !== null ? ` until ${formatTime(until)}` : '';
  return `learning ${enabled ? 'on' : 'off'} for ${container}${suffix}`;
}

function registerCheckCommand(program: Command, ctx: CliContext): void {
  const { io } = ctx;
  withClientOptions(
    program
      .command('check')
      .argument('<container>', 'container name')
      .argument('<host>', 'destination host or IP')
      .argument('<port>', 'destination port')
      .description('ask what the policy decides for a connection; exits 0 on allow, 1 on deny, 2 when there is no answer (bad input, API error, unreachable)'),
  )
    .option('--resolve', 'also resolve HOST and apply address rules, as the proxy does')
    .action(
    action(ctx, async ([container, hostArg, portArg], opts) => {
      const input = validate(checkInput, { ...opts, container, host: hostArg, port: portArg }, ['container', 'host', 'port']);
      const body = { container_name: input.container, destination: input.host, port: input.port, ...(input.resolve === true && { resolve: true }) };
      const result = await clientFor(input, io.env).check(body);
      if (input.json) printJson(io, result);
      else {
        io.out(formatCheck(result));
        // Kept off the first line so scripts can still read the verdict from it alone.
        if (result.explanation) io.out(`  ${formatCell(result.explanation)}`);
      }
      return result.decision === 'allow' ? EXIT_OK : EXIT_FAILURE;
    }, EXIT_USAGE),
  );
}
