// `hypha gateway`: the ingress gateway daemon (one Deployment per Gateway of class hypha), and
// `hypha gateway apply`, which renders or applies its Deployment, LoadBalancer Service,
// ServiceAccount and RBAC. Flags mirror `hypha waypoint` (see waypoint.ts).
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger, type LogLevel } from '@hypha/shared';
import type { GatewayDaemonConfig } from '@hypha/waypoint/gateway/app';
import { type Command, Option } from 'commander';
import { AgentConfigError, parseConfigSource } from '../../agent/config.js';
import { addMeshDaemonOptions, serveUntilSignal } from '../daemon-options.js';
import { durationFlagMs, UsageError } from '../errors.js';
import { findManifestsDir } from './install.js';

interface DaemonFlags {
  name?: string;
  namespace?: string;
  config: string;
  caAddress: string;
  caTokenFile: string;
  caRootFile: string;
  trustDomain: string;
  hbonePort: string;
  adminAddress: string;
  metricsAddress: string;
  readinessAddress: string;
  drainTimeout: string;
  accessLog: 'on' | 'off';
}

interface ApplyFlags {
  name?: string;
  namespace?: string;
  ports?: string;
  print?: boolean;
  file?: string;
  kubeconfig?: string;
}

function port(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new UsageError(`${flag} must be a port number 1-65535, got "${value}"`);
  return n;
}

