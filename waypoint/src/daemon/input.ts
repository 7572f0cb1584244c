// Turns the shared config state into the waypoint engine's input. The waypoint serves the Services
// bound to its Gateway (Service label, else namespace label) and must also know every Service a
// route of theirs sends traffic to (weighted backendRefs name other Services, e.g. echo-v1/echo-v2),
// else those backends answer 500 NC. Routes, policies and traffic policies are passed raw: the
// engine keeps only those whose parentRefs/targetRefs name one of its services or its Gateway.
// Pods bound to the Gateway themselves (waypoint-for workload|all) are passed as `boundWorkloads`:
// agents send traffic addressed to their IPs here, authority podIP:port.
//
// The engine compiles each input object once and reuses it while the object is the same
// (compile-cache.ts), so this hands back the same input object for state objects that did not
// change: the config state replaces a Service or Workload view when it changes, never edits it.
// A Service's input also carries its endpoints' workloads (names, labels), so it is rebuilt when one
// of those workload views is replaced, even if the Service view itself is unchanged.
import type { ConfigState, Endpoint, Service, WaypointRef, Workload } from '@hypha/shared/config';
import { appLabel, versionLabel, workloadName } from '@hypha/shared/telemetry';
import type {
  BoundWorkloadInput,
  EndpointInput,
  ServiceInput,
  WaypointConfigInput,
  WorkloadInfo,
} from '../index.js';

const workloadInfos = new WeakMap<Workload, WorkloadInfo>();
const workloadEntries = new WeakMap<Workload, readonly BoundWorkloadInput[]>();
const serviceInputs = new WeakMap<Service, { workloads: (Workload | undefined)[]; input: ServiceInput }>();
const routeBackends = new WeakMap<object, readonly { ns: string; name: string }[]>();

function sameRef(a: WaypointRef | undefined, b: WaypointRef): boolean {
  return a !== undefined && a.name === b.name && a.namespace === b.namespace;
}

export function workloadInfo(w: Workload): WorkloadInfo {
  let info = workloadInfos.get(w);
  if (info === undefined) {
    info = {
      name: w.name,
      // The agents name workloads with the same functions: one pod, one name in every metric.
      workload: workloadName(w.name, w.labels),
      namespace: w.namespace,
      serviceAccount: w.serviceAccount,
      app: appLabel(w.labels),
      version: versionLabel(w.labels),
    };
    workloadInfos.set(w, info);
  }
  return info;
}

/** One `{ ip, workload }` per address of the workload (the same objects while it is unchanged). */
function workloadEntriesOf(w: Workload): readonly BoundWorkloadInput[] {
  let entries = workloadEntries.get(w);
  if (entries === undefined) {
    const workload = workloadInfo(w);
    entries = w.ips.map((ip) => ({ ip, workload }));
    workloadEntries.set(w, entries);
  }
  return entries;
}

function endpointWorkload(state: ConfigState, ep: Endpoint): Workload | undefined {
  return ep.workloadUid !== undefined ? state.findWorkloadByUid(ep.workloadUid) : undefined;
}

export function findServiceInput(state: ConfigState, svc: Service): ServiceInput {
  const hit = serviceInputs.get(svc);
  if (hit !== undefined && svc.endpoints.every((ep, i) => endpointWorkload(state, ep) === hit.workloads[i]))
    return hit.input;
  const workloads = svc.endpoints.map((ep) => endpointWorkload(state, ep));
  const input = toServiceInput(svc, workloads);
  serviceInputs.set(svc, { workloads, input });
  return input;
}

function toServiceInput(svc: Service, workloads: readonly (Workload | undefined)[]): ServiceInput {
  const endpoints: EndpointInput[] = svc.endpoints.map((ep, i) => {
    const w = workloads[i];
    return {
      ip: ep.ip,
      // Dual-stack pods: the waypoint dials the address of the family the client used.
      ...(w !== undefined && w.ips.length > 1 ? { ips: w.ips } : {}),
      ready: ep.ready,
      targetPorts: ep.targetPorts,
      ...(w ? { workload: workloadInfo(w) } : {}),
    };
  });
  return {
    name: svc.name,
    namespace: svc.namespace,
    vips: svc.vips,
    ports: svc.ports
      .filter((p) => p.protocol === 'TCP')
      .map((p) => ({
        port: p.port,
        // A named targetPort is resolved per endpoint (targetPorts); the service-level value is a fallback.
        ...(typeof p.targetPort === 'number' ? { targetPort: p.targetPort } : {}),
        ...(p.name !== undefined ? { name: p.name } : {}),
        ...(p.appProtocol !== undefined ? { appProtocol: p.appProtocol } : {}),
      })),
    endpoints,
  };
}

