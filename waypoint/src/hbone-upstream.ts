// The production `connectUpstream`: an HBONE CONNECT stream from the shared pool to the endpoint's
// node agent (port 15008), presenting the waypoint's own certificate and expecting the endpoint
// workload's identity. The authority is `podIP:targetPort`, as for direct traffic.
import { SpiffeId } from '@hypha/shared';
import { formatAuthority, type HbonePool } from '@hypha/shared/hbone';
import type { WorkloadCertificate } from '@hypha/shared/identity';
import type { ConnectUpstream, UpstreamEndpoint } from './upstream.js';

export interface HboneUpstreamOptions {
  pool: HbonePool;
  /** The waypoint's certificate (its identity: the service account named after the Gateway). */
  certificate: () => WorkloadCertificate;
  trustDomain?: string;
  /** The node agents' HBONE port (15008; tests use another). */
  hbonePort?: number;
  /** Identities the endpoint may present; default: its workload's service account. */
  expectedIdentities?: (ep: UpstreamEndpoint) => readonly SpiffeId[];
}

export function hboneConnectUpstream(opts: HboneUpstreamOptions): ConnectUpstream {
  const td = opts.trustDomain ?? 'cluster.local';
  const expected =
    opts.expectedIdentities ??
    ((ep: UpstreamEndpoint) => {
      const w = ep.workload;
      if (w?.serviceAccount === undefined) {
        throw new Error(
          `endpoint ${ep.ip} has no known workload identity: the waypoint cannot verify it (check that the pod is in the config)`,
        );
      }
      return [SpiffeId.of(td, w.namespace, w.serviceAccount)];
    });
  return async (ep) => {
    const tunnel = await opts.pool.connect({
      source: opts.certificate(),
      destination: { ip: ep.ip, port: opts.hbonePort ?? 15008 },
      expectedIdentities: expected(ep),
      authority: formatAuthority({ host: ep.authorityHost ?? ep.ip, port: ep.port }),
    });
    return tunnel.stream;
  };
}
