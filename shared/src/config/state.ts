// The indexed configuration state shared by the agent and the waypoint.
//
//   sources (file, kubernetes) ──translate.ts──▶ ConfigObject records
//        │ applySnapshot / update / upsert / remove   (the one mutator: #commit)
//        ▼
//   records: namespaces, pods, services, slices, gateways, policies, routes
//        │ derive (only what the change touched)
//        ▼
//   views + indexes: workloads by key/uid/ip/node/labels, services by key/vip, waypoints,
//                    compiled policies by namespace ──▶ find* (sync Map reads) and onChange
//
// Invariants:
// - Every write goes through #commit, which updates records, re-derives the affected views and
//   every index in one synchronous step, bumps `version` once, then notifies listeners. Readers
//   never see a workload in one index and not another.
// - Views are immutable: an update replaces the object, so a caller holding a Workload or Service
//   keeps a consistent (possibly stale) snapshot.
// - Memory: no per-object closures; identical label sets are shared (refcounted interning) and so
//   are identities of pods that share a service account, and endpoint port maps of services
//   with numeric target ports.
import { SpiffeId } from '../identity/spiffe.js';
import { type CompiledAuthorizationPolicy, compileAuthorizationPolicy } from '../policy/compile.js';
import { policyAppliesTo, selectorMatches } from '../policy/evaluate.js';
import { deepEqual } from './equal.js';
import { ServiceEntryIndex } from './service-entries.js';
import {
  type ConfigKind,
  type ConfigObject,
  type ConfigObjectKey,
  DEFAULT_ROOT_NAMESPACE,
  type Endpoint,
  type EndpointSliceObject,
  type GatewayObject,
  type GrpcRouteObject,
  type HttpRouteObject,
  LABEL_GATEWAY_NAME,
  type Labels,
  MESH_CONFIG_NAME,
  type MeshConfigObject,
  type MtlsSetting,
  type NamespaceObject,
  type PeerAuthenticationMode,
  type PeerAuthenticationObject,
  type PodObject,
  type RequestAuthenticationObject,
  type Service,
  type ServiceEntry,
  type ServiceEntryAddressMatch,
  type ServiceEntryHostMatch,
  type ServiceEntryObject,
  type ServiceObject,
  type TcpRouteObject,
  type TlsRouteObject,
  type TlsSecretObject,
  type TrafficPolicyObject,
  WAYPOINT_GATEWAY_CLASS,
  type Waypoint,
  type WaypointBinding,
  type WaypointLookup,
  type WaypointRef,
  type Workload,
  type WorkloadMtls,
} from './types.js';

/** The kinds kept as data (spec validated where they are used). */
type RoutingObject =
  | TrafficPolicyObject
  | RequestAuthenticationObject
  | HttpRouteObject
  | GrpcRouteObject
  | TlsRouteObject
  | TcpRouteObject;
export interface ConfigStateOptions {
  /** Trust domain of workload identities. Default `cluster.local`. */
  trustDomain?: string;
  /** Namespace whose AuthorizationPolicies apply mesh-wide. Default `hypha-system`. */
  rootNamespace?: string;
  /**
   * Where Service endpoints come from. `selector` (file source): ready pods matching the selector,
   * EndpointSlices only for services without a selector. `endpoint-slices` (Kubernetes): slices only.
   */
  endpoints?: 'selector' | 'endpoint-slices';
}

export interface Updated<T> {
  readonly previous: T;
  readonly current: T;
}

export interface ChangeSet<T> {
  readonly added: readonly T[];
  readonly updated: readonly Updated<T>[];
  readonly removed: readonly T[];
}

/** What one commit changed. Only non-empty sets carry entries; all fields are always present. */
export interface ConfigChange {
  readonly version: number;
  readonly namespaces: ChangeSet<NamespaceObject>;
  readonly workloads: ChangeSet<Workload>;
  readonly services: ChangeSet<Service>;
  readonly waypoints: ChangeSet<Waypoint>;
  readonly authorizationPolicies: ChangeSet<CompiledAuthorizationPolicy>;
  /** TrafficPolicies, HTTPRoutes and GRPCRoutes (kept raw until the waypoint gives them meaning). */
  readonly routing: ChangeSet<RoutingObject>;
  readonly serviceEntries: ChangeSet<ServiceEntry>;
  /** The root namespace's MeshConfig `default`, when it changed (`current` undefined: removed). */
  readonly meshConfig: Updated<MeshConfigObject | undefined> | undefined;
}

export type ConfigChangeListener = (change: ConfigChange) => void;

export interface ConfigStats {
  version: number;
  namespaces: number;
  workloads: number;
  services: number;
  endpointSlices: number;
  waypoints: number;
  authorizationPolicies: number;
  peerAuthentications: number;
  trafficPolicies: number;
  httpRoutes: number;
  grpcRoutes: number;
  serviceEntries: number;
}

export interface ConfigUpdate {
  upsert?: Iterable<ConfigObject>;
  remove?: Iterable<ConfigObjectKey>;
}

export interface ConfigState {
  readonly trustDomain: string;
  readonly rootNamespace: string;
  /** Bumped once per commit that changed anything. 0 before the first. */
  readonly version: number;

  /** Replaces the whole state with these objects (later duplicates of a key win). */
  applySnapshot(objects: Iterable<ConfigObject>): ConfigChange | undefined;
  /** Applies a batch of upserts and removals as one commit. */
  update(batch: ConfigUpdate): ConfigChange | undefined;
  upsert(object: ConfigObject): ConfigChange | undefined;
  remove(key: ConfigObjectKey): ConfigChange | undefined;
  /** Whether the state holds the object with this key. */
  has(key: ConfigObjectKey): boolean;
  /** Called synchronously after each commit that changed something. Returns an unsubscribe function. */
  onChange(listener: ConfigChangeListener): () => void;

