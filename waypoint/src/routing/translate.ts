// Raw HTTPRoute/GRPCRoute objects → RouteTable. Each object is validated on its own: a bad object
// is skipped with an error that names it and the field, the others stay in force.
//
// Precedence (Gateway API, HTTPRoute "rules" docs; GRPCRoute maps onto it through its path):
//   Exact path > longest PathPrefix > RegularExpression (longest first) > has method >
//   most header matches > most query matches > oldest creationTimestamp > namespace/name
//   alphabetical > rule order > match order.
import { parseDuration } from '../duration.js';
import { WaypointConfigError } from '../errors.js';
import { type ObjectMeta, parseWith, readObjectMeta, type ServiceEntry } from '../model.js';
import { type FilterSpec, grpcRouteSpecSchema, httpRouteSpecSchema, type RetrySpec } from './schema.js';
import type {
  BackendRef,
  HeaderModifier,
  Mirror,
  PathMatch,
  PathModifier,
  RetryPolicy,
  RouteAction,
  RouteEntry,
  RouteTable,
  ValueMatch,
} from './types.js';

export interface RouteTableInputs {
  gateway: { name: string; namespace: string };
  services: ReadonlyMap<string, ServiceEntry>;
  httpRoutes: readonly unknown[];
  grpcRoutes: readonly unknown[];
}

const DEFAULT_RETRY_CODES = [502, 503, 504];
const DEFAULT_RETRY_ATTEMPTS = 2;
const DEFAULT_BACKOFF_MS = 25;

export function buildRouteTable(inputs: RouteTableInputs, errors: WaypointConfigError[]): RouteTable {
  const byService = new Map<string, RouteEntry[]>();
  const gateway: RouteEntry[] = [];
  const add = (kind: 'HTTPRoute' | 'GRPCRoute', raw: unknown) => {
    try {
      translateRoute(kind, raw, inputs, byService, gateway, errors);
    } catch (err) {
      if (err instanceof WaypointConfigError) errors.push(err);
      else throw err;
    }
  };
  for (const r of inputs.httpRoutes) add('HTTPRoute', r);
  for (const r of inputs.grpcRoutes) add('GRPCRoute', r);
  for (const list of byService.values()) list.sort(compareEntries);
  gateway.sort(compareEntries);
  return { byService, gateway };
}

