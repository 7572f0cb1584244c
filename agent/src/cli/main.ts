#!/usr/bin/env node
// Entry point of the `hypha` command. Turns every failure into one clear line on stderr and a
// stable exit code (0 ok, 1 failure, 2 usage), so scripts can rely on it.
import { CommanderError } from 'commander';
import { EXIT_FAILURE, EXIT_USAGE, UsageError } from './errors.js';
import { buildProgram } from './program.js';

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.configureOutput({ outputError: (str, write) => write(str) });
  try {
    await program.parseAsync(argv);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end through here with exit code 0.
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      ) {
        return 0;
      }
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`hypha: usage error: ${err.message}\n(run with --help for usage)\n`);
      return EXIT_USAGE;
    }
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`hypha: error: ${message}\n`);
    if (process.env.HYPHA_DEBUG) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    return EXIT_FAILURE;
  }
}

// `hypha ... | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

const code = await main(process.argv);
// Daemons keep the event loop alive themselves; one-shot verbs end here.
process.exitCode = code;
