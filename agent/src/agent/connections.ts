// Every connection the agent proxies is tracked here from accept to close: its metric handle, its
// line in /connections, its access-log line at the end, and a way to cut it when a policy change
// denies it (live re-evaluation).
//
// Invariant: `finish` runs exactly once per tracked connection, whatever ends it, so metrics,
// the access log and the live table always agree.
import type { Logger } from '@hypha/shared';
import type { Workload } from '@hypha/shared/config';
import type {
  ByteCounts,
  ConnectionMeta,
  L4Metrics,
  PeerLabels,
  TapEvent,
  TapHub,
} from '@hypha/shared/telemetry';
import { appLabel, versionLabel, workloadName } from '@hypha/shared/telemetry';

export type Direction = 'inbound' | 'outbound' | 'inbound_plaintext' | 'passthrough';

export interface ConnectionStart {
  direction: Direction;
  source: { ip: string; port: number; workload?: Workload | undefined; identity?: string | undefined };
  destination: {
    ip: string;
    port: number;
    workload?: Workload | undefined;
    identity?: string | undefined;
    /** `host`: a ServiceEntry's host, which names it in metrics instead of `name.ns.svc.cluster.local`. */
    service?: { name: string; namespace: string; host?: string | undefined } | undefined;
  };
  /** Whether the bytes crossed (or will cross) the network inside mTLS. */
  mutualTls: boolean;
  /** What to call to cut the connection (policy re-evaluation, drain deadline). */
  abort: (reason: string) => void;
}

export interface TrackedConnection extends ConnectionStart {
  readonly id: number;
  readonly startedAt: number;
  readonly bytes: ByteCounts;
}

export interface FinishInfo {
  /** '-' for a clean end, otherwise the response flag (DENY, CONNECT, UPSTREAM_CONNECT_FAILURE, ...). */
  responseFlags?: string;
  error?: string | undefined;
  /** The policy that decided a denial. */
  policy?: string | undefined;
}

/** Why a live connection is being cut; the fields override what its end would otherwise log. */
export interface AbortInfo {
  reason: string;
  /** Response flag for the metrics and access log, e.g. DENY when a policy change closed it. */
  responseFlags?: string;
  /** The policy that decided. */
  policy?: string | undefined;
}

export function peerLabels(w: Workload | undefined, principal: string | undefined): PeerLabels {
  if (w === undefined) return { principal };
  return {
    // The waypoint names workloads with the same functions: one pod, one name in every metric.
    workload: workloadName(w.name, w.labels),
    namespace: w.namespace,
    principal: principal ?? w.identity.toString(),
    app: appLabel(w.labels),
    version: versionLabel(w.labels),
  };
}

export class ConnectionTracker {
  readonly #metrics: L4Metrics;
  readonly #accessLog: Logger;
  readonly #live = new Map<
    number,
    { conn: TrackedConnection; finish: (info?: FinishInfo) => void; aborted?: AbortInfo }
  >();
  #nextId = 1;
  readonly #cluster: string;
  readonly #tap: TapHub | undefined;
  readonly #reporter: string;

  constructor(opts: {
    metrics: L4Metrics;
    accessLog: Logger;
    cluster?: string;
    tap?: TapHub;
    node?: string;
  }) {
    this.#metrics = opts.metrics;
    this.#accessLog = opts.accessLog;
    this.#cluster = opts.cluster ?? 'Kubernetes';
    this.#tap = opts.tap;
    this.#reporter = `agent ${opts.node ?? '-'}`;
  }

