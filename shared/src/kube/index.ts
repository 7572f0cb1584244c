// Public surface of @hypha/shared/kube: name every export (no `export *`).
export type { KubeErrorCode } from './errors.js';
export { KubeError } from './errors.js';
export type {
  InformerHandler,
  InformerOptions,
  InformerStats,
  KubeObject,
  KubeObjectMeta,
} from './informer.js';
export { Informer } from './informer.js';
export type { WatchedKind } from './kinds.js';
export { gatewayWatchedKinds, WATCHED_KINDS } from './kinds.js';
export type { KubeCluster, KubeconfigOption, KubeUser } from './kubeconfig.js';
export { KubeConfig, loadKubeConfig } from './kubeconfig.js';
export type { PortForwardOptions } from './portforward.js';
export {
  openPortForward,
  PORT_FORWARD_PROTOCOL,
  PortForwardAgent,
  PortForwardStream,
} from './portforward.js';
export type { KubeRequestOptions } from './request.js';
export { fetchKube } from './request.js';
export type { KindStats, KubeSource, KubeSourceOptions } from './source.js';
export { createKubeSource } from './source.js';
export { stripObject } from './strip.js';
