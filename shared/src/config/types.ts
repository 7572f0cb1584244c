// The typed configuration model. Sources (files, Kubernetes informers) hand Kubernetes-shaped
// objects to `translate.ts`, which validates them into the `*Object` records below; the state
// (`state.ts`) derives the data-path views (`Workload`, `Service`, `Waypoint`) from those records.
//
// Translated records are plain data (strings, numbers, arrays, plain objects): they compare with a
// structural equality and cost nothing to keep. Derived views may hold class instances (SpiffeId).
import type { SpiffeId } from '../identity/spiffe.js';

export type Labels = Readonly<Record<string, string>>;

/** Labels and names of the user-facing API (ARCHITECTURE.md section 6). */
export const LABEL_DATAPLANE_MODE = 'hypha.dev/dataplane-mode';
export const LABEL_MTLS_MODE = 'hypha.dev/mtls-mode';
export const LABEL_USE_WAYPOINT = 'hypha.dev/use-waypoint';
/** Optional companion of use-waypoint: the namespace of the waypoint when it lives elsewhere. */
export const LABEL_USE_WAYPOINT_NAMESPACE = 'hypha.dev/use-waypoint-namespace';
export const LABEL_WAYPOINT_FOR = 'hypha.dev/waypoint-for';
/** Set on waypoint pods (Gateway API convention): which Gateway the pod serves. */
export const LABEL_GATEWAY_NAME = 'gateway.networking.k8s.io/gateway-name';
/** EndpointSlice label naming its Service. */
export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';
export const WAYPOINT_GATEWAY_CLASS = 'hypha-waypoint';
/** Gateways of this class are ingress gateways (`hypha gateway`), not waypoints. */
export const INGRESS_GATEWAY_CLASS = 'hypha';
export const DEFAULT_ROOT_NAMESPACE = 'hypha-system';

export type DataplaneMode = 'ambient' | 'none';
export type MtlsMode = 'strict' | 'permissive';
/** PeerAuthentication modes as written (Istio's spelling). UNSET inherits; DISABLE acts as PERMISSIVE. */
export type PeerAuthenticationMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE' | 'UNSET';
export type WaypointFor = 'service' | 'workload' | 'all' | 'none';

/** A label-selected waypoint: the Gateway's namespace and name, or `none` to opt out explicitly. */
export interface WaypointRef {
  readonly namespace: string;
  readonly name: string;
}
/** A use-waypoint label value: a Gateway, or an explicit opt-out of the namespace's waypoint. */
export type WaypointBinding = WaypointRef | 'none';

export interface ObjectMeta {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
}

// ---- translated records (one per accepted Kubernetes object) ----

export interface NamespaceObject {
  readonly kind: 'Namespace';
  readonly name: string;
  readonly labels: Labels;
  readonly dataplaneMode: DataplaneMode | undefined;
  readonly mtlsMode: MtlsMode | undefined;
  readonly waypoint: WaypointBinding | undefined;
}

export interface PodObject {
  readonly kind: 'Pod';
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  readonly serviceAccount: string;
  readonly node: string;
  readonly ips: readonly string[];
  readonly ready: boolean;
  readonly hostNetwork: boolean;
  /** Pod label `hypha.dev/dataplane-mode`, which overrides the namespace's. */
  readonly dataplaneMode: DataplaneMode | undefined;
  readonly waypoint: WaypointBinding | undefined;
  /** Named container ports, for Services whose targetPort is a name. Undefined when there are none. */
  readonly namedPorts: Readonly<Record<string, number>> | undefined;
}

export interface ServicePort {
  readonly port: number;
  /** A number, or a container port name resolved per pod. Defaults to `port`. */
  readonly targetPort: number | string;
  readonly name: string | undefined;
  readonly protocol: 'TCP' | 'UDP' | 'SCTP';
  readonly appProtocol: string | undefined;
}

export interface ServiceObject {
  readonly kind: 'Service';
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  /** Cluster IPs (empty for headless services). */
  readonly vips: readonly string[];
  readonly ports: readonly ServicePort[];
  /** Undefined: endpoints come only from EndpointSlices. */
  readonly selector: Labels | undefined;
  readonly waypoint: WaypointBinding | undefined;
}

export interface EndpointSliceObject {
  readonly kind: 'EndpointSlice';
  readonly name: string;
  readonly namespace: string;
  readonly serviceName: string;
  readonly addressType: 'IPv4' | 'IPv6';
  readonly endpoints: readonly {
    readonly addresses: readonly string[];
    readonly ready: boolean;
    readonly node: string | undefined;
    readonly podName: string | undefined;
  }[];
  readonly ports: readonly { readonly name: string; readonly port: number }[];
}