function translateRoute(
  kind: 'HTTPRoute' | 'GRPCRoute',
  raw: unknown,
  inputs: RouteTableInputs,
  byService: Map<string, RouteEntry[]>,
  gateway: RouteEntry[],
  errors: WaypointConfigError[],
): void {
  const { meta, spec: rawSpec } = readObjectMeta(kind, raw);
  const spec =
    kind === 'HTTPRoute'
      ? parseWith(httpRouteSpecSchema, rawSpec, kind, meta, 'spec')
      : parseWith(grpcRouteSpecSchema, rawSpec, kind, meta, 'spec');
  const fail = (field: string, detail: string): never => {
    throw new WaypointConfigError('INVALID_OBJECT', kind, meta.namespace, meta.name, field, detail);
  };

  // Compile every rule first, so a bad rule rejects the whole object (no half-applied routes).
  const rules = spec.rules ?? [{}];
  const compiled: { matches: Omit<RouteEntry, 'port' | 'hostnames' | 'action'>[]; action: RouteAction }[] =
    [];
  rules.forEach((rule, ri) => {
    const base = `spec.rules[${ri}]`;
    const action = compileAction(kind, meta, rule, base, inputs, fail);
    const matches: Omit<RouteEntry, 'port' | 'hostnames' | 'action'>[] = [];
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
    compiled.push({ matches, action });
  });

  const hostnames = (spec.hostnames ?? []).map((h) => h.toLowerCase());
  spec.parentRefs.forEach((ref, pi) => {
    const ns = ref.namespace ?? meta.namespace;
    const refKind = ref.kind ?? 'Gateway';
    const group = ref.group ?? (refKind === 'Service' ? '' : 'gateway.networking.k8s.io');
    let target: RouteEntry[] | undefined;
    let port = ref.port;
    if (refKind === 'Service' && (group === '' || group === 'core')) {
      const svc = inputs.services.get(`${ns}/${ref.name}`);
      if (svc === undefined) return; // a Service this waypoint does not serve: another waypoint's business
      if (ref.sectionName !== undefined) {
        const named = [...svc.ports.values()].find((p) => p.name === ref.sectionName);
        if (named === undefined) {
          errors.push(
            new WaypointConfigError(
              'UNRESOLVED_REF',
              kind,
              meta.namespace,
              meta.name,
              `spec.parentRefs[${pi}].sectionName`,
              `Service ${ns}/${ref.name} has no port named "${ref.sectionName}"`,
            ),
          );
          return;
        }
        port = named.port;
      }
      let list = byService.get(svc.key);
      if (list === undefined) {
        list = [];
        byService.set(svc.key, list);
      }
      target = list;
    } else if (refKind === 'Gateway' && group === 'gateway.networking.k8s.io') {
      if (ref.name !== inputs.gateway.name || ns !== inputs.gateway.namespace) return;
      target = gateway;
    } else {
      fail(
        `spec.parentRefs[${pi}].kind`,
        `parentRef ${group}/${refKind} is not supported (use a Service or the waypoint Gateway)`,
      );
    }
    for (const r of compiled)
      for (const m of r.matches) target!.push({ ...m, port, hostnames, action: r.action });
  });
}

type HttpMatch = NonNullable<
  NonNullable<import('./schema.js').HttpRouteSpec['rules']>[number]['matches']
>[number];
type GrpcMatch = NonNullable<
  NonNullable<import('./schema.js').GrpcRouteSpec['rules']>[number]['matches']
>[number];
type Fail = (field: string, detail: string) => never;

function compileRegex(value: string, field: string, fail: Fail): RegExp {
  try {
    return new RegExp(`^(?:${value})$`);
  } catch (err) {
    return fail(field, `invalid regular expression: ${(err as Error).message}`);
  }
}

function compileValueMatches(
  list: HttpMatch['headers'],
  field: string,
  lower: boolean,
  fail: Fail,
): ValueMatch[] {
  return (list ?? []).map((h, i) => {
    const n = lower ? h.name.toLowerCase() : h.name;
    if (h.type === 'RegularExpression')
      return {
        name: n,
        type: 'RegularExpression',
        value: h.value,
        regex: compileRegex(h.value, `${field}[${i}].value`, fail),
      };
    return { name: n, type: 'Exact', value: h.value };
  });
}

