// `hypha agent`: the node agent daemon (one per node, a DaemonSet in Kubernetes).

import { availableParallelism } from 'node:os';
import { createLogger, type LogLevel } from '@hypha/shared';
import { type Command, Option } from 'commander';
import { type AgentConfig, AgentConfigError, DEFAULT_PORTS, parseConfigSource } from '../../agent/config.js';
import { defaultWorkers, type WorkerDefault } from '../../agent/cpu-limit.js';
import { parseUpstream } from '../../dns/upstream.js';
import { addMeshDaemonOptions } from '../daemon-options.js';
import { durationFlagMs, durationFlagSeconds, UsageError } from '../errors.js';
import { nodeLeavesMesh, registerCleanup } from './agent-cleanup.js';

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
  certTtl: string;
  adminAddress: string;
  metricsAddress: string;
  readinessAddress: string;
  outboundPort: string;
  inboundPort: string;
  hbonePort: string;
  handoffDir: string;
  takeover: boolean;
  handoffWait: string;
  dnsProxy?: boolean;
  dnsPort: string;
  dnsUpstream: string[];
  clusterDomain: string;
  workers: string;
}

/**
 * The DNS proxy's default: on, as Istio ambient's DNS capture (mesh pods' port-53 traffic answered
 * by the agent: Service and ServiceEntry names from the mesh state, the rest forwarded; needed for
 * ServiceEntry hosts without addresses). `--no-dns-proxy` turns it off; docs/decisions.md says why
 * it is on.
 */
export const DNS_PROXY_DEFAULT = true;

export const DEFAULT_HANDOFF_DIR = '/var/run/hypha-agent';

/**
 * `--workers`: a count; `auto` (the default): one per core of the CPU limit, 1 without a limit
 * (cpu-limit.ts); `all`: one per CPU this process may be scheduled on (os.availableParallelism()).
 */
