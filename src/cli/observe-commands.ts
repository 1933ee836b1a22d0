// The CLI's observing commands: `sluice log` (the decision audit trail, optionally followed
// live) and `sluice learn report|promote` (what a container reached in learning mode, and
// turning it into rules). They talk to the API through SluiceClient like the others.
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import { z } from 'zod';
import type { SluiceClient } from '../client/sluice-client.js';
import type { Decision, DecisionQuery, LearnedEntry, LearnedReport, PromoteResult, SluiceEvent } from '../client/types.js';
import { formatHostPort, parseHost } from '../policy/host.js';
import { proposeRules } from '../policy/promote.js';
import {
  EXIT_FAILURE,
  EXIT_OK,
  RULE_COLUMNS,
  action,
  clientFor,
  clientOptions,
  collect,
  name,
  printJson,
  validate,
  withClientOptions,
  type CliContext,
  type CliIo,
} from './client-commands.js';
import { formatCell, formatTable, type Column } from './output.js';

// ---- input ----------------------------------------------------------------------

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A point in time for --since/--until: ISO 8601 (`2025-01-31T12:00:00Z`), epoch
 * milliseconds, or a duration ago (`90s`, `15m`, `2h`, `7d`). Returned as ISO 8601 text.
 */
export function parseTimeSpec(text: string, now: number = Date.now()): string {
  const t = text.trim();
  let ms: number;
  const ago = /^([0-9]+)(s|m|h|d)$/.exec(t);
  if (ago) ms = now - Number(ago[1]) * UNIT_MS[ago[2]!]!;
  else if (/^[0-9]+$/.test(t)) ms = Number(t);
  else if (/^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+(Z|[+-][0-9]{2}:?[0-9]{2})?)?$/i.test(t)) ms = Date.parse(t);
  else ms = Number.NaN;
  if (!Number.isFinite(ms) || ms < 0 || ms > 8.64e15) {
    throw new Error('must be an ISO 8601 time (2025-01-31T12:00:00Z), epoch milliseconds, or a duration ago (90s, 15m, 2h, 7d)');
  }
  return new Date(ms).toISOString();
}

function parsedBy<T>(parse: (text: string) => T) {
  return z.string().transform((text, ctx) => {
    try {
      return parse(text);
    } catch (err) {
      ctx.addIssue(err instanceof Error ? err.message : String(err));
      return z.NEVER;
    }
  });
}

/** A destination as the audit trail stores it (canonical host: lowercased, IPv6 unbracketed...). */
const canonicalHost = parsedBy((text) => parseHost(text).host);
const timeSpec = parsedBy((text) => parseTimeSpec(text));
const count = (max: number) =>
  z
    .string()
    .regex(/^[0-9]+$/, `must be a whole number from 1 to ${max}`)
    .transform(Number)
    .pipe(z.number().int().min(0).max(max, `must be from 1 to ${max}`));

const MAX_LOG_ROWS = 100_000;
const PAGE = 1000;

const logInput = clientOptions.extend({
  container: name.optional(),
  session: name.optional(),
  decision: z.enum(['allow', 'deny'], 'must be allow or deny').optional(),
  destination: canonicalHost.optional(),
  since: timeSpec.optional(),
  until: timeSpec.optional(),
  limit: count(MAX_LOG_ROWS).optional(),
  follow: z.boolean().optional(),
}).refine((o) => o.follow === true || o.limit !== 0, { path: ['limit'], message: `must be from 1 to ${MAX_LOG_ROWS} (0, no history, only with --follow)` });
type LogInput = z.output<typeof logInput>;

const reportInput = clientOptions.extend({
  container: name,
  format: z.enum(['table', 'yaml', 'json'], 'must be table, yaml or json').default('table'),
  collapseSubdomains: z.boolean().optional(),
});

const promoteInput = clientOptions.extend({
  container: name,
  scope: z.enum(['container', 'global'], 'must be container or global').default('container'),
  collapseSubdomains: z.boolean().optional(),
  destination: z.array(canonicalHost),
});

