// Public surface of @hypha/shared/config: name every export (no `export *`).
export type { DemoConfigParams } from './demo.js';
export { DEMO_DEFAULTS, demoConfigObjects, demoConfigYaml } from './demo.js';
export type { ConfigErrorCode, ConfigObjectLocation } from './errors.js';
export { ConfigError } from './errors.js';
export type { FileSource, FileSourceOptions } from './file-source.js';
export { createFileSource } from './file-source.js';
export type { Cidr, ParsedIp } from './ip.js';
export { canonicalIp, cidrContains, formatIp, parseCidr, parseIp } from './ip.js';
export { AUTO_VIP_CIDR, hashedVip } from './service-entries.js';
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
  GatewayListener,
  GatewayObject,
  GrpcRouteObject,
  HttpRouteObject,
  Labels,
  MeshConfigObject,
  MtlsMode,
  MtlsSetting,
  NamespaceObject,
  OutboundTrafficPolicyMode,
  PeerAuthenticationMode,
  PeerAuthenticationObject,
  PodObject,
  PolicyTargetRef,
  RawRouteOrPolicyObject,
  RequestAuthenticationObject,
  Service,
  ServiceEntry,
  ServiceEntryAddressMatch,
  ServiceEntryEndpoint,
  ServiceEntryHostMatch,
  ServiceEntryLocation,
  ServiceEntryObject,
  ServiceEntryPort,
  ServiceEntryResolution,
  ServiceObject,
  ServicePort,
  TcpRouteObject,
  TlsRouteObject,
  TlsSecretObject,
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
  INGRESS_GATEWAY_CLASS,
  LABEL_DATAPLANE_MODE,
  LABEL_GATEWAY_NAME,
  LABEL_MTLS_MODE,
  LABEL_SERVICE_NAME,
  LABEL_USE_WAYPOINT,
  LABEL_USE_WAYPOINT_NAMESPACE,
  LABEL_WAYPOINT_FOR,
  MESH_CONFIG_NAME,
  mtlsFor,
  SERVICE_ENTRY_API_VERSION,
  WAYPOINT_GATEWAY_CLASS,
} from './types.js';
