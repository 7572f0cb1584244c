// The waypoint daemon's settings, validated once at start-up (flags and environment are outside input).
import type { ConfigSource } from '@hypha/shared/daemon';

export interface WaypointDaemonConfig {
  /** The Gateway this waypoint serves; its pods run as the service account of the same name. */
  gateway: { name: string; namespace: string };
  source: ConfigSource;
  trustDomain: string;
  ca: { address: string; tokenFile: string; rootFile: string };
  /** Port of the HBONE listener here and of the node agents it dials (15008). */
  hbonePort: number;
  adminAddress: string;
  metricsAddress: string;
  readinessAddress: string;
  /** How long SIGTERM lets in-flight streams finish. */
  drainMs: number;
  /** One JSON access-log line per request on stderr (Istio's waypoint logs none by default). */
  accessLog: boolean;
  /** Resolvers for ServiceEntry hosts (egress); empty or absent: the system resolver. */
  dnsUpstream?: readonly string[];
}

export class WaypointDaemonError extends Error {
  readonly code: 'WAYPOINT_CONFIG' | 'WAYPOINT_START';
  constructor(code: 'WAYPOINT_CONFIG' | 'WAYPOINT_START', message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'WaypointDaemonError';
    this.code = code;
  }
}
