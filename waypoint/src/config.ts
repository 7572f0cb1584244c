// One immutable snapshot of everything the data path reads, rebuilt on every config update:
// services indexed by VIP:port and hostname, the route table, authorization policy sets and traffic
// settings per service. Clusters (endpoint health, circuit-breaker counters) live outside the
// snapshot and are carried over by service key, so an update never resets them.
import {
  type CompiledAuthzPolicy,
  compileAuthorizationPolicy,
  indexPolicies,
  type PolicySet,
} from './authz/policy.js';
import { WaypointConfigError } from './errors.js';
import {
  buildPodEntry,
  buildService,
  type ServiceEntry,
  type ServicePort,
  type WaypointConfigInput,
  type WorkloadInfo,
} from './model.js';
import { buildRouteTable } from './routing/translate.js';
import type { RouteTable } from './routing/types.js';
import { compileTrafficPolicy, DEFAULT_TRAFFIC, type TrafficSettings } from './traffic/policy.js';

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
  traffic: ReadonlyMap<string, TrafficSettings>;
  workloadsByIp: ReadonlyMap<string, WorkloadInfo>;
}

export function addressKey(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Validates and indexes a configuration. Bad objects are skipped and returned as errors (each names
 * its object and field); a bad Service is skipped too. Never throws for bad input.
 */
export function buildSnapshot(input: WaypointConfigInput): {
  snapshot: WaypointSnapshot;
  errors: WaypointConfigError[];
} {
  const errors: WaypointConfigError[] = [];
  const domain = input.clusterDomain ?? 'cluster.local';
  const services = new Map<string, ServiceEntry>();
  const byAddress = new Map<string, { service: ServiceEntry; port: ServicePort }>();
  const byHostname = new Map<string, ServiceEntry>();
  for (const raw of input.services) {
    let svc: ServiceEntry;
    try {
      svc = buildService(raw, domain);
    } catch (err) {
      if (err instanceof WaypointConfigError) {
        errors.push(err);
        continue;
      }
      throw err;
    }
    services.set(svc.key, svc);
    for (const vip of svc.vips)
      for (const port of svc.ports.values())
        byAddress.set(addressKey(vip, port.port), { service: svc, port });
    for (const h of [
      svc.name,
      `${svc.name}.${svc.namespace}`,
      `${svc.name}.${svc.namespace}.svc`,
      svc.hostname,
    ]) {
      if (!byHostname.has(h)) byHostname.set(h, svc);
    }
  }

  const pods = new Map<string, ServiceEntry>();
  for (const raw of input.boundWorkloads ?? []) {
    const pod = collect(errors, () => buildPodEntry(raw));
    if (pod !== undefined) pods.set(pod.endpoints[0]!.ip, pod);
  }

  const traffic = new Map<string, TrafficSettings>();
  for (const raw of input.trafficPolicies ?? []) {
    const r = collect(errors, () => compileTrafficPolicy(raw));
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
  );

  const compiled: CompiledAuthzPolicy[] = [];
  for (const raw of input.authorizationPolicies ?? []) {
    const p = collect(errors, () => compileAuthorizationPolicy(raw, input.gateway));
    if (p !== undefined) compiled.push(p);
  }
  // Pods get the Gateway-targeted policies only (policies targeting a Service name no pod key).
  const policies = indexPolicies(compiled, [...services.keys(), ...[...pods.values()].map((p) => p.key)]);

  const workloadsByIp = new Map<string, WorkloadInfo>();
  for (const w of input.workloads ?? []) workloadsByIp.set(w.ip, w.workload);
  for (const svc of [...services.values(), ...pods.values()]) {
    for (const ep of svc.endpoints)
      if (ep.workload && !workloadsByIp.has(ep.ip)) workloadsByIp.set(ep.ip, ep.workload);
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
      traffic,
      workloadsByIp,
    },
    errors,
  };
}

function collect<T>(errors: WaypointConfigError[], f: () => T): T | undefined {
  try {
    return f();
  } catch (err) {
    if (err instanceof WaypointConfigError) {
      errors.push(err);
      return undefined;
    }
    throw err;
  }
}

export function trafficFor(snapshot: WaypointSnapshot, serviceKey: string): TrafficSettings {
  return snapshot.traffic.get(serviceKey) ?? DEFAULT_TRAFFIC;
}