export function parseWorkers(value: string): WorkerDefault {
  if (value === 'auto') return defaultWorkers();
  if (value === 'all') {
    const workers = Math.max(1, availableParallelism());
    return { workers, reason: `--workers all: ${workers} CPUs available` };
  }
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256)
    throw new UsageError(`--workers must be a whole number 1-256, "auto" or "all", got "${value}"`);
  return { workers: n, reason: `--workers ${n}` };
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
      new Option(
        '--outbound-policy <policy>',
        'traffic to destinations outside the mesh registry when no MeshConfig hypha-system/default sets outboundTrafficPolicy (docs/egress.md)',
      )
        .choices(['passthrough', 'registry-only'])
        .default('passthrough'),
    )
    .option(
      '--drain-timeout <duration>',
      'how long a stopping or handed-off agent lets live connections finish before closing them',
      '120s',
    )
    .addOption(
      new Option(
        '--handoff-dir <dir>',
        'node-local directory of the upgrade hand-off socket: a new agent takes the running one\'s listening sockets through it ("none": no hand-off)',
      )
        .env('HYPHA_HANDOFF_DIR')
        .default(DEFAULT_HANDOFF_DIR),
    )
    .option(
      '--takeover',
      'require a running agent on this node to hand over its sockets (fail if none); without it the agent takes over when one runs, else binds the ports',
      false,
    )
    .addOption(
      new Option(
        '--handoff-wait <duration>',
        'on SIGTERM, keep serving this long while waiting for a new agent to take over (the DaemonSet sets it: Kubernetes may stop the old pod before the new one is ready)',
      ).default('0s'),
    )
    .addOption(
      new Option(
        '--revocation-poll <duration>',
        "how often to fetch the CA's revocation list (revoked peers are refused and their connections cut)",
      )
        .env('HYPHA_REVOCATION_POLL')
        .default('30s'),
    )
    .addOption(
      new Option(
        '--cert-ttl <duration>',
        'lifetime asked of the CA for workload certificates (renewed at half life; the CA clamps it to its maximum)',
      )
        .env('HYPHA_CERT_TTL')
        .default('24h'),
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
    // DNS proxy (agent/src/dns): answers Service names, forwards the rest; captures pods' port 53.
    .option(
      '--dns-proxy',
      `run the DNS proxy and capture mesh pods' DNS (port 53) into it${DNS_PROXY_DEFAULT ? ' (default)' : ''}`,
    )
    .option(
      '--no-dns-proxy',
      `no DNS proxy; mesh pods' DNS is not captured${DNS_PROXY_DEFAULT ? '' : ' (default)'}`,
    )
    .option('--dns-port <port>', 'DNS proxy listener, UDP and TCP', String(DEFAULT_PORTS.dns))
    .option(
      '--dns-upstream <ip[:port]>',
      'resolver for names outside the mesh (repeatable; default: the nameservers of /etc/resolv.conf)',
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option(
      '--cluster-domain <domain>',
      'Kubernetes cluster domain: Services answer as NAME.NS.svc.DOMAIN',
      'cluster.local',
    )
    .addOption(
      new Option(
        '--workers <n|auto|all>',
        'data-path worker processes sharing the listening sockets. "auto": one per core of the CPU limit (rounded up), 1 without a limit; "all": one per CPU available; 1: this process serves, no extra process',
      )
        .env('HYPHA_AGENT_WORKERS')
        .default('auto'),
    )
    .addHelpText(
      'after',
      `
Signals: SIGTERM/SIGINT drain (stop accepting, let connections finish until --drain-timeout, then close).
Capture rules stay in place when the agent stops or crashes (fail closed: mesh pods' connections are
refused until an agent runs again, never passed in plain text); a restarted agent adopts them.
They are removed only when the node leaves the mesh: "hypha agent cleanup", or (Kubernetes) a
SIGTERM while the agent's DaemonSet is being deleted ("hypha uninstall").

Upgrade without dropping a connection: start the new agent while the old one runs. It syncs config,
fetches certificates, then takes the old one's listening sockets through --handoff-dir; the old one
stops accepting, sends GOAWAY to HBONE peers, drains its live connections and exits.
  hypha agent --node node-a ... --takeover

Example (outside Kubernetes):
  hypha agent --node node-a --config file:/etc/hypha/mesh.yaml \\
    --ca-address https://10.0.0.1:15012 --ca-token-file /etc/hypha/token --ca-root-file /etc/hypha/root-cert.pem`,
    )
    .action(async (flags: AgentFlags, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as { logLevel: LogLevel };
      if (!flags.node) throw new UsageError('--node is required (or set NODE_NAME)');
      let config: AgentConfig;
      const workers = parseWorkers(flags.workers);
      try {
        config = {
          nodeName: flags.node,
          source: parseConfigSource(flags.config),
          trustDomain: flags.trustDomain,
          ca: { address: flags.caAddress, tokenFile: flags.caTokenFile, rootFile: flags.caRootFile },
          certTtlSeconds: durationFlagSeconds('--cert-ttl', flags.certTtl),
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
          handoffWaitMs:
            flags.handoffWait === '0' || flags.handoffWait === '0s'
              ? 0
              : durationFlagMs('--handoff-wait', flags.handoffWait),
          takeover: flags.takeover ? 'required' : 'auto',
          workers: workers.workers,
          ...(process.argv[1] ? { workerEntry: process.argv[1] } : {}),
          ...(flags.handoffDir === 'none' ? {} : { handoffDir: flags.handoffDir }),
          ...((flags.dnsProxy ?? DNS_PROXY_DEFAULT)
            ? {
                dns: {
                  port: port(flags.dnsPort, '--dns-port'),
                  upstreams: flags.dnsUpstream.map((u) => {
                    try {
                      return parseUpstream(u);
                    } catch (err) {
                      throw new UsageError(`--dns-upstream: ${(err as Error).message}`);
                    }
                  }),
                  clusterDomain: flags.clusterDomain,
                },
              }
            : {}),
        };
        if (flags.takeover && flags.handoffDir === 'none')
          throw new UsageError('--takeover needs a --handoff-dir (not "none")');
      } catch (err) {
        if (err instanceof AgentConfigError) throw new UsageError(err.message);
        throw err;
      }
      const logger = createLogger({ level: globals.logLevel, base: { node: config.nodeName } });
      logger.info(
        { workers: workers.workers },
        `data path: ${workers.workers === 1 ? 'this process' : `${workers.workers} worker processes`} (${workers.reason})`,
      );
      // Loaded here, not at the top: the agent's modules (data path, capture, telemetry) are for
      // this verb only; every other verb of the CLI would otherwise pay for them.
      // Signals are taken from the start: one that arrives while the agent starts (it may already
      // hold sockets handed over by its predecessor) is acted on as soon as it is up, not by
      // Node's default of dying on the spot.
      let signalled: ((signal: string) => void) | undefined;
      let early: string | undefined;
      let earlyTimer: NodeJS.Timeout | undefined;
      const onEarly = (signal: string) => {
        early ??= signal;
        if (earlyTimer) return;
        // Still starting 5 s later (e.g. waiting to be ready before a take-over): stop here; the
        // running agent, if any, keeps serving, and capture stays either way.
        earlyTimer = setTimeout(() => {
          process.stderr.write(`hypha: ${signal} while the agent was starting; exiting\n`);
          process.exit(1);
        }, 5000).unref();
      };
      const onTerm = () => (signalled ? signalled('SIGTERM') : onEarly('SIGTERM'));
      const onInt = () => (signalled ? signalled('SIGINT') : onEarly('SIGINT'));
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
      const { startAgent } = await import('../../agent/app.js');
      const agent = await startAgent(config, logger);
      const log = logger.child({ component: 'agent' });
      await new Promise<void>((resolve) => {
        void agent.handedOff.then(resolve);
        const stop = async (signal: string) => {
          process.off('SIGTERM', onTerm);
          process.off('SIGINT', onInt);
          // Leaving the mesh (uninstall): no successor will come; remove capture on the way out.
          const removeCapture =
            config.source.kind === 'kubernetes' ? await nodeLeavesMesh(config.source, log) : false;
          // Otherwise Kubernetes may stop this pod before its successor is ready: serve until it
          // takes over (then this agent drains and exits through handedOff).
          if (
            !removeCapture &&
            signal === 'SIGTERM' &&
            (await agent.awaitSuccessor(config.handoffWaitMs ?? 0))
          )
            return;
          await agent.shutdown(signal, { removeCapture });
          resolve();
        };
        signalled = (signal) => void stop(signal);
        clearTimeout(earlyTimer);
        if (early !== undefined) signalled(early);
      });
      // Stopped or handed off and drained: nothing of ours is left to serve. Exit explicitly, after a
      // moment for the logs: a socket cut at the drain deadline could keep Node's exit-time handle
      // cleanup spinning (seen under load: 100% CPU after "stopped"), and an idle pool or keepalive
      // timer could keep the loop alive for minutes.
      setTimeout(() => process.exit(process.exitCode ?? 0), 300);
    });
  registerCleanup(agentCmd, DEFAULT_HANDOFF_DIR);
  // A worker of `hypha agent --workers N`, started by the agent itself (IPC); not for users.
  program
    .command('agent-worker', { hidden: true })
    .description('a data-path worker process of `hypha agent --workers N` (started by the agent)')
    .action(async () => {
      const { runAgentWorker } = await import('../../agent/worker.js');
      runAgentWorker();
      await new Promise(() => {});
    });
}
