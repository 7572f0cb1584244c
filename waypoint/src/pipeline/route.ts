// Filter 1, route match: which service the request is for (the dialed address; a pod dialed by IP
// is that pod whatever the Host header says; else the Host header on the same port) and which
// route rule takes it. No service → 404 NR. No rule → the service itself on the dialed port.
import { addressKey, type WaypointSnapshot } from '../config.js';
import { podPort, type ServiceEntry, type ServicePort } from '../model.js';
import { emptyAction } from '../routing/compile-action.js';
import { findRoute } from '../routing/match.js';
import type { RouteAction } from '../routing/types.js';
import { type Filter, failure, type StreamContext } from './context.js';

/** What the dialed address names: a service VIP:port, else a bound pod (any port). */
export function findTarget(
  snap: WaypointSnapshot,
  ctx: StreamContext,
): { service: ServiceEntry; port: ServicePort } | undefined {
  const byAddr = snap.byAddress.get(addressKey(ctx.authority.host, ctx.authority.port));
  if (byAddr !== undefined) return byAddr;
  const pod = snap.pods.get(ctx.authority.host);
  return pod === undefined ? undefined : { service: pod, port: podPort(pod, ctx.authority.port) };
}

/** The service for a request: by the dialed address, else by Host on the dialed port. */
export function findService(
  snap: WaypointSnapshot,
  ctx: StreamContext,
  host: string,
): { service: ServiceEntry; port: ServicePort } | undefined {
  const byAddr = findTarget(snap, ctx);
  if (byAddr !== undefined) return byAddr;
  const svc = snap.byHostname.get(host);
  const port = svc?.ports.get(ctx.authority.port);
  return svc !== undefined && port !== undefined ? { service: svc, port } : undefined;
}

const defaultActions = new WeakMap<ServicePort, RouteAction>();

/** No route matched: the service's own endpoints on the dialed port (one object per port). */
export function defaultAction(svc: ServiceEntry, port: ServicePort): RouteAction {
  let a = defaultActions.get(port);
  if (a === undefined) {
    a = emptyAction('default');
    a.backends = [
      { service: svc.key, port: port.port, weight: 1, requestHeaders: undefined, responseHeaders: undefined },
    ];
    a.totalWeight = 1;
    defaultActions.set(port, a);
  }
  return a;
}

const ROOT = { type: 'PathPrefix', value: '/' } as const;

export const routeFilter: Filter = {
  name: 'route',
  run(rc, next) {
    // The proxy resolved the service already (spans and metrics name it even on early answers).
    const { service, port } = rc;
    if (service === undefined || port === undefined) return failure('NO_ROUTE');
    const route = findRoute(rc.snap.routes, service.key, {
      method: rc.method,
      path: rc.path,
      query: rc.query,
      host: rc.host,
      headers: rc.headers,
      port: port.port,
    });
    // A gateway listener has no endpoints of its own: only routes lead anywhere from it.
    if (route === undefined && service.listener) return failure('NO_ROUTE');
    rc.action = route?.action ?? defaultAction(service, port);
    rc.matched = route?.path ?? ROOT;
    return next(rc);
  },
};
