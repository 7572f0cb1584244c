// Turns the config state into what an ingress gateway serves: its compiled listeners, the L7
// engine's input, and the TLS/TCP routes it forwards by SNI or port.
//
//   Gateway (class hypha) + Secrets ─► compileGateway ─► listeners by port (HTTP/HTTPS/TLS/TCP)
//   HTTPRoute/GRPCRoute ─► attachRoutes ─► engineRoutes (one copy per listener port) ─┐
//   listener ports ─► one "listener service" per HTTP/HTTPS port (LISTENER_VIP:port) ─┼─► WaypointConfigInput
//   backendRefs ─► Services (bound to a waypoint? its waypoint pods stand in) ────────┘
//
// A request on listener port P is handed to the engine as dialed to LISTENER_VIP:P: it finds the
// listener service, matches the routes attached to the Gateway on P (hostnames, paths, headers...),
// and splits/filters/retries exactly as a waypoint does. A destination bound to a waypoint is
// reached through that waypoint: its endpoints are the waypoint's pods, tunnelled with authority
// VIP:port, so the waypoint applies its own routes and policies (fails closed if it is missing).
import type { ConfigState, GatewayObject, Service, WaypointRef } from '@hypha/shared/config';
import { findServiceInput, workloadInfo } from '../daemon/input.js';
import type { EndpointInput, ServiceInput, WaypointConfigInput } from '../model.js';
import { type CompiledGateway, compileGateway } from './listeners.js';
import {
  type Attachment,
  attachRoutes,
  engineRoutes,
  type RouteObjectLike,
  routeNamespaces,
  type StreamRoute,
  streamRoutes,
} from './routes.js';

/** The address listener services are indexed under: never a real Service VIP. */
export const LISTENER_VIP = '0.0.0.0';

export interface GatewayPlan {
  gateway: GatewayObject;
  compiled: CompiledGateway;
  input: WaypointConfigInput;
  tlsRoutes: StreamRoute[];
  tcpRoutes: StreamRoute[];
  /** listener name → attached routes (for status). */
  attachedRoutes: Map<string, number>;
}

/** The name of the engine's service standing for listener port `port`. */
export function listenerServiceName(gw: WaypointRef, port: number): string {
  return `${gw.name}.listener-${port}`;
}

const routedInputs = new WeakMap<Service, { key: string; input: ServiceInput }>();

/**
 * A backend Service as the gateway reaches it: its own endpoints, or, when it is bound to a
 * waypoint, that waypoint's ready pods with the tunnel authority set to the Service VIP. A binding
 * to a waypoint that does not exist (or has no ready pod) leaves no endpoint: 503, fail closed.
 */
function backendInput(state: ConfigState, svc: Service): ServiceInput {
  const lookup = state.findWaypointFor(svc);
  const vip = svc.vips[0];
  if (lookup === undefined || vip === undefined) return findServiceInput(state, svc);
  const pods = lookup.waypoint === undefined ? [] : state.findWaypointWorkloads(lookup.ref);
  const key = pods.map((w) => `${w.uid}@${w.ips.join(',')}`).join('|');
  const hit = routedInputs.get(svc);
  if (hit !== undefined && hit.key === key) return hit.input;
  const targetPorts = Object.fromEntries(svc.ports.map((p) => [String(p.port), p.port]));
  const endpoints: EndpointInput[] = pods.map((w) => ({
    ip: w.ips[0]!,
    ready: true,
    targetPorts,
    workload: workloadInfo(w),
    authorityHost: vip,
  }));
  const base = findServiceInput(state, svc);
  const input: ServiceInput = { ...base, endpoints };
  routedInputs.set(svc, { key, input });
  return input;
}

function backendKeys(routes: readonly RouteObjectLike[]): Set<string> {
  const keys = new Set<string>();
  for (const r of routes) {
    const rules = Array.isArray(r.spec.rules) ? (r.spec.rules as unknown[]) : [];
    const visit = (ref: unknown) => {
      const b = ref as Record<string, unknown> | null;
      if (b === null || typeof b !== 'object' || typeof b.name !== 'string') return;
      if (b.kind !== undefined && b.kind !== 'Service') return;
      keys.add(`${typeof b.namespace === 'string' ? b.namespace : r.namespace}/${b.name}`);
    };
    for (const rule of rules) {
      const x = rule as { backendRefs?: unknown[]; filters?: unknown[] } | null;
      for (const b of x?.backendRefs ?? []) {
        visit(b);
        for (const f of ((b as { filters?: unknown[] }).filters ?? []) as {
          requestMirror?: { backendRef?: unknown };
        }[])
          visit(f?.requestMirror?.backendRef);
      }
      for (const f of (x?.filters ?? []) as { requestMirror?: { backendRef?: unknown } }[])
        visit(f?.requestMirror?.backendRef);
    }
  }
  return keys;
}

