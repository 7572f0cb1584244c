// Raw HTTPRoute/GRPCRoute objects → RouteTable, in two steps:
//
//   raw object ──compileRoute (once per object, cached)──▶ CompiledRoute ──attach (every snapshot)──▶ RouteTable
//                 schema, matches (compile-match.ts),        rules + parents    which parents this waypoint
//                 actions (compile-action.ts), parent kinds                     serves, missing backends, order
//
// Each object is validated on its own: a bad object is skipped with an error that names it and the
// field, the others stay in force. A compiled route does not depend on which Services exist, so a
// Service or another route changing reuses it; attaching is a few Map reads per parentRef.
//
// Precedence (Gateway API, HTTPRoute "rules" docs; GRPCRoute maps onto it through its path):
//   Exact path > longest PathPrefix > RegularExpression (longest first) > has method >
//   most header matches > most query matches > oldest creationTimestamp > namespace/name
//   alphabetical > rule order > match order.
import { CompileCache, type Compiled, type CompileStats } from '../compile-cache.js';
import { WaypointConfigError } from '../errors.js';
import { parseWith, readObjectMeta, type ServiceEntry } from '../model.js';
import { compileAction } from './compile-action.js';
import { compileGrpcMatch, compileHttpMatch, type GrpcMatch, type HttpMatch } from './compile-match.js';
import { grpcRouteSpecSchema, httpRouteSpecSchema } from './schema.js';
import type { RouteAction, RouteEntry, RouteTable } from './types.js';

export interface RouteTableInputs {
  gateway: { name: string; namespace: string };
  services: ReadonlyMap<string, ServiceEntry>;
  httpRoutes: readonly unknown[];
  grpcRoutes: readonly unknown[];
}

export type RouteKind = RouteEntry['kind'];

type MatchEntry = Omit<RouteEntry, 'port' | 'hostnames' | 'action'>;

interface CompiledRule {
  matches: readonly MatchEntry[];
  action: RouteAction;
  /** `action` with `invalidBackends` set: used while a backend Service is missing (answers 500). */
  unresolved: RouteAction;
  backendServices: readonly string[];
}

type CompiledParent =
  | {
      type: 'Service';
      index: number;
      namespace: string;
      name: string;
      sectionName: string | undefined;
      port: number | undefined;
    }
  | { type: 'Gateway'; namespace: string; name: string; port: number | undefined };

/** One route object, validated and compiled; independent of the Services that exist. */
export interface CompiledRoute {
  kind: RouteKind;
  namespace: string;
  name: string;
  /** Lowercase. */
  hostnames: readonly string[];
  rules: readonly CompiledRule[];
  parents: readonly CompiledParent[];
}

const routes = new CompileCache<RouteKind, CompiledRoute>(compileRouteObject, (kind) => kind);

/** The compiled route, or the error that rejects it (INVALID_OBJECT); cached per object. */
export function compileRoute(kind: RouteKind, raw: unknown, stats?: CompileStats): Compiled<CompiledRoute> {
  return routes.compile(raw, kind, stats);
}

export function buildRouteTable(
  inputs: RouteTableInputs,
  errors: WaypointConfigError[],
  stats?: CompileStats,
): RouteTable {
  const byService = new Map<string, RouteEntry[]>();
  const gateway: RouteEntry[] = [];
  const add = (kind: RouteKind, raw: unknown) => {
    const r = compileRoute(kind, raw, stats);
    for (const e of r.errors) errors.push(e);
    if (r.value !== undefined) attach(r.value, inputs, byService, gateway, errors);
  };
  for (const r of inputs.httpRoutes) add('HTTPRoute', r);
  for (const r of inputs.grpcRoutes) add('GRPCRoute', r);
  for (const list of byService.values()) list.sort(compareEntries);
  gateway.sort(compareEntries);
  return { byService, gateway };
}

