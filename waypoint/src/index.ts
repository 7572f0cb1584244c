// Public surface of @hypha/waypoint: name every export (no `export *`).
export type {
  AuthzAttributes,
  AuthzDecision,
  CompiledAuthzPolicy,
  PolicySet,
} from './authz/policy.js';
export { compileAuthorizationPolicy, evaluateAuthz, indexPolicies } from './authz/policy.js';
export type { WaypointSnapshot } from './config.js';
export { buildSnapshot } from './config.js';
export { parseDuration } from './duration.js';
export type { ProxyFailureCode, WaypointConfigErrorCode } from './errors.js';
export { FAILURES, ProxyFailure, WaypointConfigError } from './errors.js';
export { hboneIngressHandler } from './hbone-ingress.js';
export type { HboneUpstreamOptions } from './hbone-upstream.js';
export { hboneConnectUpstream } from './hbone-upstream.js';
export type {
  BoundWorkloadInput,
  EndpointInput,
  ServiceEntry,
  ServiceInput,
  ServicePortInput,
  WaypointConfigInput,
  WorkloadInfo,
} from './model.js';
export type { StreamContext, Waypoint, WaypointOptions } from './proxy.js';
export { createWaypoint } from './proxy.js';
export type { RequestSource } from './request-log.js';
export type { RequestView } from './routing/match.js';
export { findRoute } from './routing/match.js';
export { buildRouteTable } from './routing/translate.js';
export type { RouteAction, RouteEntry, RouteTable } from './routing/types.js';
export type { SniffedProtocol } from './sniff.js';
export { sniffProtocol } from './sniff.js';
export type {
  RouteStatusReporter,
  RouteStatusReporterOptions,
  RouteStatusReporterStats,
} from './status/reporter.js';
export { createRouteStatusReporter } from './status/reporter.js';
export type {
  ComputeRouteStatusOptions,
  GatewayListener,
  ObservedRoute,
  RouteCondition,
  RouteConditionReason,
  RouteConditionType,
  RouteKind,
  RouteParentRef,
  RouteParentStatus,
  RouteStatusResult,
} from './status/route-status.js';
export { computeRouteStatus, DEFAULT_CONTROLLER_NAME } from './status/route-status.js';
export type { HttpLabelName, HttpLabels, HttpReporter, RequestOutcome } from './telemetry.js';
export { HTTP_LABEL_NAMES, httpLabels, RequestMetrics } from './telemetry.js';
export type { RequestSpan, Tracing, TracingOptions } from './tracing.js';
export { createTracing, NOOP_TRACING } from './tracing.js';
export type { EndpointState } from './traffic/cluster.js';
export { Cluster } from './traffic/cluster.js';
export type { LoadBalancerType, TrafficSettings } from './traffic/policy.js';
export { compileTrafficPolicy, DEFAULT_TRAFFIC } from './traffic/policy.js';
export type { ConnectUpstream, UpstreamEndpoint } from './upstream.js';
export { UpstreamPools } from './upstream.js';