export interface GatewayObject {
  readonly kind: 'Gateway';
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  readonly waypointFor: WaypointFor;
  /** spec.addresses and status.addresses values of type IPAddress. */
  readonly addresses: readonly string[];
  readonly listeners: readonly GatewayListener[];
  /** `hypha-waypoint` (a waypoint) or `hypha` (an ingress gateway); other classes are ignored. */
  readonly gatewayClassName: string;
}

/** A Gateway listener as written (the ingress gateway validates TLS and routes when it compiles). */
export interface GatewayListener {
  readonly name: string;
  readonly port: number;
  readonly protocol: string;
  readonly hostname?: string | undefined;
  readonly tls?:
    | {
        readonly mode?: string | undefined;
        readonly certificateRefs?:
          | readonly {
              readonly group?: string | undefined;
              readonly kind?: string | undefined;
              readonly name: string;
              readonly namespace?: string | undefined;
            }[]
          | undefined;
      }
    | undefined;
  readonly allowedRoutes?:
    | { readonly namespaces?: { readonly from?: string | undefined } | undefined }
    | undefined;
}

/**
 * A Secret of type `kubernetes.io/tls` (other Secrets are ignored): a certificate chain and its
 * key for an ingress gateway's HTTPS listeners. The key is never logged or dumped.
 */
export interface TlsSecretObject {
  readonly kind: 'Secret';
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  /** PEM `tls.crt`. */
  readonly certificate: string;
  /** PEM `tls.key`. */
  readonly privateKey: string;
}

export type AuthorizationAction = 'ALLOW' | 'DENY' | 'AUDIT';

export interface AuthorizationSource {
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly notNamespaces?: readonly string[];
  readonly ipBlocks?: readonly string[];
  readonly notIpBlocks?: readonly string[];
  // L7-only (need a waypoint): kept so the L4 evaluator can fail closed on them.
  readonly requestPrincipals?: readonly string[];
  readonly notRequestPrincipals?: readonly string[];
  readonly remoteIpBlocks?: readonly string[];
  readonly notRemoteIpBlocks?: readonly string[];
}

export interface AuthorizationOperation {
  readonly ports?: readonly number[];
  readonly notPorts?: readonly number[];
  // L7-only.
  readonly methods?: readonly string[];
  readonly notMethods?: readonly string[];
  readonly paths?: readonly string[];
  readonly notPaths?: readonly string[];
  readonly hosts?: readonly string[];
  readonly notHosts?: readonly string[];
}

export interface AuthorizationCondition {
  readonly key: string;
  readonly values?: readonly string[];
  readonly notValues?: readonly string[];
}

export interface AuthorizationRule {
  readonly from?: readonly { readonly source: AuthorizationSource }[];
  readonly to?: readonly { readonly operation: AuthorizationOperation }[];
  readonly when?: readonly AuthorizationCondition[];
}

export interface PolicyTargetRef {
  readonly group: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace: string | undefined;
}

export interface AuthorizationPolicyObject {
  readonly kind: 'AuthorizationPolicy';
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  readonly action: AuthorizationAction;
  /** matchLabels; undefined (and no targetRefs) means every workload of the namespace. */
  readonly selector: Labels | undefined;
  /** Non-empty: an L7 policy for the waypoint; the L4 agents ignore it. */
  readonly targetRefs: readonly PolicyTargetRef[];
  /** Undefined: `rules` absent (matches nothing). `[{}]` matches everything. */
  readonly rules: readonly AuthorizationRule[] | undefined;
  /**
   * Annotated `istio.io/dry-run: "true"` (or `hypha.dev/dry-run`): evaluated and reported, never
   * enforced. Absent when false.
   */
  readonly dryRun?: true;
}

/** Annotations that make an AuthorizationPolicy dry-run (Istio's spelling and Hypha's). */
export const DRY_RUN_ANNOTATIONS = ['istio.io/dry-run', 'hypha.dev/dry-run'] as const;

/**
 * `security.hypha.dev/v1` PeerAuthentication (Istio's shape): the mTLS mode of the workloads it
 * selects (all of its namespace without a selector; the whole mesh in the root namespace), with
 * per-port exceptions. Enforced by the destination node agent.
 */
export interface PeerAuthenticationObject {
  readonly kind: 'PeerAuthentication';
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  /** metadata.creationTimestamp (RFC 3339): the oldest of competing policies wins, as in Istio. */
  readonly created: string | undefined;
  /** matchLabels; undefined (or empty in the source) means namespace-wide. */
  readonly selector: Labels | undefined;
  /** spec.mtls.mode; undefined when absent (same as UNSET: inherit). */
  readonly mode: PeerAuthenticationMode | undefined;
  /** spec.portLevelMtls: workload (container) port → mode. */
  readonly portLevel: Readonly<Record<string, PeerAuthenticationMode>> | undefined;
}

