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
// - The verdict mirrors the engine: a route the engine rejects (buildRouteTable reports an
//   INVALID_OBJECT error) is `Accepted: False` with the engine's message, not just "looks fine".
// - `lastTransitionTime` moves only when a condition's status flips (metav1.Condition semantics).
import type { ConfigState, GrpcRouteObject, HttpRouteObject, WaypointRef } from '@hypha/shared/config';
import type { WaypointConfigError } from '../errors.js';
import { buildRouteTable } from '../routing/translate.js';

export const DEFAULT_CONTROLLER_NAME = 'hypha.dev/waypoint';

const GATEWAY_GROUP = 'gateway.networking.k8s.io';

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

export interface GatewayListener {
  name: string;
  port: number;
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

export interface StatusContext {
  state: ConfigState;
  waypoint: WaypointRef;
  controllerName: string;
  listeners: readonly GatewayListener[] | undefined;
  /** RFC 3339 (formatTime). */
  now: string;
}

/** One route's status computed against what the API server holds (`observed`). */
export function computeOne(
  ctx: StatusContext,
  route: HttpRouteObject | GrpcRouteObject,
  observed: ObservedRoute | undefined,
): RouteStatusResult {
  const { state, waypoint, controllerName, now } = ctx;
  const refs = rawParentRefs(route).filter((ref) => attaches(state, waypoint, route.namespace, ref));
  const engineErrors = engineVerdict(waypoint, route);
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

// ---- attachment ----

interface Verdict {
  ok: boolean;
  reason: RouteConditionReason;
  message: string;
}

function rawParentRefs(route: HttpRouteObject | GrpcRouteObject): RouteParentRef[] {
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

function parentKey(ref: RouteParentRef, routeNamespace: string): string {
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

function attaches(state: ConfigState, waypoint: WaypointRef, routeNs: string, ref: RouteParentRef): boolean {
  const ns = ref.namespace ?? routeNs;
  if (isGatewayRef(ref)) return ref.name === waypoint.name && ns === waypoint.namespace;
  if (isServiceRef(ref)) return sameWaypoint(state.findServiceByName(ns, ref.name)?.waypoint, waypoint);
  return false;
}

/** An entry of ours for this parent may be dropped: it is us, or no waypoint serves it any more. */
function ownsStale(state: ConfigState, waypoint: WaypointRef, routeNs: string, ref: RouteParentRef): boolean {
  const ns = ref.namespace ?? routeNs;
  if (isGatewayRef(ref)) return ref.name === waypoint.name && ns === waypoint.namespace;
  if (isServiceRef(ref)) {
    const bound = state.findServiceByName(ns, ref.name)?.waypoint;
    return bound === undefined || sameWaypoint(bound, waypoint);
  }
  return false;
}

function acceptParent(
  { state, waypoint, listeners }: StatusContext,
  route: HttpRouteObject | GrpcRouteObject,
  ref: RouteParentRef,
  engineErrors: readonly WaypointConfigError[],
): Verdict {
  const gw = `${waypoint.namespace}/${waypoint.name}`;
  if (isGatewayRef(ref)) {
    if (route.namespace !== waypoint.namespace)
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
      message: `the waypoint skipped this route: ${engineErrors.map((e) => e.message).join('; ')}`,
    };
  return { ok: true, reason: 'Accepted', message: `attached to waypoint ${gw}` };
}

function listNames(names: readonly string[]): string {
  return names.length === 0 ? 'none' : names.join(', ');
}

/** The engine's own validation of the object, independent of which services exist. */
function engineVerdict(
  waypoint: WaypointRef,
  route: HttpRouteObject | GrpcRouteObject,
): WaypointConfigError[] {
  const errors: WaypointConfigError[] = [];
  buildRouteTable(
    {
      gateway: { name: waypoint.name, namespace: waypoint.namespace },
      // Empty: missing backends and unknown Service parents are not object errors (ResolvedRefs
      // and attachment report those); only what makes the engine drop the object counts here.
      services: new Map(),
      httpRoutes: route.kind === 'HTTPRoute' ? [route] : [],
      grpcRoutes: route.kind === 'GRPCRoute' ? [route] : [],
    },
    errors,
  );
  return errors.filter((e) => e.code === 'INVALID_OBJECT');
}

// ---- references ----

function resolveBackends(state: ConfigState, route: HttpRouteObject | GrpcRouteObject): Verdict {
  const problems: { reason: RouteConditionReason; message: string }[] = [];
  const rules = Array.isArray(route.spec.rules) ? (route.spec.rules as unknown[]) : [];
  const check = (raw: unknown, field: string) => {
    if (raw === null || typeof raw !== 'object') return;
    const b = raw as Record<string, unknown>;
    if (typeof b.name !== 'string') return;
    const kind = typeof b.kind === 'string' ? b.kind : 'Service';
    const group = typeof b.group === 'string' ? b.group : '';
    if (kind !== 'Service' || (group !== '' && group !== 'core')) {
      problems.push({
        reason: 'InvalidKind',
        message: `${field} names ${group === '' ? '' : `${group}/`}${kind} ${b.name}: only Services are supported`,
      });
      return;
    }
    const ns = typeof b.namespace === 'string' ? b.namespace : route.namespace;
    if (state.findServiceByName(ns, b.name) === undefined)
      problems.push({ reason: 'BackendNotFound', message: `${field}: Service ${ns}/${b.name} not found` });
  };
  const mirrors = (filters: unknown, field: string) => {
    if (!Array.isArray(filters)) return;
    filters.forEach((f, i) => {
      const m = (f as { requestMirror?: { backendRef?: unknown } } | null)?.requestMirror;
      if (m !== undefined) check(m.backendRef, `${field}[${i}].requestMirror.backendRef`);
    });
  };
  rules.forEach((rule, ri) => {
    if (rule === null || typeof rule !== 'object') return;
    const r = rule as { backendRefs?: unknown; filters?: unknown };
    const base = `spec.rules[${ri}]`;
    mirrors(r.filters, `${base}.filters`);
    if (!Array.isArray(r.backendRefs)) return;
    r.backendRefs.forEach((b, bi) => {
      check(b, `${base}.backendRefs[${bi}]`);
      mirrors((b as { filters?: unknown } | null)?.filters, `${base}.backendRefs[${bi}].filters`);
    });
  });
  const first = problems[0];
  if (first === undefined)
    return { ok: true, reason: 'ResolvedRefs', message: 'all backend references resolved' };
  // InvalidKind outranks BackendNotFound: fixing the kind comes before creating the Service.
  const reason = problems.some((p) => p.reason === 'InvalidKind') ? 'InvalidKind' : first.reason;
  return { ok: false, reason, message: problems.map((p) => p.message).join('; ') };
}

// ---- conditions and merging ----

function condition(
  type: RouteConditionType,
  verdict: Verdict,
  before: RouteParentStatus | undefined,
  generation: number | undefined,
  now: string,
): RouteCondition {
  const status = verdict.ok ? 'True' : 'False';
  const prev = before?.conditions.find((c) => c.type === type);
  const c: RouteCondition = {
    type,
    status,
    reason: verdict.reason,
    message: verdict.message,
    lastTransitionTime:
      prev !== undefined && prev.status === status && typeof prev.lastTransitionTime === 'string'
        ? prev.lastTransitionTime
        : now,
  };
  if (generation !== undefined) c.observedGeneration = generation;
  return c;
}

/**
 * Others' entries stay where they are; ours replace the entry for the same parent in place, new
 * ones go last; our entries that `stale` claims and that we no longer write are dropped.
 */
function mergeParents(
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

export function formatTime(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

/** Structural equality ignoring object key order (the API server may reorder keys). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((v, i) => jsonEqual(v, b[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const ak = Object.keys(ao).filter((k) => ao[k] !== undefined);
  const bk = Object.keys(bo).filter((k) => bo[k] !== undefined);
  return ak.length === bk.length && ak.every((k) => jsonEqual(ao[k], bo[k]));
}
