// The agent's settings, validated once at start-up (flags and environment are outside input).
import { DEFAULT_TRUST_DOMAIN } from '@hypha/shared';

import type { ConfigSource } from '@hypha/shared/daemon';
import type { UpstreamServer } from '../dns/index.js';

export type { ConfigSource };

export interface AgentConfig {
  nodeName: string;
  source: ConfigSource;
  trustDomain: string;
  ca: { address: string; tokenFile: string; rootFile: string };
  /** Lifetime asked of the CA for workload certificates (`--cert-ttl`, default 24 h; the CA may clamp it). */
  certTtlSeconds?: number;
  capture: 'node' | 'none';
  /** What to do with traffic to destinations that are not in the mesh registry. */
  outboundPolicy: 'passthrough' | 'registry-only';
  ports: { outbound: number; inboundPlaintext: number; hbone: number };
  adminAddress: string;
  metricsAddress: string;
  readinessAddress: string;
  /** How long SIGTERM waits for live connections before closing them. */
  drainMs: number;
  /** How often the CA's revocation list is fetched (default 30 s). */
  revocationPollMs?: number;
  /**
   * Node-local directory of the upgrade hand-off socket (`agent.sock`): a new agent takes the
   * running one's listening sockets through it. Undefined: no hand-off (bind, or fail if taken).
   */
  handoffDir?: string;
  /** `required`: exit with an error unless a running agent hands over (`--takeover`). */
  takeover?: 'auto' | 'required';
  /** On SIGTERM, keep serving this long while waiting for a successor to take over (0: don't wait). */
  handoffWaitMs?: number;
  /**
   * Data-path worker processes (`--workers`). 1 (default): this process serves, as always. N > 1:
   * N workers accept on the shared listening sockets (workers.ts); this process supervises.
   */
  workers?: number;
  /** The script a worker runs (`hypha agent-worker`); default the CLI's bin/hypha.js. */
  workerEntry?: string;
  /** The DNS proxy (`--dns-proxy`); undefined: off, and mesh pods' DNS is not captured. */
  dns?: AgentDnsConfig;
}

export interface AgentDnsConfig {
  /** UDP and TCP (default 15053). */
  port: number;
  /** Resolvers for names outside the mesh; empty: the nameservers of /etc/resolv.conf. */
  upstreams: readonly UpstreamServer[];
  clusterDomain: string;
}

export const DEFAULT_PORTS = { outbound: 15001, inboundPlaintext: 15006, hbone: 15008, dns: 15053 } as const;

export class AgentConfigError extends Error {
  readonly code = 'AGENT_CONFIG' as const;
  constructor(message: string) {
    super(message);
    this.name = 'AgentConfigError';
  }
}

/** `file:PATH` or `kubernetes[:KUBECONFIG]`. */
export function parseConfigSource(value: string): ConfigSource {
  if (value.startsWith('file:')) {
    const path = value.slice('file:'.length);
    if (!path)
      throw new AgentConfigError('--config file: needs a path, e.g. --config file:/etc/hypha/mesh.yaml');
    return { kind: 'file', path };
  }
  if (value === 'kubernetes') return { kind: 'kubernetes' };
  if (value.startsWith('kubernetes:'))
    return { kind: 'kubernetes', kubeconfig: value.slice('kubernetes:'.length) };
  throw new AgentConfigError(
    `--config "${value}" is not a config source: use file:PATH or kubernetes[:KUBECONFIG]`,
  );
}

export function defaultTrustDomain(): string {
  return DEFAULT_TRUST_DOMAIN;
}
