// Public surface of @hypha/shared/config: name every export (no `export *`).
export type { DemoConfigParams } from './demo.js';
export { DEMO_DEFAULTS, demoConfigObjects, demoConfigYaml } from './demo.js';
export type { ConfigErrorCode, ConfigObjectLocation } from './errors.js';
export { ConfigError } from './errors.js';
export type { FileSource, FileSourceOptions } from './file-source.js';
export { createFileSource } from './file-source.js';
export type { Cidr, ParsedIp } from './ip.js';
export { canonicalIp, cidrContains, formatIp, parseCidr, parseIp } from './ip.js';
export type {
  ChangeSet,
  ConfigChange,
  ConfigChangeListener,
  ConfigState,
  ConfigStateOptions,
  ConfigStats,
  ConfigUpdate,
  Updated,
} from './state.js';
export { configObjectKey, createConfigState } from './state.js';
export type { TranslateOptions, TranslateResult } from './translate.js';
export { flattenLists, isConfigKind, translateObject } from './translate.js';
export type {
  AuthorizationAction,
  AuthorizationCondition,
  AuthorizationOperation,
  AuthorizationPolicyObject,
  AuthorizationRule,
  AuthorizationSource,
  ConfigKind,
  ConfigObject,
  ConfigObjectKey,
  DataplaneMode,
  Endpoint,
  EndpointSliceObject,
  GatewayObject,
  GrpcRouteObject,
  HttpRouteObject,
  Labels,
  MtlsMode,
  MtlsSetting,
  NamespaceObject,
  PeerAuthenticationMode,
  PeerAuthenticationObject,
  PodObject,
  PolicyTargetRef,
  RawRouteOrPolicyObject,
  RequestAuthenticationObject,
  Service,
  ServiceObject,
  ServicePort,
  TrafficPolicyObject,
  Waypoint,
  WaypointBinding,
  WaypointFor,
  WaypointLookup,
  WaypointRef,
  Workload,
  WorkloadMtls,
} from './types.js';
export {
  DEFAULT_ROOT_NAMESPACE,
  LABEL_DATAPLANE_MODE,
  LABEL_GATEWAY_NAME,
  LABEL_MTLS_MODE,
  LABEL_SERVICE_NAME,
  LABEL_USE_WAYPOINT,
  LABEL_USE_WAYPOINT_NAMESPACE,
  LABEL_WAYPOINT_FOR,
  mtlsFor,
  WAYPOINT_GATEWAY_CLASS,
} from './types.js';