// ---- log --------------------------------------------------------------------------

/** The row shape both the history (Decision) and live events are printed from. */
interface LogRow {
  id: number | null;
  time: string | null;
  container: string | null;
  session_id: string | null;
  protocol: string | null;
  destination: string;
  port: number | null;
  decision: string | null;
  reason: string | null;
  layer: string | null;
  rule_id: number | null;
  bytes_up: number | null;
  bytes_down: number | null;
  close_reason: string | null;
}

const target = (r: LogRow): string => (r.port === null ? r.destination : formatHostPort(r.destination, r.port));
const bytes = (r: LogRow): string => (r.bytes_up === null && r.bytes_down === null ? '-' : `${r.bytes_up ?? 0}/${r.bytes_down ?? 0}`);

/** Columns with the width live lines are padded to (the history table sizes itself). */
const LOG_COLUMNS: Array<Column<LogRow> & { width: number }> = [
  { header: 'ID', value: (r) => r.id, width: 6 },
  { header: 'TIME', value: (r) => r.time, width: 24 },
  { header: 'CONTAINER', value: (r) => r.container, width: 16 },
  { header: 'PROTO', value: (r) => r.protocol, width: 7 },
  { header: 'DESTINATION', value: target, width: 28 },
  { header: 'DECISION', value: (r) => r.decision, width: 8 },
  { header: 'REASON', value: (r) => r.reason, width: 17 },
  { header: 'LAYER', value: (r) => r.layer, width: 7 },
  { header: 'RULE', value: (r) => r.rule_id, width: 5 },
  { header: 'BYTES', value: bytes, width: 9 },
  { header: 'CLOSED', value: (r) => r.close_reason, width: 0 },
];

const fromDecision = (d: Decision): LogRow => d;

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

function fromEvent(e: SluiceEvent): LogRow {
  const d = e.data;
  return {
    id: num(d.decision_id),
    time: str(d.time),
    container: str(d.container),
    session_id: str(d.session_id),
    protocol: str(d.protocol),
    destination: str(d.destination) ?? '',
    port: num(d.port),
    decision: str(d.decision),
    reason: str(d.reason),
    layer: str(d.layer),
    rule_id: num(d.rule_id),
    bytes_up: null,
    bytes_down: null,
    close_reason: null,
  };
}

/** One live line, padded like the header printed before it. */
function liveLine(row: LogRow): string {
  return LOG_COLUMNS.map((c, i) => {
    const cell = formatCell(c.value(row));
    return i === LOG_COLUMNS.length - 1 ? cell : cell.padEnd(c.width);
  })
    .join('  ')
    .trimEnd();
}

function liveHeader(): string {
  return LOG_COLUMNS.map((c, i) => (i === LOG_COLUMNS.length - 1 ? c.header : c.header.padEnd(c.width))).join('  ');
}

function query(input: LogInput, limit: number): DecisionQuery {
  return {
    ...(input.container !== undefined && { container: input.container }),
    ...(input.session !== undefined && { session_id: input.session }),
    ...(input.decision !== undefined && { decision: input.decision }),
    ...(input.destination !== undefined && { destination: input.destination }),
    ...(input.since !== undefined && { since: input.since }),
    ...(input.until !== undefined && { until: input.until }),
    limit: Math.min(limit, PAGE),
  };
}

/** Up to `limit` decisions matching the filters, newest first, following the API's cursor. */
async function history(client: SluiceClient, input: LogInput, limit: number): Promise<Decision[]> {
  const out: Decision[] = [];
  if (limit === 0) return out;
  for await (const d of client.allDecisions(query(input, limit))) {
    out.push(d);
    if (out.length >= limit) break;
  }
  return out;
}

