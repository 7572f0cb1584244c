// The waypoint's input model: what the config state hands it (services with endpoints, and the raw
// route/policy objects), validated at the edge with zod into the typed records the data path uses.
//
// Raw HTTPRoute/GRPCRoute/AuthorizationPolicy/TrafficPolicy objects may come Kubernetes-shaped
// (`{ metadata: { name, namespace, creationTimestamp }, spec }`) or as the config model's translated
// records (`{ name, namespace, spec, ... }`); `readObjectMeta` accepts both.
import { z } from 'zod';
import { WaypointConfigError } from './errors.js';

export interface WorkloadInfo {
  /** The pod's name. */
  name: string;
  /**
   * Istio's workload name for metric labels (the pod's controller, see workloadName in
   * @hypha/shared/telemetry); the pod's name when absent.
   */
  workload?: string | undefined;
  namespace: string;
  serviceAccount?: string | undefined;
  app?: string | undefined;
  version?: string | undefined;
}

export interface ServicePortInput {
  port: number;
  /** Port on the endpoints; defaults to `port`. Named target ports are resolved by the caller. */
  targetPort?: number | undefined;
  name?: string | undefined;
  appProtocol?: string | undefined;
}

export interface EndpointInput {
  ip: string;
  /**
   * Every address of the endpoint's pod (dual-stack), `ip` among them: the waypoint dials the one
   * of the family the client used (the authority's), else `ip`.
   */
  ips?: readonly string[] | undefined;
  ready?: boolean | undefined;
  /** Service port → port on this endpoint, when it differs from the service's targetPort. */
  targetPorts?: Readonly<Record<string, number>> | ReadonlyMap<number, number> | undefined;
  workload?: WorkloadInfo | undefined;
  /**
   * The endpoint is a waypoint standing in for the service (an ingress gateway sends traffic for a
   * waypoint-bound service through its waypoint): the tunnel's authority is `authorityHost:port`
   * (the service VIP), not the endpoint's own address.
   */
  authorityHost?: string | undefined;
}

export interface ServiceInput {
  name: string;
  namespace: string;
  vips: readonly string[];
  ports: readonly ServicePortInput[];
  endpoints: readonly EndpointInput[];
  /**
   * An ingress gateway's listener port, not a Service: requests that no route takes get 404 NR
   * (there are no endpoints of its own to fall back to).
   */
  listener?: boolean | undefined;
  /**
   * A ServiceEntry bound to this waypoint (egress): its endpoints are outside the mesh and are
   * dialed in plain TCP (or TLS, TrafficPolicy `tls`), not HBONE. `endpoints` is then ignored.
   */
  external?: ExternalInput | undefined;
}

export interface ExternalInput {
  /** The entry's hosts (lower case; `*.x` wildcards). */
  hosts: readonly string[];
  resolution: 'DNS' | 'STATIC' | 'NONE';
  location?: 'MESH_EXTERNAL' | 'MESH_INTERNAL' | undefined;
  /** VIP (allocated or given) → the host it stands for, so a DNS entry resolves the host asked for. */
  hostOfVip?: Readonly<Record<string, string>> | undefined;
  /** `address` is an IP, or with DNS a host name resolved when connecting; `ports`: port name → port. */
  endpoints?:
    | readonly { address: string; ports?: Readonly<Record<string, number>> | undefined }[]
    | undefined;
}

export interface BoundWorkloadInput {
  ip: string;
  workload: WorkloadInfo;
}

export interface WaypointConfigInput {
  /** The waypoint's own Gateway (class hypha-waypoint): routes and policies may target it. */
  gateway: { name: string; namespace: string };
  /** Services bound to this waypoint (authority VIP:port names one of them). */
  services: readonly ServiceInput[];
  httpRoutes?: readonly unknown[];
  grpcRoutes?: readonly unknown[];
  authorizationPolicies?: readonly unknown[];
  trafficPolicies?: readonly unknown[];
  /** RequestAuthentication objects (JWT); those with targetRefs naming this waypoint or its services apply. */
  requestAuthentications?: readonly unknown[];
  /**
   * kubernetes.io/tls Secrets a TrafficPolicy `tls.credentialName` names (client certificates for
   * TLS origination to ServiceEntries).
   */
  tlsSecrets?: readonly import('./egress/tls.js').TlsSecretInput[];
  /** Known workloads by IP, for the source labels of metrics and the access log. */
  workloads?: readonly { ip: string; workload: WorkloadInfo }[];
  /**
   * Pods bound to this waypoint themselves (`hypha.dev/use-waypoint` on the pod or its namespace,
   * Gateway `waypoint-for: workload|all`): authority podIP:port names one, on any port.
   */
  boundWorkloads?: readonly BoundWorkloadInput[];
  clusterDomain?: string;
}

// ---- typed, indexed records ----