/** The Services a route's rules send traffic or mirror copies to (cached per route object). */
function findBackendRefs(route: {
  spec: Readonly<Record<string, unknown>>;
  namespace: string;
}): readonly { ns: string; name: string }[] {
  let refs = routeBackends.get(route);
  if (refs === undefined) {
    refs = backendRefsOf(route.spec, route.namespace);
    routeBackends.set(route, refs);
  }
  return refs;
}

function backendRefsOf(
  spec: Readonly<Record<string, unknown>>,
  routeNs: string,
): { ns: string; name: string }[] {
  const out: { ns: string; name: string }[] = [];
  const rules = Array.isArray(spec.rules) ? (spec.rules as unknown[]) : [];
  const visit = (ref: unknown) => {
    if (ref === null || typeof ref !== 'object') return;
    const r = ref as { name?: unknown; namespace?: unknown; kind?: unknown };
    if (typeof r.name !== 'string') return;
    if (r.kind !== undefined && r.kind !== 'Service') return;
    out.push({ ns: typeof r.namespace === 'string' ? r.namespace : routeNs, name: r.name });
  };
  for (const rule of rules) {
    if (rule === null || typeof rule !== 'object') continue;
    const r = rule as { backendRefs?: unknown; filters?: unknown };
    if (Array.isArray(r.backendRefs)) r.backendRefs.forEach(visit);
    const filters = [
      ...(Array.isArray(r.filters) ? r.filters : []),
      ...(Array.isArray(r.backendRefs)
        ? r.backendRefs.flatMap((b) =>
            Array.isArray((b as { filters?: unknown }).filters) ? (b as { filters: unknown[] }).filters : [],
          )
        : []),
    ];
    for (const f of filters)
      visit((f as { requestMirror?: { backendRef?: unknown } } | null)?.requestMirror?.backendRef);
  }
  return out;
}

/** The waypoint engine's configuration for Gateway `gateway`, from the current state. */
export function buildWaypointInput(
  state: ConfigState,
  gateway: WaypointRef,
  clusterDomain = 'cluster.local',
): WaypointConfigInput {
  const bound = [...state.services()].filter((s) => sameRef(s.waypoint, gateway));
  const namespaces = new Set<string>([gateway.namespace, ...bound.map((s) => s.namespace)]);
  const httpRoutes = [...namespaces].flatMap((ns) => state.findHttpRoutes(ns));
  const grpcRoutes = [...namespaces].flatMap((ns) => state.findGrpcRoutes(ns));
  const services = new Map<string, Service>();
  for (const s of bound) services.set(`${s.namespace}/${s.name}`, s);
  for (const route of [...httpRoutes, ...grpcRoutes]) {
    for (const ref of findBackendRefs(route)) {
      const key = `${ref.ns}/${ref.name}`;
      if (services.has(key)) continue;
      const svc = state.findServiceByName(ref.ns, ref.name);
      if (svc) services.set(key, svc);
    }
  }
  const backendNamespaces = new Set<string>([
    ...namespaces,
    ...[...services.values()].map((s) => s.namespace),
  ]);
  const boundWorkloads = [...state.workloads()]
    .filter((w) => w.inMesh && w.ips.length > 0 && sameRef(state.findWaypointFor(w)?.ref, gateway))
    .flatMap(workloadEntriesOf);
  const workloads = [...state.workloads()].flatMap(workloadEntriesOf);
  return {
    gateway: { name: gateway.name, namespace: gateway.namespace },
    services: [...services.values()].map((s) => findServiceInput(state, s)),
    httpRoutes,
    grpcRoutes,
    authorizationPolicies: [...state.authorizationPolicies()]
      .filter((p) => p.object.targetRefs.length > 0 && namespaces.has(p.namespace))
      .map((p) => p.object),
    requestAuthentications: [...namespaces].flatMap((ns) => state.findRequestAuthentications(ns)),
    trafficPolicies: [...backendNamespaces].flatMap((ns) => state.findTrafficPolicies(ns)),
    workloads,
    boundWorkloads,
    clusterDomain,
  };
}