/** The filters the event stream cannot apply itself (it filters by type and container only). */
function matches(row: LogRow, input: LogInput): boolean {
  if (input.session !== undefined && row.session_id !== input.session) return false;
  if (input.decision !== undefined && row.decision !== input.decision) return false;
  if (input.destination !== undefined && row.destination !== input.destination) return false;
  const t = row.time === null ? Number.NaN : Date.parse(row.time);
  if (input.since !== undefined && !(t >= Date.parse(input.since))) return false;
  if (input.until !== undefined && !(t < Date.parse(input.until))) return false;
  return true;
}

async function runLog(io: CliIo, input: LogInput): Promise<number> {
  const client = clientFor(input, io.env);
  if (!input.follow) {
    const rows = await history(client, input, input.limit ?? 50);
    if (input.json) printJson(io, { decisions: rows });
    else io.out(rows.length === 0 ? 'no decisions' : formatTable(rows.map(fromDecision), LOG_COLUMNS));
    return EXIT_OK;
  }
  return follow(io, client, input);
}

/**
 * `log --follow`: subscribes first, then prints the recent history oldest first (so the
 * output reads in time order, as with `tail -f`), then every new decision as it arrives,
 * until SIGINT (or the caller's signal). Nothing falls between the history and the stream:
 * the subscription is open before the history is read, and duplicates are skipped by id.
 */
async function follow(io: CliIo, client: SluiceClient, input: LogInput): Promise<number> {
  const stop = new AbortController();
  const onSigint = (): void => stop.abort();
  process.once('SIGINT', onSigint);
  const outer = io.signal;
  const onOuter = (): void => stop.abort();
  if (outer?.aborted) stop.abort();
  outer?.addEventListener('abort', onOuter, { once: true });
  try {
    let opened!: () => void;
    const open = new Promise<void>((r) => (opened = r));
    const pending: LogRow[] = [];
    let lastId = 0;
    let live = false;
    const print = (row: LogRow): void => {
      if (row.id !== null && row.id <= lastId) return;
      if (!matches(row, input)) return;
      if (row.id !== null) lastId = row.id;
      io.out(input.json ? JSON.stringify(row) : liveLine(row));
    };
    const stream = (async () => {
      for await (const e of client.events({ types: ['decision'], container: input.container, signal: stop.signal, onOpen: opened })) {
        const row = fromEvent(e);
        if (live) print(row);
        else pending.push(row);
      }
    })();
    // Either the stream opens, or it fails (bad token, unreachable) and that error is reported.
    const first = await Promise.race([open.then(() => 'open' as const), stream.then(() => 'ended' as const)]);
    if (first === 'ended') {
      if (stop.signal.aborted) return EXIT_OK;
      throw new Error('the event stream ended before it started');
    }
    const backlog = (await history(client, input, input.limit ?? 20)).reverse();
    if (!input.json) io.out(liveHeader());
    for (const d of backlog) print(fromDecision(d));
    live = true;
    for (const row of pending.splice(0)) print(row);
    await stream;
    if (stop.signal.aborted) return EXIT_OK;
    io.err('error: the event stream ended (did sluice stop?)');
    return EXIT_FAILURE;
  } finally {
    process.off('SIGINT', onSigint);
    outer?.removeEventListener('abort', onOuter);
    stop.abort();
  }
}

// ---- learn report / promote ----------------------------------------------------------

const LEARNED_COLUMNS: Column<LearnedEntry>[] = [
  { header: 'DESTINATION', value: (r) => r.destination },
  { header: 'PORT', value: (r) => r.port },
  { header: 'COUNT', value: (r) => r.count },
  { header: 'FIRST_SEEN', value: (r) => r.first_seen },
  { header: 'LAST_SEEN', value: (r) => r.last_seen },
  { header: 'WOULD_BE', value: (r) => r.would_be.decision },
  { header: 'LAYER', value: (r) => r.would_be.layer },
  { header: 'RULE', value: (r) => r.would_be.rule_id },
];

