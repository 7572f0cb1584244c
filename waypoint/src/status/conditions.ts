// The two conditions of a route's parent entry: what the engine makes of the object (Accepted,
// together with parents.ts) and whether its backends resolve (ResolvedRefs), with metav1.Condition
// transition times.
import type { ConfigState, GrpcRouteObject, HttpRouteObject } from '@hypha/shared/config';
import type { WaypointConfigError } from '../errors.js';
import { compileRoute } from '../routing/translate.js';
import type {
  RouteCondition,
  RouteConditionReason,
  RouteConditionType,
  RouteParentStatus,
  Verdict,
} from './types.js';

/**
 * The engine's own validation of the object, independent of which services exist: the errors that
 * make the engine drop it (the compiled route is the engine's, cached per object). Missing backends
 * and unknown Service parents are not object errors: ResolvedRefs and attachment report those.
 */
export function engineVerdict(route: HttpRouteObject | GrpcRouteObject): readonly WaypointConfigError[] {
  return compileRoute(route.kind, route).errors.filter((e) => e.code === 'INVALID_OBJECT');
}

// ---- references ----

export function resolveBackends(state: ConfigState, route: HttpRouteObject | GrpcRouteObject): Verdict {
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

export function condition(
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