export function register(program: Command): void {
  const gateway = addMeshDaemonOptions(program.command('gateway'))
    .description(
      'run an ingress gateway (a Gateway of class hypha: TLS in, mesh over HBONE); apply renders one',
    )
    .addOption(new Option('--name <gateway>', 'the Gateway this gateway serves').env('GATEWAY_NAME'))
    .addOption(new Option('-n, --namespace <ns>', "the Gateway's namespace").env('POD_NAMESPACE'))
    .option('--hbone-port <port>', 'the node agents’ HBONE port', '15008')
    .option('--admin-address <host:port>', 'admin endpoint (keep it on localhost)', '127.0.0.1:15000')
    .option('--metrics-address <host:port>', 'Prometheus /metrics', '0.0.0.0:15020')
    .option('--readiness-address <host:port>', '/healthz/ready', '0.0.0.0:15021')
    .option('--drain-timeout <duration>', 'how long SIGTERM lets in-flight requests finish', '30s')
    .addOption(
      new Option('--access-log <on|off>', 'one JSON access-log line per request on stderr')
        .choices(['on', 'off'])
        .env('HYPHA_ACCESS_LOG')
        .default('on'),
    )
    .addHelpText(
      'after',
      `
The gateway's identity is spiffe://<trust-domain>/ns/<namespace>/sa/<name>: its pod must run as the
service account named after the Gateway. It opens the Gateway's listeners (HTTP, HTTPS with
certificateRefs to kubernetes.io/tls Secrets, TLS passthrough, TCP) and reaches the mesh over HBONE.

Examples:
  hypha gateway apply -n shop                       create Deployment, LoadBalancer Service, ServiceAccount, RBAC
  hypha gateway apply -n shop --ports 80,443,8443 --print
  hypha gateway --name gateway -n shop --config file:mesh.yaml --ca-token-file token   run one`,
    )
    .action(async (flags: DaemonFlags, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as { logLevel: LogLevel };
      if (!flags.name) throw new UsageError('--name is required (the Gateway name; or set GATEWAY_NAME)');
      if (!flags.namespace) throw new UsageError('--namespace is required (or set POD_NAMESPACE)');
      let config: GatewayDaemonConfig;
      try {
        config = {
          gateway: { name: flags.name, namespace: flags.namespace },
          source: parseConfigSource(flags.config),
          trustDomain: flags.trustDomain,
          ca: { address: flags.caAddress, tokenFile: flags.caTokenFile, rootFile: flags.caRootFile },
          hbonePort: port(flags.hbonePort, '--hbone-port'),
          adminAddress: flags.adminAddress,
          metricsAddress: flags.metricsAddress,
          readinessAddress: flags.readinessAddress,
          drainMs: durationFlagMs('--drain-timeout', flags.drainTimeout),
          accessLog: flags.accessLog === 'on',
        };
      } catch (err) {
        if (err instanceof AgentConfigError) throw new UsageError(err.message);
        throw err;
      }
      const logger = createLogger({
        level: globals.logLevel,
        base: { gateway: `${flags.namespace}/${flags.name}` },
      });
      const { startGatewayDaemon } = await import('@hypha/waypoint/gateway/app');
      const { createHboneSocketTuner } = await import('../../agent/hbone-socket.js');
      await serveUntilSignal(
        await startGatewayDaemon(config, logger, createHboneSocketTuner(logger, { refusedLevel: 'info' })),
      );
    });

  gateway
    .command('apply')
    .description(
      'create or update an ingress gateway: Deployment, LoadBalancer Service, ServiceAccount and RBAC (the Gateway is yours)',
    )
    .option('--ports <list>', 'listener ports the Service exposes, comma-separated', '80,443')
    .option('--print', 'print the objects as YAML instead of applying them')
    .option('--file <path>', 'add (or replace) the objects in this config YAML file instead of the API')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .action(async (_own: ApplyFlags, cmd: Command) => {
      const flags = cmd.optsWithGlobals() as ApplyFlags;
      const namespace = flags.namespace;
      if (!namespace) throw new UsageError('-n/--namespace is required');
      const name = flags.name ?? 'gateway';
      const ports = [...new Set((flags.ports ?? '80,443').split(',').map((p) => port(p.trim(), '--ports')))];
      const { mergeIntoConfigYaml, readWaypointTemplate, validateName } = await import(
        '@hypha/waypoint/daemon/render'
      );
      const { renderGatewayObjects } = await import('@hypha/waypoint/gateway/render');
      for (const [v, what] of [
        [namespace, 'namespace'],
        [name, '--name'],
      ] as const) {
        const problem = validateName(v, what);
        if (problem) throw new UsageError(problem);
      }
      const path = join(findManifestsDir(), 'gateway', 'gateway.yaml');
      if (!existsSync(path)) throw new UsageError(`gateway template ${path} is missing; set HYPHA_MANIFESTS`);
      const objects = renderGatewayObjects({
        namespace,
        name,
        ports,
        template: await readWaypointTemplate(path),
      });
      const next =
        `Write the Gateway (gatewayClassName: hypha, metadata.name: ${name}) with your listeners; ` +
        `see docs/gateway.md\n`;
      if (flags.print) {
        const { stringify } = await import('yaml');
        process.stdout.write(objects.map((o) => stringify(o)).join('---\n'));
        return;
      }
      if (flags.file) {
        const before = existsSync(flags.file) ? await readFile(flags.file, 'utf8') : '';
        const merged = mergeIntoConfigYaml(before, objects);
        const tmp = `${flags.file}.tmp`;
        await writeFile(tmp, merged.text);
        await rename(tmp, flags.file);
        process.stdout.write(
          `gateway ${namespace}/${name}: ${merged.added} object(s) added, ${merged.replaced} replaced in ${flags.file}\n${next}`,
        );
        return;
      }
      const { fetchKube, KubeError, loadKubeConfig } = await import('@hypha/shared/kube');
      const { applyManifests } = await import('./install.js');
      const kc = loadKubeConfig(flags.kubeconfig);
      try {
        await fetchKube(kc, `/api/v1/namespaces/${namespace}`, { timeoutMs: 15_000 });
      } catch (err) {
        if (err instanceof KubeError && err.status === 404) {
          process.stderr.write(
            `hypha: namespace ${namespace} does not exist; create it first: kubectl create namespace ${namespace}\n`,
          );
          process.exitCode = 1;
          return;
        }
        throw err;
      }
      const results = await applyManifests(kc, objects);
      for (const r of results)
        process.stdout.write(`${r.object}  ${r.action}${r.error ? `: ${r.error}` : ''}\n`);
      if (results.some((r) => r.action === 'failed')) {
        process.stderr.write('hypha: some objects failed to apply; see above\n');
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`Next: kubectl -n ${namespace} rollout status deploy/${name}\n${next}`);
    });
}
