// L4 connection metrics with Istio's standard names and labels, so existing Grafana and Kiali
// dashboards read Hypha without changes.
//
// Invariants:
// - Label children are looked up once per connection (at open and at close), never per read/write.
// - Byte counters advance while a connection runs: every scrape first folds in the bytes that live
//   connections moved since the last scrape (`collect`), so a 10-minute transfer shows up
//   on every scrape, not only when it ends. The copy loop only bumps two plain numbers.
import { Counter, type Registry } from 'prom-client';

export const TCP_LABEL_NAMES = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_canonical_service',
  'source_canonical_revision',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_app',
  'destination_version',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_cluster',
  'request_protocol',
  'connection_security_policy',
  'response_flags',
] as const;

export type TcpLabelName = (typeof TCP_LABEL_NAMES)[number];
export type TcpLabels = Record<TcpLabelName, string>;

/** The side of the connection a party stands on, as Istio's labels describe it. */
export interface PeerLabels {
  workload?: string | undefined;
  namespace?: string | undefined;
  /** SPIFFE ID (with scheme), as Istio reports it. */
  principal?: string | undefined;
  app?: string | undefined;
  version?: string | undefined;
}

export interface ConnectionMeta {
  reporter: 'source' | 'destination';
  source: PeerLabels;
  destination: PeerLabels & {
    service?: string | undefined;
    serviceName?: string | undefined;
    serviceNamespace?: string | undefined;
  };
  mutualTls: boolean;
  cluster?: string;
}

const UNKNOWN = 'unknown';

export function tcpLabels(meta: ConnectionMeta, responseFlags = '-'): TcpLabels {
  const s = meta.source;
  const d = meta.destination;
  const cluster = meta.cluster ?? 'Kubernetes';
  return {
    reporter: meta.reporter,
    source_workload: s.workload ?? UNKNOWN,
    source_workload_namespace: s.namespace ?? UNKNOWN,
    source_principal: s.principal ?? UNKNOWN,
    source_app: s.app ?? UNKNOWN,
    source_version: s.version ?? UNKNOWN,
    source_canonical_service: s.app ?? s.workload ?? UNKNOWN,
    source_canonical_revision: s.version ?? 'latest',
    source_cluster: cluster,
    destination_workload: d.workload ?? UNKNOWN,
    destination_workload_namespace: d.namespace ?? UNKNOWN,
    destination_principal: d.principal ?? UNKNOWN,
    destination_service: d.service ?? UNKNOWN,
    destination_service_name: d.serviceName ?? UNKNOWN,
    destination_service_namespace: d.serviceNamespace ?? UNKNOWN,
    destination_app: d.app ?? UNKNOWN,
    destination_version: d.version ?? UNKNOWN,
    destination_canonical_service: d.app ?? d.workload ?? UNKNOWN,
    destination_canonical_revision: d.version ?? 'latest',
    destination_cluster: cluster,
    request_protocol: 'tcp',
    connection_security_policy: meta.mutualTls ? 'mutual_tls' : 'unknown',
    response_flags: responseFlags,
  };
}

interface CounterChild {
  inc(value?: number): void;
}

/**
 * Bytes moved by one live connection, named from the client's side like HBONE's ByteCounters:
 * `sent` went client → server (Istio's "received during request"), `received` went server → client
 * (Istio's "sent during response"). The copy loop adds to these two numbers only.
 */
export interface ByteCounts {
  sent: number;
  received: number;
}

/**
 * One connection's metric handle. `bytes` is what the data path updates; everything else happens
 * at open, at scrape, and at close.
 */
export class ConnectionRecorder {
  readonly bytes: ByteCounts;
  readonly meta: ConnectionMeta;
  #sentChild: CounterChild;
  #receivedChild: CounterChild;
  #reportedSent = 0;
  #reportedReceived = 0;
  #metrics: L4Metrics;
  #closed = false;