/** The learned list as session rules: one allow rule per destination with the ports seen. */
export function learnedAsRules(report: LearnedReport, collapse: boolean) {
  return {
    network_rules: proposeRules(report.learned, collapse).map((p) => ({
      destination_pattern: p.destinationPattern,
      port_pattern: p.portPattern,
      action: 'allow' as const,
    })),
  };
}

function learningState(report: LearnedReport): string {
  const l = report.learning;
  return l?.active ? `learning is on (${l.source ?? 'active'})` : 'learning is off';
}

function printPromoted(io: CliIo, res: PromoteResult): void {
  if (res.created.length === 0) io.out(`no rules created for ${res.container_name}`);
  else {
    io.out(`created ${res.created.length} rule${res.created.length === 1 ? '' : 's'} for ${res.container_name}:`);
    io.out(formatTable(res.created, RULE_COLUMNS));
  }
  if (res.skipped.length > 0) {
    io.out(`skipped ${res.skipped.length}: ${res.skipped.map((s) => `${formatHostPort(s.destination, s.port)} (${s.reason})`).join(', ')}`);
  }
}

// ---- registration ---------------------------------------------------------------------

export function registerObserveCommands(program: Command, ctx: CliContext): void {
  const { io } = ctx;

  withClientOptions(program.command('log').description('show the decision log, newest first; --follow streams new decisions until Ctrl-C'))
    .option('--container <name>', 'only this container')
    .option('--session <id>', 'only this session')
    .option('--decision <allow|deny>', 'only allowed or only denied attempts')
    .option('--destination <host>', 'only this destination host or IP')
    .option('--since <time>', 'from this time: ISO 8601, epoch ms, or a duration ago (15m, 2h, 7d)')
    .option('--until <time>', 'before this time (same forms as --since)')
    .option('--limit <n>', `how many decisions to show (default 50; 20 of history with --follow; up to ${MAX_LOG_ROWS})`)
    .option('--follow', 'keep running and print each new decision as it happens')
    .action(action(ctx, async (_args, opts) => runLog(io, validate(logInput, opts))));

  const learn = program.commands.find((c) => c.name() === 'learn') ?? program.command('learn').description('learning mode');

  withClientOptions(learn.command('report').argument('<container>', 'container name').description('what the container reached in learning mode'), false)
    .option('--format <format>', 'table, or yaml/json: network_rules ready to attach to a session', 'table')
    .option('--collapse-subdomains', 'with yaml/json: one *.parent rule for sibling hosts (never over a public suffix)')
    .action(
      action(ctx, async ([container], opts) => {
        const input = validate(reportInput, { ...opts, container }, ['container']);
        const report = await clientFor(input, io.env).learned(input.container);
        if (input.format === 'json') printJson(io, learnedAsRules(report, input.collapseSubdomains === true));
        else if (input.format === 'yaml') io.out(toYaml(learnedAsRules(report, input.collapseSubdomains === true)).trimEnd());
        else if (report.learned.length === 0) io.out(`nothing learned for ${input.container} (${learningState(report)})`);
        else io.out(formatTable(report.learned, LEARNED_COLUMNS));
        return EXIT_OK;
      }),
    );

  withClientOptions(learn.command('promote').argument('<container>', 'container name').description('turn what the container learned into allow rules'))
    .option('--scope <scope>', 'container: rules for this container only; global: for every container', 'container')
    .option('--collapse-subdomains', 'one *.parent rule for sibling hosts (never over a public suffix)')
    .option('--destination <host>', 'only this learned destination; repeatable', collect, [])
    .action(
      action(ctx, async ([container], opts) => {
        const input = validate(promoteInput, { ...opts, container }, ['container']);
        const res = await clientFor(input, io.env).promoteLearned(input.container, {
          scope: input.scope,
          ...(input.collapseSubdomains === true && { collapse_subdomains: true }),
          ...(input.destination.length > 0 && { destinations: input.destination }),
        });
        if (input.json) printJson(io, res);
        else printPromoted(io, res);
        return EXIT_OK;
      }),
    );
}