  findWorkloadByIp(ip: string): Workload | undefined;
  findWorkloadByUid(uid: string): Workload | undefined;
  findWorkloadByName(namespace: string, name: string): Workload | undefined;
  findWorkloadsOnNode(node: string): Workload[];
  /** A Service by one of its VIPs; with `port`, only if the service has that port (TCP). */
  findServiceByVip(ip: string, port?: number): Service | undefined;
  findServiceByName(namespace: string, name: string): Service | undefined;
  findNamespace(name: string): NamespaceObject | undefined;
  /** Agent-enforced (selector) AuthorizationPolicies that apply to this workload, root namespace included. */
  /** The result is cached per workload object until policies change: treat it as read-only. */
  findPoliciesFor(workload: Workload): readonly CompiledAuthorizationPolicy[];
  /**
   * The waypoint traffic to this workload or service must cross. `undefined`: none. A lookup with
   * `waypoint: undefined` means a binding to a missing Gateway: callers fail closed.
   */
  findWaypointFor(target: Workload | Service): WaypointLookup | undefined;
  findWaypoint(namespace: string, name: string): Waypoint | undefined;
  /** Ready pods of a waypoint (label gateway.networking.k8s.io/gateway-name). */
  findWaypointWorkloads(waypoint: WaypointRef): Workload[];
  findTrafficPolicies(namespace: string): TrafficPolicyObject[];
  /** RequestAuthentication objects of a namespace (the waypoints enforce those with targetRefs). */
  findRequestAuthentications(namespace: string): RequestAuthenticationObject[];
  /** PeerAuthentication objects of a namespace, oldest first (the order that breaks ties). */
  findPeerAuthentications(namespace: string): readonly PeerAuthenticationObject[];
  findHttpRoutes(namespace: string): HttpRouteObject[];
  findGrpcRoutes(namespace: string): GrpcRouteObject[];
  /** The ServiceEntry a DNS name (lower case, no trailing dot) names: exact host, else nearest wildcard. */
  findServiceEntryByHost(name: string): ServiceEntryHostMatch | undefined;
  /** The ServiceEntry a destination belongs to: its allocated VIP, spec.addresses, or a CIDR of them. */
  findServiceEntryByAddress(ip: string, port: number): ServiceEntryAddressMatch | undefined;
  findServiceEntry(namespace: string, name: string): ServiceEntry | undefined;
  /** The root namespace's MeshConfig `default` (mesh-wide settings), if any. */
  findMeshConfig(): MeshConfigObject | undefined;
  findTlsRoutes(namespace: string): TlsRouteObject[];
  findTcpRoutes(namespace: string): TcpRouteObject[];
  /** A Gateway of either Hypha class (waypoint or ingress), as written. */
  findGateway(namespace: string, name: string): GatewayObject | undefined;
  /** A Secret of type kubernetes.io/tls (the only Secrets the config reads). */
  findTlsSecret(namespace: string, name: string): TlsSecretObject | undefined;

  workloads(): IterableIterator<Workload>;
  services(): IterableIterator<Service>;
  waypoints(): IterableIterator<Waypoint>;
  namespaces(): IterableIterator<NamespaceObject>;
  authorizationPolicies(): IterableIterator<CompiledAuthorizationPolicy>;
  serviceEntries(): IterableIterator<ServiceEntry>;
  stats(): ConfigStats;
  /** Identities held for sharing; swept when most are no longer used by a workload or waypoint. */
  internedIdentities(): number;
}

export function createConfigState(options: ConfigStateOptions = {}): ConfigState {
  return new IndexedConfigState(options);
}

export function configObjectKey(o: ConfigObject): ConfigObjectKey {
  return { kind: o.kind, namespace: o.kind === 'Namespace' ? '' : o.namespace, name: o.name };
}

