// The request pipeline, in its documented order (docs/waypoint.md "Request pipeline"):
//
//   route → authn (JWT) → authz → rate-limit → fault → rewrite (redirect, split, rewrites, headers) → mirror
//     → retry (route timeout, retries) → breaker (slot, outlier detection) → balance → upstream
//
// Each filter is a module of its own with a small `run(rc, next)`; `buildPipeline` composes them
// once. The upstream step is HTTP/1.1 (undici) or HTTP/2 (gRPC, h2 services), by the backend port.
import type { Logger } from '@hypha/shared';
import { Registry } from 'prom-client';
import { JwksCache } from '../authn/jwks.js';
import type { RequestMetrics } from '../telemetry.js';
import type { Cluster } from '../traffic/cluster.js';
import type { UpstreamPools } from '../upstream.js';
import { authnFilter } from './authn.js';
import { authzFilter } from './authz.js';
import { balanceFilter } from './balance.js';
import { breakerFilter } from './breaker.js';
import { compose, type Filter, type Next } from './context.js';
import { faultFilter } from './fault.js';
import { mirrorFilter } from './mirror.js';
import { rateLimitFilter } from './rate-limit.js';
import { RateLimits } from './rate-limit-buckets.js';
import { retryFilter } from './retry.js';
import { rewriteFilter } from './rewrite.js';
import { routeFilter } from './route.js';
import { http1Try } from './upstream-http1.js';
import { http2Try } from './upstream-http2.js';

export interface PipelineDeps {
  clusters: ReadonlyMap<string, Cluster>;
  pools: UpstreamPools;
  metrics: RequestMetrics;
  log: Logger;
  maxBufferedBodyBytes: number;
  /** The proxy's rate limit buckets (they outlive the pipeline's snapshots); default: buckets of its own. */
  rateLimits?: RateLimits;
  /** The proxy's remote JWKS cache (it outlives snapshots); default: a cache of its own. */
  jwks?: JwksCache;
  /** Wall clock (ms) for token exp/nbf; default Date.now. */
  jwtClock?: () => number;
}

export function pipelineFilters(deps: PipelineDeps): Filter[] {
  return [
    routeFilter,
    authnFilter({ jwks: deps.jwks ?? new JwksCache(), ...(deps.jwtClock ? { now: deps.jwtClock } : {}) }),
    authzFilter(deps),
    rateLimitFilter({ rateLimits: deps.rateLimits ?? new RateLimits({ registry: new Registry() }) }),
    faultFilter,
    rewriteFilter(deps.clusters),
    mirrorFilter(deps),
    retryFilter(deps),
    breakerFilter,
    balanceFilter,
  ];
}

export function buildPipeline(deps: PipelineDeps): Next {
  const pools = deps.pools;
  return compose(pipelineFilters(deps), (rc) => (rc.h2Upstream ? http2Try(rc, pools) : http1Try(rc, pools)));
}