function compileHttpMatch(
  m: HttpMatch,
  base: string,
  fail: Fail,
): Pick<RouteEntry, 'path' | 'method' | 'headers' | 'query'> {
  const type = m.path?.type ?? 'PathPrefix';
  const value = m.path?.value ?? '/';
  let path: PathMatch;
  if (type === 'RegularExpression')
    path = { type, value, regex: compileRegex(value, `${base}.path.value`, fail) };
  else {
    if (!value.startsWith('/')) fail(`${base}.path.value`, 'must start with "/"');
    // PathPrefix matches path elements: a trailing "/" in the prefix is not significant.
    path = {
      type,
      value: type === 'PathPrefix' && value.length > 1 ? value.replace(/\/+$/, '') || '/' : value,
    };
  }
  return {
    path,
    method: m.method,
    headers: compileValueMatches(m.headers, `${base}.headers`, true, fail),
    query: compileValueMatches(m.queryParams, `${base}.queryParams`, false, fail),
  };
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** gRPC calls are POST /<service>/<method>; a GRPCRoute method match becomes a path match. */
function compileGrpcMatch(
  m: GrpcMatch,
  base: string,
  fail: Fail,
): Pick<RouteEntry, 'path' | 'method' | 'headers' | 'query'> {
  const mm = m.method;
  let path: PathMatch = { type: 'PathPrefix', value: '/' };
  if (mm !== undefined) {
    if (mm.service === undefined && mm.method === undefined)
      fail(`${base}.method`, 'one of service or method is required');
    if ((mm.type ?? 'Exact') === 'Exact') {
      if (mm.service !== undefined && mm.method !== undefined)
        path = { type: 'Exact', value: `/${mm.service}/${mm.method}` };
      else if (mm.service !== undefined) path = { type: 'PathPrefix', value: `/${mm.service}` };
      else {
        const v = `/[^/]+/${escapeRegex(mm.method!)}`;
        path = { type: 'RegularExpression', value: v, regex: compileRegex(v, `${base}.method`, fail) };
      }
    } else {
      const v = `/${mm.service ?? '[^/]+'}/${mm.method ?? '[^/]+'}`;
      path = { type: 'RegularExpression', value: v, regex: compileRegex(v, `${base}.method`, fail) };
    }
  }
  return {
    path,
    method: undefined,
    headers: compileValueMatches(m.headers, `${base}.headers`, true, fail),
    query: [],
  };
}

function compileHeaderModifier(m: {
  set?: { name: string; value: string }[] | undefined;
  add?: { name: string; value: string }[] | undefined;
  remove?: string[] | undefined;
}): HeaderModifier {
  return {
    set: (m.set ?? []).map((h) => ({ name: h.name.toLowerCase(), value: h.value })),
    add: (m.add ?? []).map((h) => ({ name: h.name.toLowerCase(), value: h.value })),
    remove: (m.remove ?? []).map((h) => h.toLowerCase()),
  };
}

function compilePathModifier(
  p:
    | { type: 'ReplaceFullPath'; replaceFullPath: string }
    | { type: 'ReplacePrefixMatch'; replacePrefixMatch: string }
    | undefined,
): PathModifier | undefined {
  if (p === undefined) return undefined;
  return p.type === 'ReplaceFullPath'
    ? { type: p.type, value: p.replaceFullPath }
    : { type: p.type, value: p.replacePrefixMatch };
}

export function compileRetry(r: RetrySpec): RetryPolicy {
  return {
    attempts: r.attempts ?? DEFAULT_RETRY_ATTEMPTS,
    codes: new Set(r.codes ?? DEFAULT_RETRY_CODES),
    grpcCodes: new Set(),
    backoffMs:
      r.backoff === undefined ? DEFAULT_BACKOFF_MS : (parseDuration(r.backoff) ?? DEFAULT_BACKOFF_MS),
  };
}

interface RawRule {
  filters?: FilterSpec[] | undefined;
  backendRefs?:
    | {
        name: string;
        namespace?: string | undefined;
        kind?: string | undefined;
        group?: string | undefined;
        port?: number | undefined;
        weight?: number | undefined;
        filters?: FilterSpec[] | undefined;
      }[]
    | undefined;
  timeouts?: { request?: string | undefined; backendRequest?: string | undefined } | undefined;
  retry?: RetrySpec | undefined;
}

function compileAction(
  kind: string,
  meta: ObjectMeta,
  rule: RawRule,
  base: string,
  inputs: RouteTableInputs,
  fail: Fail,
): RouteAction {
  const action: RouteAction = {
    name: `${kind} ${meta.namespace}/${meta.name} rule ${base.match(/\[(\d+)\]/)?.[1] ?? '0'}`,
    backends: [],
    totalWeight: 0,
    invalidBackends: false,
    requestHeaders: undefined,
    responseHeaders: undefined,
    redirect: undefined,
    rewrite: undefined,
    mirrors: [],
    requestTimeoutMs: undefined,
    backendRequestTimeoutMs: undefined,
    retry: undefined,
  };
  const mirrors: Mirror[] = [];
  const serviceKey = (
    ref: {
      name: string;
      namespace?: string | undefined;
      kind?: string | undefined;
      group?: string | undefined;
    },
    field: string,
  ): string => {
    if ((ref.kind ?? 'Service') !== 'Service' || !['', 'core', undefined].includes(ref.group)) {
      fail(`${field}.kind`, `backendRef kind ${ref.group ?? ''}/${ref.kind} is not supported (only Service)`);
    }
    return `${ref.namespace ?? meta.namespace}/${ref.name}`;
  };
  (rule.filters ?? []).forEach((f, i) => {
    const field = `${base}.filters[${i}]`;
    switch (f.type) {
      case 'RequestHeaderModifier':
        action.requestHeaders = compileHeaderModifier(f.requestHeaderModifier);
        break;
      case 'ResponseHeaderModifier':
        action.responseHeaders = compileHeaderModifier(f.responseHeaderModifier);
        break;
      case 'RequestRedirect': {
        const r = f.requestRedirect;
        action.redirect = {
          scheme: r.scheme,
          hostname: r.hostname,
          port: r.port,
          path: compilePathModifier(r.path),
          statusCode: r.statusCode ?? 302,
        };
        break;
      }
      case 'URLRewrite':
        action.rewrite = { hostname: f.urlRewrite.hostname, path: compilePathModifier(f.urlRewrite.path) };
        break;
      case 'RequestMirror': {
        const m = f.requestMirror;
        const percent =
          m.percent ?? (m.fraction ? (100 * m.fraction.numerator) / (m.fraction.denominator ?? 100) : 100);
        mirrors.push({
          service: serviceKey(m.backendRef, `${field}.requestMirror.backendRef`),
          port: m.backendRef.port,
          percent,
        });
        break;
      }
    }
  });
  if (action.redirect && action.rewrite)
    fail(`${base}.filters`, 'RequestRedirect and URLRewrite cannot be used together');
  action.mirrors = mirrors;
  const backends: BackendRef[] = [];
  (rule.backendRefs ?? []).forEach((b, i) => {
    const field = `${base}.backendRefs[${i}]`;
    const key = serviceKey(b, field);
    const weight = b.weight ?? 1;
    if (!inputs.services.has(key)) action.invalidBackends = true;
    if (weight === 0) return;
    let requestHeaders: HeaderModifier | undefined;
    let responseHeaders: HeaderModifier | undefined;
    for (const f of b.filters ?? []) {
      if (f.type === 'RequestHeaderModifier') requestHeaders = compileHeaderModifier(f.requestHeaderModifier);
      else if (f.type === 'ResponseHeaderModifier')
        responseHeaders = compileHeaderModifier(f.responseHeaderModifier);
      else
        fail(`${field}.filters`, `filter ${f.type} is not supported on a backendRef (only header modifiers)`);
    }
    backends.push({ service: key, port: b.port, weight, requestHeaders, responseHeaders });
  });
  action.backends = backends;
  action.totalWeight = backends.reduce((s, b) => s + b.weight, 0);
  if (rule.timeouts !== undefined) {
    const req = rule.timeouts.request === undefined ? undefined : parseDuration(rule.timeouts.request);
    const be =
      rule.timeouts.backendRequest === undefined ? undefined : parseDuration(rule.timeouts.backendRequest);
    // "0s" disables the timeout.
    action.requestTimeoutMs = req === 0 ? undefined : req;
    action.backendRequestTimeoutMs = be === 0 ? undefined : be;
    if (
      action.requestTimeoutMs !== undefined &&
      action.backendRequestTimeoutMs !== undefined &&
      action.backendRequestTimeoutMs > action.requestTimeoutMs
    ) {
      fail(`${base}.timeouts.backendRequest`, 'must not be longer than timeouts.request');
    }
  }
  if (rule.retry !== undefined) action.retry = compileRetry(rule.retry);
  return action;
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
