// One immutable snapshot of everything the data path reads, rebuilt on every config update:
// services indexed by VIP:port and hostname, the route table, authorization policy sets and traffic
// settings per service. Clusters (endpoint health, circuit-breaker counters) live outside the
// snapshot and are carried over by service key, so an update never resets them.
//
// Rebuilding is incremental: each object (Service, bound pod, TrafficPolicy, HTTPRoute/GRPCRoute,
// AuthorizationPolicy) is compiled once and reused while its input object is the same
// (compile-cache.ts); only the indexes are rebuilt from the compiled pieces, which is a few Map
// writes per object. A request keeps the snapshot it started with.

import {
  type AuthnSet,
  type CompiledRequestAuthentication,
  compileRequestAuthentication,
  indexAuthn,
} from './authn/policy.js';
import {
  type CompiledAuthzPolicy,
  compileAuthorizationPolicy,
  indexPolicies,
  type PolicySet,
} from './authz/policy.js';
import { CompileCache, type Compiled, type CompileStats, emptyCompileStats } from './compile-cache.js';
import { buildExternalEntry, isExternalInput } from './egress/entry.js';
import { type EgressTls, resolveEgressTls, type TlsSecretInput } from './egress/tls.js';
import { WaypointConfigError } from './errors.js';
import {
  type BoundWorkloadInput,
  buildPodEntry,
  buildService,
  type ServiceEntry,
  type ServiceInput,
  type ServicePort,
  type WaypointConfigInput,
  type WorkloadInfo,
} from './model.js';
import { buildRouteTable } from './routing/translate.js';
import type { RouteTable } from './routing/types.js';
import { compileTrafficPolicy, DEFAULT_TRAFFIC, type TrafficSettings } from './traffic/policy.js';

// Shared by every waypoint of the process: compiling is a pure function of the input object and
// the parameter (cluster domain, Gateway), and entries go with their inputs.
const serviceCache = new CompileCache<string, ServiceEntry>(
  (raw, domain) =>
    isExternalInput(raw)
      ? buildExternalEntry(raw as ServiceInput)
      : buildService(raw as ServiceInput, domain),
  (domain) => domain,
);
const podCache = new CompileCache<undefined, ServiceEntry>(
  (raw) => buildPodEntry(raw as BoundWorkloadInput),
  () => '',
);
const trafficCache = new CompileCache<undefined, ReturnType<typeof compileTrafficPolicy>>(
  (raw) => compileTrafficPolicy(raw),
  () => '',
);
const authzCache = new CompileCache<WaypointConfigInput['gateway'], CompiledAuthzPolicy | undefined>(
  (raw, gateway) => compileAuthorizationPolicy(raw, gateway),
  (gateway) => `${gateway.namespace}/${gateway.name}`,
);

const authnCache = new CompileCache<
  WaypointConfigInput['gateway'],
  CompiledRequestAuthentication | undefined
>(
  (raw, gateway) => compileRequestAuthentication(raw, gateway),
  (gateway) => `${gateway.namespace}/${gateway.name}`,
);

export interface WaypointSnapshot {
  gateway: { name: string; namespace: string };
  services: ReadonlyMap<string, ServiceEntry>;
  /** `vip:port` (IPv6 VIPs bracketed) → service and port. */
  byAddress: ReadonlyMap<string, { service: ServiceEntry; port: ServicePort }>;
  /** Lowercase hostnames (name, name.ns, name.ns.svc, FQDN) → service. */
  byHostname: ReadonlyMap<string, ServiceEntry>;
  /** Pods bound to the waypoint by IP (entries with `pod: true`, key `pod:<ip>`). */
  pods: ReadonlyMap<string, ServiceEntry>;
  routes: RouteTable;
  policies: ReadonlyMap<string, PolicySet>;
  /** JWT rules per service key (RequestAuthentication); absent: no token is checked. */
  authn: ReadonlyMap<string, AuthnSet>;
  traffic: ReadonlyMap<string, TrafficSettings>;
  workloadsByIp: ReadonlyMap<string, WorkloadInfo>;
  /** TLS origination of the ServiceEntries served for egress, by entry key (TrafficPolicy `tls`). */
  egressTls: EgressTlsLookup;
}

/** An entry's TLS origination settings, or undefined for plain TCP. */
export type EgressTlsLookup = (serviceKey: string) => EgressTls | undefined;