/** Everything the ingress gateway `gw` serves, from the current state; undefined if it does not exist. */
export function buildGatewayPlan(
  state: ConfigState,
  ref: WaypointRef,
  clusterDomain = 'cluster.local',
): GatewayPlan | undefined {
  const gw = state.findGateway(ref.namespace, ref.name);
  if (gw === undefined || gw.gatewayClassName !== 'hypha') return undefined;
  const compiled = compileGateway(state, gw);
  const namespaces = routeNamespaces(state, gw, compiled);
  const all = <T>(f: (ns: string) => T[]) => namespaces.flatMap(f);
  const http = attachRoutes(
    gw,
    compiled,
    'HTTPRoute',
    all((ns) => state.findHttpRoutes(ns)),
  );
  const grpc = attachRoutes(
    gw,
    compiled,
    'GRPCRoute',
    all((ns) => state.findGrpcRoutes(ns)),
  );
  const tls = attachRoutes(
    gw,
    compiled,
    'TLSRoute',
    all((ns) => state.findTlsRoutes(ns)),
  );
  const tcp = attachRoutes(
    gw,
    compiled,
    'TCPRoute',
    all((ns) => state.findTcpRoutes(ns)),
  );

  const attachedRoutes = new Map<string, number>(compiled.listeners.map((l) => [l.name, 0]));
  for (const a of [...http, ...grpc, ...tls, ...tcp] as Attachment[])
    attachedRoutes.set(a.listener.name, (attachedRoutes.get(a.listener.name) ?? 0) + 1);

  // Only served listeners carry traffic; routes on the others still count for status.
  const served = (list: Attachment[]) => list.filter((a) => a.listener.serving);
  const httpServed = served(http);
  const grpcServed = served(grpc);
  const tlsRoutes = streamRoutes('TLSRoute', served(tls));
  const tcpRoutes = streamRoutes('TCPRoute', served(tcp));

  const services = new Map<string, ServiceInput>();
  for (const plan of compiled.ports.values()) {
    if (plan.kind !== 'HTTP' && plan.kind !== 'HTTPS') continue;
    const name = listenerServiceName(gw, plan.port);
    services.set(`${gw.namespace}/${name}`, {
      name,
      namespace: gw.namespace,
      vips: [LISTENER_VIP],
      // Decrypted HTTPS is HTTP here: the port must be sniffed, never forwarded as TCP ("https").
      ports: [{ port: plan.port, name: 'http' }],
      endpoints: [],
      listener: true,
    });
  }
  const routeObjects = [...httpServed, ...grpcServed].map((a) => a.route);
  const keys = backendKeys(routeObjects);
  for (const r of [...tlsRoutes, ...tcpRoutes]) for (const b of r.backends) keys.add(b.service);
  const waypointBound = new Set<string>();
  for (const key of keys) {
    const [ns = '', name = ''] = key.split('/');
    const svc = state.findServiceByName(ns, name);
    if (svc === undefined) continue;
    if (state.findWaypointFor(svc) !== undefined) waypointBound.add(key);
    services.set(key, backendInput(state, svc));
  }
  const backendNamespaces = new Set([...services.values()].map((s) => s.namespace));
  // A waypoint-bound Service's TrafficPolicy is its waypoint's to apply (not twice).
  const trafficPolicies = [...backendNamespaces]
    .flatMap((ns) => state.findTrafficPolicies(ns))
    .filter((p) => !p.refs.every((r) => waypointBound.has(`${r.namespace ?? p.namespace}/${r.name}`)));

  const input: WaypointConfigInput = {
    gateway: { name: gw.name, namespace: gw.namespace },
    services: [...services.values()],
    httpRoutes: engineRoutes(gw, httpServed),
    grpcRoutes: engineRoutes(gw, grpcServed),
    authorizationPolicies: [...state.authorizationPolicies()]
      .filter((p) => p.object.targetRefs.length > 0 && p.namespace === gw.namespace)
      .map((p) => p.object),
    requestAuthentications: state.findRequestAuthentications(gw.namespace),
    trafficPolicies,
    workloads: [],
    clusterDomain,
  };
  return { gateway: gw, compiled, input, tlsRoutes, tcpRoutes, attachedRoutes };
}
