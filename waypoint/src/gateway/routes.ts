// Which routes attach to which listener of an ingress Gateway (Gateway API parentRefs with
// sectionName/port, allowedRoutes namespaces, hostname intersection), and what the L7 engine gets
// for them: each attached HTTPRoute/GRPCRoute once per listener port, its parentRef narrowed to
// that port and its hostnames narrowed to the listeners' (so the engine's own matching, filters
// and splits apply unchanged). TLSRoutes and TCPRoutes are read here (the engine forwards bytes).
import type { ConfigState, GatewayObject } from '@hypha/shared/config';
import {
  type CompiledGateway,
  type CompiledListener,
  hostnameMatches,
  type ListenerRouteKind,
} from './listeners.js';

export interface RouteObjectLike {
  kind: string;
  name: string;
  namespace: string;
  spec: Readonly<Record<string, unknown>>;
}

interface ParentRef {
  group: string;
  kind: string;
  name: string;
  namespace: string;
  sectionName: string | undefined;
  port: number | undefined;
}

function parentRefsOf(route: RouteObjectLike): ParentRef[] {
  const raw = Array.isArray(route.spec.parentRefs) ? (route.spec.parentRefs as unknown[]) : [];
  const out: ParentRef[] = [];
  for (const r of raw) {
    if (r === null || typeof r !== 'object') continue;
    const p = r as Record<string, unknown>;
    if (typeof p.name !== 'string') continue;
    out.push({
      group: typeof p.group === 'string' ? p.group : 'gateway.networking.k8s.io',
      kind: typeof p.kind === 'string' ? p.kind : 'Gateway',
      name: p.name,
      namespace: typeof p.namespace === 'string' ? p.namespace : route.namespace,
      sectionName: typeof p.sectionName === 'string' ? p.sectionName : undefined,
      port: typeof p.port === 'number' ? p.port : undefined,
    });
  }
  return out;
}

function routeHostnames(route: RouteObjectLike): string[] {
  const h = route.spec.hostnames;
  return Array.isArray(h)
    ? h.filter((x): x is string => typeof x === 'string').map((x) => x.toLowerCase())
    : [];
}

/**
 * Hostnames a route serves on a listener (Gateway API intersection). `undefined`: any host;
 * empty: none (the route does not attach to this listener).
 */
export function intersectHostnames(
  listener: string | undefined,
  route: readonly string[],
): string[] | undefined {
  if (listener === undefined) return route.length === 0 ? undefined : [...route];
  if (route.length === 0) return [listener];
  const out: string[] = [];
  for (const h of route) {
    if (h === listener || (listener.startsWith('*.') && hostnameMatches(listener, h))) out.push(h);
    else if (h.startsWith('*.') && hostnameMatches(h, listener)) out.push(listener);
  }
  return out;
}

export interface Attachment {
  route: RouteObjectLike;
  listener: CompiledListener;
  /** undefined = any host. */
  hostnames: string[] | undefined;
}

/** Every (route, listener) pair that attaches; a route may attach to several listeners. */
export function attachRoutes(
  gw: GatewayObject,
  compiled: CompiledGateway,
  kind: ListenerRouteKind,
  routes: readonly RouteObjectLike[],
): Attachment[] {
  const out: Attachment[] = [];
  for (const route of routes) {
    const refs = parentRefsOf(route).filter(
      (p) =>
        p.kind === 'Gateway' &&
        p.group === 'gateway.networking.k8s.io' &&
        p.name === gw.name &&
        p.namespace === gw.namespace,
    );
    const seen = new Set<CompiledListener>();
    for (const ref of refs) {
      for (const l of compiled.listeners) {
        if (seen.has(l)) continue;
        if (ref.sectionName !== undefined && ref.sectionName !== l.name) continue;
        if (ref.port !== undefined && ref.port !== l.port) continue;
        if (!l.supportedKinds.includes(kind)) continue;
        if (l.allowedFrom === 'Same' && route.namespace !== gw.namespace) continue;
        // TCPRoutes have no hostnames.
        const hostnames =
          kind === 'TCPRoute' ? undefined : intersectHostnames(l.hostname, routeHostnames(route));
        if (hostnames !== undefined && hostnames.length === 0) continue;
        seen.add(l);
        out.push({ route, listener: l, hostnames });
      }
    }
  }
  return out;
}

/** The namespaces whose routes may attach (its own, plus every namespace if a listener allows All). */
export function routeNamespaces(state: ConfigState, gw: GatewayObject, compiled: CompiledGateway): string[] {
  if (!compiled.listeners.some((l) => l.allowedFrom === 'All')) return [gw.namespace];
  return [...state.namespaces()].map((n) => n.name);
}

const engineCopies = new WeakMap<object, Map<string, Record<string, unknown>>>();

/**
 * The route as the engine should see it on one listener port: parentRef = this Gateway on that
 * port, hostnames = the union of what it serves on that port's listeners. One object per
 * (route, port, hostnames), reused while the route object is the same (the engine compiles each
 * object once).
 */