export interface ServicePort {
  port: number;
  targetPort: number;
  name: string | undefined;
  appProtocol: string | undefined;
  /** Upstream speaks HTTP/2 (appProtocol grpc/http2/h2c, or name prefix grpc-/http2-). */
  http2: boolean;
  /** Never sniffed: appProtocol/name says plain TCP. */
  tcp: boolean;
}

export interface EndpointInfo {
  ip: string;
  /** Every address of the endpoint (`ip` first); absent means `ip` alone. */
  ips?: readonly string[];
  ready: boolean;
  targetPorts: ReadonlyMap<number, number>;
  workload: WorkloadInfo | undefined;
  /** See EndpointInput.authorityHost. */
  authorityHost?: string | undefined;
  /** An endpoint outside the mesh (a ServiceEntry's): dialed directly, never over HBONE. */
  egress?: EgressEndpoint | undefined;
}

export interface EgressEndpoint {
  /** The entry's `namespace/name`. */
  entry: string;
  /** Resolve this name when connecting; `''`: the host the dialed VIP stands for. */
  dnsName: string | undefined;
  /** VIP → host (see ExternalInput.hostOfVip). */
  hostOfVip: ReadonlyMap<string, string>;
  /** The first exact host: the SNI and the name resolved when no VIP says otherwise. */
  defaultHost: string | undefined;
}

export interface ServiceEntry {
  /** `namespace/name`. */
  key: string;
  name: string;
  namespace: string;
  hostname: string;
  vips: readonly string[];
  ports: ReadonlyMap<number, ServicePort>;
  endpoints: readonly EndpointInfo[];
  /**
   * Set on the entry standing for one pod bound to the waypoint (key `pod:<ip>`): every port is
   * served, on the same port of the pod; no routes attach to it.
   */
  pod?: true | undefined;
  /** An ingress gateway's listener (ServiceInput.listener): no route → 404 NR. */
  listener?: true | undefined;
  /** A ServiceEntry served for egress (its hosts are also its hostnames). */
  external?: { hosts: readonly string[]; resolution: 'DNS' | 'STATIC' | 'NONE' } | undefined;
}

export interface ObjectMeta {
  name: string;
  namespace: string;
  creationTimestamp: string;
}

const name = z.string().min(1).max(253);
const workloadSchema = z.object({
  name,
  workload: z.string().optional(),
  namespace: name,
  serviceAccount: z.string().optional(),
  app: z.string().optional(),
  version: z.string().optional(),
});
const port = z.number().int().min(1).max(65535);
const serviceSchema = z.object({
  name,
  namespace: name,
  vips: z.array(z.ipv4().or(z.ipv6())),
  ports: z.array(
    z.object({
      port,
      targetPort: port.optional(),
      name: z.string().optional(),
      appProtocol: z.string().optional(),
    }),
  ),
  endpoints: z.array(
    z.object({
      ip: z.ipv4().or(z.ipv6()),
      ips: z.array(z.ipv4().or(z.ipv6())).optional(),
      ready: z.boolean().optional(),
      targetPorts: z.union([z.record(z.string(), port), z.instanceof(Map)]).optional(),
      workload: workloadSchema.optional(),
      authorityHost: z.ipv4().or(z.ipv6()).optional(),
    }),
  ),
  listener: z.boolean().optional(),
});

/** Formats a zod issue path the way Kubernetes users read field paths: `spec.rules[0].matches`. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out === '' ? '' : '.'}${String(p)}`;
  return out;
}

/** Runs a schema; on failure throws a WaypointConfigError naming the first bad field. */
export function parseWith<T>(
  schema: z.ZodType<T>,
  value: unknown,
  kind: string,
  meta: ObjectMeta,
  base: string,
): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = fieldPath([...(base === '' ? [] : [base]), ...issue.path]);
  throw new WaypointConfigError('INVALID_OBJECT', kind, meta.namespace, meta.name, field, issue.message);
}

/** Reads name/namespace/creationTimestamp from a Kubernetes object or a translated record. */
export function readObjectMeta(kind: string, raw: unknown): { meta: ObjectMeta; spec: unknown } {
  const obj = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const md = (typeof obj.metadata === 'object' && obj.metadata !== null ? obj.metadata : obj) as Record<
    string,
    unknown
  >;
  const meta: ObjectMeta = {
    name: typeof md.name === 'string' ? md.name : '',
    namespace: typeof md.namespace === 'string' ? md.namespace : '',
    creationTimestamp: typeof md.creationTimestamp === 'string' ? md.creationTimestamp : '',
  };
  if (meta.name === '' || meta.namespace === '') {
    throw new WaypointConfigError(
      'INVALID_OBJECT',
      kind,
      meta.namespace || '?',
      meta.name || '?',
      'metadata',
      'name and namespace are required',
    );
  }
  return { meta, spec: recordSpec(kind, obj) };
}

/**
 * The config model's translated records carry validated refs beside the raw spec (`refs`), and an
 * AuthorizationPolicy record has its spec fields at the top level; rebuild the spec shape here.
 */