  /**
   * Starts tracking. `bytes` is the data path's live counter object (client-side naming:
   * sent = client → server). Returns the finisher; call it once when the connection ends.
   */
  open(
    start: ConnectionStart,
    bytes: ByteCounts,
  ): { conn: TrackedConnection; finish: (info?: FinishInfo) => void } {
    const meta = this.#meta(start);
    const recorder = this.#metrics.open(meta, bytes);
    const conn: TrackedConnection = { ...start, id: this.#nextId++, startedAt: Date.now(), bytes };
    let done = false;
    const finish = (given: FinishInfo = {}): void => {
      if (done) return;
      done = true;
      this.#live.delete(conn.id);
      // A connection cut for a reason with a flag (policy now denies it) ends with that flag,
      // whatever error the torn-down copy loop reported.
      const cut = entry.aborted;
      const info: FinishInfo =
        cut?.responseFlags !== undefined
          ? { responseFlags: cut.responseFlags, error: cut.reason, policy: cut.policy }
          : given;
      const flags = info.responseFlags ?? '-';
      recorder.close(flags);
      this.#log(conn, flags, info);
      if (this.#tap?.active) this.#tap.publish(() => this.#tapEvent(conn, flags, info));
    };
    const entry: { conn: TrackedConnection; finish: typeof finish; aborted?: AbortInfo } = { conn, finish };
    this.#live.set(conn.id, entry);
    return entry;
  }

  /** A connection refused before any upstream existed (counted as failed, logged, never live). */
  recordRefused(start: Omit<ConnectionStart, 'abort'>, info: FinishInfo & { responseFlags: string }): void {
    this.#metrics.recordFailed(this.#meta({ ...start, abort: () => {} }), info.responseFlags);
    const conn = { ...start, abort: () => {}, id: 0, startedAt: Date.now(), bytes: { sent: 0, received: 0 } };
    this.#log(conn, info.responseFlags, info);
    if (this.#tap?.active) this.#tap.publish(() => this.#tapEvent(conn, info.responseFlags, info));
  }

  #tapEvent(conn: TrackedConnection, flags: string, info: FinishInfo): TapEvent {
    const svc = conn.destination.service;
    return {
      kind: 'connection',
      time: new Date().toISOString(),
      reporter: this.#reporter,
      direction: conn.direction,
      source: {
        ip: conn.source.ip,
        port: conn.source.port,
        workload: conn.source.workload?.name,
        namespace: conn.source.workload?.namespace,
        identity: conn.source.identity,
      },
      destination: {
        ip: conn.destination.ip,
        port: conn.destination.port,
        workload: conn.destination.workload?.name,
        namespace: conn.destination.workload?.namespace,
        identity: conn.destination.identity,
        service: svc ? `${svc.namespace}/${svc.name}` : undefined,
      },
      mtls: conn.mutualTls,
      flags,
      durationMs: Date.now() - conn.startedAt,
      bytesSent: conn.bytes.sent,
      bytesReceived: conn.bytes.received,
      error: info.error,
      policy: info.policy,
    };
  }

  list(): TrackedConnection[] {
    return [...this.#live.values()].map((e) => e.conn);
  }

  get size(): number {
    return this.#live.size;
  }

  /**
   * Aborts every live connection for which `predicate` returns a reason (or an AbortInfo, whose
   * flag and policy then appear in its metrics and access-log line); returns how many.
   */
  abortWhere(predicate: (c: TrackedConnection) => string | AbortInfo | undefined): number {
    let n = 0;
    for (const entry of [...this.#live.values()]) {
      const verdict = predicate(entry.conn);
      if (verdict === undefined) continue;
      n++;
      if (typeof verdict === 'string') {
        entry.conn.abort(verdict);
      } else {
        entry.aborted = verdict;
        entry.conn.abort(verdict.reason);
      }
    }
    return n;
  }

  /** For /connections: what an operator wants to see, without internals. */
  snapshot(): unknown[] {
    const now = Date.now();
    return this.list().map((c) => ({
      id: c.id,
      direction: c.direction,
      source: {
        address: hostPort(c.source.ip, c.source.port),
        workload: c.source.workload ? `${c.source.workload.namespace}/${c.source.workload.name}` : undefined,
        identity: c.source.identity,
      },
      destination: {
        address: hostPort(c.destination.ip, c.destination.port),
        workload: c.destination.workload
          ? `${c.destination.workload.namespace}/${c.destination.workload.name}`
          : undefined,
        identity: c.destination.identity,
        service: c.destination.service
          ? `${c.destination.service.namespace}/${c.destination.service.name}`
          : undefined,
      },
      mutualTls: c.mutualTls,
      bytesSent: c.bytes.sent,
      bytesReceived: c.bytes.received,
      durationMs: now - c.startedAt,
    }));
  }

  #meta(start: ConnectionStart): ConnectionMeta {
    const svc = start.destination.service;
    return {
      reporter:
        start.direction === 'inbound' || start.direction === 'inbound_plaintext' ? 'destination' : 'source',
      source: peerLabels(start.source.workload, start.source.identity),
      destination: {
        ...peerLabels(start.destination.workload, start.destination.identity),
        service: svc ? (svc.host ?? `${svc.name}.${svc.namespace}.svc.cluster.local`) : undefined,
        serviceName: svc?.name,
        serviceNamespace: svc?.namespace,
      },
      mutualTls: start.mutualTls,
      cluster: this.#cluster,
    };
  }

  #log(conn: TrackedConnection, flags: string, info: FinishInfo): void {
    this.#accessLog.info(
      {
        type: 'access',
        direction: conn.direction,
        src: hostPort(conn.source.ip, conn.source.port),
        src_workload: conn.source.workload?.name,
        src_namespace: conn.source.workload?.namespace,
        src_identity: conn.source.identity,
        dst: hostPort(conn.destination.ip, conn.destination.port),
        dst_workload: conn.destination.workload?.name,
        dst_namespace: conn.destination.workload?.namespace,
        dst_identity: conn.destination.identity,
        dst_service: conn.destination.service
          ? `${conn.destination.service.namespace}/${conn.destination.service.name}`
          : undefined,
        mtls: conn.mutualTls,
        bytes_sent: conn.bytes.sent,
        bytes_received: conn.bytes.received,
        duration_ms: Date.now() - conn.startedAt,
        response_flags: flags,
        error: info.error,
        policy: info.policy,
      },
      flags === '-' ? 'connection complete' : 'connection failed',
    );
  }
}

/** `ip:port` for logs and /connections; IPv6 in brackets (`[fd00::1]:80`), as in URLs. */
function hostPort(ip: string, port: number | undefined): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
