// One route rule's filters, backendRefs, timeouts and retry → the RouteAction the pipeline runs.
// Independent of which Services exist: whether every backend resolves is decided when the route
// table is built (translate.ts), so a compiled action survives Service changes.
import { parseDuration } from '../duration.js';
import type { ObjectMeta } from '../model.js';
import type { Fail } from './compile-match.js';
import type { FilterSpec, RetrySpec } from './schema.js';
import type { BackendRef, HeaderModifier, Mirror, PathModifier, RetryPolicy, RouteAction } from './types.js';

const DEFAULT_RETRY_CODES = [502, 503, 504];
const DEFAULT_RETRY_ATTEMPTS = 2;
const DEFAULT_BACKOFF_MS = 25;

export interface RawRule {
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

export interface CompiledAction {
  /** `invalidBackends` is false here; the table builder substitutes a copy when one is missing. */
  action: RouteAction;
  /** Every backendRef's Service key, weight 0 included (a missing one makes the rule answer 500). */
  backendServices: readonly string[];
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

/** A route action that does nothing yet: no backends, filters, timeouts or retries. */
export function emptyAction(name: string): RouteAction {
  return {
    name,
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
}

export function compileAction(
  kind: string,
  meta: ObjectMeta,
  rule: RawRule,
  base: string,
  fail: Fail,
): CompiledAction {
  const action = emptyAction(
    `${kind} ${meta.namespace}/${meta.name} rule ${base.match(/\[(\d+)\]/)?.[1] ?? '0'}`,
  );
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
  const backendServices: string[] = [];
  (rule.backendRefs ?? []).forEach((b, i) => {
    const field = `${base}.backendRefs[${i}]`;
    const key = serviceKey(b, field);
    const weight = b.weight ?? 1;
    backendServices.push(key);
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
  return { action, backendServices };
}
