// Authorization metrics that more than one component exposes under one name. Prometheus keeps one
// HELP and TYPE per metric name; when the agent and the waypoint describe a name differently, its
// metadata API returns two entries and dashboards show whichever target it scraped last. Defining
// such a metric once, here, keeps every exposition identical.
import { Counter, type Registry } from 'prom-client';

export type DryRunLabelName = 'policy' | 'would' | 'layer';

/**
 * `hypha_authz_dry_run_total{policy, would, layer}`: a dry-run AuthorizationPolicy would have
 * decided differently (not enforced). Agents count connections (`layer="L4"`), waypoints requests
 * (`layer="L7"`).
 */
export function dryRunCounter(registry: Registry): Counter<DryRunLabelName> {
  return new Counter({
    name: 'hypha_authz_dry_run_total',
    help: 'Connections and requests a dry-run AuthorizationPolicy would have decided differently (not enforced); layer L4 from agents, L7 from waypoints',
    labelNames: ['policy', 'would', 'layer'],
    registers: [registry],
  });
}
