// Public surface of @hypha/shared/daemon: what every Hypha daemon (node agent, waypoint) runs
// besides its data path — the admin, metrics and readiness endpoints, and dual-stack listening.
export type { AdminHandlers, EndpointName, Endpoints, EndpointsOptions, Readiness } from './endpoints.js';
export {
  certificatesView,
  ENDPOINT_NAMES,
  isUnspecifiedHost,
  splitHostPort,
  startEndpoints,
  startMetricsEndpoint,
} from './endpoints.js';
export { type DaemonInfo, daemonInfo } from './info.js';
export { listenAllFamilies } from './listen.js';

/** Where a daemon reads the mesh config from: a YAML file, or the Kubernetes API. */
export type ConfigSource = { kind: 'file'; path: string } | { kind: 'kubernetes'; kubeconfig?: string };
export {
  describeRelease,
  LARGE_LOAD_OBJECTS,
  type MemoryRelease,
  releaseFields,
  releaseFreedMemory,
  releaseFreedMemoryAfter,
  releaseStartupMemory,
} from './memory.js';
