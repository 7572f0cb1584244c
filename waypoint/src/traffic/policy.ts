// TrafficPolicy (traffic.hypha.dev/v1alpha1), Hypha's per-Service resilience settings. The field
// names follow Istio's DestinationRule/VirtualService so operators recognise them:
//
//   spec:
//     targetRefs: [{ kind: Service, name: reviews }]
//     loadBalancer: { simple: ROUND_ROBIN | LEAST_REQUEST | RANDOM }   # or
//     loadBalancer: { consistentHash: { httpHeaderName: x-user } }
//     connectionPool: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 100 }
//     outlierDetection: { consecutive5xxErrors: 5, baseEjectionTime: 30s, maxEjectionPercent: 10 }
//     fault: { delay: { fixedDelay: 2s, percentage: 10 }, abort: { httpStatus: 503, percentage: 5 } }
//     retry: { attempts: 2, codes: [503], backoff: 25ms }     # default for routes without retry, or
//     retries: { attempts: 3, perTryTimeout: 2s, retryOn: [5xx, unavailable] }   # Istio's spelling
//     rateLimits:                                            # local token buckets, per waypoint replica
//       - { name: per-caller, requests: 10, interval: 1s, burst: 5, key: sourcePrincipal,
//           routes: [{ name: reviews, rule: 0 }] }
//     tls:                                    # upstream TLS origination (egress to a ServiceEntry)
//       mode: SIMPLE | MUTUAL | DISABLE       # Istio's ClientTLSSettings; MUTUAL adds a client cert
//       sni: api.external.test                # default: the ServiceEntry's host
//       caCertificates: /etc/hypha/ca.pem     # a PEM bundle file the server must chain to, and/or
//       caCertificatesPem: "-----BEGIN..."    # the bundle inline
//       credentialName: api-client            # MUTUAL: a kubernetes.io/tls Secret in the namespace
//       subjectAltNames: [api.external.test]  # names the certificate must carry (default: the SNI)
import { z } from 'zod';
import { parseDuration } from '../duration.js';
import { WaypointConfigError } from '../errors.js';
import { parseWith, readObjectMeta } from '../model.js';
import { compileRetry } from '../routing/compile-action.js';
import { durationString, retrySchema } from '../routing/schema.js';
import type { RetryPolicy } from '../routing/types.js';

/** Istio's `retryOn` conditions this waypoint implements (the CRD's enum). */
const RETRY_ON = [
  '5xx',
  'gateway-error',
  'reset',
  'connect-failure',
  'retriable-4xx',
  'refused-stream',
  'retriable-status-codes',
  'cancelled',
  'deadline-exceeded',
  'unavailable',
  'resource-exhausted',
] as const;
type RetryOn = (typeof RETRY_ON)[number];

/** Istio's default when `retryOn` is left out. */
const DEFAULT_RETRY_ON: readonly RetryOn[] = [
  'connect-failure',
  'refused-stream',
  'unavailable',
  'cancelled',
];

const HTTP_CODES_FOR: Partial<Record<RetryOn, readonly number[]>> = {
  '5xx': Array.from({ length: 100 }, (_, i) => 500 + i),
  'gateway-error': [502, 503, 504],
  'retriable-4xx': [409],
};
const GRPC_CODES_FOR: Partial<Record<RetryOn, number>> = {
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  unavailable: 14,
};

/**
 * Istio's `retries` in this waypoint's terms. Connection failures, refused streams and resets before
 * a response are always retried (within `attempts`), so `reset`, `connect-failure` and
 * `refused-stream` add nothing; `retriable-status-codes` has no code list to draw from here (use
 * the HTTPRoute-style `retry.codes`).
 */
function compileIstioRetries(r: {
  attempts: number;
  perTryTimeout?: string | undefined;
  retryOn?: RetryOn[] | undefined;
}): RetryPolicy {
  const on = r.retryOn ?? DEFAULT_RETRY_ON;
  const codes = new Set<number>();
  const grpcCodes = new Set<number>();
  for (const cond of on) {
    for (const c of HTTP_CODES_FOR[cond] ?? []) codes.add(c);
    const g = GRPC_CODES_FOR[cond];
    if (g !== undefined) grpcCodes.add(g);
  }
  const policy: RetryPolicy = { attempts: r.attempts, codes, grpcCodes, backoffMs: 25 };
  const perTry = r.perTryTimeout === undefined ? undefined : parseDuration(r.perTryTimeout);
  if (perTry !== undefined) policy.perTryTimeoutMs = perTry;
  return policy;
}

