// Gateway API route status: what this waypoint writes into `status.parents[]` of the HTTPRoutes and
// GRPCRoutes attached to it, so `kubectl get httproute -o yaml` tells a user whether the route works.
//
// Invariants:
// - Pure: computed from the config state and what the API server holds now (`observed`); nothing is
//   remembered here. The reporter (reporter.ts) fetches, compares and patches.
// - A route attaches to this waypoint through a parentRef to its Gateway, or (GAMMA) to a Service
//   bound to it. Only those parentRefs get an entry from us; entries of other controllers, and ours
//   for parents served by another waypoint (several waypoints share one controllerName), are kept
//   as they are, in place. Our stale entries (a parent that no longer attaches here, or that no
//   waypoint serves) are dropped.
// - The verdict mirrors the engine: a route the engine rejects (its compiled route carries an
//   INVALID_OBJECT error) is `Accepted: False` with the engine's message, not just "looks fine".
// - `lastTransitionTime` moves only when a condition's status flips (metav1.Condition semantics).
//
// This file puts one route's entry together; parents.ts resolves and merges parents, conditions.ts
// computes the conditions, types.ts holds the status shapes.
import type { ConfigState, GrpcRouteObject, HttpRouteObject, WaypointRef } from '@hypha/shared/config';
import { condition, engineVerdict, formatTime, jsonEqual, resolveBackends } from './conditions.js';
import { acceptParent, attaches, mergeParents, ownsStale, parentKey, rawParentRefs } from './parents.js';
import type {
  GatewayListener,
  ObservedRoute,
  RouteKind,
  RouteParentStatus,
  RouteStatusResult,
  StatusContext,
} from './types.js';

export { formatTime, jsonEqual } from './conditions.js';
export type {
  GatewayListener,
  ObservedRoute,
  RouteCondition,
  RouteConditionReason,
  RouteConditionType,
  RouteKind,
  RouteParentRef,
  RouteParentStatus,
  RouteStatusResult,
  StatusContext,
} from './types.js';

export const DEFAULT_CONTROLLER_NAME = 'hypha.dev/waypoint';

export interface ComputeRouteStatusOptions {
  /** The live object's generation and status, to keep transition times and others' entries. */
  observed?: (kind: RouteKind, namespace: string, name: string) => ObservedRoute | undefined;
  /** Default: the current time. */
  now?: Date;
  /**
   * The Gateway's listeners (spec.listeners name/port), to check a parentRef's sectionName/port.
   * The config state does not keep them; without this those two fields are not checked.
   */
  listeners?: readonly GatewayListener[];
}

/**
 * The `status.parents` this waypoint wants on every HTTPRoute/GRPCRoute attached to it. Routes that
 * do not attach are left out (see `findStaleParents` for cleaning up after a route detaches).
 */
export function computeRouteStatus(
  state: ConfigState,
  waypoint: WaypointRef,
  controllerName: string = DEFAULT_CONTROLLER_NAME,
  options: ComputeRouteStatusOptions = {},
): RouteStatusResult[] {
  const ctx: StatusContext = {
    state,
    waypoint,
    controllerName,
    listeners: options.listeners,
    now: formatTime(options.now ?? new Date()),
  };
  const out: RouteStatusResult[] = [];
  for (const route of findAttachedRoutes(state, waypoint)) {
    out.push(computeOne(ctx, route, options.observed?.(route.kind, route.namespace, route.name)));
  }
  return out;
}

/** HTTPRoutes and GRPCRoutes with at least one parentRef that attaches to this waypoint. */
export function findAttachedRoutes(
  state: ConfigState,
  waypoint: WaypointRef,
): (HttpRouteObject | GrpcRouteObject)[] {
  const namespaces = new Set<string>([waypoint.namespace]);
  for (const ns of state.namespaces()) namespaces.add(ns.name);
  // The file source may carry Services without Namespace objects.
  for (const svc of state.services()) namespaces.add(svc.namespace);
  const out: (HttpRouteObject | GrpcRouteObject)[] = [];
  for (const ns of [...namespaces].sort()) {
    for (const route of [...state.findHttpRoutes(ns), ...state.findGrpcRoutes(ns)]) {
      if (rawParentRefs(route).some((ref) => attaches(state, waypoint, route.namespace, ref)))
        out.push(route);
    }
  }
  return out;
}

/** One route's status computed against what the API server holds (`observed`). */
export function computeOne(
  ctx: StatusContext,
  route: HttpRouteObject | GrpcRouteObject,
  observed: ObservedRoute | undefined,
): RouteStatusResult {
  const { state, waypoint, controllerName, now } = ctx;
  const refs = rawParentRefs(route).filter((ref) => attaches(state, waypoint, route.namespace, ref));
  const engineErrors = engineVerdict(route);
  const resolved = resolveBackends(state, route);
  const previous = observed?.parents ?? [];
  const own: RouteParentStatus[] = [];
  const seen = new Set<string>();
  for (const ref of refs) {
    const key = parentKey(ref, route.namespace);
    if (seen.has(key)) continue; // the same parent listed twice gets one entry
    seen.add(key);
    const accepted = acceptParent(ctx, route, ref, engineErrors);
    const before = previous.find(
      (p) => p.controllerName === controllerName && parentKey(p.parentRef, route.namespace) === key,
    );
    own.push({
      parentRef: ref,
      controllerName,
      conditions: [
        condition('Accepted', accepted, before, observed?.generation, now),
        condition('ResolvedRefs', resolved, before, observed?.generation, now),
      ],
    });
  }
  const parents = mergeParents(previous, own, controllerName, (ref) =>
    ownsStale(state, waypoint, route.namespace, ref),
  );
  return {
    kind: route.kind,
    namespace: route.namespace,
    name: route.name,
    parents,
    own,
    changed: !jsonEqual(previous, parents),
  };
}

/**
 * `observed` parents with this waypoint's entries removed: for a route that no longer attaches here
 * (its parentRefs changed, or its Service was unbound). Equal to `observed` when nothing is ours.
 */
export function dropOwnParents(
  state: ConfigState,
  waypoint: WaypointRef,
  controllerName: string,
  routeNamespace: string,
  observed: readonly RouteParentStatus[],
): RouteParentStatus[] {
  return mergeParents(observed, [], controllerName, (ref) => ownsStale(state, waypoint, routeNamespace, ref));
}