export function addressKey(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

interface IndexKeys {
  addresses: readonly (readonly [string, { service: ServiceEntry; port: ServicePort }])[];
  hostnames: readonly string[];
}

const indexKeys = new WeakMap<ServiceEntry, IndexKeys>();

/** A service's byAddress entries and hostnames, made once per compiled service. */
function indexKeysOf(svc: ServiceEntry): IndexKeys {
  let keys = indexKeys.get(svc);
  if (keys === undefined) {
    const addresses: [string, { service: ServiceEntry; port: ServicePort }][] = [];
    for (const vip of svc.vips)
      for (const port of svc.ports.values())
        addresses.push([addressKey(vip, port.port), { service: svc, port }]);
    keys = {
      addresses,
      // A ServiceEntry is named by its hosts (the Host header an app sends), not by its own name.
      hostnames:
        svc.external !== undefined
          ? svc.external.hosts.filter((h) => !h.startsWith('*.'))
          : [svc.name, `${svc.name}.${svc.namespace}`, `${svc.name}.${svc.namespace}.svc`, svc.hostname],
    };
    indexKeys.set(svc, keys);
  }
  return keys;
}

/**
 * Validates and indexes a configuration. Bad objects are skipped and returned as errors (each names
 * its object and field); a bad Service is skipped too. Never throws for bad input. Objects already
 * compiled for an earlier snapshot are reused (`stats` counts both).
 */
export function buildSnapshot(input: WaypointConfigInput): {
  snapshot: WaypointSnapshot;
  errors: WaypointConfigError[];
  stats: CompileStats;
} {
  const errors: WaypointConfigError[] = [];
  const stats = emptyCompileStats();
  const domain = input.clusterDomain ?? 'cluster.local';
  const services = new Map<string, ServiceEntry>();
  const byAddress = new Map<string, { service: ServiceEntry; port: ServicePort }>();
  const byHostname = new Map<string, ServiceEntry>();
  for (const raw of input.services) {
    const svc = collect(errors, serviceCache.compile(raw, domain, stats));
    if (svc === undefined) continue;
    services.set(svc.key, svc);
    const keys = indexKeysOf(svc);
    for (const [key, entry] of keys.addresses) byAddress.set(key, entry);
    for (const h of keys.hostnames) if (!byHostname.has(h)) byHostname.set(h, svc);
  }

  const pods = new Map<string, ServiceEntry>();
  for (const raw of input.boundWorkloads ?? []) {
    const pod = collect(errors, podCache.compile(raw, undefined, stats));
    if (pod !== undefined) pods.set(pod.endpoints[0]!.ip, pod);
  }

  const traffic = new Map<string, TrafficSettings>();
  for (const raw of input.trafficPolicies ?? []) {
    const r = collect(errors, trafficCache.compile(raw, undefined, stats));
    if (r === undefined) continue;
    for (const key of r.services) {
      const prev = traffic.get(key);
      // Two policies on one service: the first one (in input order) wins, as with Istio's oldest-wins.
      if (prev !== undefined) {
        const [ns = '', name = ''] = r.settings.policy.split('/');
        errors.push(
          new WaypointConfigError(
            'INVALID_OBJECT',
            'TrafficPolicy',
            ns,
            name,
            'spec.targetRefs',
            `Service ${key} already has TrafficPolicy ${prev.policy}; this one is ignored for it`,
          ),
        );
        continue;
      }
      traffic.set(key, r.settings);
    }
  }

  const routes = buildRouteTable(
    {
      gateway: input.gateway,
      services,
      httpRoutes: input.httpRoutes ?? [],
      grpcRoutes: input.grpcRoutes ?? [],
    },
    errors,
    stats,
  );

  const compiled: CompiledAuthzPolicy[] = [];
  for (const raw of input.authorizationPolicies ?? []) {
    const p = collect(errors, authzCache.compile(raw, input.gateway, stats));
    if (p !== undefined) compiled.push(p);
  }
  // Pods get the Gateway-targeted policies only (policies targeting a Service name no pod key).
  const policies = indexPolicies(compiled, [...services.keys(), ...[...pods.values()].map((p) => p.key)]);

  const authnPolicies: CompiledRequestAuthentication[] = [];
  for (const raw of input.requestAuthentications ?? []) {
    const p = collect(errors, authnCache.compile(raw, input.gateway, stats));
    if (p !== undefined) authnPolicies.push(p);
  }
  const authn = indexAuthn(authnPolicies, [...services.keys(), ...[...pods.values()].map((p) => p.key)]);

  const workloadsByIp = new Map<string, WorkloadInfo>();
  for (const w of input.workloads ?? []) workloadsByIp.set(w.ip, w.workload);
  for (const svc of [...services.values(), ...pods.values()]) {
    for (const ep of svc.endpoints)
      if (ep.workload && !workloadsByIp.has(ep.ip)) workloadsByIp.set(ep.ip, ep.workload);
  }

  const secrets = new Map<string, TlsSecretInput>();
  for (const sec of input.tlsSecrets ?? []) secrets.set(`${sec.namespace}/${sec.name}`, sec);
  const egressTlsByKey = new Map<string, EgressTls>();
  for (const [key, settings] of traffic) {
    if (settings.tls === undefined || services.get(key)?.external === undefined) continue;
    egressTlsByKey.set(
      key,
      resolveEgressTls(settings.policy, settings.tls, (ns, name) => secrets.get(`${ns}/${name}`)),
    );
  }
  for (const [key, t] of egressTlsByKey) {
    if (t.error === undefined) continue;
    const [ns = '', name = ''] = t.policy.split('/');
    errors.push(
      new WaypointConfigError(
        'UNRESOLVED_REF',
        'TrafficPolicy',
        ns,
        name,
        'spec.tls',
        `${t.error} (ServiceEntry ${key} fails closed: 503 UF)`,
      ),
    );
  }

  return {
    snapshot: {
      gateway: input.gateway,
      services,
      byAddress,
      byHostname,
      pods,
      routes,
      policies,
      authn,
      traffic,
      workloadsByIp,
      egressTls: (key) => egressTlsByKey.get(key),
    },
    errors,
    stats,
  };
}

/** The compiled value; its errors (kept with it, so reported on every snapshot) go to `errors`. */
function collect<T>(errors: WaypointConfigError[], r: Compiled<T>): T | undefined {
  for (const e of r.errors) errors.push(e);
  return r.value;
}

export function trafficFor(snapshot: WaypointSnapshot, serviceKey: string): TrafficSettings {
  return snapshot.traffic.get(serviceKey) ?? DEFAULT_TRAFFIC;
}