function compileRouteObject(raw: unknown, kind: RouteKind): CompiledRoute {
  const { meta, spec: rawSpec } = readObjectMeta(kind, raw);
  const spec =
    kind === 'HTTPRoute'
      ? parseWith(httpRouteSpecSchema, rawSpec, kind, meta, 'spec')
      : parseWith(grpcRouteSpecSchema, rawSpec, kind, meta, 'spec');
  const fail = (field: string, detail: string): never => {
    throw new WaypointConfigError('INVALID_OBJECT', kind, meta.namespace, meta.name, field, detail);
  };

  // Compile every rule and check every parentRef first, so a bad rule or parentRef rejects the whole
  // object (no half-applied routes).
  const rules: CompiledRule[] = [];
  (spec.rules ?? [{}]).forEach((rule, ri) => {
    const base = `spec.rules[${ri}]`;
    const { action, backendServices } = compileAction(kind, meta, rule, base, fail);
    const matches: MatchEntry[] = [];
    const rawMatches = (rule.matches ?? []) as unknown[];
    const list = rawMatches.length === 0 ? [{}] : rawMatches;
    list.forEach((m, mi) => {
      const mbase = `${base}.matches[${mi}]`;
      const compiledMatch =
        kind === 'HTTPRoute'
          ? compileHttpMatch(m as HttpMatch, mbase, fail)
          : compileGrpcMatch(m as GrpcMatch, mbase, fail);
      matches.push({
        kind,
        namespace: meta.namespace,
        routeName: meta.name,
        creationTimestamp: meta.creationTimestamp,
        ruleIndex: ri,
        matchIndex: mi,
        ...compiledMatch,
      });
    });
    if (action.rewrite?.path?.type === 'ReplacePrefixMatch') {
      for (const m of matches) {
        if (m.path.type !== 'PathPrefix')
          fail(
            `${base}.filters`,
            'URLRewrite ReplacePrefixMatch needs a PathPrefix match on every match of the rule',
          );
      }
    }
    rules.push({ matches, action, unresolved: { ...action, invalidBackends: true }, backendServices });
  });

  const parents: CompiledParent[] = spec.parentRefs.map((ref, pi): CompiledParent => {
    const namespace = ref.namespace ?? meta.namespace;
    const refKind = ref.kind ?? 'Gateway';
    const group = ref.group ?? (refKind === 'Service' ? '' : 'gateway.networking.k8s.io');
    // A ServiceEntry served for egress is keyed like a Service (namespace/name).
    const entry =
      refKind === 'ServiceEntry' &&
      (ref.group === 'networking.hypha.dev' || ref.group === 'networking.istio.io');
    if (entry || (refKind === 'Service' && (group === '' || group === 'core')))
      return {
        type: 'Service',
        index: pi,
        namespace,
        name: ref.name,
        sectionName: ref.sectionName,
        port: ref.port,
      };
    if (refKind === 'Gateway' && group === 'gateway.networking.k8s.io')
      return { type: 'Gateway', namespace, name: ref.name, port: ref.port };
    return fail(
      `spec.parentRefs[${pi}].kind`,
      `parentRef ${group}/${refKind} is not supported (use a Service, a networking.hypha.dev ServiceEntry or the waypoint Gateway)`,
    );
  });

  return {
    kind,
    namespace: meta.namespace,
    name: meta.name,
    hostnames: (spec.hostnames ?? []).map((h) => h.toLowerCase()),
    rules,
    parents,
  };
}

/** Adds a compiled route's entries under each parent this waypoint serves. */
function attach(
  route: CompiledRoute,
  inputs: RouteTableInputs,
  byService: Map<string, RouteEntry[]>,
  gateway: RouteEntry[],
  errors: WaypointConfigError[],
): void {
  const actions = route.rules.map((r) =>
    r.backendServices.every((key) => inputs.services.has(key)) ? r.action : r.unresolved,
  );
  for (const parent of route.parents) {
    let target: RouteEntry[];
    let port = parent.port;
    if (parent.type === 'Service') {
      const svc = inputs.services.get(`${parent.namespace}/${parent.name}`);
      if (svc === undefined) continue; // a Service this waypoint does not serve: another waypoint's business
      if (parent.sectionName !== undefined) {
        const named = [...svc.ports.values()].find((p) => p.name === parent.sectionName);
        if (named === undefined) {
          errors.push(
            new WaypointConfigError(
              'UNRESOLVED_REF',
              route.kind,
              route.namespace,
              route.name,
              `spec.parentRefs[${parent.index}].sectionName`,
              `Service ${parent.namespace}/${parent.name} has no port named "${parent.sectionName}"`,
            ),
          );
          continue;
        }
        port = named.port;
      }
      let list = byService.get(svc.key);
      if (list === undefined) {
        list = [];
        byService.set(svc.key, list);
      }
      target = list;
    } else {
      if (parent.name !== inputs.gateway.name || parent.namespace !== inputs.gateway.namespace) continue;
      target = gateway;
    }
    route.rules.forEach((r, ri) => {
      const action = actions[ri]!;
      for (const m of r.matches) target.push({ ...m, port, hostnames: route.hostnames, action });
    });
  }
}

const PATH_RANK = { Exact: 3, PathPrefix: 2, RegularExpression: 1 } as const;

export function compareEntries(a: RouteEntry, b: RouteEntry): number {
  return (
    PATH_RANK[b.path.type] - PATH_RANK[a.path.type] ||
    b.path.value.length - a.path.value.length ||
    Number(b.method !== undefined) - Number(a.method !== undefined) ||
    b.headers.length - a.headers.length ||
    b.query.length - a.query.length ||
    compareTimestamps(a.creationTimestamp, b.creationTimestamp) ||
    cmp(`${a.namespace}/${a.routeName}`, `${b.namespace}/${b.routeName}`) ||
    a.ruleIndex - b.ruleIndex ||
    a.matchIndex - b.matchIndex
  );
}

function compareTimestamps(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '') return 1; // unknown age sorts after known ones
  if (b === '') return -1;
  return Date.parse(a) - Date.parse(b) || cmp(a, b);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
