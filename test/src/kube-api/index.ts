// Public surface of the stand-in Kubernetes API server (name every export; no `export *`).

export { jsonPatch, mergePatch, PatchError, strategicMergePatch } from './patch.js';
export type { PortForwardTarget } from './portforward.js';
export { PORT_FORWARD_PROTOCOLS, parsePorts } from './portforward.js';
export type {
  AuthorizationDecision,
  Grant,
  PolicyRule,
  RbacPolicySource,
  ResourceAttributes,
  UserInfo,
  Verb,
} from './rbac.js';
export {
  ADMIN_USER,
  authorize,
  describeDenials,
  forbiddenStatus,
  grantsOf,
  loadRbacObjects,
  nameFromFieldSelector,
  RBAC_API_VERSION,
  ruleAllows,
  selectRbacObjects,
  serviceAccountUser,
  storePolicySource,
  unusedGrants,
} from './rbac.js';
export type { ResourceType } from './resources.js';
export { apiVersionOf, DEFAULT_RESOURCES } from './resources.js';
export { parseFieldSelector, parseLabelSelector, SelectorError } from './selectors.js';
export type {
  FailureInjection,
  KubeApiServer,
  KubeApiServerOptions,
  RequestRecord,
  ServiceAccountTokenSpec,
} from './server.js';
export { createKubeApiServer, DEFAULT_API_AUDIENCE } from './server.js';
export type {
  EventType,
  KubeObject,
  ObjectMeta,
  ObjectStoreOptions,
  ObjectValidator,
  StatusCause,
  StoreEvent,
} from './store.js';
export { ApiError, ObjectStore } from './store.js';