function engineRoute(
  route: RouteObjectLike,
  gw: GatewayObject,
  port: number,
  hostnames: string[] | undefined,
): Record<string, unknown> {
  const sig = `${gw.namespace}/${gw.name}:${port}|${hostnames?.join(',') ?? '*'}`;
  let byKey = engineCopies.get(route);
  if (byKey === undefined) {
    byKey = new Map();
    engineCopies.set(route, byKey);
  }
  let copy = byKey.get(sig);
  if (copy === undefined) {
    const { hostnames: _h, parentRefs: _p, ...rest } = route.spec as Record<string, unknown>;
    copy = {
      metadata: { name: route.name, namespace: route.namespace },
      spec: {
        ...rest,
        parentRefs: [
          {
            group: 'gateway.networking.k8s.io',
            kind: 'Gateway',
            name: gw.name,
            namespace: gw.namespace,
            port,
          },
        ],
        ...(hostnames === undefined ? {} : { hostnames }),
      },
    };
    byKey.set(sig, copy);
  }
  return copy;
}

/** Engine inputs for the HTTPRoutes or GRPCRoutes attached to HTTP/HTTPS listeners. */
export function engineRoutes(
  gw: GatewayObject,
  attachments: readonly Attachment[],
): Record<string, unknown>[] {
  // Per route and port: union of hostnames (any host on one listener = any host on the port).
  const byRoutePort = new Map<RouteObjectLike, Map<number, string[] | undefined>>();
  for (const a of attachments) {
    let ports = byRoutePort.get(a.route);
    if (ports === undefined) {
      ports = new Map();
      byRoutePort.set(a.route, ports);
    }
    const port = a.listener.port;
    if (!ports.has(port)) ports.set(port, a.hostnames === undefined ? undefined : [...a.hostnames]);
    else {
      const cur = ports.get(port);
      if (cur === undefined || a.hostnames === undefined) ports.set(port, undefined);
      else for (const h of a.hostnames) if (!cur.includes(h)) cur.push(h);
    }
  }
  const out: Record<string, unknown>[] = [];
  for (const [route, ports] of byRoutePort)
    for (const [port, hostnames] of ports) out.push(engineRoute(route, gw, port, hostnames?.sort()));
  return out;
}

// ---- TLSRoute / TCPRoute (bytes forwarded to one weighted backend per connection) ----

export interface StreamBackend {
  /** `namespace/name` of the Service. */
  service: string;
  port: number;
  weight: number;
}

export interface StreamRoute {
  kind: 'TLSRoute' | 'TCPRoute';
  /** `namespace/name` of the route. */
  name: string;
  listener: CompiledListener;
  /** TLSRoute: lowercase SNI patterns; undefined = any. */
  hostnames: string[] | undefined;
  backends: StreamBackend[];
}

/** Backends of a TLSRoute/TCPRoute (first rule; Gateway API allows one rule for these kinds). */
export function streamBackends(route: RouteObjectLike): StreamBackend[] {
  const rules = Array.isArray(route.spec.rules) ? (route.spec.rules as unknown[]) : [];
  const out: StreamBackend[] = [];
  for (const rule of rules.slice(0, 1)) {
    const refs = (rule as { backendRefs?: unknown } | null)?.backendRefs;
    if (!Array.isArray(refs)) continue;
    for (const r of refs) {
      const b = r as Record<string, unknown>;
      if (typeof b.name !== 'string' || typeof b.port !== 'number') continue;
      if (b.kind !== undefined && b.kind !== 'Service') continue;
      const weight = typeof b.weight === 'number' ? b.weight : 1;
      if (weight <= 0) continue;
      out.push({
        service: `${typeof b.namespace === 'string' ? b.namespace : route.namespace}/${b.name}`,
        port: b.port,
        weight,
      });
    }
  }
  return out;
}

export function streamRoutes(
  kind: 'TLSRoute' | 'TCPRoute',
  attachments: readonly Attachment[],
): StreamRoute[] {
  return attachments.map((a) => ({
    kind,
    name: `${a.route.namespace}/${a.route.name}`,
    listener: a.listener,
    hostnames: a.hostnames,
    backends: streamBackends(a.route),
  }));
}

/**
 * The TLSRoute for a client hello on a listener port: exact SNI first, then the longest wildcard,
 * then a route without hostnames. The TCPRoute of a TCP port: its first.
 */
export function findStreamRoute(
  routes: readonly StreamRoute[],
  port: number,
  serverName: string | undefined,
): StreamRoute | undefined {
  const host = serverName?.toLowerCase();
  let best: StreamRoute | undefined;
  let bestRank = -1;
  for (const r of routes) {
    if (r.listener.port !== port) continue;
    if (r.hostnames === undefined) {
      if (bestRank < 0) {
        best = r;
        bestRank = 0;
      }
      continue;
    }
    if (host === undefined) continue;
    for (const h of r.hostnames) {
      const rank = h === host ? 1_000_000 : h.startsWith('*.') && hostnameMatches(h, host) ? h.length : -1;
      if (rank > bestRank) {
        best = r;
        bestRank = rank;
      }
    }
  }
  return best;
}

/** One backend by weight (random), as the engine's weighted split. */
export function pickStreamBackend(route: StreamRoute, random = Math.random): StreamBackend | undefined {
  const total = route.backends.reduce((n, b) => n + b.weight, 0);
  if (total <= 0) return undefined;
  let x = random() * total;
  for (const b of route.backends) {
    x -= b.weight;
    if (x < 0) return b;
  }
  return route.backends[route.backends.length - 1];
}
