// Public surface of @hypha/test: the network-namespace cluster harness, its sample apps, the
// stand-in Kubernetes API server, and the local mesh runner that `hypha demo` and the end-to-end
// tests and benchmarks share (it runs the `hypha` binary; it never imports the agent).
export type { RunningApp, SampleApp } from './cluster/apps.js';
export { findAppPath, SAMPLE_APPS } from './cluster/apps.js';
export type {
  AddPodOptions,
  ClusterNode,
  ClusterPod,
  ExternalHost,
  FabricCapture,
  IpFamilies,
  TestClusterOptions,
} from './cluster/cluster.js';
export { CLUSTER_NETNS_PATTERN, canonical6, listenInNetns, TestCluster } from './cluster/cluster.js';
export type { HeldConnection } from './cluster/held-connection.js';
export type { ClusterErrorCode, RunResult } from './cluster/run.js';
export { ClusterError, listNetns, runCommand } from './cluster/run.js';
export type { CleanupStaleOptions, CleanupStaleResult } from './cluster/stale.js';
export { cleanupStale } from './cluster/stale.js';
export { eventually } from './eventually.js';
export type { FuzzParameters } from './fuzz.js';
export { fuzzParameters, fuzzTestTimeout } from './fuzz.js';
export type {
  AuthorizationDecision,
  KubeApiServer,
  KubeApiServerOptions,
  KubeObject,
  PolicyRule,
  PortForwardTarget,
  RequestRecord,
  ResourceAttributes,
  ServiceAccountTokenSpec,
  UserInfo,
} from './kube-api/index.js';
export {
  authorize,
  createKubeApiServer,
  DEFAULT_API_AUDIENCE,
  describeDenials,
  forbiddenStatus,
  grantsOf,
  loadRbacObjects,
  ruleAllows,
  selectRbacObjects,
  serviceAccountUser,
  storePolicySource,
  unusedGrants,
} from './kube-api/index.js';
export type { DemoCheck, DemoResult } from './mesh/demo.js';
export { DEMO_NODES, DEMO_WAYPOINT, demoConfigParams, runDemoTraffic, startDemo } from './mesh/demo.js';
export type { EdgeDemo } from './mesh/demo-edge.js';
export { DEMO_EDGE, getThroughGateway, runEdgeDemo } from './mesh/demo-edge.js';
export { DEMO_L7, runL7Demo } from './mesh/demo-l7.js';
export { runUpgradeCheck } from './mesh/demo-upgrade.js';
export type { ExposedSocket } from './mesh/expose.js';
export { exposeInNetns } from './mesh/expose.js';
export type {
  AgentProcess,
  LocalMeshOptions,
  LogEvent,
  MeshProcessExit,
  StartGatewayOptions,
  StartWaypointOptions,
  WaypointProcess,
} from './mesh/local-mesh.js';
export { hostPort, LocalMesh, trackProcess } from './mesh/local-mesh.js';
export type {
  PodAnnotations,
  PrometheusServer,
  PrometheusTarget,
  PromMetadata,
  PromSample,
  PromTargetStatus,
  StartPrometheusOptions,
  StaticConfig,
} from './prometheus.js';
export {
  findOnPath,
  kubernetesPodTargets,
  meshScrapeTargets,
  prometheusConfig,
  promtoolCheckMetrics,
  startPrometheus,
} from './prometheus.js';
export type { ProcessSample, SoakOptions, SoakResult, StreamResult, TrafficCount } from './soak.js';
export { formatSoak, runSoak } from './soak.js';
