// The waypoint's L7 engine. A stream (an HBONE CONNECT stream in production, any Duplex in tests)
// arrives with the service address the client dialed (authority VIP:port); the waypoint serves the
// HTTP inside it and sends each request on to one endpoint of the chosen backend.
// A pod bound to the waypoint itself (workload binding) is dialed as podIP:port: it is a one-endpoint
// entry (`pod: true`) without routes, so requests get authz and telemetry and go to that pod only.
//
//   stream ─ sniff ─┬─ HTTP/1.1 ─► http.Server ──┐
//                   ├─ HTTP/2 ───► http2 server ─┼─► handleRequest: route → authz → redirect/rewrite
//                   └─ other ────► L4 forward    │     → fault → backend (weights) → circuit breaker
//                                                │     → LB pick (outlier-aware) → upstream try
//   HTTP/1.1 Upgrade (WebSocket) ─► raw pipe ◄───┘     (per-try timeout, retries) → response filters
//
// Invariants:
// - Every request ends in exactly one `finish` (on the response's 'close'): metrics, access log,
//   span end, circuit-breaker slot release and endpoint active count happen there, once.
// - Route timeouts (`timeouts.request`, `backendRequest`) bound the time to the upstream's response
//   headers; once headers arrive the body streams without a deadline (gRPC server streaming).
// - A request body is buffered only when a retry or a mirror needs to replay it, up to
//   `maxBufferedBodyBytes`; larger bodies stream and are not retried.
// - Failures map to status + Istio response flag in one table (errors.ts FAILURES).
import { randomUUID } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, {
  type ClientHttp2Stream,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type IncomingHttpHeaders,
} from 'node:http2';
import { Socket } from 'node:net';
import { type Duplex, Readable, type Writable } from 'node:stream';
import { createSilentLogger, type Logger, type SpiffeId } from '@hypha/shared';
import { formatAuthority } from '@hypha/shared/hbone';
import { Registry } from 'prom-client';
import type { Dispatcher } from 'undici';
import { type AuthzAttributes, EMPTY_POLICY_SET, evaluateAuthz } from './authz/policy.js';
import { addressKey, buildSnapshot, trafficFor, type WaypointSnapshot } from './config.js';
import { FAILURES, ProxyFailure, type ProxyFailureCode, type WaypointConfigError } from './errors.js';
import {
  type EndpointInfo,
  endpointPort,
  podPort,
  type ServiceEntry,
  type ServicePort,
  type WaypointConfigInput,
  type WorkloadInfo,
} from './model.js';
import { applyHeaderModifier, type HeaderMap, modifyPath, redirectLocation } from './routing/filters.js';
import { findRoute, type RequestView } from './routing/match.js';
import type { BackendRef, PathMatch, RetryPolicy, RouteAction } from './routing/types.js';
import { sniffProtocol } from './sniff.js';
import { RequestMetrics } from './telemetry.js';
import { createTracing, type RequestSpan, type Tracing, type TracingOptions } from './tracing.js';
import { Cluster, type EndpointState } from './traffic/cluster.js';
import {
  CONNECTION_WINDOW,
  type ConnectUpstream,
  isConnectFailure,
  STREAM_WINDOW,
  type UpstreamEndpoint,
  UpstreamPools,
} from './upstream.js';

export interface StreamContext {
  /** The client's identity from the HBONE mTLS handshake; undefined for plaintext. */
  peer?: SpiffeId | undefined;
  /** What the client dialed: the service VIP and port, or a bound pod's IP and port. */
  authority: { host: string; port: number };
  /** The client's address (HBONE `forwarded: for=`). */
  source: { ip: string; port: number };
}

export interface WaypointOptions {
  config: WaypointConfigInput;
  connectUpstream: ConnectUpstream;
  registry?: Registry;
  logger?: Logger;
  /** Where the JSON access log lines go (info level); default: `logger` with component=access. */
  accessLog?: Logger;
  tracing?: TracingOptions;
  /** How long to wait for a client's first bytes before treating the stream as plain TCP. */
  sniffTimeoutMs?: number;
  /** Largest request body buffered so retries and mirrors can replay it. */
  maxBufferedBodyBytes?: number;
  trustDomain?: string;
}

export interface Waypoint {
  /** Serves one client stream (HTTP/1.1, HTTP/2 prior knowledge, or TCP). Never throws. */
  handleStream(stream: Duplex, ctx: StreamContext): void;
  /** True when a service VIP:port, or the IP of a pod bound to this waypoint, matches (HBONE authority check). */
  servesAddress(host: string, port: number): boolean;
  /** Replaces the configuration; returns the objects that were rejected (the rest applies). */
  updateConfig(config: WaypointConfigInput): WaypointConfigError[];
  /** Problems found in the current configuration. */
  readonly configErrors: readonly WaypointConfigError[];
  readonly registry: Registry;
  /** Upstream state of a backend service (`namespace/name`), for admin pages and tests. */
  findCluster(serviceKey: string): Cluster | undefined;
  flushTraces(): Promise<void>;
  close(): Promise<void>;
}

type DownReq = IncomingMessage | Http2ServerRequest;
type DownRes = ServerResponse | Http2ServerResponse;

// Connection-specific headers never cross the proxy (RFC 9110 7.6.1; forbidden in HTTP/2).
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'http2-settings',
  'host',
  // The waypoint answers 100-continue itself, and undici refuses to send `expect`.
  'expect',
]);

interface RequestState {
  start: number;
  ctx: StreamContext;
  service: ServiceEntry | undefined;
  cluster: Cluster | undefined;
  endpoint: EndpointState | undefined;
  /** The endpoint whose in-flight count this request holds (given back once). */
  activeOn: EndpointState | undefined;
  routeName: string;
  flags: string[];
  grpc: boolean;
  grpcStatus: string | undefined;
  requestBytes: number;
  responseBytes: number;
  authzPolicy: string | undefined;
  requestId: string;
  span: RequestSpan | undefined;
  /** Cluster slot held (released once in finish). */
  slot: boolean;
  finished: boolean;
  abort: AbortController;
}

