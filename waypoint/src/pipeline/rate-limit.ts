// Filter 3, local rate limiting (the destination service's TrafficPolicy `rateLimits`), after
// authorization has said who may ask and before any fault, rewrite or upstream work is spent on a
// request that will be refused. Every limit that applies to the request (its route rule is listed,
// or the limit lists none) must have a token in the bucket of the request's key; only then is one
// token taken from each. Otherwise: a local 429 `local_rate_limited` with flag RL and
// `retry-after` / `x-ratelimit-*` headers from the limit that waits longest (Envoy's local rate
// limit filter answers the same way). A gRPC call gets RESOURCE_EXHAUSTED in a trailers-only 200.
//
// The buckets belong to this waypoint replica: N replicas admit up to N times the configured rate.
import type { RouteAction } from '../routing/types.js';
import type { RateLimitSpec } from '../traffic/policy.js';
import type { Filter, Outcome, RequestContext } from './context.js';
import type { BucketGroup, RateLimits, TokenBucket } from './rate-limit-buckets.js';

/** The key value a request is counted under; requests without one share the '' bucket. */
function keyOf(rc: RequestContext, spec: RateLimitSpec): string {
  const key = spec.key;
  switch (key.type) {
    case 'none':
      return '';
    case 'sourcePrincipal':
      return rc.stream.peer?.principal ?? '';
    case 'sourceIp':
      return rc.stream.source.ip;
    case 'header': {
      const v = rc.headers[key.name];
      return v === undefined ? '' : typeof v === 'string' ? v : v.join(',');
    }
  }
}

/** Route rules are matched once per (compiled limit, compiled action) pair. */
const routeMatches = new WeakMap<RateLimitSpec, WeakMap<RouteAction, boolean>>();

function appliesTo(spec: RateLimitSpec, action: RouteAction | undefined): boolean {
  const routes = spec.routes;
  if (routes === undefined) return true;
  if (action === undefined) return false;
  let seen = routeMatches.get(spec);
  if (seen === undefined) {
    seen = new WeakMap();
    routeMatches.set(spec, seen);
  }
  let hit = seen.get(action);
  if (hit === undefined) {
    hit = routes.exact.has(action.name) || routes.prefixes.some((p) => action.name.startsWith(p));
    seen.set(action, hit);
  }
  return hit;
}

/** Response headers for a limited request, from the limit whose bucket waits longest. */
function limitedAnswer(rc: RequestContext, group: BucketGroup, bucket: TokenBucket): Outcome {
  const spec = group.spec;
  const waitS = String(Math.max(1, Math.ceil(bucket.msToNextToken(spec) / 1000)));
  const headers: Record<string, string> = {
    'retry-after': waitS,
    'x-ratelimit-limit': String(spec.burst),
    'x-ratelimit-remaining': String(bucket.remaining(spec)),
    'x-ratelimit-reset': waitS,
  };
  if (rc.grpc) {
    rc.grpcStatus = '8';
    return {
      kind: 'local',
      status: 200,
      body: '',
      flag: 'RL',
      headers: {
        ...headers,
        'content-type': 'application/grpc',
        'grpc-status': '8',
        'grpc-message': 'local_rate_limited',
      },
    };
  }
  return { kind: 'local', status: 429, body: 'local_rate_limited', flag: 'RL', headers };
}

export function rateLimitFilter(deps: { rateLimits: RateLimits }): Filter {
  const store = deps.rateLimits;
  return {
    name: 'rate-limit',
    run(rc, next) {
      const limits = rc.snap.traffic.get(rc.service!.key)?.rateLimits;
      if (limits === undefined || limits.length === 0) return next(rc);
      const now = store.now();
      // The common case, one limit, without arrays.
      if (limits.length === 1) {
        const spec = limits[0]!;
        if (!appliesTo(spec, rc.action)) return next(rc);
        const group = store.findGroup(spec);
        const bucket = group.find(keyOf(rc, spec), now);
        if (!bucket.refill(group.spec, now)) {
          group.limited.value++;
          return limitedAnswer(rc, group, bucket);
        }
        bucket.take(group.spec);
        group.allowed.value++;
        return next(rc);
      }
      return checkAll(rc, next, limits, store, now);
    },
  };
}

function checkAll(
  rc: RequestContext,
  next: (rc: RequestContext) => Outcome | Promise<Outcome>,
  limits: readonly RateLimitSpec[],
  store: RateLimits,
  now: number,
): Outcome | Promise<Outcome> {
  const groups: BucketGroup[] = [];
  const buckets: TokenBucket[] = [];
  let worst: number | undefined;
  for (const spec of limits) {
    if (!appliesTo(spec, rc.action)) continue;
    const group = store.findGroup(spec);
    const bucket = group.find(keyOf(rc, spec), now);
    if (!bucket.refill(group.spec, now)) {
      group.limited.value++;
      if (
        worst === undefined ||
        bucket.msToNextToken(spec) > buckets[worst]!.msToNextToken(groups[worst]!.spec)
      )
        worst = groups.length;
    }
    groups.push(group);
    buckets.push(bucket);
  }
  if (worst !== undefined) return limitedAnswer(rc, groups[worst]!, buckets[worst]!);
  for (let i = 0; i < groups.length; i++) {
    buckets[i]!.take(groups[i]!.spec);
    groups[i]!.allowed.value++;
  }
  return next(rc);
}
