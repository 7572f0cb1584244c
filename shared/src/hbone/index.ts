// Public surface of @hypha/shared/hbone: name every export (no `export *`).
export type { ByteCounters, CopyOptions, CopyOutcome, CopyResult } from './copy.js';
export { copyBidirectional, createByteCounters, resetStream } from './copy.js';
export type { HboneErrorCode, HboneErrorDetails } from './errors.js';
export {
  codeForStatus,
  HBONE_ERROR_CODES,
  HBONE_REASON_HEADER,
  HBONE_RESPONSE_FLAGS,
  HboneError,
  isHboneError,
} from './errors.js';
export type { Authority, Baggage, SocketAddress, TraceParent } from './headers.js';
export {
  buildBaggage,
  buildForwarded,
  formatAuthority,
  formatTraceParent,
  MAX_BAGGAGE_LENGTH,
  MAX_BAGGAGE_MEMBERS,
  MAX_FORWARDED_LENGTH,
  parseAuthority,
  parseBaggage,
  parseForwarded,
  parseTraceParent,
} from './headers.js';
export type { KeepaliveGuard, KeepaliveOptions } from './keepalive.js';
export { startKeepalive } from './keepalive.js';
export type { HboneConnectRequest, HbonePoolOptions, HbonePoolStats, HboneTunnel } from './pool.js';
export { createHbonePool, HbonePool } from './pool.js';
export {
  AGENT_NODE_FLAGS,
  CA_NODE_FLAGS,
  MESH_PROCESS_ENV,
  missingAgentNodeFlags,
  WAYPOINT_NODE_FLAGS,
} from './runtime.js';
export type {
  ConnectionInfo,
  HboneHandler,
  HboneRefusalStatus,
  HboneRequest,
  HboneResponse,
  HboneServerOptions,
  HboneServerStats,
  PeerCertificateInfo,
} from './server.js';
export { createHboneServer, HBONE_CHANNELS, HboneServer } from './server.js';
export type { FlowControlOptions, HboneLimits, HboneSocketTuner } from './settings.js';
export {
  DEFAULT_FLOW_CONTROL,
  DEFAULT_SERVER_LIMITS,
  HBONE_ALPN,
  HBONE_PORT,
  hboneSendBufferBytes,
  NODE_DEFAULT_FLOW_CONTROL,
  sessionMemoryMb,
} from './settings.js';
