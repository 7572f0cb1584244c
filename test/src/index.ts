// Public surface of @hypha/test: the network-namespace cluster harness and its sample apps.
export type { RunningApp, SampleApp } from './cluster/apps.js';
export { findAppPath, SAMPLE_APPS } from './cluster/apps.js';
export type {
  AddPodOptions,
  ClusterNode,
  ClusterPod,
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
export type {
  AuthorizationDecision,
  KubeApiServer,
  KubeApiServerOptions,
  KubeObject,
  PolicyRule,
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
