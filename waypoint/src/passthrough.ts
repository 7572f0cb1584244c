// What the waypoint forwards without parsing requests: plain TCP (a service port declared TCP, or a
// stream that is not HTTP) and HTTP/1.1 upgrades (WebSocket). Both are authorized first: TCP on the
// L4 attributes alone (an HTTP-only ALLOW never matches it), an upgrade as the HTTP request it
// starts with, after its JWT is verified (RequestAuthentication, as the pipeline's authn filter).
// Then the bytes are piped both ways.
import http, { type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '@hypha/shared';
import { formatAuthority } from '@hypha/shared/hbone';
import type { RequestAuth } from '@hypha/shared/policy';
import type { JwksCache } from './authn/jwks.js';
import type { WaypointSnapshot } from './config.js';
import { FAILURES } from './errors.js';
import { endpointPort, type ServiceEntry } from './model.js';
import { AUTHN_FLAG, authenticate, challenge } from './pipeline/authn.js';
import { authorize, recordDryRun } from './pipeline/authz.js';
import { headerValue, upstreamOf } from './pipeline/balance.js';
import { type StreamContext, stripPort } from './pipeline/context.js';
import { relay } from './pipeline/relay.js';
import { pickBackend } from './pipeline/rewrite.js';
import { defaultAction, findService, findTarget } from './pipeline/route.js';
import type { RequestLog } from './request-log.js';
import { applyHeaderModifier, type HeaderMap } from './routing/filters.js';
import { findRoute } from './routing/match.js';
import type { Cluster, EndpointState } from './traffic/cluster.js';
import type { UpstreamPools } from './upstream.js';

export interface PassthroughDeps {
  clusters: ReadonlyMap<string, Cluster>;
  pools: UpstreamPools;
  log: Logger;
  requests: RequestLog;
  /** RequestAuthentication on upgrades, as in the pipeline's authn filter. */
  jwks: JwksCache;
  jwtClock: () => number;
}

export async function forwardTcp(
  deps: PassthroughDeps,
  snap: WaypointSnapshot,
  stream: Duplex,
  ctx: StreamContext,
): Promise<void> {
  const found = findTarget(snap, ctx);
  if (found === undefined) return void stream.destroy();
  const decision = authorize(snap, found.service.key, ctx, found.port.port, undefined);
  if (decision.dryRun !== undefined) {
    recordDryRun(
      deps.requests.metrics,
      deps.log,
      decision,
      found.service.key,
      found.port.port,
      ctx,
      undefined,
    );
  }
  if (!decision.allowed) {
    deps.log.debug(
      { service: found.service.key, source: ctx.source.ip, policy: decision.policy },
      'TCP connection denied by policy',
    );
    return void stream.destroy();
  }
  const cluster = deps.clusters.get(found.service.key);
  const ep = cluster?.findEndpoint(undefined);
  const port = ep === undefined ? undefined : endpointPort(found.service, ep.info, found.port.port);
  if (ep === undefined || port === undefined) return void stream.destroy();
  let upstream: Duplex;
  try {
    upstream = await deps.pools.fetchStream(upstreamOf(ep.info, port, ctx.authority.host, snap.egressTls));
  } catch {
    return void stream.destroy();
  }
  if (stream.destroyed) return void upstream.destroy();
  upstream.on('error', () => {});
  relay(stream, upstream);
  relay(upstream, stream);
}

/** An HTTP/1.1 Upgrade request: routed and authorized like any request, then a raw pipe. */
export async function forwardUpgrade(
  deps: PassthroughDeps,
  snap: WaypointSnapshot,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  ctx: StreamContext,
): Promise<void> {
  socket.on('error', () => {});
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
  let authnFailure: string | undefined;
  const reject = (status: number, text: string, flag: string, headers: Record<string, string> = {}) => {
    code = status;
    flags = flag;
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-length: ${Buffer.byteLength(text)}\r\ncontent-type: text/plain\r\n${extra}connection: close\r\n\r\n${text}`,
    );
  };
  socket.once('close', () => {
    const durationMs = performance.now() - start;
    deps.requests.record(snap, ctx, service, endpoint, {
      protocol: 'http',
      responseCode: code,
      grpcStatus: undefined,
      responseFlags: flags,
      durationMs,
      requestBytes: 0,
      responseBytes: 0,
    });
    deps.requests.access.info({
      method,
      path,
      protocol: 'HTTP/1.1',
      upgrade: req.headers.upgrade,
      response_code: code,
      response_flags: flags,
      duration: Math.round(durationMs),
      downstream_remote_address: `${ctx.source.ip}:${ctx.source.port}`,
      upstream_host: endpoint?.ip,
      authn_failure: authnFailure,
    });
  });
  const found = findService(snap, ctx, host);
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
  const authnSet = snap.authn.get(found.service.key);
  let auth: RequestAuth | undefined;
  if (authnSet !== undefined) {
    const query = qi < 0 ? '' : url.slice(qi + 1);
    const r = await authenticate(authnSet, req.headers, query, deps.jwks, deps.jwtClock());
    if (r !== undefined && 'failure' in r) {
      authnFailure = r.failure;
      return reject(401, r.failure, AUTHN_FLAG, challenge(hostHeader));
    }
    auth = r?.auth;
  }
  const decision = authorize(
    snap,
    found.service.key,
    ctx,
    found.port.port,
    { method, path, host: hostHeader, headers: req.headers },
    auth,
  );
  if (decision.dryRun !== undefined) {
    const where = { method, path };
    recordDryRun(deps.requests.metrics, deps.log, decision, found.service.key, found.port.port, ctx, where);
  }
  if (!decision.allowed) return reject(403, 'RBAC: access denied', '-');
  if (action.backends.length === 0 && action.invalidBackends)
    return reject(500, FAILURES.NO_CLUSTER.body, 'NC');
  const backend =
    action.backends.length === 0
      ? defaultAction(found.service, found.port).backends[0]!
      : pickBackend(action);
  const cluster = deps.clusters.get(backend.service);
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
    upstream = await deps.pools.fetchStream(upstreamOf(ep.info, epPort, ctx.authority.host, snap.egressTls));
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
