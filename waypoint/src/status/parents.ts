// Parent resolution for route status: which parentRefs of a route attach to this waypoint, whether
// each is accepted (listeners, Service ports, namespaces), and how our entries merge with the other
// controllers' in `status.parents`. Reads the engine's own parentRef defaults (routing/translate.ts).
import type { ConfigState, GrpcRouteObject, HttpRouteObject, WaypointRef } from '@hypha/shared/config';
import type { WaypointConfigError } from '../errors.js';
import type { RouteParentRef, RouteParentStatus, StatusContext, Verdict } from './types.js';

const GATEWAY_GROUP = 'gateway.networking.k8s.io';

export function rawParentRefs(route: HttpRouteObject | GrpcRouteObject): RouteParentRef[] {
  const list = route.spec.parentRefs;
  if (!Array.isArray(list)) return [];
  const out: RouteParentRef[] = [];
  for (const item of list as unknown[]) {
    if (item === null || typeof item !== 'object') continue;
    const r = item as Record<string, unknown>;
    if (typeof r.name !== 'string') continue;
    // Copy only ParentReference's fields: this goes back to the API server under its schema.
    const ref: RouteParentRef = { name: r.name };
    if (typeof r.group === 'string') ref.group = r.group;
    if (typeof r.kind === 'string') ref.kind = r.kind;
    if (typeof r.namespace === 'string') ref.namespace = r.namespace;
    if (typeof r.sectionName === 'string') ref.sectionName = r.sectionName;
    if (typeof r.port === 'number') ref.port = r.port;
    out.push(ref);
  }
  return out;
}

function refKind(ref: RouteParentRef): string {
  return ref.kind ?? 'Gateway';
}

function refGroup(ref: RouteParentRef): string {
  // As the engine reads it (routing/translate.ts): a Service ref without a group is core.
  const g = ref.group ?? (refKind(ref) === 'Service' ? '' : GATEWAY_GROUP);
  return g === 'core' ? '' : g;
}

function isGatewayRef(ref: RouteParentRef): boolean {
  return refKind(ref) === 'Gateway' && refGroup(ref) === GATEWAY_GROUP;
}

function isServiceRef(ref: RouteParentRef): boolean {
  return refKind(ref) === 'Service' && refGroup(ref) === '';
}

/** A ServiceEntry served for egress, as the engine reads it (routing/translate.ts). */
function isServiceEntryRef(ref: RouteParentRef): boolean {
  return (
    refKind(ref) === 'ServiceEntry' &&
    (ref.group === 'networking.hypha.dev' || ref.group === 'networking.istio.io')
  );
}

export function parentKey(ref: RouteParentRef, routeNamespace: string): string {
  return [
    refGroup(ref),
    refKind(ref),
    ref.namespace ?? routeNamespace,
    ref.name,
    ref.sectionName ?? '',
    ref.port ?? '',
  ].join('/');
}

function sameWaypoint(a: WaypointRef | undefined, b: WaypointRef): boolean {
  return a !== undefined && a.name === b.name && a.namespace === b.namespace;
}

export function attaches(
  state: ConfigState,
  waypoint: WaypointRef,
  routeNs: string,
  ref: RouteParentRef,
): boolean {
  const ns = ref.namespace ?? routeNs;
  if (isGatewayRef(ref)) return ref.name === waypoint.name && ns === waypoint.namespace;
  if (isServiceRef(ref)) return sameWaypoint(state.findServiceByName(ns, ref.name)?.waypoint, waypoint);
  if (isServiceEntryRef(ref)) return sameWaypoint(state.findServiceEntry(ns, ref.name)?.waypoint, waypoint);
  return false;
}

/** An entry of ours for this parent may be dropped: it is us, or no waypoint serves it any more. */
export function ownsStale(
  state: ConfigState,
  waypoint: WaypointRef,
  routeNs: string,
  ref: RouteParentRef,
): boolean {
  const ns = ref.namespace ?? routeNs;
  if (isGatewayRef(ref)) return ref.name === waypoint.name && ns === waypoint.namespace;
  if (isServiceRef(ref)) {
    const bound = state.findServiceByName(ns, ref.name)?.waypoint;
    return bound === undefined || sameWaypoint(bound, waypoint);
  }
  if (isServiceEntryRef(ref)) {
    const bound = state.findServiceEntry(ns, ref.name)?.waypoint;
    return bound === undefined || sameWaypoint(bound, waypoint);
  }
  return false;
}

