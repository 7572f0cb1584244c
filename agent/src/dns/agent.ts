// The DNS proxy as the agent runs it: upstreams from the flags or the node's /etc/resolv.conf,
// metrics in the agent's registry. Kept here so app.ts only starts and stops it.
import type { Logger } from '@hypha/shared';
import type { ConfigState } from '@hypha/shared/config';
import type { Registry } from 'prom-client';
import { DnsMetrics } from './metrics.js';
import { createDnsProxy, type DnsProxy } from './server.js';
import { readResolvConf, type UpstreamServer } from './upstream.js';

export interface AgentDnsOptions {
  port: number;
  upstreams: readonly UpstreamServer[];
  clusterDomain: string;
  state: ConfigState;
  registry: Registry;
  logger: Logger;
  /** Where the node's resolvers are read from when `upstreams` is empty. */
  resolvConf?: string;
}

/** Binds the proxy (SO_REUSEPORT: beside a running agent's during an upgrade) and serves. */
export async function startAgentDns(opts: AgentDnsOptions): Promise<DnsProxy> {
  let upstreams = opts.upstreams;
  if (upstreams.length === 0) {
    try {
      upstreams = readResolvConf(opts.resolvConf);
    } catch (err) {
      // Service names still answer; everything else gets SERVFAIL until an upstream is given.
      opts.logger
        .child({ component: 'dns' })
        .warn({ err: (err as Error).message }, 'DNS proxy has no upstream resolver');
      upstreams = [];
    }
  }
  const proxy = createDnsProxy({
    state: opts.state,
    port: opts.port,
    upstreams,
    clusterDomain: opts.clusterDomain,
    metrics: new DnsMetrics(opts.registry),
    logger: opts.logger,
  });
  await proxy.start();
  return proxy;
}
