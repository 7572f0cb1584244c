// Request metrics with Istio's names and labels (reporter="waypoint"), so Istio dashboards and Kiali
// read the waypoint unchanged. Labels are built once per request (at its end) and each metric's
// child is looked up once with them.
import { type ConnectionMeta, TCP_LABEL_NAMES, tcpLabels } from '@hypha/shared/telemetry';
import { Counter, Histogram, type Registry } from 'prom-client';

export const HTTP_LABEL_NAMES = [...TCP_LABEL_NAMES, 'response_code', 'grpc_response_status'] as const;
export type HttpLabelName = (typeof HTTP_LABEL_NAMES)[number];
export type HttpLabels = Record<HttpLabelName, string>;

// Istio's default buckets.
const DURATION_BUCKETS = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
  3600000,
];
const BYTES_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000];

export interface RequestOutcome {
  protocol: 'http' | 'grpc';
  responseCode: number;
  grpcStatus: string | undefined;
  responseFlags: string;
  durationMs: number;
  requestBytes: number;
  responseBytes: number;
}

/** Metric labels in Istio's shape: the L4 set plus response code and gRPC status. */
export function httpLabels(meta: Omit<ConnectionMeta, 'reporter'>, o: RequestOutcome): HttpLabels {
  const base = tcpLabels({ ...meta, reporter: 'destination' }, o.responseFlags);
  return {
    ...base,
    reporter: 'waypoint',
    request_protocol: o.protocol,
    response_code: String(o.responseCode),
    grpc_response_status: o.grpcStatus ?? '',
  };
}

interface Children {
  requests: { inc(): void };
  duration: { observe(v: number): void };
  requestBytes: { observe(v: number): void };
  responseBytes: { observe(v: number): void };
}

/** Bounds the child cache when label values churn (many workloads); prom-client keeps the series. */
const MAX_CACHED_CHILDREN = 10_000;

export class RequestMetrics {
  readonly #requests: Counter<HttpLabelName>;
  readonly #duration: Histogram<HttpLabelName>;
  readonly #requestBytes: Histogram<HttpLabelName>;
  readonly #responseBytes: Histogram<HttpLabelName>;
  readonly #audit: Counter<'policy'>;
  readonly #children = new Map<string, Children>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.#requests = new Counter({
      name: 'istio_requests_total',
      help: 'Requests handled by the waypoint',
      labelNames: HTTP_LABEL_NAMES,
      registers,
    });
    this.#duration = new Histogram({
      name: 'istio_request_duration_milliseconds',
      help: 'Request duration in milliseconds',
      labelNames: HTTP_LABEL_NAMES,
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#requestBytes = new Histogram({
      name: 'istio_request_bytes',
      help: 'Request body sizes in bytes',
      labelNames: HTTP_LABEL_NAMES,
      buckets: BYTES_BUCKETS,
      registers,
    });
    this.#responseBytes = new Histogram({
      name: 'istio_response_bytes',
      help: 'Response body sizes in bytes',
      labelNames: HTTP_LABEL_NAMES,
      buckets: BYTES_BUCKETS,
      registers,
    });
    this.#audit = new Counter({
      name: 'hypha_waypoint_authz_audit_total',
      help: 'Requests matched by an AUDIT AuthorizationPolicy',
      labelNames: ['policy'],
      registers,
    });
  }

  recordRequest(meta: Omit<ConnectionMeta, 'reporter'>, o: RequestOutcome): void {
    const labels = httpLabels(meta, o);
    // One lookup per request: the children of all four metrics are cached under one key.
    let key = '';
    for (const name of HTTP_LABEL_NAMES) key += `${labels[name]}\u0000`;
    let c = this.#children.get(key);
    if (c === undefined) {
      if (this.#children.size >= MAX_CACHED_CHILDREN) this.#children.clear();
      c = {
        requests: this.#requests.labels(labels),
        duration: this.#duration.labels(labels),
        requestBytes: this.#requestBytes.labels(labels),
        responseBytes: this.#responseBytes.labels(labels),
      };
      this.#children.set(key, c);
    }
    c.requests.inc();
    c.duration.observe(o.durationMs);
    c.requestBytes.observe(o.requestBytes);
    c.responseBytes.observe(o.responseBytes);
  }

  recordAudit(policy: string): void {
    this.#audit.labels(policy).inc();
  }
}