/**
 * TrafficPolicy / RequestAuthentication / HTTPRoute / GRPCRoute: validated metadata and references,
 * spec kept as data (the waypoint validates and compiles the spec).
 */
export interface RawRouteOrPolicyObject<
  K extends 'TrafficPolicy' | 'RequestAuthentication' | 'HTTPRoute' | 'GRPCRoute' | 'TLSRoute' | 'TCPRoute',
> {
  readonly kind: K;
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  /** parentRefs for routes, targetRefs for TrafficPolicy and RequestAuthentication. */
  readonly refs: readonly PolicyTargetRef[];
  readonly spec: Readonly<Record<string, unknown>>;
}
export type TrafficPolicyObject = RawRouteOrPolicyObject<'TrafficPolicy'>;
/** `security.hypha.dev/v1` RequestAuthentication (JWT); enforced by waypoints (targetRefs) only. */
export type RequestAuthenticationObject = RawRouteOrPolicyObject<'RequestAuthentication'>;
export type HttpRouteObject = RawRouteOrPolicyObject<'HTTPRoute'>;
export type GrpcRouteObject = RawRouteOrPolicyObject<'GRPCRoute'>;
/** Gateway API TLSRoute / TCPRoute: attach to an ingress gateway's TLS (passthrough) and TCP listeners. */
export type TlsRouteObject = RawRouteOrPolicyObject<'TLSRoute'>;
export type TcpRouteObject = RawRouteOrPolicyObject<'TCPRoute'>;

/** `networking.hypha.dev/v1` ServiceEntry (Istio's shape): names a host the mesh does not run. */
export const SERVICE_ENTRY_API_VERSION = 'networking.hypha.dev/v1';
export type ServiceEntryResolution = 'DNS' | 'STATIC' | 'NONE';
export type ServiceEntryLocation = 'MESH_EXTERNAL' | 'MESH_INTERNAL';

export interface ServiceEntryPort {
  readonly number: number;
  /** Istio's spelling, upper case: HTTP, HTTPS, HTTP2, GRPC, TLS, TCP, MONGO. Default TCP. */
  readonly protocol: string;
  readonly name: string | undefined;
  /** The endpoints' port when it differs from `number` (an endpoint's own `ports` win). */
  readonly targetPort: number | undefined;
}

export interface ServiceEntryEndpoint {
  /** An IP address (canonical), or with `resolution: DNS` a host name resolved when connecting. */
  readonly address: string;
  /** Port name → port on this endpoint. */
  readonly ports: Readonly<Record<string, number>> | undefined;
  readonly labels: Labels;
}

export interface ServiceEntryObject {
  readonly kind: 'ServiceEntry';
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  /** Lower case; a leading `*.` is a wildcard (any name below it). */
  readonly hosts: readonly string[];
  /** Canonical IPs or CIDRs (`a.b.c.d/n`). Empty: IPs are allocated for the hosts (see state). */
  readonly addresses: readonly string[];
  readonly ports: readonly ServiceEntryPort[];
  readonly resolution: ServiceEntryResolution;
  readonly location: ServiceEntryLocation;
  readonly endpoints: readonly ServiceEntryEndpoint[];
  readonly waypoint: WaypointBinding | undefined;
  /** metadata.creationTimestamp: entries get VIPs oldest first, so a restart allocates as history did. */
  readonly created: string | undefined;
}

/** The mesh-wide policy for connections to destinations outside the registry (Istio's names). */
export type OutboundTrafficPolicyMode = 'ALLOW_ANY' | 'REGISTRY_ONLY';
/** The one MeshConfig the state reads: `<root namespace>/default`. */
export const MESH_CONFIG_NAME = 'default';

/**
 * `networking.hypha.dev/v1` MeshConfig `default` in the root namespace: mesh-wide settings in the
 * field names of Istio's meshConfig (`outboundTrafficPolicy.mode`).
 */
export interface MeshConfigObject {
  readonly kind: 'MeshConfig';
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  /** Undefined: not set (the agent's `--outbound-policy` applies). */
  readonly outboundTrafficPolicy: OutboundTrafficPolicyMode | undefined;
  /**
   * Problems found in the spec. A MeshConfig with problems is not skipped like other objects: it
   * counts as REGISTRY_ONLY (fail closed) until fixed, and the agent logs these.
   */
  readonly problems: readonly string[];
}

