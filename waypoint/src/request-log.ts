// The end of every request: metrics (Istio's names and labels), the span, and one JSON access log
// line. `finish` runs once per request, on the downstream response's 'close'; it also gives back
// what the request held (circuit-breaker slot, endpoint in-flight count).
import type { Logger } from '@hypha/shared';
import type { TapEvent, TapHub } from '@hypha/shared/telemetry';
import type { WaypointSnapshot } from './config.js';
import type { ServiceEntry, WorkloadInfo } from './model.js';
import type { RequestContext, StreamContext } from './pipeline/context.js';
import type { RequestMetrics, RequestOutcome } from './telemetry.js';
import type { EndpointState } from './traffic/cluster.js';

/** The proxy's own workload, named as the source of requests from clients outside the mesh. */
export interface RequestSource {
  workload: WorkloadInfo;
  /** SPIFFE ID. */
  principal: string;
}

export class RequestLog {
  readonly #metrics: RequestMetrics;
  readonly #access: Logger;
  readonly #trustDomain: string;
  readonly #tap: { hub: TapHub; reporter: string } | undefined;
  readonly #self: RequestSource | undefined;

  constructor(
    metrics: RequestMetrics,
    access: Logger,
    trustDomain: string,
    tap?: { hub: TapHub; reporter: string },
    self?: RequestSource,
  ) {
    this.#metrics = metrics;
    this.#access = access;
    this.#trustDomain = trustDomain;
    this.#tap = tap;
    this.#self = self;
  }

  get access(): Logger {
    return this.#access;
  }

  /** For counters recorded outside a request's end (dry-run authorization on passthrough streams). */
  get metrics(): RequestMetrics {
    return this.#metrics;
  }

  finish(rc: RequestContext, protocol: string): void {
    if (rc.finished) return;
    rc.finished = true;
    const res = rc.res;
    if (!res.writableFinished) {
      rc.abort('DOWNSTREAM_CLOSED');
      rc.addFlag('DC');
    }
    if (rc.slot) rc.cluster?.release();
    rc.releaseActive();
    const durationMs = performance.now() - rc.start;
    const code = res.headersSent ? res.statusCode : 0;
    const flags = rc.flags.length === 0 ? '-' : rc.flags.join(',');
    const service = rc.cluster?.service ?? rc.service;
    const cl = rc.headers['content-length'];
    this.record(rc.snap, rc.stream, service, rc.endpoint, {
      protocol: rc.grpc ? 'grpc' : 'http',
      responseCode: code,
      grpcStatus: rc.grpcStatus,
      responseFlags: flags,
      durationMs,
      requestBytes: rc.requestBytes || (cl === undefined ? 0 : Number(cl) || 0),
      responseBytes: rc.responseBytes,
    });
    rc.span?.end(
      {
        'http.status_code': code,
        response_flags: flags,
        upstream_cluster: service?.key ?? '-',
        'upstream.address': rc.endpoint?.ip ?? '-',
      },
      code >= 500 || code === 0,
    );
    if (this.#tap?.hub.active) {
      const tap = this.#tap;
      tap.hub.publish(() => this.#tapEvent(tap.reporter, rc, protocol, code, flags, durationMs, service));
    }
    if (!this.#access.isLevelEnabled('info')) return;
    this.#access.info({
      start_time: new Date(Date.now() - durationMs).toISOString(),
      method: rc.method,
      path: rc.path,
      protocol,
      response_code: code,
      response_flags: flags,
      grpc_status: rc.grpcStatus,
      bytes_received: rc.requestBytes,
      bytes_sent: rc.responseBytes,
      duration: Math.round(durationMs * 1000) / 1000,
      authority: rc.authority,
      x_request_id: rc.requestId,
      trace_id: rc.span?.traceId,
      downstream_remote_address: `${rc.stream.source.ip}:${rc.stream.source.port}`,
      downstream_peer: rc.stream.peer?.toString(),
      upstream_cluster: service?.key,
      upstream_host: rc.endpoint?.ip,
      upstream_transport_failure_reason: rc.upstreamFailureReason,
      route_name: rc.action?.name ?? '-',
      authz_policy: rc.authzPolicy,
      authn_failure: rc.authnFailure,
    });
  }

