// The CA's Prometheus metrics (`hypha ca serve --metrics-address`, default 0.0.0.0:15014, the port
// istiod uses for its own): the process's Node and V8 figures (heap, RSS, event loop, GC), so its
// memory can be read as the agents' is, and what it issued and refused.
import { startMetricsEndpoint } from '@hypha/shared/daemon';
import { Counter, collectDefaultMetrics, Registry } from 'prom-client';
import type { CaServerStats } from './server.js';

export async function startCaMetrics(
  stats: Readonly<CaServerStats>,
  address: string,
): Promise<Awaited<ReturnType<typeof startMetricsEndpoint>>> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Counters read at scrape time from the server's own tallies: nothing to keep in step.
  new Counter({
    name: 'hypha_ca_certificates_issued_total',
    help: 'Workload certificates the CA signed',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.issued);
    },
  });
  new Counter({
    name: 'hypha_ca_requests_rejected_total',
    help: 'Certificate requests the CA refused (bad token, bad CSR, revoked identity, pod not on the node)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.rejected);
    },
  });
  return startMetricsEndpoint(registry, address);
}
