// The shapes of Gateway API route status as this waypoint reads and writes them (route-status.ts).
import type { ConfigState, WaypointRef } from '@hypha/shared/config';

export type RouteKind = 'HTTPRoute' | 'GRPCRoute';

/** Gateway API ParentReference, as the route's spec wrote it. */
export interface RouteParentRef {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  sectionName?: string;
  port?: number;
}

export type RouteConditionType = 'Accepted' | 'ResolvedRefs';

export type RouteConditionReason =
  | 'Accepted'
  | 'NotAllowedByListeners'
  | 'NoMatchingParent'
  | 'UnsupportedValue'
  | 'ResolvedRefs'
  | 'BackendNotFound'
  | 'InvalidKind';

/** metav1.Condition as Gateway API route status carries it. */
export interface RouteCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  /** The route's metadata.generation this verdict is about; absent when not known (no `observed`). */
  observedGeneration?: number;
  /** RFC 3339, seconds precision. */
  lastTransitionTime: string;
}

export interface RouteParentStatus {
  parentRef: RouteParentRef;
  controllerName: string;
  conditions: RouteCondition[];
}

/** What the API server holds for a route now (metadata.generation and status.parents). */
export interface ObservedRoute {
  generation?: number | undefined;
  parents?: readonly RouteParentStatus[] | undefined;
}

export interface RouteStatusResult {
  kind: RouteKind;
  namespace: string;
  name: string;
  /** The complete `status.parents` to write: other controllers' entries first-come in place, ours merged. */
  parents: RouteParentStatus[];
  /** Our entries only (one per parentRef attaching to this waypoint). */
  own: RouteParentStatus[];
  /** `parents` differs from the observed status (always true when nothing was observed and we have entries). */
  changed: boolean;
}

export interface GatewayListener {
  name: string;
  port: number;
}

export interface StatusContext {
  state: ConfigState;
  waypoint: WaypointRef;
  controllerName: string;
  listeners: readonly GatewayListener[] | undefined;
  /** RFC 3339 (formatTime). */
  now: string;
  /** Who writes: a waypoint (default) or an ingress gateway (`hypha gateway`), named in messages. */
  role?: 'waypoint' | 'gateway' | undefined;
}

export interface Verdict {
  ok: boolean;
  reason: RouteConditionReason;
  message: string;
}