  #tapEvent(
    reporter: string,
    rc: RequestContext,
    protocol: string,
    status: number,
    flags: string,
    durationMs: number,
    service: ServiceEntry | undefined,
  ): TapEvent {
    const src = rc.snap.workloadsByIp.get(rc.stream.source.ip);
    const dst = rc.endpoint?.info.workload ?? (service?.pod ? service.endpoints[0]?.workload : undefined);
    return {
      kind: 'request',
      time: new Date().toISOString(),
      reporter,
      source: {
        ip: rc.stream.source.ip,
        port: rc.stream.source.port,
        workload: src?.name,
        namespace: src?.namespace ?? rc.stream.peer?.namespace,
        identity: rc.stream.peer?.toString(),
      },
      destination: {
        ip: rc.endpoint?.ip,
        workload: dst?.name,
        namespace: dst?.namespace ?? service?.namespace,
        identity:
          dst?.serviceAccount === undefined
            ? undefined
            : `spiffe://${this.#trustDomain}/ns/${dst.namespace}/sa/${dst.serviceAccount}`,
        service: service === undefined || service.pod ? undefined : `${service.namespace}/${service.name}`,
      },
      mtls: rc.stream.peer !== undefined,
      method: rc.method,
      path: rc.path,
      authority: rc.authority,
      protocol,
      status,
      grpcStatus: rc.grpcStatus,
      flags,
      durationMs: Math.round(durationMs * 1000) / 1000,
      bytesSent: rc.responseBytes,
      bytesReceived: rc.requestBytes,
      route: rc.action?.name,
      policy: rc.authzPolicy,
      error: rc.authnFailure,
    };
  }

  /** Metrics for one request; labels are built once per distinct key (see RequestMetrics). */
  record(
    snap: WaypointSnapshot,
    ctx: StreamContext,
    service: ServiceEntry | undefined,
    endpoint: EndpointState | undefined,
    outcome: RequestOutcome,
  ): void {
    const key = `${ctx.source.ip}|${ctx.peer?.principal ?? ''}|${endpoint?.ip ?? ''}|${service?.key ?? ''}|${outcome.protocol}|${outcome.responseCode}|${outcome.grpcStatus ?? ''}|${outcome.responseFlags}`;
    this.#metrics.recordKeyed(
      key,
      () => {
        // An ingress gateway's clients are outside the mesh: the gateway is the source (as Istio's).
        const src = snap.workloadsByIp.get(ctx.source.ip) ?? this.#self?.workload;
        // A pod dialed by IP is the destination even when no request reached it (403); it has no
        // destination service (Istio reports "unknown").
        const dst: WorkloadInfo | undefined =
          endpoint?.info.workload ?? (service?.pod ? service.endpoints[0]?.workload : undefined);
        const svc = service?.pod ? undefined : service;
        return {
          source: {
            workload: src?.workload ?? src?.name,
            namespace: src?.namespace ?? ctx.peer?.namespace,
            principal: ctx.peer?.toString() ?? this.#self?.principal,
            app: src?.app,
            version: src?.version,
          },
          destination: {
            workload: dst?.workload ?? dst?.name,
            namespace: dst?.namespace ?? svc?.namespace,
            principal:
              dst?.serviceAccount === undefined
                ? undefined
                : `spiffe://${this.#trustDomain}/ns/${dst.namespace}/sa/${dst.serviceAccount}`,
            app: dst?.app,
            version: dst?.version,
            service: svc?.hostname,
            serviceName: svc?.name,
            serviceNamespace: svc?.namespace,
          },
          mutualTls: ctx.peer !== undefined,
        };
      },
      outcome,
    );
  }
}
