// `hypha waypoint`: the waypoint daemon (one Deployment per Gateway of class hypha-waypoint), and
// `hypha waypoint apply|status`, the operator verbs that create and inspect one.
//
// The daemon's --name/--namespace are declared on `waypoint` itself; commander parses a parent's
// options anywhere on the line, so the subcommands read them through optsWithGlobals().
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { createLogger, type LogLevel } from '@hypha/shared';
import type { WaypointDaemonConfig } from '@hypha/waypoint/daemon/config';
import type { WaypointFor } from '@hypha/waypoint/daemon/render';
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
  dnsUpstream: string[];
}

interface ApplyFlags {
  name?: string;
  namespace?: string;
  for?: string;
  print?: boolean;
  file?: string;
  kubeconfig?: string;
}

function port(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new UsageError(`${flag} must be a port number 0-65535, got "${value}"`);
  return n;
}

async function template(): Promise<Record<string, unknown>[]> {
  const path = join(findManifestsDir(), 'waypoint', 'waypoint.yaml');
  if (!existsSync(path)) throw new UsageError(`waypoint template ${path} is missing; set HYPHA_MANIFESTS`);
  const { readWaypointTemplate } = await import('@hypha/waypoint/daemon/render');
  return readWaypointTemplate(path);
}

export function register(program: Command): void {
  const waypoint = addMeshDaemonOptions(program.command('waypoint'))
    .description('run a waypoint (L7 proxy for the services bound to a Gateway); apply/status manage them')
    .addOption(new Option('--name <gateway>', 'the Gateway this waypoint serves').env('GATEWAY_NAME'))
    .addOption(new Option('-n, --namespace <ns>', "the Gateway's namespace").env('POD_NAMESPACE'))
    .option('--hbone-port <port>', 'HBONE listener, and the node agents’ HBONE port', '15008')
    .option('--admin-address <host:port>', 'admin endpoint (keep it on localhost)', '127.0.0.1:15000')
    .option('--metrics-address <host:port>', 'Prometheus /metrics', '0.0.0.0:15020')
    .option('--readiness-address <host:port>', '/healthz/ready', '0.0.0.0:15021')
    .option('--drain-timeout <duration>', 'how long SIGTERM lets in-flight streams finish', '30s')
    .option(
      '--dns-upstream <ip[:port]>',
      'resolver for the hosts of ServiceEntries served for egress (repeatable; default: the system resolver)',
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .addOption(
      new Option('--access-log <on|off>', 'one JSON access-log line per request on stderr')
        .choices(['on', 'off'])
        .env('HYPHA_ACCESS_LOG')
        .default('on'),
    )
    .addHelpText(
      'after',
      `
The waypoint's identity is spiffe://<trust-domain>/ns/<namespace>/sa/<name>: its pod must run as
the service account named after the Gateway. Signals: SIGTERM/SIGINT drain (GOAWAY, streams finish
until --drain-timeout).

Examples:
  hypha waypoint apply -n shop                      create Gateway, Deployment, Service, ServiceAccount, RBAC bindings
  hypha waypoint apply -n shop --print              print them as YAML
  hypha waypoint apply -n shop --file mesh.yaml     add them to a config file (file source)
  hypha waypoint --name waypoint -n shop --config file:mesh.yaml --ca-token-file token   run one`,
    )
    .action(async (flags: DaemonFlags, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as { logLevel: LogLevel };
      if (!flags.name) throw new UsageError('--name is required (the Gateway name; or set GATEWAY_NAME)');
      if (!flags.namespace) throw new UsageError('--namespace is required (or set POD_NAMESPACE)');
      let config: WaypointDaemonConfig;
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
          dnsUpstream: flags.dnsUpstream.map((v) => {
            if (net.isIP(v) !== 0 || /^(\d+\.){3}\d+:\d+$/.test(v) || /^\[[0-9a-fA-F:.]+\]:\d+$/.test(v))
              return v;
            throw new UsageError(`--dns-upstream: "${v}" is not ip, ip:port or [ipv6]:port`);
          }),
        };
      } catch (err) {
        if (err instanceof AgentConfigError) throw new UsageError(err.message);
        throw err;
      }
      const logger = createLogger({
        level: globals.logLevel,
        base: { waypoint: `${flags.namespace}/${flags.name}` },
      });
      const { startWaypointDaemon } = await import('@hypha/waypoint/daemon/app');
      const { createHboneSocketTuner } = await import('../../agent/hbone-socket.js');
      await serveUntilSignal(
        await startWaypointDaemon(config, logger, createHboneSocketTuner(logger, { refusedLevel: 'info' })),
      );
    });

  waypoint
    .command('apply')
    .description(
      'create or update a waypoint: Gateway, Deployment, Service, ServiceAccount and its RBAC bindings',
    )
    .addOption(new Option('--for <kind>', 'traffic it handles').choices(['service', 'workload', 'all']))
    .option('--print', 'print the objects as YAML instead of applying them')
    .option('--file <path>', 'add (or replace) the objects in this config YAML file instead of the API')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .action(async (_own: ApplyFlags, cmd: Command) => {
      const flags = cmd.optsWithGlobals() as ApplyFlags;
      const namespace = flags.namespace;
      if (!namespace) throw new UsageError('-n/--namespace is required');
      const name = flags.name ?? 'waypoint';
      // The renderer and yaml load here, not with the CLI (see program.ts).
      const { mergeIntoConfigYaml, renderWaypointObjects, validateName } = await import(
        '@hypha/waypoint/daemon/render'
      );
      for (const [v, what] of [
        [namespace, 'namespace'],
        [name, '--name'],
      ] as const) {
        const problem = validateName(v, what);
        if (problem) throw new UsageError(problem);
      }
      const objects = renderWaypointObjects({
        namespace,
        name,
        for: (flags.for ?? 'service') as WaypointFor,
        template: await template(),
      });
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
          `waypoint ${namespace}/${name}: ${merged.added} object(s) added, ${merged.replaced} replaced in ${flags.file}\n` +
            `Bind a service: label it (or namespace ${namespace}) hypha.dev/use-waypoint=${name}\n`,
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
      const failed = results.filter((r) => r.action === 'failed');
      if (failed.length > 0) {
        process.stderr.write(`hypha: ${failed.length} object(s) failed to apply; see above\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(
        `Next: kubectl -n ${namespace} rollout status deploy/${name}\n` +
          `Bind a service: kubectl -n ${namespace} label service <svc> hypha.dev/use-waypoint=${name}\n`,
      );
    });

  waypoint
    .command('status')
    .description("a namespace's waypoints: Gateway, Deployment readiness, and what is bound to each")
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .option('--json', 'print JSON')
    .action(async (_own: { kubeconfig?: string; json?: boolean }, cmd: Command) => {
      const flags = cmd.optsWithGlobals() as { namespace?: string; kubeconfig?: string; json?: boolean };
      if (!flags.namespace) throw new UsageError('-n/--namespace is required');
      const { loadKubeConfig } = await import('@hypha/shared/kube');
      const { fetchWaypointStatus, formatWaypointStatus } = await import('@hypha/waypoint/daemon/status');
      const rows = await fetchWaypointStatus(loadKubeConfig(flags.kubeconfig), flags.namespace);
      process.stdout.write(
        flags.json ? `${JSON.stringify(rows, null, 2)}\n` : formatWaypointStatus(flags.namespace, rows),
      );
      if (rows.some((r) => !r.exists)) process.exitCode = 1;
    });
}
