// `sluice run [options] -- COMMAND [ARGS...]`: a launcher in one command. It creates a
// session with the given rules, runs COMMAND with the proxy environment pointing at it,
// heartbeats while COMMAND runs, forwards SIGINT/SIGTERM/SIGHUP to it, deletes the session
// when it exits, and exits with its status (128 + signal number when it was killed).
// With --isolate COMMAND also runs in a network namespace that can reach only sluice
// (see isolate.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import type { Command } from 'commander';
import { z } from 'zod';
import type { ManagedSession } from '../client/managed-session.js';
import { proxyEnv } from '../client/proxy-env.js';
import type { SessionCreateRequest } from '../client/types.js';
import {
  EXIT_FAILURE,
  EXIT_USAGE,
  clientFor,
  clientOptions,
  collect,
  destSpec,
  errorMessage,
  name,
  reportError,
  ttl,
  validate,
  withClientOptions,
  type CliContext,
  type CliIo,
} from './client-commands.js';
import { Isolation, isolationUnavailable, proxyEndpoint } from './isolate.js';

const runInput = clientOptions.extend({
  container: name.optional(),
  allow: z.array(destSpec),
  deny: z.array(destSpec),
  learn: z.boolean().optional(),
  ttl: ttl.optional(),
  isolate: z.boolean().optional(),
});
type RunInput = z.output<typeof runInput>;

/** Exit statuses of our own, in the shell's tradition: 126 cannot execute, 127 not found. */
const EXIT_CANNOT_EXECUTE = 126;
const EXIT_NOT_FOUND = 127;

const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export function registerRunCommand(program: Command, ctx: CliContext): void {
  withClientOptions(program.command('run'), false)
    .description('run a command whose network traffic goes through a new sluice session (deleted when the command exits)')
    .argument('<command...>', 'the command and its arguments (after --)')
    .option('--container <name>', 'container name of the session (default: run-<random>)')
    .option('--allow <dest[:ports]>', 'allow a destination; repeatable', collect, [])
    .option('--deny <dest[:ports]>', 'deny a destination; repeatable', collect, [])
    .option('--learn', 'learning mode: allow and record everything no global rule denies')
    .option('--ttl <seconds>', 'session lifetime between heartbeats, 1-86400 (heartbeats every ttl/3)')
    .option('--isolate', 'run the command in a new network namespace that can reach only the proxy (Linux, root, iproute2)')
    // Everything after the command's name is the command's, even if it looks like our options.
    .passThroughOptions()
    .addHelpText(
      'after',
      `
The command gets HTTP_PROXY and HTTPS_PROXY (the session's HTTP proxy URL), ALL_PROXY (its
socks5h:// URL), their lower-case twins, and empty NO_PROXY/no_proxy.
Exit status: the command's, 128+N if it was killed by signal N, 126/127 if it could not be
started, 1 if the session could not be created, 2 for usage errors or when --isolate cannot
isolate.

Example:
  sluice run --allow registry.npmjs.org:443 --allow '**.github.com:443' -- npm ci`,
    )
    .action(async (command: string[], opts: Record<string, unknown>) => {
      let code: number;
      try {
        code = await runCommand(command, validate(runInput, opts), ctx.io);
      } catch (err) {
        code = reportError(ctx.io, err);
      }
      ctx.setExitCode(code);
    });
}

async function runCommand(command: readonly string[], input: RunInput, io: CliIo): Promise<number> {
  const [file, ...args] = command;
  if (file === undefined || file === '') {
    io.err('sluice run: no command given (sluice run [options] -- COMMAND [ARGS...])');
    return EXIT_USAGE;
  }
  if (input.isolate) {
    const why = isolationUnavailable(io.env);
    if (why !== undefined) {
      io.err(`sluice run: cannot isolate: ${why}`);
      return EXIT_USAGE;
    }
  }
  const client = clientFor(input, io.env);
  const body: SessionCreateRequest = {
    container_name: input.container ?? `run-${randomBytes(4).toString('hex')}`,
    ...(input.ttl !== undefined && { ttl_seconds: input.ttl }),
    network_rules: [
      ...input.allow.map((r) => ({ ...r, action: 'allow' as const })),
      ...input.deny.map((r) => ({ ...r, action: 'deny' as const })),
    ],
    ...(input.learn === true && { allow_all: true }),
    metadata: { launcher: 'sluice run', command: file, pid: process.pid },
  };

  // Signals that arrive before the command runs stop the setup; later ones go to the command.
  let child: ChildProcess | undefined;
  let pending: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill(signal);
    else pending ??= signal;
  };
  for (const s of FORWARDED_SIGNALS) process.on(s, onSignal);

  let session: ManagedSession | undefined;
  let isolation: Isolation | undefined;
  try {
    const report = heartbeatReporting(io);
    session = await client.startSession(body, { onError: report.failed });
    session.on('heartbeat', report.recovered);
    session.on('recreated', (_created, info) => {
      report.recovered();
      if (info.tokenChanged) {
        io.err(`sluice run: the proxy had lost session ${_created.session_id}; it was re-created with a new token, so the command's proxy credentials no longer work`);
      }
    });
    if (pending) return signalExit(pending);

    let proxy = session.proxy;
    let spawnFile = file;
    let spawnArgs = args;
    if (input.isolate) {
      try {
        isolation = await Isolation.create(
          { http: proxyEndpoint(session.proxy.http, 80), socks: proxyEndpoint(session.proxy.socks5, 1080) },
          io.env,
        );
      } catch (err) {
        io.err(`sluice run: cannot isolate: ${errorMessage(err)}`);
        return EXIT_USAGE;
      }
      if (pending) return signalExit(pending);
      proxy = isolation.rewrite(session.proxy);
      [spawnFile, spawnArgs] = isolation.wrap(file, args);
    }

    const started = spawn(spawnFile, spawnArgs, { stdio: 'inherit', env: { ...io.env, ...proxyEnv(proxy) } });
    child = started;
    if (pending) started.kill(pending);
    const outcome = await new Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: NodeJS.ErrnoException }>((resolve) => {
      started.once('error', (error) => resolve({ error }));
      started.once('exit', (code, signal) => resolve({ code, signal }));
    });
    if ('error' in outcome) {
      io.err(`sluice run: cannot run ${file}: ${outcome.error.message}`);
      return outcome.error.code === 'ENOENT' ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE;
    }
    if (outcome.signal !== null) return signalExit(outcome.signal);
    return outcome.code ?? EXIT_FAILURE;
  } finally {
    for (const s of FORWARDED_SIGNALS) process.off(s, onSignal);
    if (isolation) for (const problem of await isolation.close()) io.err(`sluice run: ${problem}`);
    if (session) {
      try {
        await session.close();
      } catch (err) {
        io.err(`sluice run: could not delete session ${session.sessionId} (it expires by itself): ${errorMessage(err)}`);
      }
    }
  }
}

function signalExit(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}

/** One line when heartbeats start failing and one when they work again, not one per retry. */
function heartbeatReporting(io: CliIo): { failed: (err: Error) => void; recovered: () => void } {
  let failing = false;
  return {
    failed: (err) => {
      if (failing) return;
      failing = true;
      io.err(`sluice run: keeping the session alive failed (retrying): ${err.message}`);
    },
    recovered: () => {
      if (!failing) return;
      failing = false;
      io.err('sluice run: session alive again');
    },
  };
}