function keyOf(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/**
 * keyOf for a key the state keeps (in its maps and sets, shared by them): built with join, which
 * makes one flat string. A template literal makes a cons string (a 32-byte node pointing at the
 * namespace prefix and the name) that V8 keeps as it is: at 100k pods that is about 5 MB more.
 */
function storedKeyOf(namespace: string, name: string): string {
  return [namespace, name].join('/');
}

class ChangeCollector<T> implements ChangeSet<T> {
  added: T[] = [];
  updated: Updated<T>[] = [];
  removed: T[] = [];
  record(previous: T | undefined, current: T | undefined): void {
    if (previous === undefined && current !== undefined) this.added.push(current);
    else if (previous !== undefined && current === undefined) this.removed.push(previous);
    else if (previous !== undefined && current !== undefined) this.updated.push({ previous, current });
  }
  get size(): number {
    return this.added.length + this.updated.length + this.removed.length;
  }
}

/** An index where a key normally has one value but may briefly have several (IP reuse). */
class ClaimIndex<T> {
  readonly #map = new Map<string, T | T[]>();
  add(key: string, value: T): void {
    const cur = this.#map.get(key);
    if (cur === undefined) this.#map.set(key, value);
    else if (Array.isArray(cur)) cur.push(value);
    else this.#map.set(key, [cur, value]);
  }
  delete(key: string, value: T): void {
    const cur = this.#map.get(key);
    if (cur === value) this.#map.delete(key);
    else if (Array.isArray(cur)) {
      const i = cur.indexOf(value);
      if (i >= 0) cur.splice(i, 1);
      if (cur.length === 1) this.#map.set(key, cur[0]!);
    }
  }
  get(key: string, prefer: (v: T) => boolean): T | undefined {
    const cur = this.#map.get(key);
    if (!Array.isArray(cur)) return cur;
    return cur.find(prefer) ?? cur[0];
  }
}

class IndexedConfigState implements ConfigState {
  readonly trustDomain: string;
  readonly rootNamespace: string;
  readonly #endpointMode: 'selector' | 'endpoint-slices';
  #version = 0;
  readonly #listeners: ConfigChangeListener[] = [];

  // records
  readonly #namespaces = new Map<string, NamespaceObject>();
  readonly #pods = new Map<string, PodObject>();
  readonly #serviceRecords = new Map<string, ServiceObject>();
  readonly #slices = new Map<string, EndpointSliceObject>();
  readonly #gateways = new Map<string, GatewayObject>();
  readonly #policies = new Map<string, CompiledAuthorizationPolicy>();
  readonly #peerAuths = new Map<string, PeerAuthenticationObject>();
  /** namespace → its PeerAuthentications, oldest first. */
  readonly #peerAuthsByNamespace = new Map<string, PeerAuthenticationObject[]>();
  readonly #routing = {
    TrafficPolicy: new Map<string, TrafficPolicyObject>(),
    RequestAuthentication: new Map<string, RequestAuthenticationObject>(),
    HTTPRoute: new Map<string, HttpRouteObject>(),
    GRPCRoute: new Map<string, GrpcRouteObject>(),
    TLSRoute: new Map<string, TlsRouteObject>(),
    TCPRoute: new Map<string, TcpRouteObject>(),
  };
  readonly #tlsSecrets = new Map<string, TlsSecretObject>();

  // derived views and indexes
  readonly #workloads = new Map<string, Workload>(); // by ns/name
  readonly #byUid = new Map<string, Workload>();
  readonly #byIp = new ClaimIndex<Workload>();
  readonly #byNode = new Map<string, Set<Workload>>();
  readonly #podsByNamespace = new Map<string, Set<string>>();
  /** namespace → "key\0value" → pod keys. Candidate sets for selectors. */
  readonly #byLabel = new Map<string, Map<string, Set<string>>>();
  readonly #services = new Map<string, Service>();
  readonly #byVip = new ClaimIndex<Service>();
  readonly #servicesByNamespace = new Map<string, Set<string>>();
  readonly #slicesByService = new Map<string, Set<string>>();
  readonly #waypoints = new Map<string, Waypoint>();
  readonly #policiesByNamespace = new Map<string, CompiledAuthorizationPolicy[]>();
  readonly #entryRecords = new Map<string, ServiceEntryObject>();
  readonly #entriesByNamespace = new Map<string, Set<string>>();
  readonly #entries = new ServiceEntryIndex();
  readonly #meshConfigs = new Map<string, MeshConfigObject>();
  /** The map that holds each kind's objects (Namespaces by name, the rest by namespace/name). */
  readonly #records: Readonly<Record<ConfigKind, ReadonlyMap<string, unknown>>> = {
    Namespace: this.#namespaces,
    Pod: this.#pods,
    Service: this.#serviceRecords,
    EndpointSlice: this.#slices,
    Gateway: this.#gateways,
    AuthorizationPolicy: this.#policies,
    PeerAuthentication: this.#peerAuths,
    Secret: this.#tlsSecrets,
    ServiceEntry: this.#entryRecords,
    MeshConfig: this.#meshConfigs,
    ...this.#routing,
  };

  // sharing
  readonly #labelPool = new Map<string, { labels: Labels; refs: number }>();
  readonly #identities = new Map<string, SpiffeId>();
  readonly #portPool = new Map<string, Readonly<Record<string, number>>>();
  /** Workloads with the same mTLS settings share one object (most of a namespace does). */
  #mtlsPool = new Map<string, WorkloadMtls>();
  /** Per connection the agent asks for a workload's policies: answer from here until policies change.
   * Keyed by the (immutable) Workload object, so an updated workload misses and a removed one is
   * collected. */
  #policyCache = new WeakMap<Workload, readonly CompiledAuthorizationPolicy[]>();

  constructor(options: ConfigStateOptions) {
    this.trustDomain = options.trustDomain ?? 'cluster.local';
    this.rootNamespace = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    this.#endpointMode = options.endpoints ?? 'selector';
    // Validates the trust domain up front rather than on the first pod.
    SpiffeId.of(this.trustDomain, 'default', 'default');
  }

  get version(): number {
    return this.#version;
  }

  // ---- mutation ----

  applySnapshot(objects: Iterable<ConfigObject>): ConfigChange | undefined {
    const next = new Map<string, ConfigObject>();
    for (const o of objects)
      next.set(recordKey(o.kind, o.kind === 'Namespace' ? '' : o.namespace, o.name), o);
    const removes: ConfigObjectKey[] = [];
    for (const key of this.#allRecordKeys()) {
      if (!next.has(recordKey(key.kind, key.namespace, key.name))) removes.push(key);
    }
    return this.#commit(next.values(), removes);
  }

  update(batch: ConfigUpdate): ConfigChange | undefined {
    return this.#commit(batch.upsert ?? [], batch.remove ?? []);
  }

  upsert(object: ConfigObject): ConfigChange | undefined {
    return this.#commit([object], []);
  }

  remove(key: ConfigObjectKey): ConfigChange | undefined {
    return this.#commit([], [key]);
  }

  has(key: ConfigObjectKey): boolean {
    const k = key.kind === 'Namespace' ? key.name : storedKeyOf(key.namespace, key.name);
    return this.#records[key.kind].has(k);
  }

  onChange(listener: ConfigChangeListener): () => void {
    this.#listeners.push(listener);
    return () => {
      const i = this.#listeners.indexOf(listener);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }

  *#allRecordKeys(): Generator<ConfigObjectKey> {
    for (const n of this.#namespaces.values()) yield { kind: 'Namespace', namespace: '', name: n.name };
    const maps: [ConfigKind, Map<string, { namespace: string; name: string }>][] = [
      ['Pod', this.#pods],
      ['Service', this.#serviceRecords],
      ['EndpointSlice', this.#slices],
      ['Gateway', this.#gateways],
      ['AuthorizationPolicy', this.#policies],
      ['PeerAuthentication', this.#peerAuths],
      ['TrafficPolicy', this.#routing.TrafficPolicy],
      ['RequestAuthentication', this.#routing.RequestAuthentication],
      ['HTTPRoute', this.#routing.HTTPRoute],
      ['GRPCRoute', this.#routing.GRPCRoute],
      ['ServiceEntry', this.#entryRecords],
      ['MeshConfig', this.#meshConfigs],
      ['TLSRoute', this.#routing.TLSRoute],
      ['TCPRoute', this.#routing.TCPRoute],
      ['Secret', this.#tlsSecrets],
    ];
    for (const [kind, map] of maps) {
      for (const o of map.values()) yield { kind, namespace: o.namespace, name: o.name };
    }
  }

  #commit(upserts: Iterable<ConfigObject>, removes: Iterable<ConfigObjectKey>): ConfigChange | undefined {
    const dirtyNamespaces = new Set<string>();
    const dirtyPods = new Set<string>();
    const dirtyServices = new Set<string>();
    const dirtyEntries = new Set<string>();
    const meshConfigBefore = this.findMeshConfig();
    let gatewaysChanged = false;
    let secretsChanged = false;
    /** Namespaces whose PeerAuthentications changed: their pods' mTLS settings are re-derived. */
    const mtlsNamespaces = new Set<string>();
    const namespaces = new ChangeCollector<NamespaceObject>();
    const policies = new ChangeCollector<CompiledAuthorizationPolicy>();
    const routing = new ChangeCollector<RoutingObject>();

    const apply = (
      kind: ConfigKind,
      namespace: string,
      name: string,
      next: ConfigObject | undefined,
    ): void => {
      const key = storedKeyOf(namespace, name);
      switch (kind) {
        case 'Namespace': {
          const prev = this.#namespaces.get(name);
          const cur = next as NamespaceObject | undefined;
          if (deepEqual(prev, cur)) return;
          if (cur === undefined) this.#namespaces.delete(name);
          else this.#namespaces.set(name, cur);
          namespaces.record(prev, cur);
          dirtyNamespaces.add(name);
          return;
        }
        case 'Pod': {
          const prev = this.#pods.get(key);
          if (prev !== undefined && next !== undefined && podRecordEqual(prev, next as PodObject)) return;
          if (prev === undefined && next === undefined) return;
          if (prev !== undefined) this.#releaseLabels(prev.labels);
          if (next === undefined) {
            this.#pods.delete(key);
            removeFromSetMap(this.#podsByNamespace, namespace, key);
          } else {
            const pod = next as PodObject;
            this.#pods.set(key, {
              ...pod,
              labels: this.#internLabels(pod.labels),
              namedPorts: pod.namedPorts === undefined ? undefined : this.#internNamedPorts(pod.namedPorts),
            });
            addToSetMap(this.#podsByNamespace, namespace, key);
          }
          dirtyPods.add(key);
          return;
        }
        case 'Service': {
          const prev = this.#serviceRecords.get(key);
          if (deepEqual(prev, next)) return;
          if (next === undefined) {
            this.#serviceRecords.delete(key);
            removeFromSetMap(this.#servicesByNamespace, namespace, key);
          } else {
            this.#serviceRecords.set(key, next as ServiceObject);
            addToSetMap(this.#servicesByNamespace, namespace, key);
          }
          dirtyServices.add(key);
          if (this.#gateways.has(key)) gatewaysChanged = true;
          return;
        }
        case 'EndpointSlice': {
          const prev = this.#slices.get(key);
          if (deepEqual(prev, next)) return;
          if (prev !== undefined) {
            const svc = keyOf(namespace, prev.serviceName);
            removeFromSetMap(this.#slicesByService, svc, key);
            dirtyServices.add(svc);
          }
          if (next === undefined) this.#slices.delete(key);
          else {
            const slice = next as EndpointSliceObject;
            this.#slices.set(key, slice);
            const svc = keyOf(namespace, slice.serviceName);
            addToSetMap(this.#slicesByService, svc, key);
            dirtyServices.add(svc);
          }
          return;
        }
        case 'Gateway': {
          const prev = this.#gateways.get(key);
          if (deepEqual(prev, next)) return;
          if (next === undefined) this.#gateways.delete(key);
          else this.#gateways.set(key, next as GatewayObject);
          gatewaysChanged = true;
          return;
        }
        case 'AuthorizationPolicy': {
          const prev = this.#policies.get(key);
          if (deepEqual(prev?.object, next)) return;
          const cur = next === undefined ? undefined : compileAuthorizationPolicy(next as never);
          if (cur === undefined) this.#policies.delete(key);
          else this.#policies.set(key, cur);
          const list = (this.#policiesByNamespace.get(namespace) ?? []).filter((p) => p !== prev);
          if (cur !== undefined) list.push(cur);
          list.sort(byName);
          if (list.length === 0) this.#policiesByNamespace.delete(namespace);
          else this.#policiesByNamespace.set(namespace, list);
          policies.record(prev, cur);
          this.#policyCache = new WeakMap();
          return;
        }
        case 'PeerAuthentication': {
          const prev = this.#peerAuths.get(key);
          if (deepEqual(prev, next)) return;
          const cur = next as PeerAuthenticationObject | undefined;
          if (cur === undefined) this.#peerAuths.delete(key);
          else this.#peerAuths.set(key, cur);
          const list = (this.#peerAuthsByNamespace.get(namespace) ?? []).filter((p) => p !== prev);
          if (cur !== undefined) list.push(cur);
          list.sort(oldestFirst);
          if (list.length === 0) this.#peerAuthsByNamespace.delete(namespace);
          else this.#peerAuthsByNamespace.set(namespace, list);
          mtlsNamespaces.add(namespace);
          return;
        }
        case 'Secret': {
          const prev = this.#tlsSecrets.get(key);
          if (deepEqual(prev, next)) return;
          if (next === undefined) this.#tlsSecrets.delete(key);
          else this.#tlsSecrets.set(key, next as TlsSecretObject);
          secretsChanged = true;
          return;
        }
        case 'TrafficPolicy':
        case 'RequestAuthentication':
        case 'HTTPRoute':
        case 'GRPCRoute':
        case 'TLSRoute':
        case 'TCPRoute': {
          const map = this.#routing[kind] as Map<string, RoutingObject>;
          const prev = map.get(key);
          if (deepEqual(prev, next)) return;
          if (next === undefined) map.delete(key);
          else map.set(key, next as RoutingObject);
          routing.record(prev, next as RoutingObject | undefined);
          return;
        }
        case 'ServiceEntry': {
          const prev = this.#entryRecords.get(key);
          if (deepEqual(prev, next)) return;
          if (next === undefined) {
            this.#entryRecords.delete(key);
            removeFromSetMap(this.#entriesByNamespace, namespace, key);
          } else {
            this.#entryRecords.set(key, next as ServiceEntryObject);
            addToSetMap(this.#entriesByNamespace, namespace, key);
          }
          dirtyEntries.add(key);
          return;
        }
        case 'MeshConfig': {
          const prev = this.#meshConfigs.get(key);
          if (deepEqual(prev, next)) return;
          if (next === undefined) this.#meshConfigs.delete(key);
          else this.#meshConfigs.set(key, next as MeshConfigObject);
          return;
        }
      }
    };

    for (const k of removes) apply(k.kind, k.kind === 'Namespace' ? '' : k.namespace, k.name, undefined);
    for (const o of upserts) apply(o.kind, o.kind === 'Namespace' ? '' : o.namespace, o.name, o);

    // Namespace labels feed every workload and service of the namespace.
    for (const ns of dirtyNamespaces) {
      for (const p of this.#podsByNamespace.get(ns) ?? []) dirtyPods.add(p);
      for (const s of this.#servicesByNamespace.get(ns) ?? []) dirtyServices.add(s);
      for (const e of this.#entriesByNamespace.get(ns) ?? []) dirtyEntries.add(e);
    }
    // PeerAuthentications feed their namespace's workloads; the root namespace's, every workload.
    for (const ns of mtlsNamespaces) {
      if (ns === this.rootNamespace) for (const p of this.#pods.keys()) dirtyPods.add(p);
      else for (const p of this.#podsByNamespace.get(ns) ?? []) dirtyPods.add(p);
    }
    if (mtlsNamespaces.size > 0 && this.#mtlsPool.size > 4096) this.#mtlsPool = new Map();

    const workloads = new ChangeCollector<Workload>();
    const changedByNamespace = new Map<string, Workload[]>();
    for (const key of dirtyPods) {
      const prev = this.#workloads.get(key);
      const pod = this.#pods.get(key);
      const next = pod === undefined ? undefined : this.#deriveWorkload(pod);
      if (prev !== undefined && next !== undefined && workloadEqual(prev, next)) continue;
      if (prev !== undefined) this.#unindexWorkload(key, prev);
      if (next !== undefined) this.#indexWorkload(key, next);
      workloads.record(prev, next);
      const ns = (prev ?? next)!.namespace;
      let list = changedByNamespace.get(ns);
      if (list === undefined) {
        list = [];
        changedByNamespace.set(ns, list);
      }
      if (prev !== undefined) list.push(prev);
      if (next !== undefined) list.push(next);
    }
    for (const [ns, changed] of changedByNamespace) this.#markServicesSelecting(ns, changed, dirtyServices);

    const services = new ChangeCollector<Service>();
    for (const key of dirtyServices) {
      const prev = this.#services.get(key);
      const record = this.#serviceRecords.get(key);
      const next = record === undefined ? undefined : this.#deriveService(record);
      if (deepEqual(prev, next)) continue;
      if (prev !== undefined) for (const vip of prev.vips) this.#byVip.delete(vip, prev);
      if (next === undefined) this.#services.delete(key);
      else {
        this.#services.set(key, next);
        for (const vip of next.vips) this.#byVip.add(vip, next);
      }
      services.record(prev, next);
      if (this.#gateways.has(key)) gatewaysChanged = true;
    }

    const waypoints = new ChangeCollector<Waypoint>();
    if (gatewaysChanged || dirtyNamespaces.size > 0) this.#deriveWaypoints(waypoints);

    const serviceEntries = new ChangeCollector<ServiceEntry>();
    // Removals first (their VIPs free up), then the oldest entries: VIPs are handed out in creation
    // order, so an agent that restarts allocates as the one that saw the entries arrive did.
    const entryOrder = (k: string): string => {
      const r = this.#entryRecords.get(k);
      return r === undefined ? '' : `1${r.created ?? '~'}\0${k}`;
    };
    const orderedEntries = [...dirtyEntries].sort((x, y) => {
      const ox = entryOrder(x);
      const oy = entryOrder(y);
      return ox < oy ? -1 : ox > oy ? 1 : 0;
    });
    for (const key of orderedEntries) {
      const prev = this.#entries.find(key);
      const record = this.#entryRecords.get(key);
      const next = record === undefined ? undefined : this.#deriveServiceEntry(record);
      if (deepEqual(prev, next)) continue;
      this.#entries.set(key, next);
      serviceEntries.record(prev, next);
    }
    const meshConfigAfter = this.findMeshConfig();
    const meshConfig =
      meshConfigBefore === meshConfigAfter
        ? undefined
        : { previous: meshConfigBefore, current: meshConfigAfter };

    const total =
      namespaces.size +
      workloads.size +
      services.size +
      waypoints.size +
      policies.size +
      routing.size +
      serviceEntries.size +
      (meshConfig === undefined ? 0 : 1);
    // Records that change no view (e.g. an EndpointSlice of an unknown Service) still bump the version.
    if (
      total === 0 &&
      dirtyServices.size === 0 &&
      !gatewaysChanged &&
      !secretsChanged &&
      mtlsNamespaces.size === 0
    ) {
      return undefined;
    }
    this.#version++;
    this.#sweepIdentities();
    const change: ConfigChange = {
      version: this.#version,
      namespaces,
      workloads,
      services,
      waypoints,
      authorizationPolicies: policies,
      routing,
      serviceEntries,
      meshConfig,
    };
    let failure: unknown;
    for (const listener of [...this.#listeners]) {
      try {
        listener(change);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
    return change;
  }

  #markServicesSelecting(namespace: string, changed: Workload[], dirty: Set<string>): void {
    const keys = this.#servicesByNamespace.get(namespace);
    if (keys === undefined) return;
    // Many changes in one namespace (a snapshot): recomputing each service once is cheaper than
    // testing every changed workload against every selector.
    const all = changed.length > 16;
    for (const key of keys) {
      const svc = this.#serviceRecords.get(key)!;
      if (all || this.#usesSlices(svc)) {
        dirty.add(key);
        continue;
      }
      const selector = svc.selector;
      if (selector === undefined) continue;
      for (const w of changed) {
        if (selectorMatches(selector, w.labels)) {
          dirty.add(key);
          break;
        }
      }
    }
  }

  #usesSlices(svc: ServiceObject): boolean {
    return this.#endpointMode === 'endpoint-slices' || svc.selector === undefined;
  }

  // ---- derivation ----

  #deriveWorkload(pod: PodObject): Workload {
    const ns = this.#namespaces.get(pod.namespace);
    const mode = pod.dataplaneMode ?? ns?.dataplaneMode;
    const mtls = this.#deriveMtls(pod, ns);
    return {
      uid: pod.uid,
      name: pod.name,
      namespace: pod.namespace,
      serviceAccount: pod.serviceAccount,
      identity: this.#identity(pod.namespace, pod.serviceAccount),
      ips: pod.ips,
      node: pod.node,
      labels: pod.labels,
      inMesh: mode === 'ambient' && !pod.hostNetwork,
      waypoint: bindingRef(pod.waypoint ?? ns?.waypoint),
      ready: pod.ready,
      mtlsMode: mtls.base.mode,
      mtls,
      hostNetwork: pod.hostNetwork,
      namedPorts: pod.namedPorts,
    };
  }

  /**
   * The workload's mTLS settings, most specific first: a PeerAuthentication selecting the pod (the
   * oldest if several), its namespace's PeerAuthentication without selector, the namespace label
   * (shorthand), the root namespace's PeerAuthentication without selector (mesh-wide), then the
   * mesh default PERMISSIVE. Within one layer a port-level rule beats the layer's mode; UNSET (or
   * no mode) defers to the next layer.
   */
  #deriveMtls(pod: PodObject, ns: NamespaceObject | undefined): WorkloadMtls {
    const layers: { mode: PeerAuthenticationMode | undefined; ports: PortModes | undefined; rule: string }[] =
      [];
    const own = this.#peerAuthsByNamespace.get(pod.namespace);
    if (own !== undefined) {
      const selecting = own.find((p) => p.selector !== undefined && selectorMatches(p.selector, pod.labels));
      if (selecting !== undefined) layers.push(peerAuthLayer(selecting, ''));
      const wide = own.find((p) => p.selector === undefined);
      if (wide !== undefined) layers.push(peerAuthLayer(wide, ''));
    }
    if (ns?.mtlsMode !== undefined) {
      layers.push({
        mode: ns.mtlsMode === 'strict' ? 'STRICT' : 'PERMISSIVE',
        ports: undefined,
        rule: `namespace label hypha.dev/mtls-mode=${ns.mtlsMode}`,
      });
    }
    if (pod.namespace !== this.rootNamespace) {
      const mesh = this.#peerAuthsByNamespace.get(this.rootNamespace)?.find((p) => p.selector === undefined);
      if (mesh !== undefined) layers.push(peerAuthLayer(mesh, ' (mesh-wide)'));
    }
    const settle = (port: string | undefined): MtlsSetting => {
      for (const layer of layers) {
        const byPort = port === undefined ? undefined : layer.ports?.[port];
        if (byPort !== undefined && byPort !== 'UNSET') {
          return { mode: effectiveMode(byPort), rule: `${layer.rule} portLevelMtls ${port}: ${byPort}` };
        }
        if (layer.mode !== undefined && layer.mode !== 'UNSET') {
          return { mode: effectiveMode(layer.mode), rule: `${layer.rule}: ${layer.mode}` };
        }
      }
      return { mode: 'permissive', rule: 'mesh default: PERMISSIVE' };
    };
    const base = settle(undefined);
    let ports: Record<string, MtlsSetting> | undefined;
    for (const layer of layers) {
      for (const port in layer.ports ?? {}) {
        if (ports?.[port] !== undefined) continue;
        const setting = settle(port);
        if (setting.mode === base.mode && setting.rule === base.rule) continue;
        ports ??= {};
        ports[port] = setting;
      }
    }
    const id = JSON.stringify([base, ports]);
    let shared = this.#mtlsPool.get(id);
    if (shared === undefined) {
      shared = { base, ports };
      this.#mtlsPool.set(id, shared);
    }
    return shared;
  }

  #deriveService(record: ServiceObject): Service {
    const ns = this.#namespaces.get(record.namespace);
    const endpoints = this.#usesSlices(record)
      ? this.#endpointsFromSlices(record)
      : this.#endpointsFromSelector(record, record.selector!);
    return {
      name: record.name,
      namespace: record.namespace,
      labels: record.labels,
      vips: record.vips,
      ports: record.ports,
      selector: record.selector,
      endpoints,
      waypoint: bindingRef(record.waypoint ?? ns?.waypoint),
    };
  }

  #deriveServiceEntry(record: ServiceEntryObject): ServiceEntry {
    const ns = this.#namespaces.get(record.namespace);
    return {
      name: record.name,
      namespace: record.namespace,
      labels: record.labels,
      hosts: record.hosts,
      addresses: record.addresses,
      ports: record.ports,
      resolution: record.resolution,
      location: record.location,
      endpoints: record.endpoints,
      waypoint: bindingRef(record.waypoint ?? ns?.waypoint),
    };
  }

  #endpointsFromSelector(svc: ServiceObject, selector: Labels): Endpoint[] {
    const index = this.#byLabel.get(svc.namespace);
    if (index === undefined) return [];
    let candidates: Set<string> | undefined;
    for (const k in selector) {
      const set = index.get(`${k}\0${selector[k]}`);
      if (set === undefined) return [];
      if (candidates === undefined || set.size < candidates.size) candidates = set;
    }
    if (candidates === undefined) return [];
    const numeric = svc.ports.every((p) => typeof p.targetPort === 'number');
    const shared = numeric ? new Map(svc.ports.map((p) => [p.port, p.targetPort as number])) : undefined;
    // Named target ports: pods of one Deployment resolve them alike, so share one map per resolution.
    const byResolution = shared === undefined ? new Map<string, Map<number, number>>() : undefined;
    const out: Endpoint[] = [];
    for (const key of candidates) {
      const w = this.#workloads.get(key);
      if (w === undefined || !w.ready || w.ips.length === 0 || !selectorMatches(selector, w.labels)) continue;
      let targetPorts = shared;
      if (targetPorts === undefined) {
        let id = '';
        for (const p of svc.ports) {
          id += `${typeof p.targetPort === 'number' ? p.targetPort : (w.namedPorts?.[p.targetPort] ?? '-')},`;
        }
        targetPorts = byResolution!.get(id);
        if (targetPorts === undefined) {
          targetPorts = new Map();
          for (const p of svc.ports) {
            const t = typeof p.targetPort === 'number' ? p.targetPort : w.namedPorts?.[p.targetPort];
            if (t !== undefined) targetPorts.set(p.port, t);
          }
          byResolution!.set(id, targetPorts);
        }
      }
      out.push({ ip: w.ips[0]!, workloadUid: w.uid, node: w.node, ready: true, targetPorts });
    }
    // Stable order so equal inputs derive equal services (and no spurious change events).
    out.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
    return out;
  }

  #endpointsFromSlices(svc: ServiceObject): Endpoint[] {
    const keys = this.#slicesByService.get(keyOf(svc.namespace, svc.name));
    if (keys === undefined) return [];
    const out: Endpoint[] = [];
    for (const key of keys) {
      const slice = this.#slices.get(key)!;
      // Kubernetes pairs service ports with slice ports by name.
      const targetPorts = new Map<number, number>();
      for (const p of svc.ports) {
        const sp = slice.ports.find((x) => x.name === (p.name ?? ''));
        if (sp !== undefined) targetPorts.set(p.port, sp.port);
      }
      for (const e of slice.endpoints) {
        const ip = e.addresses[0]!;
        const pod =
          e.podName === undefined ? undefined : this.#workloads.get(keyOf(svc.namespace, e.podName));
        const w = pod ?? this.findWorkloadByIp(ip);
        out.push({ ip, workloadUid: w?.uid, node: e.node ?? w?.node, ready: e.ready, targetPorts });
      }
    }
    out.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
    return out;
  }

  #deriveWaypoints(changes: ChangeCollector<Waypoint>): void {
    const seen = new Set<string>();
    for (const [key, gw] of this.#gateways) {
      // Ingress gateways (class hypha) are no waypoints: nothing binds traffic to them.
      if (gw.gatewayClassName !== WAYPOINT_GATEWAY_CLASS) continue;
      seen.add(key);
      const svc = this.#serviceRecords.get(key);
      const addresses = [...gw.addresses];
      for (const vip of svc?.vips ?? []) if (!addresses.includes(vip)) addresses.push(vip);
      const next: Waypoint = {
        name: gw.name,
        namespace: gw.namespace,
        for: gw.waypointFor,
        identity: this.#identity(gw.namespace, gw.name),
        addresses,
      };
      const prev = this.#waypoints.get(key);
      if (deepEqual(prev, next)) continue;
      this.#waypoints.set(key, next);
      changes.record(prev, next);
    }
    for (const [key, prev] of this.#waypoints) {
      if (seen.has(key)) continue;
      this.#waypoints.delete(key);
      changes.record(prev, undefined);
    }
  }

  #identity(namespace: string, serviceAccount: string): SpiffeId {
    const key = keyOf(namespace, serviceAccount);
    let id = this.#identities.get(key);
    if (id === undefined) {
      id = SpiffeId.of(this.trustDomain, namespace, serviceAccount);
      this.#identities.set(key, id);
    }
    return id;
  }

  /**
   * Identities are shared by the workloads and waypoints that use them. Pods with service accounts
   * of their own come and go (a job per run, a namespace per test), so once the map holds more than
   * twice what is in use, the unused ones are dropped: memory follows the live config, not its history.
   */
  #sweepIdentities(): void {
    if (this.#identities.size <= 2 * (this.#workloads.size + this.#waypoints.size) + 64) return;
    const used = new Set<SpiffeId>();
    for (const w of this.#workloads.values()) used.add(w.identity);
    for (const w of this.#waypoints.values()) used.add(w.identity);
    for (const [key, id] of this.#identities) if (!used.has(id)) this.#identities.delete(key);
  }

  // Container port names rarely vary within a namespace; the pool grows with distinct sets only.
  #internNamedPorts(ports: Readonly<Record<string, number>>): Readonly<Record<string, number>> {
    let k = '';
    for (const name in ports) k += `${name}=${ports[name]},`;
    let shared = this.#portPool.get(k);
    if (shared === undefined) {
      shared = Object.freeze({ ...ports });
      this.#portPool.set(k, shared);
    }
    return shared;
  }

  #internLabels(labels: Labels): Labels {
    const keys = Object.keys(labels);
    if (keys.length === 0) return EMPTY_LABELS;
    keys.sort();
    let k = '';
    for (const key of keys) k += `${key}\0${labels[key]}\u0001`;
    const entry = this.#labelPool.get(k);
    if (entry !== undefined) {
      entry.refs++;
      return entry.labels;
    }
    const frozen = Object.freeze({ ...labels });
    this.#labelPool.set(k, { labels: frozen, refs: 1 });
    return frozen;
  }

  #releaseLabels(labels: Labels): void {
    const keys = Object.keys(labels);
    if (keys.length === 0) return;
    keys.sort();
    let k = '';
    for (const key of keys) k += `${key}\0${labels[key]}\u0001`;
    const entry = this.#labelPool.get(k);
    if (entry !== undefined && --entry.refs === 0) this.#labelPool.delete(k);
  }

  #indexWorkload(key: string, w: Workload): void {
    this.#workloads.set(key, w);
    this.#byUid.set(w.uid, w);
    for (const ip of w.ips) this.#byIp.add(ip, w);
    if (w.node !== '') {
      let set = this.#byNode.get(w.node);
      if (set === undefined) {
        set = new Set();
        this.#byNode.set(w.node, set);
      }
      set.add(w);
    }
    let index = this.#byLabel.get(w.namespace);
    if (index === undefined) {
      index = new Map();
      this.#byLabel.set(w.namespace, index);
    }
    for (const k in w.labels) addToSetMap(index, `${k}\0${w.labels[k]}`, key);
  }

  #unindexWorkload(key: string, w: Workload): void {
    this.#workloads.delete(key);
    if (this.#byUid.get(w.uid) === w) this.#byUid.delete(w.uid);
    for (const ip of w.ips) this.#byIp.delete(ip, w);
    const set = this.#byNode.get(w.node);
    if (set !== undefined) {
      set.delete(w);
      if (set.size === 0) this.#byNode.delete(w.node);
    }
    const index = this.#byLabel.get(w.namespace);
    if (index !== undefined) {
      for (const k in w.labels) removeFromSetMap(index, `${k}\0${w.labels[k]}`, key);
      if (index.size === 0) this.#byLabel.delete(w.namespace);
    }
  }

  // ---- lookups ----

  findWorkloadByIp(ip: string): Workload | undefined {
    const w = this.#byIp.get(ip, isReady);
    if (w !== undefined || !ip.startsWith('::ffff:')) return w;
    return this.#byIp.get(ip.slice(7), isReady);
  }

  findWorkloadByUid(uid: string): Workload | undefined {
    return this.#byUid.get(uid);
  }

  findWorkloadByName(namespace: string, name: string): Workload | undefined {
    return this.#workloads.get(keyOf(namespace, name));
  }

  findWorkloadsOnNode(node: string): Workload[] {
    const set = this.#byNode.get(node);
    return set === undefined ? [] : [...set];
  }

  findServiceByVip(ip: string, port?: number): Service | undefined {
    let svc = this.#byVip.get(ip, hasEndpoints);
    if (svc === undefined && ip.startsWith('::ffff:')) svc = this.#byVip.get(ip.slice(7), hasEndpoints);
    if (svc === undefined || port === undefined) return svc;
    for (const p of svc.ports) if (p.port === port && p.protocol === 'TCP') return svc;
    return undefined;
  }

  findServiceByName(namespace: string, name: string): Service | undefined {
    return this.#services.get(keyOf(namespace, name));
  }

  findNamespace(name: string): NamespaceObject | undefined {
    return this.#namespaces.get(name);
  }

  findPoliciesFor(workload: Workload): readonly CompiledAuthorizationPolicy[] {
    const cached = this.#policyCache.get(workload);
    if (cached !== undefined) return cached;
    const out: CompiledAuthorizationPolicy[] = [];
    for (const p of this.#policiesByNamespace.get(workload.namespace) ?? []) {
      if (policyAppliesTo(p, workload, this.rootNamespace)) out.push(p);
    }
    if (workload.namespace !== this.rootNamespace) {
      for (const p of this.#policiesByNamespace.get(this.rootNamespace) ?? []) {
        if (policyAppliesTo(p, workload, this.rootNamespace)) out.push(p);
      }
    }
    Object.freeze(out);
    this.#policyCache.set(workload, out);
    return out;
  }

  findWaypointFor(target: Workload | Service): WaypointLookup | undefined {
    const ref = target.waypoint;
    if (ref === undefined) return undefined;
    const waypoint = this.#waypoints.get(keyOf(ref.namespace, ref.name));
    if (waypoint === undefined) return { ref, waypoint: undefined };
    const isWorkload = 'uid' in target;
    const serves =
      waypoint.for === 'all' || (isWorkload ? waypoint.for === 'workload' : waypoint.for === 'service');
    return serves ? { ref, waypoint } : undefined;
  }

  findWaypoint(namespace: string, name: string): Waypoint | undefined {
    return this.#waypoints.get(keyOf(namespace, name));
  }

  findWaypointWorkloads(waypoint: WaypointRef): Workload[] {
    const set = this.#byLabel.get(waypoint.namespace)?.get(`${LABEL_GATEWAY_NAME}\0${waypoint.name}`);
    const out: Workload[] = [];
    for (const key of set ?? []) {
      const w = this.#workloads.get(key);
      if (w?.ready && w.ips.length > 0) out.push(w);
    }
    return out;
  }

  findTrafficPolicies(namespace: string): TrafficPolicyObject[] {
    return inNamespace(this.#routing.TrafficPolicy, namespace);
  }

  findPeerAuthentications(namespace: string): readonly PeerAuthenticationObject[] {
    return this.#peerAuthsByNamespace.get(namespace) ?? [];
  }

  findRequestAuthentications(namespace: string): RequestAuthenticationObject[] {
    return inNamespace(this.#routing.RequestAuthentication, namespace);
  }

  findHttpRoutes(namespace: string): HttpRouteObject[] {
    return inNamespace(this.#routing.HTTPRoute, namespace);
  }

  findGrpcRoutes(namespace: string): GrpcRouteObject[] {
    return inNamespace(this.#routing.GRPCRoute, namespace);
  }

  findTlsRoutes(namespace: string): TlsRouteObject[] {
    return inNamespace(this.#routing.TLSRoute, namespace);
  }

  findTcpRoutes(namespace: string): TcpRouteObject[] {
    return inNamespace(this.#routing.TCPRoute, namespace);
  }

  findGateway(namespace: string, name: string): GatewayObject | undefined {
    return this.#gateways.get(keyOf(namespace, name));
  }

  findTlsSecret(namespace: string, name: string): TlsSecretObject | undefined {
    return this.#tlsSecrets.get(keyOf(namespace, name));
  }

  findServiceEntryByHost(name: string): ServiceEntryHostMatch | undefined {
    return this.#entries.findByHost(name);
  }

  findServiceEntryByAddress(ip: string, port: number): ServiceEntryAddressMatch | undefined {
    const m = this.#entries.findByAddress(ip, port);
    if (m !== undefined || !ip.startsWith('::ffff:')) return m;
    return this.#entries.findByAddress(ip.slice(7), port);
  }

  findServiceEntry(namespace: string, name: string): ServiceEntry | undefined {
    return this.#entries.find(keyOf(namespace, name));
  }

  findMeshConfig(): MeshConfigObject | undefined {
    return this.#meshConfigs.get(keyOf(this.rootNamespace, MESH_CONFIG_NAME));
  }

  serviceEntries(): IterableIterator<ServiceEntry> {
    return this.#entries.values();
  }

  workloads(): IterableIterator<Workload> {
    return this.#workloads.values();
  }

  services(): IterableIterator<Service> {
    return this.#services.values();
  }

  waypoints(): IterableIterator<Waypoint> {
    return this.#waypoints.values();
  }

  namespaces(): IterableIterator<NamespaceObject> {
    return this.#namespaces.values();
  }

  authorizationPolicies(): IterableIterator<CompiledAuthorizationPolicy> {
    return this.#policies.values();
  }

  stats(): ConfigStats {
    return {
      version: this.#version,
      namespaces: this.#namespaces.size,
      workloads: this.#workloads.size,
      services: this.#services.size,
      endpointSlices: this.#slices.size,
      waypoints: this.#waypoints.size,
      authorizationPolicies: this.#policies.size,
      peerAuthentications: this.#peerAuths.size,
      trafficPolicies: this.#routing.TrafficPolicy.size,
      httpRoutes: this.#routing.HTTPRoute.size,
      grpcRoutes: this.#routing.GRPCRoute.size,
      serviceEntries: this.#entries.size,
    };
  }

  internedIdentities(): number {
    return this.#identities.size;
  }
}

const EMPTY_LABELS: Labels = Object.freeze({});

function recordKey(kind: string, namespace: string, name: string): string {
  return `${kind}\0${namespace}\0${name}`;
}

function bindingRef(binding: WaypointBinding | undefined): WaypointRef | undefined {
  return binding === undefined || binding === 'none' ? undefined : binding;
}

function isReady(w: Workload): boolean {
  return w.ready;
}

function hasEndpoints(s: Service): boolean {
  return s.endpoints.length > 0;
}

type PortModes = Readonly<Record<string, PeerAuthenticationMode>>;

function peerAuthLayer(p: PeerAuthenticationObject, scope: string) {
  return { mode: p.mode, ports: p.portLevel, rule: `PeerAuthentication ${p.namespace}/${p.name}${scope}` };
}

/** DISABLE cannot turn mTLS off in an ambient mesh (the HBONE port always requires it): plaintext is accepted, as PERMISSIVE. */
function effectiveMode(mode: Exclude<PeerAuthenticationMode, 'UNSET'>): MtlsSetting['mode'] {
  return mode === 'STRICT' ? 'strict' : 'permissive';
}

/** Istio's tie-break among competing policies: the oldest; then by name. */
function oldestFirst(a: PeerAuthenticationObject, b: PeerAuthenticationObject): number {
  const ca = a.created ?? '';
  const cb = b.created ?? '';
  if (ca !== cb) return ca < cb ? -1 : 1;
  return byName(a, b);
}

function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function podRecordEqual(a: PodObject, b: PodObject): boolean {
  return deepEqual(a, b);
}

function workloadEqual(a: Workload, b: Workload): boolean {
  return (
    a.uid === b.uid &&
    a.serviceAccount === b.serviceAccount &&
    a.node === b.node &&
    a.ready === b.ready &&
    a.inMesh === b.inMesh &&
    a.mtls === b.mtls &&
    a.hostNetwork === b.hostNetwork &&
    deepEqual(a.ips, b.ips) &&
    deepEqual(a.labels, b.labels) &&
    deepEqual(a.waypoint, b.waypoint) &&
    deepEqual(a.namedPorts, b.namedPorts)
  );
}

function inNamespace<T extends { namespace: string }>(map: Map<string, T>, namespace: string): T[] {
  const out: T[] = [];
  for (const o of map.values()) if (o.namespace === namespace) out.push(o);
  return out;
}

function addToSetMap<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key);
  if (set === undefined) {
    set = new Set();
    map.set(key, set);
  }
  set.add(value);
}

function removeFromSetMap<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}