export async function createWaypoint(opts: WaypointOptions): Promise<Waypoint> {
  const tracing = await createTracing(opts.tracing);
  return new WaypointProxy(opts, tracing);
}

class WaypointProxy implements Waypoint {
  readonly registry: Registry;
  #snapshot: WaypointSnapshot;
  #errors: WaypointConfigError[];
  readonly #clusters = new Map<string, Cluster>();
  readonly #pools: UpstreamPools;
  readonly #metrics: RequestMetrics;
  readonly #log: Logger;
  readonly #access: Logger;
  readonly #tracing: Tracing;
  readonly #h1: http.Server;
  readonly #h2: http2.Http2Server;
  readonly #streamCtx = new WeakMap<object, StreamContext>();
  readonly #sniffTimeoutMs: number;
  readonly #maxBuffered: number;
  readonly #trustDomain: string;
  readonly #open = new Set<Duplex>();
  #pendingH2Ctx: StreamContext | undefined;
  #closed = false;

  constructor(opts: WaypointOptions, tracing: Tracing) {
    this.registry = opts.registry ?? new Registry();
    this.#log = (opts.logger ?? createSilentLogger()).child({ component: 'waypoint' });
    this.#access = opts.accessLog ?? (opts.logger ?? createSilentLogger()).child({ component: 'access' });
    this.#metrics = new RequestMetrics(this.registry);
    this.#tracing = tracing;
    this.#pools = new UpstreamPools({ connect: opts.connectUpstream });
    this.#sniffTimeoutMs = opts.sniffTimeoutMs ?? 1000;
    this.#maxBuffered = opts.maxBufferedBodyBytes ?? 1 << 20;
    this.#trustDomain = opts.trustDomain ?? 'cluster.local';
    const built = buildSnapshot(opts.config);
    this.#snapshot = built.snapshot;
    this.#errors = built.errors;
    this.#logConfigErrors();
    this.#syncClusters();

    this.#h1 = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      const ctx = this.#streamCtx.get(req.socket);
      if (ctx === undefined) return void res.destroy();
      this.#handleRequest(req, res, ctx, false);
    });
    this.#h1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const ctx = this.#streamCtx.get(socket);
      if (ctx === undefined) return void socket.destroy();
      this.#handleUpgrade(req, socket, head, ctx).catch((err: unknown) => {
        this.#log.warn({ err }, 'upgrade failed unexpectedly');
        socket.destroy();
      });
    });
    this.#h1.on('clientError', (_err, socket: Duplex) => socket.destroy());
    this.#h2 = http2.createServer({ settings: { initialWindowSize: STREAM_WINDOW } }, (req, res) => {
      const ctx = this.#streamCtx.get(req.stream.session as object);
      if (ctx === undefined) return void res.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      this.#handleRequest(req, res, ctx, true);
    });
    // The http2 server creates the session synchronously inside emit('connection').
    this.#h2.on('session', (session: Http2Session) => {
      if (this.#pendingH2Ctx !== undefined) this.#streamCtx.set(session, this.#pendingH2Ctx);
      session.on('error', () => {});
      session.once('localSettings', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    });
    this.#h2.on('sessionError', () => {});
  }

  get configErrors(): readonly WaypointConfigError[] {
    return this.#errors;
  }

  updateConfig(config: WaypointConfigInput): WaypointConfigError[] {
    const built = buildSnapshot(config);
    this.#snapshot = built.snapshot;
    this.#errors = built.errors;
    this.#logConfigErrors();
    this.#syncClusters();
    this.#metrics.invalidate();
    return built.errors;
  }

  findCluster(serviceKey: string): Cluster | undefined {
    return this.#clusters.get(serviceKey);
  }

  servesAddress(host: string, port: number): boolean {
    return this.#snapshot.byAddress.has(addressKey(host, port)) || this.#snapshot.pods.has(host);
  }

  flushTraces(): Promise<void> {
    return this.#tracing.flush();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#open) s.destroy();
    this.#open.clear();
    await this.#pools.close();
    await this.#tracing.close();
  }

  #logConfigErrors(): void {
    for (const e of this.#errors)
      this.#log.warn(
        { code: e.code, kind: e.kind, namespace: e.namespace, name: e.objectName, field: e.field },
        e.message,
      );
  }

  #syncClusters(): void {
    const snap = this.#snapshot;
    for (const [key, svc] of snap.services) {
      const settings = trafficFor(snap, key);
      const c = this.#clusters.get(key);
      if (c === undefined) {
        const cluster = new Cluster(svc, settings);
        cluster.onHealthChange = (ep, ejected) =>
          this.#log.info(
            { service: key, endpoint: ep.ip, ejections: ep.ejections },
            ejected ? 'outlier detection ejected an endpoint' : 'ejected endpoint restored',
          );
        this.#clusters.set(key, cluster);
      } else c.update(svc, settings);
    }
    for (const pod of snap.pods.values()) {
      const c = this.#clusters.get(pod.key);
      if (c === undefined) this.#clusters.set(pod.key, new Cluster(pod, trafficFor(snap, pod.key)));
      else c.update(pod, trafficFor(snap, pod.key));
    }
    for (const [key, c] of this.#clusters)
      if (c.service.pod ? !snap.pods.has(c.service.endpoints[0]!.ip) : !snap.services.has(key))
        this.#clusters.delete(key);
  }

  // ---- ingress ----

  handleStream(stream: Duplex, ctx: StreamContext): void {
    stream.on('error', () => {});
    // Emitted connections skip the listener's noDelay: without it, a response written in two parts
    // waits out the client's delayed ACK (~40 ms) under Nagle.
    (stream as Partial<Socket>).setNoDelay?.(true);
    if (!(stream instanceof Socket)) writeStringsAsBuffers(stream);
    if (this.#closed) return void stream.destroy();
    this.#open.add(stream);
    stream.once('close', () => this.#open.delete(stream));
    const found = this.#snapshot.byAddress.get(addressKey(ctx.authority.host, ctx.authority.port));
    if (found?.port.tcp) {
      this.#forwardTcp(stream, ctx).catch(() => stream.destroy());
      return;
    }
    sniffProtocol(stream, this.#sniffTimeoutMs).then((proto) => {
      if (stream.destroyed) return;
      switch (proto) {
        case 'http1':
          this.#streamCtx.set(stream, ctx);
          this.#h1.emit('connection', stream);
          break;
        case 'http2':
          this.#pendingH2Ctx = ctx;
          try {
            this.#h2.emit('connection', stream);
          } finally {
            this.#pendingH2Ctx = undefined;
          }
          break;
        case 'tcp':
          this.#forwardTcp(stream, ctx).catch(() => stream.destroy());
          break;
        case 'closed':
          stream.destroy();
          break;
      }
    });
  }

  // ---- L4 ----

  async #forwardTcp(stream: Duplex, ctx: StreamContext): Promise<void> {
    const snap = this.#snapshot;
    const found = this.#findTarget(ctx);
    if (found === undefined) return void stream.destroy();
    const decision = evaluateAuthz(
      snap.policies.get(found.service.key) ?? EMPTY_POLICY_SET,
      this.#authzAttributes(ctx, found.port.port, undefined),
    );
    if (!decision.allowed) {
      this.#log.debug(
        { service: found.service.key, source: ctx.source.ip, policy: decision.policy },
        'TCP connection denied by policy',
      );
      return void stream.destroy();
    }
    const cluster = this.#clusters.get(found.service.key);
    const ep = cluster?.findEndpoint(undefined);
    const port = ep === undefined ? undefined : endpointPort(found.service, ep.info, found.port.port);
    if (ep === undefined || port === undefined) return void stream.destroy();
    let upstream: Duplex;
    try {
      upstream = await this.#pools.fetchStream({
        ip: dialAddress(ep.info, ctx.authority.host),
        port,
        workload: ep.info.workload,
      });
    } catch {
      return void stream.destroy();
    }
    if (stream.destroyed) return void upstream.destroy();
    upstream.on('error', () => {});
    relay(stream, upstream);
    relay(upstream, stream);
  }

  // ---- HTTP ----

  #authzAttributes(ctx: StreamContext, port: number, request: AuthzAttributes['request']): AuthzAttributes {
    return {
      principal: ctx.peer?.principal,
      sourceNamespace: ctx.peer?.namespace,
      sourceIp: ctx.source.ip,
      port,
      request,
    };
  }

  /** What the dialed address names: a service VIP:port, else a bound pod (any port). */
  #findTarget(ctx: StreamContext): { service: ServiceEntry; port: ServicePort } | undefined {
    const snap = this.#snapshot;
    const byAddr = snap.byAddress.get(addressKey(ctx.authority.host, ctx.authority.port));
    if (byAddr !== undefined) return byAddr;
    const pod = snap.pods.get(ctx.authority.host);
    return pod === undefined ? undefined : { service: pod, port: podPort(pod, ctx.authority.port) };
  }

  /**
   * Finds the service for a request: by the dialed address (a pod dialed by IP is served as that
   * pod whatever the Host header says), else by Host (same port).
   */
  #findService(ctx: StreamContext, host: string): { service: ServiceEntry; port: ServicePort } | undefined {
    const snap = this.#snapshot;
    const byAddr = this.#findTarget(ctx);
    if (byAddr !== undefined) return byAddr;
    const svc = snap.byHostname.get(host);
    const port = svc?.ports.get(ctx.authority.port);
    return svc !== undefined && port !== undefined ? { service: svc, port } : undefined;
  }

  #handleRequest(req: DownReq, res: DownRes, ctx: StreamContext, h2: boolean): void {
    const snap = this.#snapshot;
    const headers = req.headers as IncomingHttpHeaders;
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const query = qi < 0 ? '' : url.slice(qi + 1);
    const hostHeader =
      (h2 ? (headers[':authority'] ?? headers.host) : headers.host) ?? formatAuthority(ctx.authority);
    const host = stripPort(hostHeader).toLowerCase();
    const method = req.method ?? 'GET';
    const grpc = h2 && (headers['content-type'] ?? '').startsWith('application/grpc');
    const requestId = typeof headers['x-request-id'] === 'string' ? headers['x-request-id'] : randomUUID();
    const st: RequestState = {
      start: performance.now(),
      ctx,
      service: undefined,
      cluster: undefined,
      endpoint: undefined,
      activeOn: undefined,
      routeName: '-',
      flags: [],
      grpc,
      grpcStatus: undefined,
      requestBytes: 0,
      responseBytes: 0,
      authzPolicy: undefined,
      requestId,
      span: undefined,
      slot: false,
      finished: false,
      abort: new AbortController(),
    };
    res.once('close', () => this.#finish(req, res, st, method, path, hostHeader));

    const found = this.#findService(ctx, host);
    if (found !== undefined) st.service = found.service;
    if (this.#tracing.enabled) {
      const name = `${found?.service.hostname ?? host}:${ctx.authority.port}/*`;
      st.span = this.#tracing.startSpan(name, headers, {
        'http.method': method,
        'http.url': `http://${hostHeader}${url}`,
        'guid:x-request-id': requestId,
        component: 'proxy',
      });
    }
    if (found === undefined) return void this.#fail(res, st, 'NO_ROUTE');
    const { service, port } = found;

    const view: RequestView = { method, path, query, host, headers, port: port.port };
    const route = findRoute(snap.routes, service.key, view);
    const action = route?.action ?? defaultAction(service, port);
    st.routeName = action.name;

    const decision = evaluateAuthz(
      snap.policies.get(service.key) ?? EMPTY_POLICY_SET,
      this.#authzAttributes(ctx, port.port, { method, path, host: hostHeader, headers }),
    );
    for (const p of decision.audited) {
      this.#metrics.recordAudit(p);
      this.#log.info(
        {
          policy: p,
          service: service.key,
          method,
          path,
          source: ctx.source.ip,
          principal: ctx.peer?.principal,
        },
        'AUDIT policy matched',
      );
    }
    st.authzPolicy = decision.policy;
    if (!decision.allowed) return void this.#local(res, st, 403, 'RBAC: access denied', undefined);

    const matched: PathMatch = route?.path ?? { type: 'PathPrefix', value: '/' };
    if (action.redirect !== undefined) {
      const hostPort = portOf(hostHeader);
      const location = redirectLocation(
        action.redirect,
        { scheme: 'http', host, port: hostPort, path, query },
        matched,
      );
      return void this.#local(res, st, action.redirect.statusCode, '', undefined, { location });
    }
    if (action.backends.length === 0 && action.invalidBackends) return void this.#fail(res, st, 'NO_CLUSTER');

    // Upstream request head.
    const out: HeaderMap = {};
    for (const k in headers) if (k.charCodeAt(0) !== 58 && !HOP_BY_HOP.has(k)) out[k] = headers[k];
    if (headers.te === 'trailers') out.te = 'trailers';
    out['x-request-id'] = requestId;
    let upstreamHost = hostHeader;
    let upstreamPath = url;
    if (action.rewrite !== undefined) {
      if (action.rewrite.hostname !== undefined) upstreamHost = action.rewrite.hostname;
      if (action.rewrite.path !== undefined)
        upstreamPath = modifyPath(path, action.rewrite.path, matched) + (qi < 0 ? '' : url.slice(qi));
    }
    applyHeaderModifier(out, action.requestHeaders);

    // A rule without backendRefs (only filters, timeouts, retries) forwards to the service itself.
    const backend =
      action.backends.length === 0 ? defaultAction(service, port).backends[0]! : pickBackend(action);
    // A bound pod is its own (only) backend; it is not in `services`.
    const target = service.pod ? service : snap.services.get(backend.service);
    const cluster = this.#clusters.get(backend.service);
    if (target === undefined || cluster === undefined) return void this.#fail(res, st, 'NO_CLUSTER');
    st.cluster = cluster;
    applyHeaderModifier(out, backend.requestHeaders);
    const targetPort =
      backend.port ?? (target.ports.has(port.port) ? port.port : target.ports.keys().next().value);
    if (targetPort === undefined) return void this.#fail(res, st, 'NO_CLUSTER');
    st.span?.inject(out);

    this.#proxy(req, res, st, {
      action,
      backend,
      target,
      cluster,
      servicePort: targetPort,
      method,
      path: upstreamPath,
      host: upstreamHost,
      headers: out,
      hashKey: headerValue(headers, cluster.settings.hashHeader),
      destination: service,
      h2Upstream: (grpc && h2) || (target.ports.get(targetPort)?.http2 ?? false),
      clientHost: ctx.authority.host,
    }).catch((err: unknown) => {
      // Only unexpected errors land here (a client body that failed while buffering, a bug):
      // answer if still possible, never crash the process.
      this.#log.warn({ err, service: service.key }, 'request failed unexpectedly');
      if (!res.headersSent && !res.destroyed) this.#fail(res, st, 'UPSTREAM_RESET');
      else res.destroy();
    });
  }

  async #proxy(req: DownReq, res: DownRes, st: RequestState, p: ProxyPlan): Promise<void> {
    const snap = this.#snapshot;
    // Fault injection (the destination service's TrafficPolicy), before any upstream work.
    const fault = trafficFor(snap, p.destination.key).fault;
    if (fault.delay !== undefined && roll(fault.delay.percent)) {
      st.flags.push('DI');
      await sleep(fault.delay.ms, st.abort.signal);
      if (st.abort.signal.aborted) return;
    }
    if (fault.abort !== undefined && roll(fault.abort.percent)) {
      st.flags.push('FI');
      if (st.grpc && fault.abort.grpcStatus !== undefined) {
        st.grpcStatus = String(fault.abort.grpcStatus);
        return void this.#local(res, st, 200, '', undefined, {
          'content-type': 'application/grpc',
          'grpc-status': st.grpcStatus,
          'grpc-message': 'fault filter abort',
        });
      }
      return void this.#local(res, st, fault.abort.httpStatus, 'fault filter abort', undefined);
    }

    const retry: RetryPolicy | undefined = p.action.retry ?? p.cluster.settings.retry;
    const needsReplay = (retry !== undefined && retry.attempts > 0) || p.action.mirrors.length > 0;
    let body: Buffer | Readable | null = requestHasBody(req) ? (req as Readable) : null;
    if (body !== null && needsReplay) body = await this.#bufferBody(req as Readable, st);
    if (st.abort.signal.aborted || res.destroyed) return;
    if (Buffer.isBuffer(body)) st.requestBytes = body.length;

    for (const m of p.action.mirrors)
      if (roll(m.percent)) this.#mirror(m.service, m.port ?? p.servicePort, p, body);

    // Route timeout: from here to the upstream's response headers, across retries.
    let requestTimer: NodeJS.Timeout | undefined;
    if (p.action.requestTimeoutMs !== undefined) {
      requestTimer = setTimeout(() => st.abort.abort(new ProxyFailure('TIMEOUT')), p.action.requestTimeoutMs);
    }
    try {
      // Circuit breaker.
      const slot = p.cluster.acquire();
      if ('result' in slot) {
        if (slot.result === 'overflow') return void this.#fail(res, st, 'OVERFLOW');
      } else {
        const aborted = new Promise<void>((resolve) =>
          st.abort.signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        await Promise.race([slot.wait, aborted]);
        if (st.abort.signal.aborted) {
          if (!slot.cancel()) p.cluster.release();
          return void this.#failFromAbort(res, st);
        }
      }
      if (st.finished || res.destroyed) {
        p.cluster.release();
        return;
      }
      st.slot = true;

      const replayable = body === null || Buffer.isBuffer(body);
      const maxTries = 1 + (retry !== undefined && replayable ? retry.attempts : 0);
      let lastFailure: ProxyFailureCode = 'NO_HEALTHY_UPSTREAM';
      let tries = 0;
      for (let attempt = 0; attempt < maxTries; attempt++) {
        if (attempt > 0) {
          await sleep(backoff(retry!.backoffMs, attempt), st.abort.signal);
          if (st.abort.signal.aborted) return void this.#failFromAbort(res, st);
        }
        const ep = p.cluster.findEndpoint(p.hashKey);
        if (ep === undefined) {
          lastFailure = 'NO_HEALTHY_UPSTREAM';
          break;
        }
        const epPort = endpointPort(p.target, ep.info, p.servicePort);
        if (epPort === undefined) {
          lastFailure = 'NO_HEALTHY_UPSTREAM';
          break;
        }
        st.endpoint = ep;
        tries++;
        const upstream: UpstreamEndpoint = {
          ip: dialAddress(ep.info, p.clientHost),
          port: epPort,
          workload: ep.info.workload,
        };
        const last = attempt === maxTries - 1;
        ep.active++;
        st.activeOn = ep;
        const result = p.h2Upstream
          ? await this.#tryHttp2(upstream, p, body, st)
          : await this.#tryHttp1(upstream, p, body, st);
        if (result.kind === 'failure') {
          releaseActive(st);
          p.cluster.recordOutcome(ep, result.code !== 'TIMEOUT' || !st.abort.signal.aborted);
          if (st.abort.signal.aborted) return void this.#failFromAbort(res, st);
          lastFailure = result.code;
          continue;
        }
        const status = result.status;
        p.cluster.recordOutcome(ep, status >= 500);
        const retriable =
          retry !== undefined &&
          (retry.codes.has(status) ||
            (result.grpcStatus !== undefined && retry.grpcCodes.has(result.grpcStatus)));
        if (!last && retriable) {
          releaseActive(st);
          result.discard();
          continue;
        }
        if (attempt > 0 && retriable) st.flags.push('URX');
        clearTimeout(requestTimer);
        requestTimer = undefined;
        // ep.active is given back in finish, when the response is done.
        return void result.respond(res);
      }
      st.endpoint = undefined;
      this.#fail(res, st, lastFailure);
      if (tries > 1) st.flags.push('URX');
      return;
    } finally {
      clearTimeout(requestTimer);
    }
  }

  async #bufferBody(req: Readable, st: RequestState): Promise<Buffer | Readable> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      const chunk = c as Buffer;
      chunks.push(chunk);
      size += chunk.length;
      if (size > this.#maxBuffered) {
        // Too big to replay: stream it (what was read first, then the rest); no retries, no mirror body.
        st.requestBytes = size;
        return Readable.from(
          (async function* () {
            yield* chunks;
            for await (const rest of req) {
              st.requestBytes += (rest as Buffer).length;
              yield rest as Buffer;
            }
          })(),
        );
      }
    }
    return Buffer.concat(chunks, size);
  }

  /** One HTTP/1.1 try through undici. */
  async #tryHttp1(
    ep: UpstreamEndpoint,
    p: ProxyPlan,
    body: Buffer | Readable | null,
    st: RequestState,
  ): Promise<TryResult> {
    const pool = this.#pools.findHttp1(ep);
    const tryAbort = new AbortController();
    const onAbort = () => tryAbort.abort(st.abort.signal.reason);
    st.abort.signal.addEventListener('abort', onAbort, { once: true });
    const perTry =
      p.action.backendRequestTimeoutMs ?? (p.action.retry ?? p.cluster.settings.retry)?.perTryTimeoutMs;
    let timedOut = false;
    const timer =
      perTry === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            tryAbort.abort(new ProxyFailure('TIMEOUT'));
          }, perTry);
    const headers: Record<string, string | string[]> = { host: p.host };
    for (const k in p.headers) {
      const v = p.headers[k];
      if (v !== undefined) headers[k] = v;
    }
    let reqBody: Buffer | Readable | null = null;
    if (Buffer.isBuffer(body)) reqBody = body;
    // undici takes async iterables as bodies; counting here avoids a second 'data' consumer.
    else if (body !== null) reqBody = countingBody(body, st) as unknown as Readable;
    let data: Dispatcher.ResponseData;
    try {
      data = await pool.request({
        path: p.path,
        method: p.method as Dispatcher.HttpMethod,
        headers,
        body: reqBody,
        signal: tryAbort.signal,
      });
    } catch (err) {
      clearTimeout(timer);
      st.abort.signal.removeEventListener('abort', onAbort);
      if (timedOut || (st.abort.signal.reason as ProxyFailure | undefined)?.code === 'TIMEOUT')
        return { kind: 'failure', code: 'TIMEOUT' };
      return { kind: 'failure', code: isConnectFailure(err) ? 'CONNECT_FAILED' : 'UPSTREAM_RESET' };
    }
    clearTimeout(timer);
    st.abort.signal.removeEventListener('abort', onAbort);
    const responseHeaders = p.backend.responseHeaders;
    return {
      kind: 'response',
      status: data.statusCode,
      // Drain rather than destroy: the connection stays reusable for the retry.
      discard: () => {
        data.body.dump().catch(() => {});
      },
      respond: (res) => {
        const h: HeaderMap = {};
        for (const k in data.headers) if (!HOP_BY_HOP.has(k)) h[k] = data.headers[k];
        applyHeaderModifier(h, p.action.responseHeaders);
        applyHeaderModifier(h, responseHeaders);
        if (res.destroyed) return void data.body.destroy();
        writeHead(res, data.statusCode, h);
        data.body.on('data', (c: Buffer) => {
          st.responseBytes += c.length;
        });
        relay(data.body, res as unknown as Writable);
      },
    };
  }

  /** One HTTP/2 try (gRPC and h2 services) on the endpoint's shared session. */
  async #tryHttp2(
    ep: UpstreamEndpoint,
    p: ProxyPlan,
    body: Buffer | Readable | null,
    st: RequestState,
  ): Promise<TryResult> {
    let session: http2.ClientHttp2Session;
    try {
      session = await this.#pools.fetchHttp2(ep);
    } catch (err) {
      return { kind: 'failure', code: isConnectFailure(err) ? 'CONNECT_FAILED' : 'UPSTREAM_RESET' };
    }
    if (st.abort.signal.aborted) return { kind: 'failure', code: 'TIMEOUT' };
    const headers: http2.OutgoingHttpHeaders = {
      ':method': p.method,
      ':path': p.path,
      ':authority': p.host,
      ':scheme': 'http',
    };
    for (const k in p.headers) {
      const v = p.headers[k];
      if (v !== undefined) headers[k] = v;
    }
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: body === null });
    } catch {
      return { kind: 'failure', code: 'UPSTREAM_RESET' };
    }
    stream.on('error', () => {});
    if (Buffer.isBuffer(body)) stream.end(body);
    else if (body !== null) {
      body.on('data', (c: Buffer) => {
        st.requestBytes += c.length;
      });
      relay(body, stream);
    }
    const perTry =
      p.action.backendRequestTimeoutMs ?? (p.action.retry ?? p.cluster.settings.retry)?.perTryTimeoutMs;
    const outcome = await new Promise<
      { headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader } | ProxyFailureCode
    >((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (
        v: { headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader } | ProxyFailureCode,
      ) => {
        clearTimeout(timer);
        st.abort.signal.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const onAbort = () => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        done('TIMEOUT');
      };
      if (perTry !== undefined)
        timer = setTimeout(() => {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          done('TIMEOUT');
        }, perTry);
      st.abort.signal.addEventListener('abort', onAbort, { once: true });
      stream.once('response', (h) => done({ headers: h }));
      stream.once('close', () => done('UPSTREAM_RESET'));
    });
    if (typeof outcome === 'string') return { kind: 'failure', code: outcome };
    const status = Number(outcome.headers[':status'] ?? 502);
    // grpc-status among the response headers means a trailers-only answer: nothing was sent yet,
    // so the call can be tried again.
    const grpcHeader = outcome.headers['grpc-status'];
    const grpcStatus = typeof grpcHeader === 'string' ? Number(grpcHeader) : undefined;
    return {
      kind: 'response',
      status,
      ...(grpcStatus !== undefined && Number.isInteger(grpcStatus) ? { grpcStatus } : {}),
      discard: () => stream.close(http2.constants.NGHTTP2_CANCEL),
      respond: (res) => {
        const h: HeaderMap = {};
        for (const k in outcome.headers)
          if (k.charCodeAt(0) !== 58 && !HOP_BY_HOP.has(k)) h[k] = outcome.headers[k];
        applyHeaderModifier(h, p.action.responseHeaders);
        applyHeaderModifier(h, p.backend.responseHeaders);
        const gs = h['grpc-status'];
        if (typeof gs === 'string') st.grpcStatus = gs;
        if (res.destroyed) return void stream.close(http2.constants.NGHTTP2_CANCEL);
        writeHead(res, status, h);
        stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
          const trailers: Record<string, string> = {};
          for (const k in t) {
            const v = t[k];
            if (k.charCodeAt(0) !== 58 && v !== undefined) trailers[k] = Array.isArray(v) ? v.join(',') : v;
          }
          if (trailers['grpc-status'] !== undefined) st.grpcStatus = trailers['grpc-status'];
          res.addTrailers(trailers);
        });
        stream.on('data', (c: Buffer) => {
          st.responseBytes += c.length;
        });
        relay(stream, res as unknown as Writable);
      },
    };
  }

  #mirror(serviceKey: string, port: number, p: ProxyPlan, body: Buffer | Readable | null): void {
    const cluster = this.#clusters.get(serviceKey);
    const ep = cluster?.findEndpoint(undefined);
    const epPort =
      ep === undefined || cluster === undefined ? undefined : endpointPort(cluster.service, ep.info, port);
    if (ep === undefined || epPort === undefined) return;
    const headers: Record<string, string | string[]> = { host: `${stripPort(p.host)}-shadow` };
    for (const k in p.headers) {
      const v = p.headers[k];
      if (v !== undefined) headers[k] = v;
    }
    // Fire and forget: the client never waits for, or sees, the mirror's answer.
    this.#pools
      .findHttp1({ ip: dialAddress(ep.info, p.clientHost), port: epPort, workload: ep.info.workload })
      .request({
        path: p.path,
        method: p.method as Dispatcher.HttpMethod,
        headers,
        body: Buffer.isBuffer(body) ? body : null,
      })
      .then(
        (r) => r.body.dump(),
        (err: unknown) => this.#log.debug({ err, service: serviceKey }, 'mirror request failed'),
      );
  }

  // ---- WebSocket and other HTTP/1.1 upgrades: route and authorize, then a raw pipe ----

  async #handleUpgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    ctx: StreamContext,
  ): Promise<void> {
    socket.on('error', () => {});
    const snap = this.#snapshot;
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const hostHeader = req.headers.host ?? formatAuthority(ctx.authority);
    const host = stripPort(hostHeader).toLowerCase();
    const method = req.method ?? 'GET';
    const start = performance.now();
    let code = 0;
    let flags = '-';
    let service: ServiceEntry | undefined;
    let endpoint: EndpointState | undefined;
    const reject = (status: number, text: string, flag: string) => {
      code = status;
      flags = flag;
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-length: ${Buffer.byteLength(text)}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${text}`,
      );
    };
    socket.once('close', () => {
      const durationMs = performance.now() - start;
      this.#record(ctx, service, endpoint, {
        protocol: 'http',
        responseCode: code,
        grpcStatus: undefined,
        responseFlags: flags,
        durationMs,
        requestBytes: 0,
        responseBytes: 0,
      });
      this.#access.info({
        method,
        path,
        protocol: 'HTTP/1.1',
        upgrade: req.headers.upgrade,
        response_code: code,
        response_flags: flags,
        duration: Math.round(durationMs),
        downstream_remote_address: `${ctx.source.ip}:${ctx.source.port}`,
        upstream_host: endpoint?.ip,
      });
    });
    const found = this.#findService(ctx, host);
    if (found === undefined) return reject(404, FAILURES.NO_ROUTE.body, 'NR');
    service = found.service;
    const route = findRoute(snap.routes, found.service.key, {
      method,
      path,
      query: qi < 0 ? '' : url.slice(qi + 1),
      host,
      headers: req.headers,
      port: found.port.port,
    });
    const action = route?.action ?? defaultAction(found.service, found.port);
    const decision = evaluateAuthz(
      snap.policies.get(found.service.key) ?? EMPTY_POLICY_SET,
      this.#authzAttributes(ctx, found.port.port, { method, path, host: hostHeader, headers: req.headers }),
    );
    if (!decision.allowed) return reject(403, 'RBAC: access denied', '-');
    if (action.backends.length === 0 && action.invalidBackends)
      return reject(500, FAILURES.NO_CLUSTER.body, 'NC');
    const backend =
      action.backends.length === 0
        ? defaultAction(found.service, found.port).backends[0]!
        : pickBackend(action);
    const cluster = this.#clusters.get(backend.service);
    const servicePort = backend.port ?? found.port.port;
    const ep = cluster?.findEndpoint(headerValue(req.headers, cluster.settings.hashHeader));
    const epPort =
      ep === undefined || cluster === undefined
        ? undefined
        : endpointPort(cluster.service, ep.info, servicePort);
    if (ep === undefined || epPort === undefined || cluster === undefined)
      return reject(503, FAILURES.NO_HEALTHY_UPSTREAM.body, 'UH');
    endpoint = ep;
    service = cluster.service;
    let upstream: Duplex;
    try {
      upstream = await this.#pools.fetchStream({
        ip: dialAddress(ep.info, ctx.authority.host),
        port: epPort,
        workload: ep.info.workload,
      });
    } catch {
      return reject(503, FAILURES.CONNECT_FAILED.body, 'UF');
    }
    if (socket.destroyed) return void upstream.destroy();
    upstream.on('error', () => {});
    const out: HeaderMap = {};
    for (const [k, v] of Object.entries(req.headers)) out[k] = v;
    applyHeaderModifier(out, action.requestHeaders);
    let headText = `${method} ${url} HTTP/1.1\r\n`;
    for (const k in out) {
      const v = out[k];
      if (v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) headText += `${k}: ${one}\r\n`;
    }
    upstream.write(`${headText}\r\n`);
    if (head.length > 0) upstream.write(head);
    upstream.once('data', (c: Buffer) => {
      code = Number(/^HTTP\/1\.[01] (\d{3})/.exec(c.subarray(0, 16).toString('latin1'))?.[1] ?? 0);
    });
    relay(socket, upstream);
    relay(upstream, socket);
  }

  // ---- responses and bookkeeping ----

  #local(
    res: DownRes,
    st: RequestState,
    status: number,
    body: string,
    flag: string | undefined,
    extra?: Record<string, string>,
  ): void {
    if (flag !== undefined && flag !== '-') st.flags.push(flag);
    if (res.headersSent || res.destroyed) return void res.destroy();
    const h: Record<string, string | number> = {
      'content-type': 'text/plain',
      'content-length': Buffer.byteLength(body),
      ...extra,
    };
    st.responseBytes = Buffer.byteLength(body);
    writeHead(res, status, h);
    res.end(body);
  }

  #fail(res: DownRes, st: RequestState, code: ProxyFailureCode): void {
    const f = FAILURES[code];
    if (code === 'DOWNSTREAM_CLOSED') {
      st.flags.push('DC');
      return void res.destroy();
    }
    this.#local(res, st, f.status, f.body, f.flag);
  }

  #failFromAbort(res: DownRes, st: RequestState): void {
    const reason = st.abort.signal.reason as unknown;
    this.#fail(res, st, reason instanceof ProxyFailure ? reason.code : 'DOWNSTREAM_CLOSED');
  }

  #finish(
    req: DownReq,
    res: DownRes,
    st: RequestState,
    method: string,
    path: string,
    authority: string,
  ): void {
    if (st.finished) return;
    st.finished = true;
    const completed = res.writableFinished;
    if (!completed) {
      if (!st.abort.signal.aborted) st.abort.abort(new ProxyFailure('DOWNSTREAM_CLOSED'));
      if (!st.flags.includes('DC')) st.flags.push('DC');
    }
    if (st.slot) st.cluster?.release();
    releaseActive(st);
    const durationMs = performance.now() - st.start;
    const code = res.headersSent ? res.statusCode : 0;
    const flags = st.flags.length === 0 ? '-' : st.flags.join(',');
    const service = st.cluster?.service ?? st.service;
    this.#record(st.ctx, service, st.endpoint, {
      protocol: st.grpc ? 'grpc' : 'http',
      responseCode: code,
      grpcStatus: st.grpcStatus,
      responseFlags: flags,
      durationMs,
      requestBytes: st.requestBytes || Number(req.headers['content-length'] ?? 0),
      responseBytes: st.responseBytes,
    });
    st.span?.end(
      {
        'http.status_code': code,
        response_flags: flags,
        upstream_cluster: service?.key ?? '-',
        'upstream.address': st.endpoint?.ip ?? '-',
      },
      code >= 500 || code === 0,
    );
    if (!this.#access.isLevelEnabled('info')) return;
    this.#access.info({
      start_time: new Date(Date.now() - durationMs).toISOString(),
      method,
      path,
      protocol: req.httpVersion === '2.0' ? 'HTTP/2' : `HTTP/${req.httpVersion}`,
      response_code: code,
      response_flags: flags,
      grpc_status: st.grpcStatus,
      bytes_received: st.requestBytes,
      bytes_sent: st.responseBytes,
      duration: Math.round(durationMs * 1000) / 1000,
      authority,
      x_request_id: st.requestId,
      trace_id: st.span?.traceId,
      downstream_remote_address: `${st.ctx.source.ip}:${st.ctx.source.port}`,
      downstream_peer: st.ctx.peer?.toString(),
      upstream_cluster: service?.key,
      upstream_host: st.endpoint?.ip,
      route_name: st.routeName,
      authz_policy: st.authzPolicy,
    });
  }

  #record(
    ctx: StreamContext,
    service: ServiceEntry | undefined,
    endpoint: EndpointState | undefined,
    outcome: Parameters<RequestMetrics['recordRequest']>[1],
  ): void {
    const src = this.#snapshot.workloadsByIp.get(ctx.source.ip);
    // A pod dialed by IP is the destination even when no request reached it (403); it has no
    // destination service (Istio reports "unknown").
    const dst: WorkloadInfo | undefined =
      endpoint?.info.workload ?? (service?.pod ? service.endpoints[0]?.workload : undefined);
    const svc = service?.pod ? undefined : service;
    const key = `${ctx.source.ip}|${ctx.peer?.principal ?? ''}|${endpoint?.ip ?? ''}|${service?.key ?? ''}|${outcome.protocol}|${outcome.responseCode}|${outcome.grpcStatus ?? ''}|${outcome.responseFlags}`;
    this.#metrics.recordKeyed(
      key,
      () => ({
        source: {
          workload: src?.name,
          namespace: src?.namespace ?? ctx.peer?.namespace,
          principal: ctx.peer?.toString(),
          app: src?.app,
          version: src?.version,
        },
        destination: {
          workload: dst?.name,
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
      }),
      outcome,
    );
  }
}

interface ProxyPlan {
  action: RouteAction;
  backend: BackendRef;
  target: ServiceEntry;
  cluster: Cluster;
  servicePort: number;
  method: string;
  path: string;
  host: string;
  headers: HeaderMap;
  hashKey: string | undefined;
  destination: ServiceEntry;
  h2Upstream: boolean;
  /** The address the client dialed (the tunnel's authority): endpoints are dialed in its family. */
  clientHost: string;
}

type TryResult =
  | { kind: 'failure'; code: ProxyFailureCode }
  | {
      kind: 'response';
      status: number;
      /** grpc-status of a trailers-only answer (the call failed before any message). */
      grpcStatus?: number;
      discard(): void;
      respond(res: DownRes): void;
    };

const defaultActions = new WeakMap<ServicePort, RouteAction>();

/** No route matched: the service's own endpoints on the dialed port. */
function defaultAction(svc: ServiceEntry, port: ServicePort): RouteAction {
  let a = defaultActions.get(port);
  if (a === undefined) {
    a = {
      name: 'default',
      backends: [
        {
          service: svc.key,
          port: port.port,
          weight: 1,
          requestHeaders: undefined,
          responseHeaders: undefined,
        },
      ],
      totalWeight: 1,
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
    defaultActions.set(port, a);
  }
  return a;
}

function pickBackend(action: RouteAction): BackendRef {
  const list = action.backends;
  if (list.length === 1) return list[0]!;
  let r = Math.random() * action.totalWeight;
  for (const b of list) {
    r -= b.weight;
    if (r < 0) return b;
  }
  return list[list.length - 1]!;
}

function roll(percent: number): boolean {
  return percent >= 100 || Math.random() * 100 < percent;
}

/** Jittered exponential backoff: base × 2^(n-1), scaled by a random factor in [0.5, 1). */
function backoff(baseMs: number, retry: number): number {
  return baseMs * 2 ** Math.min(retry - 1, 6) * (0.5 + Math.random() / 2);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * The endpoint's address of the family the client used (IPv6 for a tunnel to an IPv6 VIP) when it
 * has one, else its primary address: a dual-stack pod is reached the way it was asked for.
 */
function dialAddress(ep: EndpointInfo, clientHost: string): string {
  const v6 = clientHost.includes(':');
  if (ep.ip.includes(':') === v6) return ep.ip;
  return ep.ips?.find((ip) => ip.includes(':') === v6) ?? ep.ip;
}

function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'));
  const i = host.indexOf(':');
  return i < 0 ? host : host.slice(0, i);
}

function portOf(host: string): number | undefined {
  const m = /:(\d+)$/.exec(host);
  return m === null ||
    (host.includes(':') && !host.startsWith('[') && host.indexOf(':') !== host.lastIndexOf(':'))
    ? undefined
    : Number(m[1]);
}

function headerValue(headers: IncomingHttpHeaders, name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

function requestHasBody(req: DownReq): boolean {
  if ('stream' in req) return !req.stream.endAfterHeaders && !req.readableEnded;
  const h = req.headers;
  if (h['transfer-encoding'] !== undefined) return true;
  const len = h['content-length'];
  if (len !== undefined) return len !== '0';
  // HTTP/1.1 without Content-Length or Transfer-Encoding has no body, whatever the method.
  return false;
}

async function* countingBody(body: Readable, st: RequestState): AsyncGenerator<Buffer> {
  for await (const c of body) {
    st.requestBytes += (c as Buffer).length;
    yield c as Buffer;
  }
}

function writeHead(
  res: DownRes,
  status: number,
  headers: Record<string, string | string[] | number | undefined>,
): void {
  const clean: Record<string, string | string[] | number> = {};
  for (const k in headers) {
    const v = headers[k];
    if (v !== undefined) clean[k] = v;
  }
  (res as ServerResponse).writeHead(status, clean);
}

/**
 * src.pipe(dst) with teardown both ways: an error or early close on either side destroys the other.
 * Not stream.pipeline: it allocates an AbortController per call and aborts it (building a
 * DOMException) on every normal finish, a measurable cost per request.
 */
function relay(src: Readable, dst: Writable): void {
  src.pipe(dst);
  src.once('error', () => dst.destroy());
  src.once('close', () => {
    if (!src.readableEnded) dst.destroy();
  });
  dst.once('close', () => {
    if (!src.readableEnded) src.destroy();
  });
}

/** Gives back the in-flight count a request holds on an endpoint (idempotent). */
function releaseActive(st: RequestState): void {
  if (st.activeOn !== undefined) {
    st.activeOn.active--;
    st.activeOn = undefined;
  }
}

/**
 * node:http writes its status line and headers as a latin1 string, corked together with the first
 * body Buffer. An Http2Stream (the HBONE CONNECT stream) takes strings without copying them
 * (decodeStrings: false) and, in mixed string/Buffer writev batches, we saw the status line arrive
 * as garbage bytes. Encoding strings to Buffers before they reach the stream avoids that path.
 */
function writeStringsAsBuffers(stream: Duplex): void {
  const write = stream.write as (...args: unknown[]) => boolean;
  stream.write = function (this: Duplex, chunk: unknown, ...rest: unknown[]): boolean {
    if (typeof chunk === 'string') {
      const enc = typeof rest[0] === 'string' ? (rest[0] as BufferEncoding) : 'utf8';
      const cb = rest.find((r) => typeof r === 'function');
      return cb === undefined
        ? write.call(this, Buffer.from(chunk, enc))
        : write.call(this, Buffer.from(chunk, enc), cb);
    }
    return write.call(this, chunk, ...rest);
  } as Duplex['write'];
}