const percentage = z.number().min(0).max(100);
const count = z.number().int().min(1).max(1_000_000);
const ref = z.object({
  group: z.string().optional(),
  kind: z.enum(['Service', 'ServiceEntry']),
  name: z.string().min(1),
  namespace: z.string().optional(),
});

/** What a rate limit counts separately: one bucket per distinct value (`none`: one bucket). */
const RATE_LIMIT_KEY = /^(none|sourcePrincipal|sourceIp|header:[A-Za-z0-9!#$%&'*+\-.^_`|~]+)$/;

const rateLimitSchema = z.object({
  name: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS label such as "per-caller"')
    .max(63)
    .optional(),
  requests: count,
  interval: durationString.optional(),
  burst: count.optional(),
  key: z
    .string()
    .max(263)
    .regex(RATE_LIMIT_KEY, 'must be none, sourcePrincipal, sourceIp or header:<name>')
    .optional(),
  routes: z
    .array(
      z.object({
        kind: z.enum(['HTTPRoute', 'GRPCRoute']).optional(),
        name: z.string().min(1).max(253),
        rule: z.number().int().min(0).max(63).optional(),
      }),
    )
    .min(1)
    .max(16)
    .optional(),
});

const dnsName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a lower-case DNS name such as "api.external.test"');

/** Upstream TLS origination (Istio's DestinationRule `trafficPolicy.tls`, ClientTLSSettings). */
export const upstreamTlsSchema = z
  .object({
    mode: z.enum(['DISABLE', 'SIMPLE', 'MUTUAL']),
    sni: dnsName.optional(),
    caCertificates: z.string().min(1).max(4096).optional(),
    caCertificatesPem: z
      .string()
      .min(1)
      .max(1 << 20)
      .optional(),
    credentialName: z
      .string()
      .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must name a Secret')
      .max(253)
      .optional(),
    subjectAltNames: z.array(dnsName).min(1).max(16).optional(),
  })
  .refine(
    (t) => t.mode === 'DISABLE' || t.caCertificates !== undefined || t.caCertificatesPem !== undefined,
    'SIMPLE and MUTUAL need caCertificates (a file) or caCertificatesPem: the server is always verified',
  )
  .refine(
    (t) => (t.mode === 'MUTUAL') === (t.credentialName !== undefined),
    'credentialName (a kubernetes.io/tls Secret with the client certificate) is set with mode MUTUAL, and only then',
  );

export type UpstreamTlsSpec = z.infer<typeof upstreamTlsSchema>;

const specSchema = z.object({
  targetRefs: z.array(ref).optional(),
  targetRef: ref.optional(),
  loadBalancer: z
    .object({
      simple: z.enum(['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM']).optional(),
      consistentHash: z.object({ httpHeaderName: z.string().min(1) }).optional(),
    })
    .refine((lb) => !(lb.simple && lb.consistentHash), 'set either simple or consistentHash, not both')
    .optional(),
  connectionPool: z
    .object({
      maxConnections: count.optional(),
      maxPendingRequests: z.number().int().min(0).optional(),
      maxRequests: count.optional(),
    })
    .optional(),
  outlierDetection: z
    .object({
      consecutive5xxErrors: count.optional(),
      baseEjectionTime: durationString.optional(),
      maxEjectionTime: durationString.optional(),
      maxEjectionPercent: percentage.optional(),
    })
    .optional(),
  fault: z
    .object({
      delay: z.object({ fixedDelay: durationString, percentage: percentage.optional() }).optional(),
      abort: z
        .object({
          httpStatus: z.number().int().min(200).max(599).optional(),
          grpcStatus: z.number().int().min(1).max(16).optional(),
          percentage: percentage.optional(),
        })
        .refine(
          (a) => a.httpStatus !== undefined || a.grpcStatus !== undefined,
          'one of httpStatus or grpcStatus is required',
        )
        .optional(),
    })
    .optional(),
  retry: retrySchema.optional(),
  retries: z
    .object({
      attempts: z.number().int().min(0).max(10),
      perTryTimeout: durationString.optional(),
      retryOn: z.array(z.enum(RETRY_ON)).max(16).optional(),
    })
    .optional(),
  rateLimits: z.array(rateLimitSchema).min(1).max(8).optional(),
  tls: upstreamTlsSchema.optional(),
});

export type RateLimitKey =
  | { readonly type: 'none' }
  | { readonly type: 'sourcePrincipal' }
  | { readonly type: 'sourceIp' }
  /** Lowercase header name. */
  | { readonly type: 'header'; readonly name: string };

/**
 * One compiled `rateLimits` entry: a token bucket per key value holding up to `burst` requests,
 * refilled at `requests` per `intervalMs`. Buckets live outside the snapshot (pipeline/rate-limit-
 * buckets.ts), found by `id`; `signature` says whether a recompiled limit may keep them.
 */
export interface RateLimitSpec {
  /** `namespace/name` of the TrafficPolicy. */
  readonly policy: string;
  /** The entry's `name`, else its index in `rateLimits`. */
  readonly name: string;
  /** `policy#name`: the same limit across config updates. */
  readonly id: string;
  readonly requests: number;
  readonly intervalMs: number;
  readonly burst: number;
  readonly key: RateLimitKey;
  /** The route rules it applies to (RouteAction names, exact or `... rule ` prefixes); undefined: all. */
  readonly routes: { readonly exact: ReadonlySet<string>; readonly prefixes: readonly string[] } | undefined;
  /** requests, interval, burst and key: buckets survive a config update only while it is unchanged. */
  readonly signature: string;
}

export type LoadBalancerType = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM' | 'CONSISTENT_HASH';

export interface TrafficSettings {
  /** `namespace/name` of the TrafficPolicy, or '' for the defaults. */
  policy: string;
  loadBalancer: LoadBalancerType;
  /** Lowercase header name for CONSISTENT_HASH. */
  hashHeader: string | undefined;
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  outlier:
    | { consecutive5xx: number; baseEjectionMs: number; maxEjectionMs: number; maxEjectionPercent: number }
    | undefined;
  fault: {
    delay: { ms: number; percent: number } | undefined;
    abort: { httpStatus: number; grpcStatus: number | undefined; percent: number } | undefined;
  };
  retry: RetryPolicy | undefined;
  /** Local rate limits, in `rateLimits` order; empty: none. */
  rateLimits: readonly RateLimitSpec[];
  /** Upstream TLS origination as written (resolved per snapshot: egress/tls.ts); undefined: none. */
  tls?: UpstreamTlsSpec | undefined;
}

/** Without a TrafficPolicy: round robin, no limits, no outlier detection, no faults. */
export const DEFAULT_TRAFFIC: TrafficSettings = {
  policy: '',
  loadBalancer: 'ROUND_ROBIN',
  hashHeader: undefined,
  maxConnections: Number.POSITIVE_INFINITY,
  maxPendingRequests: Number.POSITIVE_INFINITY,
  maxRequests: Number.POSITIVE_INFINITY,
  outlier: undefined,
  fault: { delay: undefined, abort: undefined },
  retry: undefined,
  rateLimits: [],
};

/** Compiles one TrafficPolicy; returns the service keys it targets with its settings. */
export function compileTrafficPolicy(raw: unknown): { services: string[]; settings: TrafficSettings } {
  const { meta, spec: rawSpec } = readObjectMeta('TrafficPolicy', raw);
  const spec = parseWith(specSchema, rawSpec ?? {}, 'TrafficPolicy', meta, 'spec');
  const refs = spec.targetRefs ?? (spec.targetRef ? [spec.targetRef] : []);
  if (refs.length === 0) {
    throw new WaypointConfigError(
      'INVALID_OBJECT',
      'TrafficPolicy',
      meta.namespace,
      meta.name,
      'spec.targetRefs',
      'at least one Service or ServiceEntry targetRef is required',
    );
  }
  if (spec.retry !== undefined && spec.retries !== undefined) {
    throw new WaypointConfigError(
      'INVALID_OBJECT',
      'TrafficPolicy',
      meta.namespace,
      meta.name,
      'spec.retries',
      'retry and retries are two spellings of the default retry policy: set one',
    );
  }
  const cp = spec.connectionPool ?? {};
  const od = spec.outlierDetection;
  const settings: TrafficSettings = {
    policy: `${meta.namespace}/${meta.name}`,
    loadBalancer: spec.loadBalancer?.consistentHash
      ? 'CONSISTENT_HASH'
      : (spec.loadBalancer?.simple ?? 'ROUND_ROBIN'),
    hashHeader: spec.loadBalancer?.consistentHash?.httpHeaderName.toLowerCase(),
    maxConnections: cp.maxConnections ?? Number.POSITIVE_INFINITY,
    maxPendingRequests: cp.maxPendingRequests ?? Number.POSITIVE_INFINITY,
    maxRequests: cp.maxRequests ?? Number.POSITIVE_INFINITY,
    outlier:
      od === undefined
        ? undefined
        : {
            consecutive5xx: od.consecutive5xxErrors ?? 5,
            baseEjectionMs: parseDuration(od.baseEjectionTime ?? '30s') ?? 30_000,
            maxEjectionMs: parseDuration(od.maxEjectionTime ?? '300s') ?? 300_000,
            maxEjectionPercent: od.maxEjectionPercent ?? 10,
          },
    fault: {
      delay: spec.fault?.delay
        ? { ms: parseDuration(spec.fault.delay.fixedDelay) ?? 0, percent: spec.fault.delay.percentage ?? 100 }
        : undefined,
      abort: spec.fault?.abort
        ? {
            httpStatus: spec.fault.abort.httpStatus ?? 200,
            grpcStatus: spec.fault.abort.grpcStatus,
            percent: spec.fault.abort.percentage ?? 100,
          }
        : undefined,
    },
    retry: spec.retry
      ? compileRetry(spec.retry)
      : spec.retries
        ? compileIstioRetries(spec.retries)
        : undefined,
    rateLimits: compileRateLimits(meta, spec.rateLimits ?? []),
    ...(spec.tls !== undefined && spec.tls.mode !== 'DISABLE' ? { tls: spec.tls } : {}),
  };
  refs.forEach((r, i) => {
    if ((r.namespace ?? meta.namespace) !== meta.namespace) {
      throw new WaypointConfigError(
        'INVALID_OBJECT',
        'TrafficPolicy',
        meta.namespace,
        meta.name,
        `spec.targetRefs[${i}].namespace`,
        "must be the policy's own namespace",
      );
    }
  });
  return { services: refs.map((r) => `${meta.namespace}/${r.name}`), settings };
}

function compileRateLimits(
  meta: { namespace: string; name: string },
  limits: readonly z.infer<typeof rateLimitSchema>[],
): RateLimitSpec[] {
  const policy = `${meta.namespace}/${meta.name}`;
  const seen = new Set<string>();
  return limits.map((l, i) => {
    const name = l.name ?? String(i);
    const bad = (field: string, detail: string) =>
      new WaypointConfigError(
        'INVALID_OBJECT',
        'TrafficPolicy',
        meta.namespace,
        meta.name,
        `spec.rateLimits[${i}]${field}`,
        detail,
      );
    if (seen.has(name)) throw bad('.name', `"${name}" names two rate limits`);
    seen.add(name);
    const intervalMs = parseDuration(l.interval ?? '1s') ?? 0;
    if (intervalMs <= 0) throw bad('.interval', 'must be longer than 0');
    const keyText = l.key ?? 'none';
    const key: RateLimitKey = keyText.startsWith('header:')
      ? { type: 'header', name: keyText.slice('header:'.length).toLowerCase() }
      : { type: keyText as 'none' | 'sourcePrincipal' | 'sourceIp' };
    const burst = l.burst ?? l.requests;
    let routes: RateLimitSpec['routes'];
    if (l.routes !== undefined) {
      const exact = new Set<string>();
      const prefixes: string[] = [];
      for (const r of l.routes) {
        for (const kind of r.kind === undefined ? ['HTTPRoute', 'GRPCRoute'] : [r.kind]) {
          // RouteAction names read `HTTPRoute ns/name rule N` (routing/compile-action.ts).
          const base = `${kind} ${meta.namespace}/${r.name} rule `;
          if (r.rule === undefined) prefixes.push(base);
          else exact.add(`${base}${r.rule}`);
        }
      }
      routes = { exact, prefixes };
    }
    return {
      policy,
      name,
      id: `${policy}#${name}`,
      requests: l.requests,
      intervalMs,
      burst,
      key,
      routes,
      signature: `${l.requests}/${intervalMs}/${burst}/${keyText}`,
    };
  });
}