  /** @internal created by L4Metrics.open */
  constructor(
    metrics: L4Metrics,
    meta: ConnectionMeta,
    sent: CounterChild,
    received: CounterChild,
    bytes: ByteCounts,
  ) {
    this.#metrics = metrics;
    this.meta = meta;
    this.#sentChild = sent;
    this.#receivedChild = received;
    this.bytes = bytes;
  }

  /** Folds bytes moved since the last flush into the counters. */
  flush(): void {
    const sent = this.bytes.sent - this.#reportedSent;
    const received = this.bytes.received - this.#reportedReceived;
    // Istio's sent_bytes are the response (server → client), received_bytes the request.
    if (received > 0) this.#sentChild.inc(received);
    if (sent > 0) this.#receivedChild.inc(sent);
    this.#reportedSent = this.bytes.sent;
    this.#reportedReceived = this.bytes.received;
  }

  /**
   * Ends the connection. `responseFlags` is '-' for a clean close, or a flag such as DENY,
   * CONNECT, TLS_FAILURE; a flagged connection also counts as failed.
   */
  close(responseFlags = '-'): void {
    if (this.#closed) return;
    this.#closed = true;
    this.flush();
    this.#metrics.recordClosed(this, responseFlags);
  }

  get closed(): boolean {
    return this.#closed;
  }
}

export class L4Metrics {
  readonly #opened: Counter<TcpLabelName>;
  readonly #closed: Counter<TcpLabelName>;
  readonly #failed: Counter<TcpLabelName>;
  readonly #sent: Counter<TcpLabelName>;
  readonly #received: Counter<TcpLabelName>;
  readonly #live = new Set<ConnectionRecorder>();

  constructor(registry: Registry) {
    const live = this.#live;
    const make = (name: string, help: string, collect?: () => void) =>
      new Counter<TcpLabelName>({
        name,
        help,
        labelNames: TCP_LABEL_NAMES,
        registers: [registry],
        ...(collect ? { collect } : {}),
      });
    this.#opened = make('istio_tcp_connections_opened_total', 'TCP connections opened');
    this.#closed = make('istio_tcp_connections_closed_total', 'TCP connections closed');
    this.#failed = make(
      'istio_tcp_connections_failed_total',
      'TCP connections that failed (denied, refused, TLS or identity errors)',
    );
    // Scrapes call collect() before reading: fold in the bytes of connections still running.
    const foldLive = () => {
      for (const c of live) c.flush();
    };
    this.#sent = make(
      'istio_tcp_sent_bytes_total',
      // Istio's meaning: the response direction.
      'Bytes sent during response of TCP connections (server to client)',
      foldLive,
    );
    this.#received = make(
      'istio_tcp_received_bytes_total',
      // Istio's meaning: the request direction.
      'Bytes received during request of TCP connections (client to server)',
      foldLive,
    );
  }

  /**
   * Records an opened connection and returns its handle (label children resolved once here).
   * Pass the data path's live counters (HBONE's ByteCounters have the same shape) to avoid copying.
   */
  open(meta: ConnectionMeta, bytes: ByteCounts = { sent: 0, received: 0 }): ConnectionRecorder {
    const labels = tcpLabels(meta);
    this.#opened.labels(labels).inc();
    const rec = new ConnectionRecorder(
      this,
      meta,
      this.#sent.labels(labels),
      this.#received.labels(labels),
      bytes,
    );
    this.#live.add(rec);
    return rec;
  }

  /** Records a connection that failed before it was ever opened (for example refused at the handshake). */
  recordFailed(meta: ConnectionMeta, responseFlags: string): void {
    this.#failed.labels(tcpLabels(meta, responseFlags)).inc();
  }

  /** @internal called by ConnectionRecorder.close */
  recordClosed(rec: ConnectionRecorder, responseFlags: string): void {
    this.#live.delete(rec);
    const labels = tcpLabels(rec.meta, responseFlags);
    this.#closed.labels(labels).inc();
    if (responseFlags !== '-') this.#failed.labels(labels).inc();
  }

  get liveConnections(): number {
    return this.#live.size;
  }
}
