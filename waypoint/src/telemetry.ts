// Request metrics with Istio's names and labels (reporter="waypoint"), so Istio dashboards and Kiali
// read the waypoint unchanged. A request records into series found by a short key of what decides
// its labels: the labels are built and hashed once per distinct key, not per request.
import {
  type ConnectionMeta,
  type CounterSeries,
  type DryRunLabelName,
  dryRunCounter,
  type HistogramSeries,
  SeriesCounter,
  SeriesHistogram,
  TCP_LABEL_NAMES,
  tcpLabels,
} from '@hypha/shared/telemetry';
import { Counter, type Registry } from 'prom-client';

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
export function httpLabels(
  meta: Omit<ConnectionMeta, 'reporter'>,
  o: RequestOutcome,
  reporter: HttpReporter = 'waypoint',
): HttpLabels {
  const base = tcpLabels({ ...meta, reporter: 'destination' }, o.responseFlags);
  return {
    ...base,
    reporter,
    request_protocol: o.protocol,
    response_code: String(o.responseCode),
    grpc_response_status: o.grpcStatus ?? '',
  };
}

export interface RequestSeries {
  readonly requests: CounterSeries<HttpLabelName>;
  readonly duration: HistogramSeries<HttpLabelName>;
  readonly requestBytes: HistogramSeries<HttpLabelName>;
  readonly responseBytes: HistogramSeries<HttpLabelName>;
}

/** Bounds the shortcut cache when addresses churn; the series themselves stay. */
const MAX_SHORTCUTS = 10_000;

/** Who records a request: a waypoint, or an ingress gateway (same engine, `hypha gateway`). */
export type HttpReporter = 'waypoint' | 'gateway';

export class RequestMetrics {
  readonly #requests: SeriesCounter<HttpLabelName>;
  readonly #duration: SeriesHistogram<HttpLabelName>;
  readonly #requestBytes: SeriesHistogram<HttpLabelName>;
  readonly #responseBytes: SeriesHistogram<HttpLabelName>;
  readonly #audit: Counter<'policy'>;
  readonly #dryRun: Counter<DryRunLabelName>;
  /** Caller's short key (addresses, codes) → the four series; cleared when the config changes. */
  readonly #shortcuts = new Map<string, RequestSeries>();

  readonly #reporter: HttpReporter;

  constructor(registry: Registry, reporter: HttpReporter = 'waypoint') {
    this.#reporter = reporter;
    const registers = [registry];
    this.#requests = new SeriesCounter({
      name: 'istio_requests_total',
      help: 'Requests handled by the waypoint',
      labelNames: HTTP_LABEL_NAMES,
      registers,
    });
    this.#duration = new SeriesHistogram({
      name: 'istio_request_duration_milliseconds',
      help: 'Request duration in milliseconds',
      labelNames: HTTP_LABEL_NAMES,
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#requestBytes = new SeriesHistogram({
      name: 'istio_request_bytes',
      help: 'Request body sizes in bytes',
      labelNames: HTTP_LABEL_NAMES,
      buckets: BYTES_BUCKETS,
      registers,
    });
    this.#responseBytes = new SeriesHistogram({
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
    // Shared with the agents (layer L4): one definition, so Prometheus sees one HELP.
    this.#dryRun = dryRunCounter(registry);
  }

  /** Records one request, building its labels from scratch (no shortcut). */
  recordRequest(meta: Omit<ConnectionMeta, 'reporter'>, o: RequestOutcome): void {
    this.#observe(this.#seriesFor(httpLabels(meta, o, this.#reporter)), o);
  }

  /**
   * Records one request under a caller's short key that determines every label (source and
   * destination addresses and identities, protocol, code, flags): labels are built only the first
   * time a key is seen. `invalidate()` when what the key's parts mean may have changed.
   */
  recordKeyed(key: string, meta: () => Omit<ConnectionMeta, 'reporter'>, o: RequestOutcome): void {
    let s = this.#shortcuts.get(key);
    if (s === undefined) {
      if (this.#shortcuts.size >= MAX_SHORTCUTS) this.#shortcuts.clear();
      s = this.#seriesFor(httpLabels(meta(), o, this.#reporter));
      this.#shortcuts.set(key, s);
    }
    this.#observe(s, o);
  }

  invalidate(): void {
    this.#shortcuts.clear();
  }

  #seriesFor(labels: HttpLabels): RequestSeries {
    return {
      requests: this.#requests.series(labels),
      duration: this.#duration.series(labels),
      requestBytes: this.#requestBytes.series(labels),
      responseBytes: this.#responseBytes.series(labels),
    };
  }

  #observe(s: RequestSeries, o: RequestOutcome): void {
    s.requests.value += 1;
    s.duration.observe(o.durationMs);
    s.requestBytes.observe(o.requestBytes);
    s.responseBytes.observe(o.responseBytes);
  }

  recordAudit(policy: string): void {
    this.#audit.labels(policy).inc();
  }

  /** A dry-run policy would have denied (or allowed) this request; the enforced decision stands. */
  recordDryRun(policy: string, would: 'allow' | 'deny'): void {
    this.#dryRun.labels(policy, would, 'L7').inc();
  }
}
