// Public surface of @hypha/shared/kube: name every export (no `export *`).
export type { KubeErrorCode } from './errors.js';
export { KubeError } from './errors.js';
export type { WatchedKind } from './kinds.js';
export { WATCHED_KINDS } from './kinds.js';
export type { KubeRequestOptions } from './request.js';
export { fetchKube } from './request.js';
export type { KindStats, KubeconfigOption, KubeSource, KubeSourceOptions } from './source.js';
export { createKubeSource, loadKubeConfig } from './source.js';
export { stripObject } from './strip.js';
export { BookmarkWatch } from './watch.js';
