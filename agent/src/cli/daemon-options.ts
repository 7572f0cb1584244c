// Flags every mesh daemon (agent, waypoint) shares: where config comes from and how to reach the
// CA. One definition, so both daemons read the same environment variables in a Deployment or
// DaemonSet and their --help says the same thing.
import { type Command, Option } from 'commander';

export interface MeshDaemonFlags {
  config: string;
  caAddress: string;
  caTokenFile: string;
  caRootFile: string;
  trustDomain: string;
}

export function addMeshDaemonOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--config <source>',
        'config source: file:PATH (YAML of Namespaces, Pods, Services, policies, routes) or kubernetes[:KUBECONFIG]',
      )
        .env('HYPHA_CONFIG')
        .default('kubernetes'),
    )
    .addOption(
      new Option('--ca-address <url>', 'certificate authority URL')
        .env('HYPHA_CA_ADDRESS')
        .default('https://hypha-ca.hypha-system.svc:15012'),
    )
    .addOption(
      new Option('--ca-token-file <path>', 'bearer token presented to the CA (re-read on every request)')
        .env('HYPHA_CA_TOKEN_FILE')
        .default('/var/run/secrets/tokens/hypha-ca-token'),
    )
    .addOption(
      new Option('--ca-root-file <path>', 'root certificate(s) the CA server must chain to')
        .env('HYPHA_CA_ROOT_FILE')
        .default('/var/run/hypha/root-cert.pem'),
    )
    .addOption(
      new Option('--trust-domain <domain>', 'SPIFFE trust domain')
        .env('HYPHA_TRUST_DOMAIN')
        .default('cluster.local'),
    );
}

/**
 * Keeps a daemon's verb running until SIGTERM or SIGINT, then shuts the daemon down with that
 * signal's name as the reason (it drains) and resolves once it has stopped.
 */
export function serveUntilSignal(daemon: { shutdown(reason: string): Promise<unknown> }): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      void daemon.shutdown(signal).then(() => resolve());
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
}
