#!/usr/bin/env node
// The `sluice` command: `serve` runs the proxy; the other subcommands drive a running one
// over its API (see client-commands.ts).
import { readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError } from 'commander';
import { ConfigError, loadConfig } from '../config/load.js';
import type { Config, ConfigInput } from '../config/schema.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, errorMessage, registerClientCommands, type CliContext, type CliIo } from './client-commands.js';
import { registerObserveCommands } from './observe-commands.js';
import { registerRunCommand } from './run-command.js';
import { limitHeapGrowth } from './heap-growth.js';

export type { CliIo } from './client-commands.js';

interface RunningApp {
  close(): Promise<void>;
}

const defaultIo: CliIo = {
  out: (line) => void process.stdout.write(`${line}\n`),
  err: (line) => void process.stderr.write(`${line}\n`),
  env: process.env,
};

/**
 * Runs the CLI on user arguments (`process.argv.slice(2)`) and returns the exit code.
 * For `serve` it returns once the proxy is listening; signal handlers end the process.
 */
export async function run(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const cliIo: CliIo = { ...defaultIo, ...io };
  let exitCode = EXIT_OK;
  // Commander derives help's exit code from process.exitCode, which a host process (a test
  // runner, say) may have set; whether commander wrote to stderr says if it answered a mistake.
  let commanderWroteErr = false;
  const program = buildProgram(
    { io: cliIo, setExitCode: (code) => (exitCode = code) },
    { out: cliIo.out, err: (line) => ((commanderWroteErr = true), cliIo.err(line)) },
  );
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return commanderExitCode(err, commanderWroteErr);
    cliIo.err(`error: ${errorMessage(err)}`);
    return EXIT_FAILURE;
  }
  return exitCode;
}

function buildProgram(ctx: CliContext, commanderIo: Pick<CliIo, 'out' | 'err'>): Command {
  const program = new Command('sluice')
    .description('network egress proxy with layered, session-scoped ACLs')
    .version(packageVersion())
    // Options of `sluice` itself come before the subcommand, so `sluice run` can pass the
    // command's own options through untouched.
    .enablePositionalOptions()
    // Set before adding subcommands: commander copies these settings into each one.
    .exitOverride()
    .configureOutput({
      writeOut: (text) => commanderIo.out(text.replace(/\n$/, '')),
      writeErr: (text) => commanderIo.err(text.replace(/\n$/, '')),
    });

  program
    .command('serve')
    .description('run the proxy and its API')
    .option('--config <file>', 'YAML or JSON config file (default: $SLUICE_CONFIG)')
    .option('--data-dir <dir>', 'state directory (database, api-token)')
    .option('--listen-http <host:port>', 'HTTP proxy listener')
    .option('--listen-socks <host:port>', 'SOCKS listener')
    .option('--listen-api <host:port>', 'API listener')
    .action(async (opts: ServeOptions) => ctx.setExitCode(await serve(opts, ctx.io)));

  registerClientCommands(program, ctx);
  registerObserveCommands(program, ctx);
  registerRunCommand(program, ctx);
  return program;
}

interface ServeOptions {
  config?: string;
  dataDir?: string;
  listenHttp?: string;
  listenSocks?: string;
  listenApi?: string;
}

function serveFlags(opts: ServeOptions): ConfigInput {
  return {
    data_dir: opts.dataDir,
    listen: { http: opts.listenHttp, socks: opts.listenSocks, api: opts.listenApi },
  };
}

async function serve(opts: ServeOptions, io: CliIo): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ file: opts.config, env: io.env, flags: serveFlags(opts) });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.err(err.message);
    return EXIT_USAGE;
  }
  let app: RunningApp;
  try {
    // Loaded only here, so client subcommands start fast and never load the proxy or native SQLite.
    const { startSluice } = await import('../app.js');
    // A process-wide V8 setting: the serving process applies it, a program embedding
    // startSluice() keeps its own.
    limitHeapGrowth();
    app = await startSluice(config);
  } catch (err) {
    io.err(`error: cannot start sluice: ${errorMessage(err)}`);
    return EXIT_FAILURE;
  }
  stopOnSignals(app, io);
  return EXIT_OK;
}

/** First SIGTERM/SIGINT drains and exits 0; a second one means "now", and exits 1. */
function stopOnSignals(app: RunningApp, io: CliIo): void {
  let stopping = false;
  const onSignal = (): void => {
    if (stopping) process.exit(EXIT_FAILURE);
    stopping = true;
    app.close().then(
      () => process.exit(EXIT_OK),
      (err: unknown) => {
        io.err(`error: shutdown failed: ${errorMessage(err)}`);
        process.exit(EXIT_FAILURE);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

function commanderExitCode(err: CommanderError, helpToStderr: boolean): number {
  if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_OK;
  // `sluice help` exits 0; help shown because a subcommand was missing is a usage error.
  if (err.code === 'commander.help') return helpToStderr ? EXIT_USAGE : EXIT_OK;
  return EXIT_USAGE;
}

function packageVersion(): string {
  try {
    // dist/src/cli/main.js -> package.json at the package root.
    const pkg: unknown = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    const version = (pkg as { version?: unknown }).version;
    return typeof version === 'string' ? version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** npm installs bins as symlinks, so compare real paths, not the path we were invoked by. */
function isMainModule(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return pathToFileURL(realpathSync(entry)).href === pathToFileURL(realpathSync(new URL(import.meta.url))).href;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  process.exitCode = await run(process.argv.slice(2));
}