export function acceptParent(
  { state, waypoint, listeners, role = 'waypoint' }: StatusContext,
  route: HttpRouteObject | GrpcRouteObject,
  ref: RouteParentRef,
  engineErrors: readonly WaypointConfigError[],
): Verdict {
  const gw = `${waypoint.namespace}/${waypoint.name}`;
  if (isGatewayRef(ref)) {
    // An ingress Gateway admits other namespaces' routes when a listener says allowedRoutes from All.
    const admitsAll =
      role === 'gateway' &&
      (state.findGateway(waypoint.namespace, waypoint.name)?.listeners ?? []).some(
        (l) => l.allowedRoutes?.namespaces?.from === 'All',
      );
    if (route.namespace !== waypoint.namespace && role === 'gateway' && !admitsAll)
      return {
        ok: false,
        reason: 'NotAllowedByListeners',
        message: `Gateway ${gw} admits routes from its own namespace "${waypoint.namespace}" only (no listener has allowedRoutes.namespaces.from: All)`,
      };
    if (route.namespace !== waypoint.namespace && role === 'waypoint')
      return {
        ok: false,
        reason: 'NotAllowedByListeners',
        message: `waypoint Gateway ${gw} admits routes from its own namespace "${waypoint.namespace}" only; attach this route to a Service instead (parentRef kind: Service, group: "")`,
      };
    if (
      listeners !== undefined &&
      ref.sectionName !== undefined &&
      !listeners.some((l) => l.name === ref.sectionName)
    )
      return {
        ok: false,
        reason: 'NoMatchingParent',
        message: `Gateway ${gw} has no listener named "${ref.sectionName}" (listeners: ${listNames(listeners.map((l) => l.name))})`,
      };
    if (listeners !== undefined && ref.port !== undefined && !listeners.some((l) => l.port === ref.port))
      return {
        ok: false,
        reason: 'NoMatchingParent',
        message: `Gateway ${gw} has no listener on port ${ref.port} (ports: ${listNames(listeners.map((l) => String(l.port)))})`,
      };
  } else {
    const ns = ref.namespace ?? route.namespace;
    const svc = state.findServiceByName(ns, ref.name);
    if (ns !== route.namespace)
      return {
        ok: false,
        reason: 'UnsupportedValue',
        message: `routes for a Service in another namespace (consumer routes) are not supported: create this ${route.kind} in namespace "${ns}"`,
      };
    if (
      svc !== undefined &&
      ref.sectionName !== undefined &&
      !svc.ports.some((p) => p.name === ref.sectionName)
    )
      return {
        ok: false,
        reason: 'NoMatchingParent',
        message: `Service ${ns}/${ref.name} has no port named "${ref.sectionName}" (ports: ${listNames(svc.ports.flatMap((p) => (p.name ? [p.name] : [])))})`,
      };
    if (svc !== undefined && ref.port !== undefined && !svc.ports.some((p) => p.port === ref.port))
      return {
        ok: false,
        reason: 'NoMatchingParent',
        message: `Service ${ns}/${ref.name} has no port ${ref.port} (ports: ${listNames(svc.ports.map((p) => String(p.port)))})`,
      };
  }
  if (engineErrors.length > 0)
    return {
      ok: false,
      reason: 'UnsupportedValue',
      message: `the ${role} skipped this route: ${engineErrors.map((e) => e.message).join('; ')}`,
    };
  return { ok: true, reason: 'Accepted', message: `attached to ${role} ${gw}` };
}

function listNames(names: readonly string[]): string {
  return names.length === 0 ? 'none' : names.join(', ');
}

/**
 * Others' entries stay where they are; ours replace the entry for the same parent in place, new
 * ones go last; our entries that `stale` claims and that we no longer write are dropped.
 */
export function mergeParents(
  observed: readonly RouteParentStatus[],
  own: readonly RouteParentStatus[],
  controllerName: string,
  stale: (ref: RouteParentRef) => boolean,
): RouteParentStatus[] {
  // The namespace default of a parentRef is the route's; keys are compared within one route, so an
  // empty default is consistent on both sides.
  const ownByKey = new Map(own.map((p) => [parentKey(p.parentRef, ''), p]));
  const used = new Set<string>();
  const out: RouteParentStatus[] = [];
  for (const p of observed) {
    if (p.controllerName !== controllerName) {
      out.push(p);
      continue;
    }
    const key = parentKey(p.parentRef, '');
    const mine = ownByKey.get(key);
    if (mine !== undefined && !used.has(key)) {
      out.push(mine);
      used.add(key);
    } else if (mine === undefined && !stale(p.parentRef)) out.push(p);
  }
  for (const [key, p] of ownByKey) if (!used.has(key)) out.push(p);
  return out;
}
