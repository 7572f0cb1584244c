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
import type {
  ConfigState,
  Endpoint,
  Service,
  ServiceEntry,
  WaypointRef,
  Workload,
} from '@hypha/shared/config';
import { appLabel, versionLabel, workloadName } from '@hypha/shared/telemetry';
import { appProtocolOf } from '../egress/entry.js';
import type { TlsSecretInput } from '../egress/tls.js';
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
const entryInputs = new WeakMap<ServiceEntry, { vips: string; input: ServiceInput }>();

/**
 * A ServiceEntry bound to this waypoint as the engine's input (egress): its VIPs are what the
 * agents tunnel here as the authority (each host's allocated VIP, or the entry's own addresses).
 */
function findEntryInput(state: ConfigState, entry: ServiceEntry): ServiceInput {
  const hostOfVip: Record<string, string> = {};
  for (const host of entry.hosts) {
    if (host.startsWith('*.')) continue;
    const m = state.findServiceEntryByHost(host);
    if (m === undefined || m.entry.name !== entry.name || m.entry.namespace !== entry.namespace) continue;
    for (const a of m.addresses) hostOfVip[a] ??= host;
  }
  for (const a of entry.addresses)
    if (!a.includes('/') && hostOfVip[a] === undefined) hostOfVip[a] = entry.hosts[0]!;
  const vips = Object.keys(hostOfVip).sort();
  const vipKey = vips.map((v) => `${v}=${hostOfVip[v]}`).join(',');
  const hit = entryInputs.get(entry);
  if (hit !== undefined && hit.vips === vipKey) return hit.input;
  const input: ServiceInput = {
    name: entry.name,
    namespace: entry.namespace,
    vips,
    ports: entry.ports.map((p) => {
      const app = appProtocolOf(p.protocol);
      return {
        port: p.number,
        ...(p.targetPort !== undefined ? { targetPort: p.targetPort } : {}),
        ...(p.name !== undefined ? { name: p.name } : {}),
        ...(app !== undefined ? { appProtocol: app } : {}),
      };
    }),
    endpoints: [],
    external: {
      hosts: entry.hosts,
      resolution: entry.resolution,
      location: entry.location,
      hostOfVip,
      endpoints: entry.endpoints.map((e) => ({ address: e.address, ...(e.ports ? { ports: e.ports } : {}) })),
    },
  };
  entryInputs.set(entry, { vips: vipKey, input });
  return input;
}

/** The kubernetes.io/tls Secrets the TrafficPolicies' `tls.credentialName` name (client certificates). */
function tlsSecretsOf(
  state: ConfigState,
  policies: readonly { namespace: string; spec: unknown }[],
): TlsSecretInput[] {
  const out: TlsSecretInput[] = [];
  for (const p of policies) {
    const tls = (p.spec as { tls?: { credentialName?: unknown } } | undefined)?.tls;
    if (typeof tls?.credentialName !== 'string') continue;
    const s = state.findTlsSecret(p.namespace, tls.credentialName);
    if (s !== undefined)
      out.push({
        namespace: s.namespace,
        name: s.name,
        certificate: s.certificate,
        privateKey: s.privateKey,
      });
  }
  return out;
}

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
  const entries = [...state.serviceEntries()].filter((e) => sameRef(e.waypoint, gateway));
  const namespaces = new Set<string>([
    gateway.namespace,
    ...bound.map((s) => s.namespace),
    ...entries.map((e) => e.namespace),
  ]);
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
  const trafficPolicies = [...backendNamespaces].flatMap((ns) => state.findTrafficPolicies(ns));
  const entryInputList = entries
    .filter((e) => !services.has(`${e.namespace}/${e.name}`))
    .map((e) => findEntryInput(state, e));
  return {
    gateway: { name: gateway.name, namespace: gateway.namespace },
    services: [...[...services.values()].map((s) => findServiceInput(state, s)), ...entryInputList],
    httpRoutes,
    grpcRoutes,
    authorizationPolicies: [...state.authorizationPolicies()]
      .filter((p) => p.object.targetRefs.length > 0 && namespaces.has(p.namespace))
      .map((p) => p.object),
    requestAuthentications: [...namespaces].flatMap((ns) => state.findRequestAuthentications(ns)),
    trafficPolicies,
    tlsSecrets: tlsSecretsOf(state, trafficPolicies as unknown as { namespace: string; spec: unknown }[]),
    workloads,
    boundWorkloads,
    clusterDomain,
  };
}
