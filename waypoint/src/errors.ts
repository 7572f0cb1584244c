// Errors of the waypoint. Configuration problems name the object (kind namespace/name) and the field
// so an operator can fix the YAML line; data-path failures carry the Istio response flag that the
// metrics and the access log report (one place maps failures to flags: `FLAG_FOR`).

export type WaypointConfigErrorCode =
  /** An object failed validation and was skipped; the rest of the configuration stays in force. */
  | 'INVALID_OBJECT'
  /** A reference (parentRef, backendRef, targetRef) names something the waypoint does not serve. */
  | 'UNRESOLVED_REF';

export class WaypointConfigError extends Error {
  readonly code: WaypointConfigErrorCode;
  readonly kind: string;
  readonly namespace: string;
  readonly objectName: string;
  /** Dotted field path inside the object, e.g. `spec.rules[0].matches[1].path.value`. */
  readonly field: string;

  constructor(
    code: WaypointConfigErrorCode,
    kind: string,
    namespace: string,
    name: string,
    field: string,
    detail: string,
  ) {
    super(`${kind} ${namespace}/${name}:${field === '' ? '' : ` field ${field}:`} ${detail}`);
    this.name = 'WaypointConfigError';
    this.code = code;
    this.kind = kind;
    this.namespace = namespace;
    this.objectName = name;
    this.field = field;
  }
}

/**
 * Why a request did not get an upstream answer. Each code maps to an Istio/Envoy response flag and
 * a status code in `FAILURES`; the proxy never invents flags elsewhere.
 */
export type ProxyFailureCode =
  | 'OVERFLOW' // circuit breaker: too many pending/active requests
  | 'CONNECT_FAILED' // upstream connect failed
  | 'UPSTREAM_RESET' // upstream closed or reset before answering
  | 'NO_HEALTHY_UPSTREAM' // no endpoints, or every endpoint ejected
  | 'TIMEOUT' // timeouts.request or timeouts.backendRequest expired
  | 'NO_ROUTE' // the authority names no service this waypoint serves
  | 'NO_CLUSTER' // a backendRef names an unknown service
  | 'DOWNSTREAM_CLOSED'; // the client went away before the answer

export const FAILURES: Readonly<Record<ProxyFailureCode, { status: number; flag: string; body: string }>> = {
  OVERFLOW: {
    status: 503,
    flag: 'UO',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: overflow',
  },
  CONNECT_FAILED: {
    status: 503,
    flag: 'UF',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
  },
  UPSTREAM_RESET: {
    status: 503,
    flag: 'UC',
    body: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
  },
  NO_HEALTHY_UPSTREAM: { status: 503, flag: 'UH', body: 'no healthy upstream' },
  TIMEOUT: { status: 504, flag: 'UT', body: 'upstream request timeout' },
  NO_ROUTE: { status: 404, flag: 'NR', body: 'no service at this address is served by this waypoint' },
  NO_CLUSTER: { status: 500, flag: 'NC', body: 'route backend names an unknown service' },
  DOWNSTREAM_CLOSED: { status: 0, flag: 'DC', body: '' },
};

export class ProxyFailure extends Error {
  readonly code: ProxyFailureCode;
  constructor(code: ProxyFailureCode, detail?: string) {
    super(detail ?? FAILURES[code].body);
    this.name = 'ProxyFailure';
    this.code = code;
  }
}
