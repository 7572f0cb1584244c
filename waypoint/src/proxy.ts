// The waypoint's L7 engine. A stream (an HBONE CONNECT stream in production, any Duplex in tests)
// arrives with the service address the client dialed (authority VIP:port); the waypoint serves the
// HTTP inside it and sends each request on to one endpoint of the chosen backend.
// A pod bound to the waypoint itself (workload binding) is dialed as podIP:port: it is a one-endpoint
// entry (`pod: true`) without routes, so requests get authz and telemetry and go to that pod only.
//
//   stream ─ sniff ─┬─ HTTP/1.1 ─► http.Server ──┐
//                   ├─ HTTP/2 ───► http2 server ─┼─► RequestContext ─► pipeline (pipeline/index.ts)
//                   └─ other ────► TCP forward   │     route → authz → rate-limit → fault → rewrite
//   HTTP/1.1 Upgrade (WebSocket) ─► raw pipe ◄───┘     → mirror → retry → breaker → balance → upstream
//
// This file only wires streams to the pipeline and owns the configuration; each concern is a
// filter of its own in pipeline/.
//
// Invariants:
// - Every request ends in exactly one `finish` (on the response's 'close'): metrics, access log,
//   span end, circuit-breaker slot release and endpoint active count happen there, once.
// - A request runs on the snapshot it started with; a config change applies to the next request.
// - Failures map to status + Istio response flag in one table (errors.ts FAILURES).
import { randomUUID } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from 'node:http2';
import { Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { createSilentLogger, type Logger } from '@hypha/shared';
import { formatAuthority } from '@hypha/shared/hbone';
import type { TapHub } from '@hypha/shared/telemetry';
import { Registry } from 'prom-client';
import { JwksCache, type JwksCacheOptions } from './authn/jwks.js';
import { addressKey, buildSnapshot, trafficFor, type WaypointSnapshot } from './config.js';
import { egressConnect } from './egress/connect.js';
import { createHostResolver, type HostResolver } from './egress/resolve.js';
import type { WaypointConfigError } from './errors.js';
import type { WaypointConfigInput } from './model.js';
import { forwardTcp, forwardUpgrade, type PassthroughDeps } from './passthrough.js';
import {
  type DownstreamResponse,
  type Next,
  RequestContext,
  type StreamContext,
} from './pipeline/context.js';
import { buildPipeline } from './pipeline/index.js';
import { RateLimits } from './pipeline/rate-limit-buckets.js';
import { answer } from './pipeline/respond.js';
import { findService } from './pipeline/route.js';
import { RequestLog, type RequestSource } from './request-log.js';
import { sniffProtocol } from './sniff.js';
import { type HttpReporter, RequestMetrics } from './telemetry.js';
import { createTracing, type Tracing, type TracingOptions } from './tracing.js';
import { Cluster } from './traffic/cluster.js';
import { CONNECTION_WINDOW, type ConnectUpstream, STREAM_WINDOW, UpstreamPools } from './upstream.js';

export type { StreamContext } from './pipeline/context.js';

export interface WaypointOptions {
  config: WaypointConfigInput;
  connectUpstream: ConnectUpstream;
  /**
   * Egress to ServiceEntries: how their hosts are resolved (default: the system resolver) and how
   * long a connection (TCP and TLS handshake) may take (default 10 s).
   */
  egress?: { resolver?: HostResolver; connectTimeoutMs?: number };
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
  /** Finished requests for `hypha tap` (admin /tap), named as `reporter` (`waypoint ns/name`). */
  tap?: { hub: TapHub; reporter: string };
  /** Monotonic milliseconds for the rate limit buckets (tests drive it); default performance.now. */
  rateLimitClock?: () => number;
  /** Remote JWKS cache settings (refresh interval, retries, clock); tests drive them. */
  jwks?: JwksCacheOptions;
  /** Wall clock (ms) for JWT exp/nbf checks; default Date.now. */
  jwtClock?: () => number;
  /** Metric `reporter` label: `waypoint` (default) or `gateway` (`hypha gateway`). */
  reporter?: HttpReporter;
  /**
   * The proxy's own workload: the metrics' source for clients that are no mesh workload (an
   * ingress gateway's external clients), as Istio's gateways report.
   */
  self?: RequestSource;
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

/** Request bodies up to this size (by content-length) are read whole before the pipeline runs. */
const WHOLE_REQUEST_BYTES = 64 * 1024;
type DownRes = ServerResponse | Http2ServerResponse;

export async function createWaypoint(opts: WaypointOptions): Promise<Waypoint> {
  const tracing = await createTracing(opts.tracing);
  return new WaypointProxy(opts, tracing);
}

class WaypointProxy implements Waypoint {
  readonly registry: Registry;
  #snapshot: WaypointSnapshot;
  #errors: WaypointConfigError[];
  readonly #clusters = new Map<string, Cluster>();
  readonly #rateLimits: RateLimits;
  readonly #pools: UpstreamPools;
  readonly #metrics: RequestMetrics;
  readonly #requests: RequestLog;
  readonly #log: Logger;
  readonly #tracing: Tracing;
  readonly #pipeline: Next;
  readonly #passthrough: PassthroughDeps;
  readonly #h1: http.Server;
  readonly #h2: http2.Http2Server;
  readonly #streamCtx = new WeakMap<object, StreamContext>();
  readonly #sniffTimeoutMs: number;
  readonly #open = new Set<Duplex>();
  #pendingH2Ctx: StreamContext | undefined;
  #closed = false;

  constructor(opts: WaypointOptions, tracing: Tracing) {
    this.registry = opts.registry ?? new Registry();
    this.#log = (opts.logger ?? createSilentLogger()).child({ component: 'waypoint' });
    const access = opts.accessLog ?? (opts.logger ?? createSilentLogger()).child({ component: 'access' });
    this.#metrics = new RequestMetrics(this.registry, opts.reporter);
    this.#requests = new RequestLog(
      this.#metrics,
      access,
      opts.trustDomain ?? 'cluster.local',
      opts.tap,
      opts.self,
    );
    this.#tracing = tracing;
    // ServiceEntry endpoints are dialed directly (TCP, TLS origination); mesh endpoints over HBONE.
    const connect = egressConnect(opts.connectUpstream, {
      resolver: opts.egress?.resolver ?? createHostResolver(),
      ...(opts.egress?.connectTimeoutMs !== undefined
        ? { connectTimeoutMs: opts.egress.connectTimeoutMs }
        : {}),
    });
    this.#pools = new UpstreamPools({ connect });
    this.#sniffTimeoutMs = opts.sniffTimeoutMs ?? 1000;
    this.#rateLimits = new RateLimits({ registry: this.registry, now: opts.rateLimitClock });
    const built = buildSnapshot(opts.config);
    this.#snapshot = built.snapshot;
    this.#errors = built.errors;
    this.#logConfigErrors();
    this.#syncClusters();
    const jwks = new JwksCache({
      onFetchError: (uri, err) =>
        this.#log.warn({ uri, err: err.message }, 'JWKS fetch failed; keeping the last good key set'),
      ...opts.jwks,
    });
    const jwtClock = opts.jwtClock ?? Date.now;
    this.#pipeline = buildPipeline({
      clusters: this.#clusters,
      pools: this.#pools,
      metrics: this.#metrics,
      log: this.#log,
      maxBufferedBodyBytes: opts.maxBufferedBodyBytes ?? 1 << 20,
      rateLimits: this.#rateLimits,
      jwks,
      jwtClock,
    });
    this.#passthrough = {
      clusters: this.#clusters,
      pools: this.#pools,
      log: this.#log,
      requests: this.#requests,
      jwks,
      jwtClock,
    };

    this.#h1 = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      const ctx = this.#streamCtx.get(req.socket);
      if (ctx === undefined) return void res.destroy();
      this.#handleRequest(req, res, ctx, false);
    });
    this.#h1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const ctx = this.#streamCtx.get(socket);
      if (ctx === undefined) return void socket.destroy();
      forwardUpgrade(this.#passthrough, this.#snapshot, req, socket, head, ctx).catch((err: unknown) => {
        this.#log.warn({ err }, 'upgrade failed unexpectedly');
        socket.destroy();
      });
    });
    this.#h1.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => refuseMalformed(err, socket));
    // A client may send its request and half-close at once (`printf ... | nc -N`, HTTP/1.0 tools,
    // an HBONE END_STREAM right behind the request). Node's default ends our side on that FIN,
    // before the proxied response exists, so the client got nothing. Half-open (undocumented but
    // long-standing in node:http): the response is written, then the stream ends.
    (this.#h1 as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
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
    this.#log.debug({ compiled: built.stats.compiled, reused: built.stats.reused }, 'config applied');
    this.#snapshot = built.snapshot;
    this.#errors = built.errors;
    this.#logConfigErrors();
    this.#syncClusters();
    this.#rateLimits.retain(this.#snapshot.traffic.values());
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
      forwardTcp(this.#passthrough, this.#snapshot, stream, ctx).catch(() => stream.destroy());
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
          forwardTcp(this.#passthrough, this.#snapshot, stream, ctx).catch(() => stream.destroy());
          break;
        case 'closed':
          stream.destroy();
          break;
      }
    });
  }

  // ---- HTTP ----

  #handleRequest(req: DownReq, res: DownRes, ctx: StreamContext, h2: boolean): void {
    const snap = this.#snapshot;
    const headers = req.headers;
    const authority =
      (h2 ? (headers[':authority'] as string | undefined) : undefined) ??
      headers.host ??
      formatAuthority(ctx.authority);
    const rid = headers['x-request-id'];
    const rc = new RequestContext(
      ctx,
      snap,
      {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        authority,
        headers,
        h2,
        requestId: typeof rid === 'string' ? rid : randomUUID(),
      },
      requestHasBody(req) ? (req as Readable) : null,
      res as unknown as DownstreamResponse,
    );
    const protocol = h2 ? 'HTTP/2' : `HTTP/${req.httpVersion}`;
    res.once('close', () => this.#requests.finish(rc, protocol));
    const found = findService(snap, ctx, rc.host);
    if (found !== undefined) {
      rc.service = found.service;
      rc.port = found.port;
    }
    if (this.#tracing.enabled) {
      rc.span = this.#tracing.startSpan(
        `${found?.service.hostname ?? rc.host}:${ctx.authority.port}/*`,
        headers,
        {
          'http.method': rc.method,
          'http.url': `http://${authority}${rc.url}`,
          'guid:x-request-id': rc.requestId,
          component: 'proxy',
        },
      );
    }
    // A small body of known length is read whole first: it goes upstream with the head in one
    // write, and retries and mirrors can replay it without buffering later.
    const len = headers['content-length'];
    if (rc.body !== null && typeof len === 'string' && Number(len) <= WHOLE_REQUEST_BYTES) {
      const body = req as Readable;
      const chunks: Buffer[] = [];
      body.on('data', (c: Buffer) => chunks.push(c));
      body.once('end', () => {
        const whole = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        rc.body = whole;
        rc.requestBytes = whole.length;
        this.#run(rc);
      });
      return;
    }
    this.#run(rc);
  }

  #run(rc: RequestContext): void {
    let out: ReturnType<Next>;
    try {
      out = this.#pipeline(rc);
    } catch (err) {
      this.#unexpected(rc, err);
      return;
    }
    if (out instanceof Promise)
      out.then(
        (o) => answer(rc, o),
        (err: unknown) => this.#unexpected(rc, err),
      );
    else answer(rc, out);
  }

  /** A bug or a client body that failed while buffering: answer if still possible, never crash. */
  #unexpected(rc: RequestContext, err: unknown): void {
    this.#log.warn({ err, service: rc.service?.key }, 'request failed unexpectedly');
    if (!rc.res.headersSent && !rc.res.destroyed) answer(rc, { kind: 'failure', code: 'UPSTREAM_RESET' });
    else rc.res.destroy();
  }
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

/**
 * A request node:http cannot parse (bad request line, header names, chunk sizes, headers over the
 * size limit) is answered before the stream closes, so the client reads why instead of seeing a
 * bare reset. Nothing is written once a response has started or the client has gone.
 */
function refuseMalformed(err: NodeJS.ErrnoException, socket: Duplex): void {
  const status =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? '431 Request Header Fields Too Large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? '408 Request Timeout'
        : '400 Bad Request';
  // node:http keeps the response in progress on the socket; a status line cannot follow its headers.
  const inProgress = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && inProgress?.headersSent !== true && err.code !== 'ECONNRESET') {
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    socket.once('finish', () => socket.destroy());
    return;
  }
  socket.destroy();
}
