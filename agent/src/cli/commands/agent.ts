// `hypha agent`: the node agent daemon (one per node, a DaemonSet in Kubernetes).

import { createLogger, type LogLevel } from '@hypha/shared';
import { type Command, Option } from 'commander';
import { type AgentConfig, AgentConfigError, DEFAULT_PORTS, parseConfigSource } from '../../agent/config.js';
import { addMeshDaemonOptions } from '../daemon-options.js';
import { durationFlagMs, UsageError } from '../errors.js';

interface AgentFlags {
  node?: string;
  config: string;
  caAddress: string;
  caTokenFile: string;
  caRootFile: string;
  trustDomain: string;
  capture: 'node' | 'none';
  outboundPolicy: 'passthrough' | 'registry-only';
  drainTimeout: string;
  revocationPoll: string;
  adminAddress: string;
  metricsAddress: string;
  readinessAddress: string;
  outboundPort: string;
  inboundPort: string;
  hbonePort: string;
}

function port(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new UsageError(`${flag} must be a port number 0-65535, got "${value}"`);
  return n;
}

export function register(program: Command): void {
  const agentCmd = addMeshDaemonOptions(program.command('agent'));
  agentCmd
    .description('run the node agent: capture local mesh pods, HBONE mTLS tunnels, L4 policy, metrics')
    .addOption(
      new Option('--node <name>', "this node's name (pods with spec.nodeName equal to it are captured)").env(
        'NODE_NAME',
      ),
    )
    .addOption(
      new Option('--capture <mode>', 'traffic capture: node (nftables in this network namespace) or none')
        .choices(['node', 'none'])
        .default('node'),
    )
    .addOption(
      new Option('--outbound-policy <policy>', 'traffic to destinations outside the mesh registry')
        .choices(['passthrough', 'registry-only'])
        .default('passthrough'),
    )
    .option('--drain-timeout <duration>', 'how long SIGTERM lets live connections finish', '30s')
    .addOption(
      new Option(
        '--revocation-poll <duration>',
        "how often to fetch the CA's revocation list (revoked peers are refused and their connections cut)",
      )
        .env('HYPHA_REVOCATION_POLL')
        .default('30s'),
    )
    .option('--admin-address <host:port>', 'admin endpoint (keep it on localhost)', '127.0.0.1:15000')
    .option('--metrics-address <host:port>', 'Prometheus /metrics', '0.0.0.0:15020')
    .option('--readiness-address <host:port>', '/healthz/ready', '0.0.0.0:15021')
    .option('--outbound-port <port>', 'outbound capture listener', String(DEFAULT_PORTS.outbound))
    .option(
      '--inbound-port <port>',
      'inbound plaintext capture listener',
      String(DEFAULT_PORTS.inboundPlaintext),
    )
    .option('--hbone-port <port>', 'HBONE (mTLS HTTP/2 CONNECT) listener', String(DEFAULT_PORTS.hbone))
    .addHelpText(
      'after',
      `
Signals: SIGTERM/SIGINT drain (stop accepting, let connections finish until --drain-timeout, then close)
and remove the capture rules. A restarted agent reconciles rules left by a crashed one.

Example (outside Kubernetes):
  hypha agent --node node-a --config file:/etc/hypha/mesh.yaml \\
    --ca-address https://10.0.0.1:15012 --ca-token-file /etc/hypha/token --ca-root-file /etc/hypha/root-cert.pem`,
    )
    .action(async (flags: AgentFlags, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as { logLevel: LogLevel };
      if (!flags.node) throw new UsageError('--node is required (or set NODE_NAME)');
      let config: AgentConfig;
      try {
        config = {
          nodeName: flags.node,
          source: parseConfigSource(flags.config),
          trustDomain: flags.trustDomain,
          ca: { address: flags.caAddress, tokenFile: flags.caTokenFile, rootFile: flags.caRootFile },
          capture: flags.capture,
          outboundPolicy: flags.outboundPolicy,
          ports: {
            outbound: port(flags.outboundPort, '--outbound-port'),
            inboundPlaintext: port(flags.inboundPort, '--inbound-port'),
            hbone: port(flags.hbonePort, '--hbone-port'),
          },
          adminAddress: flags.adminAddress,
          metricsAddress: flags.metricsAddress,
          readinessAddress: flags.readinessAddress,
          drainMs: durationFlagMs('--drain-timeout', flags.drainTimeout),
          revocationPollMs: durationFlagMs('--revocation-poll', flags.revocationPoll),
        };
      } catch (err) {
        if (err instanceof AgentConfigError) throw new UsageError(err.message);
        throw err;
      }
      const logger = createLogger({ level: globals.logLevel, base: { node: config.nodeName } });
      // Loaded here, not at the top: the agent pulls in the Kubernetes client (seconds to import),
      // which every other verb of the CLI would otherwise pay for.
      const { startAgent } = await import('../../agent/app.js');
      const agent = await startAgent(config, logger);
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          process.off('SIGTERM', onTerm);
          process.off('SIGINT', onInt);
          void agent.shutdown(signal).then(resolve);
        };
        const onTerm = () => stop('SIGTERM');
        const onInt = () => stop('SIGINT');
        process.on('SIGTERM', onTerm);
        process.on('SIGINT', onInt);
      });
    });
}
