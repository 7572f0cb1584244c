// Builds the `hypha` command tree. Each verb lives in ./commands/<verb>.ts and exports a
// `register(program)` function, so verbs stay independent of each other. A verb file imports
// only commander and small option helpers at the top; its heavy modules (Kubernetes source, CA
// server, agent, waypoint engine, yaml, the demo's test harness) load with `await import()` inside
// its action, so `hypha --help` and `hypha <verb> --help` stay cheap (agent/test/cli/lazy-load.test.ts).
import { readFileSync } from 'node:fs';
import { LOG_LEVELS } from '@hypha/shared';
import { Command, Option } from 'commander';
import { register as registerAgent } from './commands/agent.js';
import { register as registerCa } from './commands/ca.js';
import { register as registerCert } from './commands/cert.js';
import { register as registerCheck } from './commands/check.js';
import { register as registerDashboard } from './commands/dashboard.js';
import { register as registerDemo } from './commands/demo.js';
import { register as registerGateway } from './commands/gateway.js';
import { register as registerInstall } from './commands/install.js';
import { register as registerPolicy } from './commands/policy.js';
import { register as registerStatus } from './commands/status.js';
import { register as registerTap } from './commands/tap.js';
import { register as registerWaypoint } from './commands/waypoint.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command('hypha');
  // Set before any subcommand exists so every verb inherits it (usage errors exit 2, see main.ts).
  program.exitOverride();
  program
    .description('Hypha: a sidecarless (ambient) service mesh for Kubernetes')
    .version(version(), '-V, --version', 'print the version and exit')
    .addOption(
      new Option('--log-level <level>', 'log level for daemons (JSON logs on stderr)')
        .choices(LOG_LEVELS)
        .default('info')
        .env('HYPHA_LOG_LEVEL'),
    )
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: true })
    .addHelpText(
      'after',
      `
Exit codes: 0 ok, 1 failure, 2 usage error.
Examples:
  hypha ca init --dir ./ca                 create a root CA
  hypha ca issue --dir ./ca --id spiffe://cluster.local/ns/shop/sa/web --out ./web
  hypha cert inspect ./web/cert-chain.pem  show identity, validity and chain status`,
    );
  registerAgent(program);
  registerCa(program);
  registerCert(program);
  registerCheck(program);
  registerDashboard(program);
  registerDemo(program);
  registerInstall(program);
  registerPolicy(program);
  registerStatus(program);
  registerTap(program);
  registerWaypoint(program);
  registerGateway(program);
  return program;
}
