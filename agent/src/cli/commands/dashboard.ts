// `hypha dashboard`: the mesh in a browser. Serves the web UI and its JSON API on localhost by
// default, reading Prometheus (--prometheus) and the agents' and waypoints' admin endpoints
// (--admin, as `hypha tap` takes them). Stops on Ctrl-C.
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { parseTapTarget } from './tap.js';

interface DashboardFlags {
  address: string;
  port: string;
  prometheus?: string;
  admin: string[];
  config?: string;
  kubernetes: boolean;
  kubeconfig?: string;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function register(program: Command): void {
  program
    .command('dashboard')
    .description(
      'serve a web dashboard: service graph, workloads, policies and denials, mesh health, live tap',
    )
    .option(
      '--address <ip>',
      'address to listen on (loopback by default: the page shows the whole mesh)',
      '127.0.0.1',
    )
    .option('--port <port>', 'port to listen on (0 picks a free one)', '15080')
    .option(
      '--prometheus <url>',
      'Prometheus to query for rates, success and latency, e.g. http://127.0.0.1:9090',
    )
    .option(
      '--admin <address>',
      'admin endpoint of an agent or waypoint, host:port or unix:/path; repeat for each (default without --kubernetes: 127.0.0.1:15000)',
      collect,
      [],
    )
    .option(
      '--kubernetes',
      "cluster mode: find every agent and waypoint pod through the API server, read each one's /healthz/ready through its pod proxy and its admin port through port-forward",
      false,
    )
    .option(
      '--kubeconfig <path>',
      'with --kubernetes: kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)',
    )
    .option(
      '--config <path>',
      "the mesh config file, for the policy page's explain box (default: $HYPHA_CONFIG)",
    )
    .addHelpText(
      'after',
      `
The graph's rates, success rates and p99 come from Prometheus (the Istio-named metrics the agents
and waypoints export); pods, certificates, policies, health and the live tap come from the admin
endpoints. Without Prometheus the page says so and draws edges from the last minute of tap events.
Admin endpoints listen on localhost: run the dashboard on the node, or use --kubernetes, which
finds every agent and waypoint pod through the API server, reads its readiness (/healthz/ready,
port 15021) through the pod proxy and its admin port (127.0.0.1:15000 in the pod) through the API
server's port-forward, as kubectl port-forward does. RBAC for that: get/list pods, get pods/proxy,
get+create pods/portforward. Exit 2 on a bad flag, 1 when the port cannot be bound.

Examples:
  hypha dashboard --prometheus http://127.0.0.1:9090
  hypha dashboard --admin 127.0.0.1:15000 --admin unix:/tmp/waypoint-admin.sock --port 0
  hypha dashboard --config mesh.yaml --prometheus http://10.0.0.5:9090 --admin 127.0.0.1:15000
  hypha dashboard --kubernetes --prometheus http://127.0.0.1:9090   # kubectl port-forward svc/prometheus 9090`,
    )
    .action(async (flags: DashboardFlags) => {
      const port = Number(flags.port);
      if (!/^\d{1,5}$/.test(flags.port) || port > 65535) {
        throw new UsageError(`--port must be 0-65535, got "${flags.port}"`);
      }
      const { isIP } = await import('node:net');
      if (isIP(flags.address) === 0 && flags.address !== 'localhost') {
        throw new UsageError(`--address "${flags.address}" must be an IP address, e.g. 127.0.0.1`);
      }
      let prometheus: string | undefined;
      if (flags.prometheus !== undefined) {
        const { parsePrometheusAddress } = await import('../../dashboard/prometheus.js');
        try {
          parsePrometheusAddress(flags.prometheus);
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
        prometheus = flags.prometheus;
      }
      if (flags.kubeconfig !== undefined && !flags.kubernetes) {
        throw new UsageError('--kubeconfig needs --kubernetes (cluster mode)');
      }
      // In cluster mode each pod's admin port is reached through port-forward (plus any given);
      // outside it the local agent's is the default.
      const admins = (flags.admin.length > 0 || flags.kubernetes ? flags.admin : ['127.0.0.1:15000']).map(
        parseTapTarget,
      );
      let kube: import('../../dashboard/kube.js').KubeHealthSource | undefined;
      if (flags.kubernetes) {
        const { loadKubeConfig } = await import('@hypha/shared/kube');
        const { createKubeHealthSource } = await import('../../dashboard/kube.js');
        kube = await createKubeHealthSource(loadKubeConfig(flags.kubeconfig));
        const first = kube.snapshot();
        if (first.error !== undefined)
          process.stderr.write(`hypha: warning: ${first.error}; retrying every 2 s\n`);
      }
      const { startDashboard } = await import('../../dashboard/index.js');
      let dashboard: Awaited<ReturnType<typeof startDashboard>>;
      try {
        dashboard = await startDashboard({
          address: flags.address,
          port,
          prometheus,
          admins,
          config: flags.config,
          ...(kube !== undefined ? { kube } : {}),
        });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === 'EADDRINUSE')
          throw new Error(
            `port ${port} on ${flags.address} is in use: pick another with --port (0 for any free port)`,
          );
        if (e.code === 'EADDRNOTAVAIL')
          throw new Error(`--address ${flags.address} is not an address of this machine`);
        throw err;
      }
      process.stdout.write(`hypha dashboard: ${dashboard.url}\n`);
      if (!/^(127\.|::1$|localhost$)/.test(flags.address)) {
        process.stderr.write(
          `hypha: warning: listening on ${flags.address}, not loopback: whoever reaches this port sees the whole mesh (the dashboard has no login)\n`,
        );
      }
      if (prometheus === undefined)
        process.stdout.write('  no --prometheus: rates come from the live tap only\n');
      const found = kube?.adminEndpoints().length;
      const listed = [
        ...admins.map((a) => a.label),
        ...(found !== undefined ? [`${found} agent/gateway pods through the API server's port-forward`] : []),
      ];
      process.stdout.write(`  admin endpoints: ${listed.join(', ') || 'none'}\nPress Ctrl-C to stop.\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      await dashboard.close();
    });
}
