// Filter 5, the request head: a RequestRedirect answers here (3xx with Location); otherwise the
// backend is chosen (weighted split; a rule without backendRefs forwards to the service itself),
// then URL and host rewrites and the route's and backend's header modifiers build the upstream
// request head. Connection-specific headers never cross (RFC 9110 7.6.1).
import type { HeaderMap } from '../routing/filters.js';
import { applyHeaderModifier, modifyPath, redirectLocation } from '../routing/filters.js';
import type { BackendRef, RouteAction } from '../routing/types.js';
import type { Cluster } from '../traffic/cluster.js';
import { type Filter, failure } from './context.js';
import { defaultAction } from './route.js';

export const HOP_BY_HOP: ReadonlySet<string> = new Set([
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

export function pickBackend(action: RouteAction): BackendRef {
  const list = action.backends;
  if (list.length === 1) return list[0]!;
  let r = Math.random() * action.totalWeight;
  for (const b of list) {
    r -= b.weight;
    if (r < 0) return b;
  }
  return list[list.length - 1]!;
}

function portOf(host: string): number | undefined {
  const m = /:(\d+)$/.exec(host);
  return m === null ||
    (host.includes(':') && !host.startsWith('[') && host.indexOf(':') !== host.lastIndexOf(':'))
    ? undefined
    : Number(m[1]);
}

export function rewriteFilter(clusters: ReadonlyMap<string, Cluster>): Filter {
  return {
    name: 'rewrite',
    run(rc, next) {
      const action = rc.action!;
      const service = rc.service!;
      const matched = rc.matched!;
      if (action.redirect !== undefined) {
        const location = redirectLocation(
          action.redirect,
          { scheme: 'http', host: rc.host, port: portOf(rc.authority), path: rc.path, query: rc.query },
          matched,
        );
        return { kind: 'local', status: action.redirect.statusCode, body: '', headers: { location } };
      }
      if (action.backends.length === 0 && action.invalidBackends) return failure('NO_CLUSTER');

      const out: HeaderMap = {};
      const headers = rc.headers;
      for (const k in headers) if (k.charCodeAt(0) !== 58 && !HOP_BY_HOP.has(k)) out[k] = headers[k];
      if (headers.te === 'trailers') out.te = 'trailers';
      out['x-request-id'] = rc.requestId;
      rc.upstreamHost = rc.authority;
      rc.upstreamPath = rc.url;
      const rw = action.rewrite;
      if (rw !== undefined) {
        if (rw.hostname !== undefined) rc.upstreamHost = rw.hostname;
        if (rw.path !== undefined) rc.upstreamPath = modifyPath(rc.path, rw.path, matched) + rc.search;
      }
      applyHeaderModifier(out, action.requestHeaders);

      const backend =
        action.backends.length === 0 ? defaultAction(service, rc.port!).backends[0]! : pickBackend(action);
      // A bound pod is its own (only) backend; it is not in `services`.
      const target = service.pod ? service : rc.snap.services.get(backend.service);
      const cluster = clusters.get(backend.service);
      if (target === undefined || cluster === undefined) return failure('NO_CLUSTER');
      applyHeaderModifier(out, backend.requestHeaders);
      const port = rc.port!.port;
      const targetPort = backend.port ?? (target.ports.has(port) ? port : target.ports.keys().next().value);
      if (targetPort === undefined) return failure('NO_CLUSTER');
      rc.backend = backend;
      rc.target = target;
      rc.cluster = cluster;
      rc.targetPort = targetPort;
      rc.upstreamHeaders = out;
      rc.h2Upstream = (rc.grpc && rc.h2) || (target.ports.get(targetPort)?.http2 ?? false);
      rc.span?.inject(out);
      return next(rc);
    },
  };
}