function recordSpec(kind: string, obj: Record<string, unknown>): unknown {
  const refs = Array.isArray(obj.refs) ? obj.refs : undefined;
  if (obj.spec === undefined && kind === 'AuthorizationPolicy' && obj.metadata === undefined) {
    const { action, targetRefs, rules, selector } = obj;
    return { action, targetRefs, rules, selector };
  }
  if (refs === undefined || typeof obj.spec !== 'object' || obj.spec === null) return obj.spec;
  const spec = obj.spec as Record<string, unknown>;
  const field = kind === 'TrafficPolicy' || kind === 'RequestAuthentication' ? 'targetRefs' : 'parentRefs';
  return spec[field] === undefined ? { ...spec, [field]: refs } : spec;
}

const H2_PROTOCOLS = new Set(['grpc', 'http2', 'h2c', 'kubernetes.io/h2c', 'grpc-web']);
const TCP_PROTOCOLS = new Set(['tcp', 'mysql', 'mongo', 'redis', 'tls', 'https']);

export function protocolOf(p: ServicePortInput): { http2: boolean; tcp: boolean } {
  const app = p.appProtocol?.toLowerCase();
  const prefix = p.name?.toLowerCase().split('-')[0];
  const proto = app ?? prefix;
  return {
    http2: proto !== undefined && H2_PROTOCOLS.has(proto),
    tcp: proto !== undefined && TCP_PROTOCOLS.has(proto),
  };
}

export function buildService(input: ServiceInput, clusterDomain: string): ServiceEntry {
  const meta = {
    name: String(input?.name ?? '?'),
    namespace: String(input?.namespace ?? '?'),
    creationTimestamp: '',
  };
  const s = parseWith(serviceSchema, input, 'Service', meta, '');
  const ports = new Map<number, ServicePort>();
  for (const p of s.ports) {
    ports.set(p.port, {
      port: p.port,
      targetPort: p.targetPort ?? p.port,
      name: p.name,
      appProtocol: p.appProtocol,
      ...protocolOf(p),
    });
  }
  const endpoints: EndpointInfo[] = s.endpoints.map((e) => {
    const tp = new Map<number, number>();
    if (e.targetPorts instanceof Map)
      for (const [k, v] of e.targetPorts as Map<number, number>) tp.set(Number(k), v);
    else if (e.targetPorts) for (const [k, v] of Object.entries(e.targetPorts)) tp.set(Number(k), v);
    const ips = [e.ip, ...(e.ips ?? []).filter((ip) => ip !== e.ip)];
    return {
      ip: e.ip,
      ips,
      ready: e.ready ?? true,
      targetPorts: tp,
      workload: e.workload,
      ...(e.authorityHost !== undefined ? { authorityHost: e.authorityHost } : {}),
    };
  });
  return {
    key: `${s.namespace}/${s.name}`,
    name: s.name,
    namespace: s.namespace,
    hostname: `${s.name}.${s.namespace}.svc.${clusterDomain}`,
    vips: s.vips,
    ports,
    endpoints,
    ...(s.listener === true ? { listener: true as const } : {}),
  };
}

const boundWorkloadSchema = z.object({ ip: z.ipv4().or(z.ipv6()), workload: workloadSchema });

/**
 * A pod bound to the waypoint as a one-endpoint entry, so the data path (authz, clusters, upstream
 * identity, telemetry) treats it like a service without routes. `ports` starts empty: the proxy
 * asks `podPort` for the port a client dialed.
 */
export function buildPodEntry(input: BoundWorkloadInput): ServiceEntry {
  const meta = {
    name: String(input?.workload?.name ?? '?'),
    namespace: String(input?.workload?.namespace ?? '?'),
    creationTimestamp: '',
  };
  const w = parseWith(boundWorkloadSchema, input, 'Pod', meta, '');
  return {
    key: `pod:${w.ip}`,
    name: w.workload.name,
    namespace: w.workload.namespace,
    hostname: w.ip,
    vips: [],
    ports: new Map(),
    endpoints: [{ ip: w.ip, ips: [w.ip], ready: true, targetPorts: new Map(), workload: w.workload }],
    pod: true,
  };
}

/** The (memoized, plain HTTP-or-sniffed) port entry of a pod entry for a dialed port. */
export function podPort(pod: ServiceEntry, port: number): ServicePort {
  const ports = pod.ports as Map<number, ServicePort>;
  let p = ports.get(port);
  if (p === undefined) {
    p = { port, targetPort: port, name: undefined, appProtocol: undefined, http2: false, tcp: false };
    // Bounded: one entry per port clients actually dialed on this pod (at most 65535).
    ports.set(port, p);
  }
  return p;
}

/** The port an endpoint serves a service port on. */
export function endpointPort(svc: ServiceEntry, ep: EndpointInfo, servicePort: number): number | undefined {
  if (svc.pod) return servicePort;
  return ep.targetPorts.get(servicePort) ?? svc.ports.get(servicePort)?.targetPort;
}