export type ConfigObject =
  | NamespaceObject
  | PodObject
  | ServiceObject
  | EndpointSliceObject
  | GatewayObject
  | AuthorizationPolicyObject
  | TrafficPolicyObject
  | RequestAuthenticationObject
  | PeerAuthenticationObject
  | HttpRouteObject
  | GrpcRouteObject
  | TlsRouteObject
  | TcpRouteObject
  | TlsSecretObject
  | ServiceEntryObject
  | MeshConfigObject;

export type ConfigKind = ConfigObject['kind'];

/** Identifies an object for removal: kind plus namespace/name (namespace '' for Namespaces). */
export interface ConfigObjectKey {
  readonly kind: ConfigKind;
  readonly namespace: string;
  readonly name: string;
}

// ---- derived views for the data path ----

export interface Workload {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly identity: SpiffeId;
  readonly ips: readonly string[];
  readonly node: string;
  readonly labels: Labels;
  /** Captured by the mesh: namespace or pod opted in, pod not opted out, not hostNetwork. */
  readonly inMesh: boolean;
  /** The waypoint this pod's workload-addressed traffic must go through (pod label > namespace). */
  readonly waypoint: WaypointRef | undefined;
  readonly ready: boolean;
  /** The workload's mTLS mode on ports without a port-level rule (`mtls.base.mode`). */
  readonly mtlsMode: MtlsMode;
  /** Which rule set it, and per-port exceptions: read through `mtlsFor(workload, port)`. */
  readonly mtls: WorkloadMtls;
  readonly hostNetwork: boolean;
  readonly namedPorts: Readonly<Record<string, number>> | undefined;
}

/** An mTLS mode and the rule that set it, as a user would name it in a log line. */
export interface MtlsSetting {
  readonly mode: MtlsMode;
  /** e.g. `PeerAuthentication shop/strict`, `namespace label hypha.dev/mtls-mode=strict`, `mesh default`. */
  readonly rule: string;
}

/** A workload's effective mTLS settings: one for most ports, exceptions by workload port. */
export interface WorkloadMtls {
  /** Ports without an exception. */
  readonly base: MtlsSetting;
  readonly ports: Readonly<Record<string, MtlsSetting>> | undefined;
}

/** The mTLS setting that applies to a connection to `port` (the workload's port) of `workload`. */
export function mtlsFor(workload: Workload, port: number): MtlsSetting {
  return workload.mtls.ports?.[port] ?? workload.mtls.base;
}

export interface Endpoint {
  readonly ip: string;
  /** Set when the endpoint is a known pod. */
  readonly workloadUid: string | undefined;
  readonly node: string | undefined;
  readonly ready: boolean;
  /** Service port → port on this endpoint. A service port missing here is not served by it. */
  readonly targetPorts: ReadonlyMap<number, number>;
}

export interface Service {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  readonly vips: readonly string[];
  readonly ports: readonly ServicePort[];
  readonly selector: Labels | undefined;
  readonly endpoints: readonly Endpoint[];
  /** Service label > namespace label. */
  readonly waypoint: WaypointRef | undefined;
}

export interface Waypoint {
  readonly name: string;
  readonly namespace: string;
  readonly for: WaypointFor;
  /** The identity waypoint pods present: service account named after the Gateway. */
  readonly identity: SpiffeId;
  /** Gateway addresses plus the VIPs of the Service named after the Gateway. */
  readonly addresses: readonly string[];
}

/** Result of findWaypointFor: the binding, and the waypoint if it exists (missing → fail closed). */
export interface WaypointLookup {
  readonly ref: WaypointRef;
  readonly waypoint: Waypoint | undefined;
}

/** A ServiceEntry as the data path reads it: the record with its waypoint settled. */
export interface ServiceEntry {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Labels;
  readonly hosts: readonly string[];
  readonly addresses: readonly string[];
  readonly ports: readonly ServiceEntryPort[];
  readonly resolution: ServiceEntryResolution;
  readonly location: ServiceEntryLocation;
  readonly endpoints: readonly ServiceEntryEndpoint[];
  /** ServiceEntry label > namespace label (as for Services). */
  readonly waypoint: WaypointRef | undefined;
}

/** A host name's ServiceEntry and the addresses DNS answers for it. */
export interface ServiceEntryHostMatch {
  readonly entry: ServiceEntry;
  /** The host as written in the entry (`*.example.com` for a wildcard match). */
  readonly host: string;
  /** `spec.addresses` that are single IPs, else the host's allocated VIP, else none. */
  readonly addresses: readonly string[];
}

/** What a destination address belongs to: the entry and, for an allocated VIP, its host. */
export interface ServiceEntryAddressMatch {
  readonly entry: ServiceEntry;
  /** The host whose VIP this is, or the entry's only host; undefined when ambiguous. */
  readonly host: string | undefined;
  readonly port: ServiceEntryPort;
}
