// What each dashboard page shows, computed from what the sources answered: Prometheus samples
// (Istio-named metrics) and the admin endpoints' snapshots and tap events. Pure functions, so the
// JSON API is tested without a mesh.
//
// The service graph (Kiali's model for ambient):
//   workload ──HTTP via waypoint──► service ──► workload     (istio_requests_total, reporter=waypoint)
//   workload ──TCP (L4, mTLS or not)─────────► workload      (istio_tcp_connections_opened_total)
// L4 hops to and from a waypoint pod are the HTTP edges' transport: they are folded into those
// edges, not drawn twice. With Prometheus down, edges come from the last minute of tap events.
import type { TapEvent } from '@hypha/shared/telemetry';
import { workloadName } from '@hypha/shared/telemetry';
import type { AdminTargetState, CertView, DumpService, DumpWorkload, PolicyObject } from './admin.js';
import type { PromSample } from './prometheus.js';

export interface GraphNode {
  id: string;
  kind: 'workload' | 'service' | 'waypoint' | 'unknown';
  namespace: string;
  name: string;
  /** Services bound to a waypoint: ns/name of the waypoint. */
  waypoint?: string;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  protocol: 'http' | 'tcp';
  /** Requests/s (HTTP) or connections opened/s (TCP) over the last minute. */
  rate: number;
  /** Share of requests not answered 5xx (HTTP), of connections that did not fail (TCP); undefined without traffic. */
  successRate: number | undefined;
  /** Requests answered 4xx per second (denials show here). */
  rate4xx?: number;
  /** Request latency p99 in ms (HTTP). */
  p99Ms?: number | undefined;
  /** TCP bytes/s both ways. */
  bytesRate?: number;
  mtls: boolean;
  sourcePrincipals: string[];
  destinationPrincipals: string[];
  /** The waypoint this traffic went through (ns/name). */
  via?: string;
}

export interface Graph {
  from: 'prometheus' | 'tap';
  nodes: GraphNode[];
  edges: GraphEdge[];
  /** Services bound to a waypoint (hypha.dev/use-waypoint): the waypoint node and the service node. */
  bindings: { waypoint: string; service: string }[];
}

/** The Prometheus samples the graph is built from, one query each (see GRAPH_QUERIES). */
export interface GraphSamples {
  http: PromSample[];
  httpP99: PromSample[];
  tcpOpened: PromSample[];
  tcpFailed: PromSample[];
  tcpBytes: PromSample[];
}

const HTTP_BY =
  'source_workload, source_workload_namespace, source_principal, destination_workload, destination_workload_namespace, destination_principal, destination_service_name, destination_service_namespace, connection_security_policy, response_code';
const TCP_BY =
  'source_workload, source_workload_namespace, source_principal, destination_workload, destination_workload_namespace, destination_principal, connection_security_policy';

/** The PromQL behind the graph: the request and connection rates Kiali asks for, over 1 minute. */
export const GRAPH_QUERIES: Record<keyof GraphSamples, string> = {
  http: `sum by (${HTTP_BY}) (rate(istio_requests_total{reporter="waypoint"}[1m]))`,
  httpP99:
    'histogram_quantile(0.99, sum by (le, source_workload, source_workload_namespace, destination_service_name, destination_service_namespace) (rate(istio_request_duration_milliseconds_bucket{reporter="waypoint"}[1m])))',
  tcpOpened: `sum by (${TCP_BY}) (rate(istio_tcp_connections_opened_total{reporter="destination"}[1m])) or sum by (${TCP_BY}) (rate(istio_tcp_connections_opened_total{reporter="source",destination_workload="unknown"}[1m]))`,
  tcpFailed: `sum by (${TCP_BY}) (rate(istio_tcp_connections_failed_total{reporter="source"}[1m]))`,
  tcpBytes: `sum by (${TCP_BY}) (rate(istio_tcp_sent_bytes_total{reporter="destination"}[1m]) + rate(istio_tcp_received_bytes_total{reporter="destination"}[1m]))`,
};

/** Everything the admin endpoints say about the mesh's objects, merged across targets. */
export interface MeshObjects {
  workloads: DumpWorkload[];
  services: DumpService[];
  waypoints: { namespace: string; name: string; identity: string }[];
  policies: PolicyObject[];
}

export function meshObjects(targets: readonly AdminTargetState[]): MeshObjects {
  const workloads = new Map<string, DumpWorkload>();
  const services = new Map<string, DumpService>();
  const waypoints = new Map<string, { namespace: string; name: string; identity: string }>();
  const policies = new Map<string, PolicyObject>();
  for (const t of targets) {
    const d = t.configDump;
    // Agents hold the mesh's objects; a waypoint's dump is its own view (its services lack bindings).
    if (d === undefined || t.kind !== 'agent') continue;
    for (const w of d.workloads ?? []) workloads.set(`${w.namespace}/${w.name}`, w);
    for (const s of d.services ?? []) services.set(`${s.namespace}/${s.name}`, s);
    for (const w of d.waypoints ?? []) waypoints.set(`${w.namespace}/${w.name}`, w);
    for (const p of d.policies ?? []) policies.set(`${p.namespace}/${p.name}`, p);
  }
  return {
    workloads: [...workloads.values()],
    services: [...services.values()],
    waypoints: [...waypoints.values()],
    policies: [...policies.values()],
  };
}

const known = (v: string | undefined): v is string => v !== undefined && v !== '' && v !== 'unknown';

/** The workload (controller) name of a pod, as the metrics name it. */
export function podWorkload(w: DumpWorkload): string {
  return workloadName(w.name, w.labels ?? {});
}

interface Acc {
  edge: GraphEdge;
  total: number;
  bad: number;
}

export function buildGraph(
  objects: MeshObjects,
  samples: GraphSamples | undefined,
  events: readonly TapEvent[],
  nowMs: number,
): Graph {
  const nodes = new Map<string, GraphNode>();
  const waypointIds = new Set(objects.waypoints.map((w) => w.identity));
  const waypointByPrincipal = new Map(objects.waypoints.map((w) => [w.identity, `${w.namespace}/${w.name}`]));
  const serviceWaypoint = new Map(
    objects.services
      .filter((s) => s.waypoint)
      .map((s) => [`${s.namespace}/${s.name}`, `${s.waypoint!.namespace}/${s.waypoint!.name}`]),
  );
  const addWorkload = (ns: string | undefined, name: string | undefined, principal?: string): string => {
    const isWaypoint = principal !== undefined && waypointIds.has(principal);
    if (!known(name)) {
      const id = 'unknown';
      nodes.set(id, { id, kind: 'unknown', namespace: '', name: 'unknown' });
      return id;
    }
    const id = `${ns ?? ''}/${name}`;
    const prev = nodes.get(id);
    nodes.set(id, {
      id,
      kind: isWaypoint || prev?.kind === 'waypoint' ? 'waypoint' : 'workload',
      namespace: ns ?? '',
      name,
    });
    return id;
  };
  const addService = (ns: string, name: string): string => {
    const id = `svc:${ns}/${name}`;
    const wp = serviceWaypoint.get(`${ns}/${name}`);
    nodes.set(id, { id, kind: 'service', namespace: ns, name, ...(wp ? { waypoint: wp } : {}) });
    return id;
  };
  // Every mesh workload is a node, with or without traffic.
  for (const w of objects.workloads) {
    if (w.inMesh) addWorkload(w.namespace, podWorkload(w));
  }
  for (const s of objects.services) addService(s.namespace, s.name);
  // Waypoints are nodes of their own, linked to the services they serve.
  const bindings: Graph['bindings'] = [];
  for (const w of objects.waypoints) {
    const id = `waypoint:${w.namespace}/${w.name}`;
    nodes.set(id, { id, kind: 'waypoint', namespace: w.namespace, name: w.name });
  }
  for (const [svc, wp] of serviceWaypoint) {
    if (nodes.has(`waypoint:${wp}`)) bindings.push({ waypoint: `waypoint:${wp}`, service: `svc:${svc}` });
  }

  const edges = new Map<string, Acc>();
  const edgeFor = (
    source: string,
    target: string,
    protocol: 'http' | 'tcp',
    via: string | undefined,
  ): Acc => {
    const id = `${protocol}:${source}->${target}`;
    let acc = edges.get(id);
    if (acc === undefined) {
      acc = {
        edge: {
          id,
          source,
          target,
          protocol,
          rate: 0,
          successRate: undefined,
          mtls: true,
          sourcePrincipals: [],
          destinationPrincipals: [],
          ...(via ? { via } : {}),
        },
        total: 0,
        bad: 0,
      };
      // mTLS only if every contributing series was.
      edges.set(id, acc);
    }
    return acc;
  };
  const principals = (acc: Acc, src: string | undefined, dst: string | undefined, mtls: boolean): void => {
    if (known(src) && !acc.edge.sourcePrincipals.includes(src)) acc.edge.sourcePrincipals.push(src);
    if (known(dst) && !acc.edge.destinationPrincipals.includes(dst)) acc.edge.destinationPrincipals.push(dst);
    if (!mtls) acc.edge.mtls = false;
  };

  if (samples !== undefined) {
    for (const s of samples.http) {
      const m = s.metric;
      const src = addWorkload(m.source_workload_namespace, m.source_workload, m.source_principal);
      const svcNs = m.destination_service_namespace ?? '';
      const svcName = m.destination_service_name ?? '';
      const svc = known(svcName) ? addService(svcNs, svcName) : undefined;
      const dst = known(m.destination_workload)
        ? addWorkload(m.destination_workload_namespace, m.destination_workload, m.destination_principal)
        : undefined;
      const via = svc !== undefined ? serviceWaypoint.get(`${svcNs}/${svcName}`) : undefined;
      const mtls = m.connection_security_policy === 'mutual_tls';
      const code = m.response_code ?? '';
      const hop1 = edgeFor(src, svc ?? dst ?? 'unknown', 'http', via);
      hop1.edge.rate += s.value;
      hop1.total += s.value;
      if (code.startsWith('5') || code === '0') hop1.bad += s.value;
      if (code.startsWith('4')) hop1.edge.rate4xx = (hop1.edge.rate4xx ?? 0) + s.value;
      principals(hop1, m.source_principal, undefined, mtls);
      if (svc !== undefined && dst !== undefined) {
        const hop2 = edgeFor(svc, dst, 'http', via);
        hop2.edge.rate += s.value;
        hop2.total += s.value;
        if (code.startsWith('5')) hop2.bad += s.value;
        // The waypoint's hop to the pod is mTLS with the waypoint's identity (HBONE).
        principals(hop2, undefined, m.destination_principal, true);
      }
    }
    for (const s of samples.httpP99) {
      const m = s.metric;
      const src = `${m.source_workload_namespace ?? ''}/${m.source_workload ?? ''}`;
      const acc = edges.get(
        `http:${src}->svc:${m.destination_service_namespace ?? ''}/${m.destination_service_name ?? ''}`,
      );
      if (acc !== undefined && Number.isFinite(s.value)) acc.edge.p99Ms = s.value;
    }
    const tcpKey = (m: Record<string, string>) =>
      `${m.source_workload_namespace}/${m.source_workload}>${m.destination_workload_namespace}/${m.destination_workload}`;
    const failed = new Map(samples.tcpFailed.map((s) => [tcpKey(s.metric), s.value]));
    const bytes = new Map<string, number>();
    for (const s of samples.tcpBytes)
      bytes.set(tcpKey(s.metric), (bytes.get(tcpKey(s.metric)) ?? 0) + s.value);
    for (const s of samples.tcpOpened) {
      const m = s.metric;
      // Hops to and from waypoints carry the HTTP edges above.
      if (waypointIds.has(m.source_principal ?? '') || waypointIds.has(m.destination_principal ?? ''))
        continue;
      const src = addWorkload(m.source_workload_namespace, m.source_workload, m.source_principal);
      const dst = addWorkload(
        m.destination_workload_namespace,
        m.destination_workload,
        m.destination_principal,
      );
      const acc = edgeFor(src, dst, 'tcp', undefined);
      acc.edge.rate += s.value;
      acc.total += s.value;
      acc.bad += failed.get(tcpKey(m)) ?? 0;
      acc.edge.bytesRate = (acc.edge.bytesRate ?? 0) + (bytes.get(tcpKey(m)) ?? 0);
      principals(
        acc,
        m.source_principal,
        m.destination_principal,
        m.connection_security_policy === 'mutual_tls',
      );
    }
  } else {
    // Prometheus down: the last minute of tap events.
    const since = nowMs - 60_000;
    const latencies = new Map<string, number[]>();
    for (const e of events) {
      if (Date.parse(e.time) < since) continue;
      const srcPrincipal = e.source.identity?.replace(/^spiffe:\/\//, '');
      const dstPrincipal = e.destination.identity?.replace(/^spiffe:\/\//, '');
      if (e.kind === 'connection') {
        // One report per connection: the destination's agent when it has one.
        if (e.direction === 'outbound' && e.destination.workload !== undefined) continue;
        if (waypointIds.has(e.source.identity ?? '') || waypointIds.has(e.destination.identity ?? ''))
          continue;
        const src = addWorkload(e.source.namespace, e.source.workload ?? e.source.ip);
        const dst = addWorkload(e.destination.namespace, e.destination.workload ?? e.destination.ip);
        const acc = edgeFor(src, dst, 'tcp', undefined);
        acc.edge.rate += 1 / 60;
        acc.total += 1;
        if (e.flags !== '-' && e.flags !== 'DENY') acc.bad += 1;
        acc.edge.bytesRate = (acc.edge.bytesRate ?? 0) + (e.bytesSent + e.bytesReceived) / 60;
        principals(acc, e.source.identity, e.destination.identity, e.mtls);
        continue;
      }
      const src = addWorkload(e.source.namespace, e.source.workload ?? e.source.ip);
      const svcName = e.destination.service;
      const svc =
        svcName !== undefined ? addService(svcName.split('/')[0]!, svcName.split('/')[1] ?? '') : undefined;
      const dst =
        e.destination.workload !== undefined
          ? addWorkload(e.destination.namespace, e.destination.workload)
          : undefined;
      const via = e.reporter.startsWith('waypoint ') ? e.reporter.slice('waypoint '.length) : undefined;
      const hop1 = edgeFor(src, svc ?? dst ?? 'unknown', 'http', via);
      hop1.edge.rate += 1 / 60;
      hop1.total += 1;
      const status = e.status ?? 0;
      if (status >= 500 || status === 0) hop1.bad += 1;
      if (status >= 400 && status < 500) hop1.edge.rate4xx = (hop1.edge.rate4xx ?? 0) + 1 / 60;
      principals(hop1, e.source.identity, undefined, e.mtls);
      latencies.set(hop1.edge.id, [...(latencies.get(hop1.edge.id) ?? []), e.durationMs]);
      if (svc !== undefined && dst !== undefined) {
        const hop2 = edgeFor(svc, dst, 'http', via);
        hop2.edge.rate += 1 / 60;
        hop2.total += 1;
        if (status >= 500) hop2.bad += 1;
        principals(hop2, undefined, e.destination.identity, true);
      }
      void srcPrincipal;
      void dstPrincipal;
    }
    for (const [id, l] of latencies) {
      const sorted = l.sort((a, b) => a - b);
      edges.get(id)!.edge.p99Ms = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)];
    }
  }
  for (const acc of edges.values()) {
    acc.edge.successRate = acc.total > 0 ? Math.max(0, 1 - acc.bad / acc.total) : undefined;
    acc.edge.sourcePrincipals = acc.edge.sourcePrincipals.map(stripScheme);
    acc.edge.destinationPrincipals = acc.edge.destinationPrincipals.map(stripScheme);
    if (acc.edge.via === undefined) {
      const wp = acc.edge.destinationPrincipals
        .map((p) => waypointByPrincipal.get(`spiffe://${p}`))
        .find(Boolean);
      if (wp !== undefined) acc.edge.via = wp;
    }
  }
  return {
    from: samples !== undefined ? 'prometheus' : 'tap',
    nodes: [...nodes.values()],
    edges: [...edges.values()].map((a) => a.edge),
    bindings,
  };
}

/** Istio writes principals as the SPIFFE ID without its scheme: `cluster.local/ns/demo/sa/client`. */
export function stripScheme(id: string): string {
  return id.replace(/^spiffe:\/\//, '');
}

// ---------------------------------------------------------------------------------------------
// Mesh health

export interface NodeHealth {
  node: string;
  ready: boolean;
  /** Why not ready, or what is worth knowing. */
  reasons: string[];
  admin: string | undefined;
  /** The Hypha release the agent runs (its /config_dump), e.g. "0.1.0". */
  release: string | undefined;
  configVersion: number | undefined;
  connections: number | undefined;
  certificates: number;
  pods: number;
  lastSeen: string | undefined;
}

export interface WaypointHealth {
  name: string;
  ready: boolean;
  reasons: string[];
  admin: string | undefined;
  release: string | undefined;
  configVersion: number | undefined;
  connections: number | undefined;
  configErrors: string[];
}

export interface CertWarning {
  level: 'warning' | 'error';
  identity: string;
  holder: string;
  notAfter: string | undefined;
  message: string;
}

export interface Health {
  nodes: NodeHealth[];
  waypoints: WaypointHealth[];
  ca: { ok: boolean; message: string };
  warnings: CertWarning[];
}

/** A certificate this close to its expiry is a warning (the agent renews at half life, so it is late). */
export const EXPIRY_WARNING_MS = 60 * 60 * 1000;

const BAD_CERT_STATES = new Set(['expired', 'fetching', 'backoff']);

/** Readiness of agent and waypoint pods read through the Kubernetes API (cluster mode). */
export interface PodReadiness {
  kind: 'agent' | 'waypoint';
  name: string;
  pod: string;
  ready: boolean;
  reasons: string[];
}

export function buildHealth(
  targets: readonly AdminTargetState[],
  nowMs: number,
  kubePods: readonly PodReadiness[] = [],
): Health {
  const objects = meshObjects(targets);
  const nodeNames = new Set<string>();
  for (const w of objects.workloads) if (w.inMesh && w.node) nodeNames.add(w.node);
  const agents = targets.filter((t) => t.kind === 'agent' && t.name !== undefined);
  for (const a of agents) nodeNames.add(a.name!);
  for (const p of kubePods) if (p.kind === 'agent') nodeNames.add(p.name);
  const nodes: NodeHealth[] = [...nodeNames].sort().map((node) => {
    const t = agents.find((a) => a.name === node);
    const kube = kubePods.find((p) => p.kind === 'agent' && p.name === node);
    const pods = objects.workloads.filter((w) => w.inMesh && w.node === node).length;
    const reasons: string[] = [];
    if (kube !== undefined) {
      for (const r of kube.reasons) reasons.push(`${kube.pod}: ${r}`);
      if (t === undefined) {
        return {
          node,
          ready: kube.ready,
          reasons,
          admin: undefined,
          release: undefined,
          configVersion: undefined,
          connections: undefined,
          certificates: 0,
          pods,
          lastSeen: undefined,
        };
      }
    }
    if (t === undefined && kube === undefined)
      reasons.push('no agent runs here, or none was given (--admin, --kubernetes)');
    else if (t === undefined) reasons.push('no agent admin endpoint given for this node (--admin)');
    else if (!t.ok)
      reasons.push(
        // With the pod known (--kubernetes), its readiness came through the API server; only the admin
        // endpoint (port-forward) failed.
        kube !== undefined
          ? `its admin endpoint cannot be read: ${t.error ?? 'unknown error'}`
          : `its agent does not answer: ${t.error ?? 'unknown error'}`,
      );
    else {
      if ((t.configDump?.version ?? 0) < 1) reasons.push('config not synced yet');
      for (const c of t.certs) {
        if (BAD_CERT_STATES.has(c.state))
          reasons.push(`certificate ${stripScheme(c.identity)} is ${c.state}`);
      }
    }
    return {
      node,
      ready: t !== undefined && t.ok && reasons.length === 0 && (kube === undefined || kube.ready),
      reasons,
      admin: t?.label,
      release: t?.ok ? t.configDump?.hypha?.version : undefined,
      configVersion: t?.ok ? t.configDump?.version : undefined,
      connections: t?.ok ? t.connections : undefined,
      certificates: t?.ok ? t.certs.length : 0,
      pods,
      lastSeen: t?.lastSeen !== undefined ? new Date(t.lastSeen).toISOString() : undefined,
    };
  });
  const wpTargets = targets.filter((t) => t.kind === 'waypoint');
  const wpNames = new Set([
    ...objects.waypoints.map((w) => `${w.namespace}/${w.name}`),
    ...wpTargets.map((t) => t.name!),
    ...kubePods.filter((p) => p.kind === 'waypoint').map((p) => p.name),
  ]);
  const waypoints: WaypointHealth[] = [...wpNames].sort().map((name) => {
    const t = wpTargets.find((w) => w.name === name);
    const kube = kubePods.filter((p) => p.kind === 'waypoint' && p.name === name);
    const reasons: string[] = kube.flatMap((p) => p.reasons.map((r) => `${p.pod}: ${r}`));
    if (t === undefined && kube.length > 0) {
      return {
        name,
        ready: kube.some((p) => p.ready),
        reasons,
        admin: undefined,
        release: undefined,
        configVersion: undefined,
        connections: undefined,
        configErrors: [],
      };
    }
    if (t === undefined) reasons.push('no admin endpoint given for this waypoint (--admin)');
    else if (!t.ok)
      reasons.push(
        kube.length > 0
          ? `its admin endpoint cannot be read: ${t.error ?? 'unknown error'}`
          : `it does not answer: ${t.error ?? 'unknown error'}`,
      );
    else
      for (const c of t.certs)
        if (BAD_CERT_STATES.has(c.state))
          reasons.push(`certificate ${stripScheme(c.identity)} is ${c.state}`);
    return {
      name,
      ready: t !== undefined && t.ok && reasons.length === 0,
      reasons,
      admin: t?.label,
      release: t?.ok ? t.configDump?.hypha?.version : undefined,
      configVersion: t?.ok ? t.configDump?.version : undefined,
      connections: t?.ok ? t.connections : undefined,
      configErrors: t?.configDump?.configErrors ?? [],
    };
  });
  const warnings: CertWarning[] = [];
  const failing: string[] = [];
  let held = 0;
  for (const t of targets) {
    if (!t.ok) continue;
    for (const c of t.certs) {
      held++;
      const holder =
        t.kind === 'agent' ? `agent ${t.name}` : t.kind === 'waypoint' ? `waypoint ${t.name}` : t.label;
      const left = c.notAfter !== undefined ? Date.parse(c.notAfter) - nowMs : undefined;
      if (c.state === 'expired' || (left !== undefined && left <= 0)) {
        warnings.push({
          level: 'error',
          identity: stripScheme(c.identity),
          holder,
          notAfter: c.notAfter,
          message: 'expired: new connections fail closed',
        });
      } else if (left !== undefined && left < EXPIRY_WARNING_MS) {
        warnings.push({
          level: 'warning',
          identity: stripScheme(c.identity),
          holder,
          notAfter: c.notAfter,
          message: `expires in ${Math.round(left / 60_000)} min`,
        });
      }
      if ((c.failures ?? 0) > 0 && c.lastError !== undefined) failing.push(`${holder}: ${c.lastError}`);
    }
  }
  const ca =
    failing.length > 0
      ? { ok: false, message: `certificate renewals failing (${failing.length}): ${failing[0]}` }
      : held > 0
        ? { ok: true, message: `issuing: ${held} certificates held, no renewal failing` }
        : { ok: false, message: 'no certificate held by any reachable agent or waypoint' };
  return { nodes, waypoints, ca, warnings };
}

// ---------------------------------------------------------------------------------------------
// Workload page

export interface WorkloadView {
  namespace: string;
  name: string;
  pods: {
    name: string;
    node: string;
    ips: string[];
    identity: string;
    ready: boolean | undefined;
    mtlsMode: string | undefined;
  }[];
  nodes: string[];
  certificates: (CertView & { holder: string })[];
  policies: PolicySummary[];
}

export function buildWorkload(
  targets: readonly AdminTargetState[],
  namespace: string,
  name: string,
): WorkloadView | undefined {
  const objects = meshObjects(targets);
  const pods = objects.workloads.filter((w) => w.namespace === namespace && podWorkload(w) === name);
  if (pods.length === 0) return undefined;
  const identities = new Set(pods.map((p) => p.identity));
  const certificates: (CertView & { holder: string })[] = [];
  const seen = new Set<string>();
  for (const t of targets) {
    if (!t.ok || t.kind !== 'agent') continue;
    for (const c of t.certs) {
      // The agents of the pods' nodes hold the certificates their pods use.
      if (!identities.has(c.identity) || !pods.some((p) => p.node === t.name)) continue;
      const key = `${t.name}|${c.serial ?? c.identity}`;
      if (seen.has(key)) continue;
      seen.add(key);
      certificates.push({ ...c, holder: `agent ${t.name}` });
    }
  }
  const policies = objects.policies
    .filter((p) => p.namespace === namespace && pods.some((w) => policySelects(p, w, objects.services)))
    .map(summarizePolicy);
  return {
    namespace,
    name,
    pods: pods.map((p) => ({
      name: p.name,
      node: p.node,
      ips: p.ips,
      identity: p.identity,
      ready: p.ready,
      mtlsMode: p.mtlsMode,
    })),
    nodes: [...new Set(pods.map((p) => p.node))].sort(),
    certificates,
    policies,
  };
}

const matches = (
  selector: Record<string, string> | undefined,
  labels: Record<string, string> | undefined,
): boolean => selector !== undefined && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** Does the policy apply to this pod: by selector (L4), or by targetRefs to a Service selecting it (L7)? */
export function policySelects(p: PolicyObject, w: DumpWorkload, services: readonly DumpService[]): boolean {
  const refs = p.targetRefs ?? [];
  if (refs.length > 0) {
    return refs.some((r) => {
      if (r.kind !== 'Service') return false;
      const svc = services.find((s) => s.namespace === w.namespace && s.name === r.name);
      return svc !== undefined && matches(svc.selector, w.labels);
    });
  }
  if (p.selector === undefined) return true; // every workload of the namespace
  return matches(p.selector, w.labels);
}

// ---------------------------------------------------------------------------------------------
// Policy page

export interface PolicySummary {
  namespace: string;
  name: string;
  action: string;
  /** What it applies to, in words: `pods with app=echo`, `Service echo (waypoint)`, `every pod in demo`. */
  appliesTo: string;
  enforcedBy: 'node agents (L4)' | 'waypoint (L7)';
  dryRun: boolean;
  rules: unknown[];
  /** Pods (ns/name) it applies to now. */
  matches: string[];
}

export function summarizePolicy(p: PolicyObject): PolicySummary {
  const refs = p.targetRefs ?? [];
  const appliesTo =
    refs.length > 0
      ? refs.map((r) => `${r.kind ?? '?'} ${r.name ?? '?'}`).join(', ')
      : p.selector !== undefined
        ? `pods with ${Object.entries(p.selector)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')}`
        : `every pod in ${p.namespace}`;
  return {
    namespace: p.namespace,
    name: p.name,
    action: p.action ?? 'ALLOW',
    appliesTo,
    enforcedBy: refs.length > 0 ? 'waypoint (L7)' : 'node agents (L4)',
    dryRun: p.dryRun === true,
    rules: p.rules ?? [],
    matches: [],
  };
}

export interface Denial {
  time: string;
  reporter: string;
  source: string;
  sourceIdentity: string | undefined;
  destination: string;
  request: string | undefined;
  status: number | undefined;
  policy: string | undefined;
  reason: string;
}

/** A tap event that a policy denied (flags DENY / 403 from the waypoint's RBAC). */
export function isDenial(e: TapEvent): boolean {
  return (
    e.flags.split(',').includes('DENY') ||
    (e.kind === 'request' && e.status === 403 && e.policy !== undefined)
  );
}

export function toDenial(e: TapEvent): Denial {
  const peer = (p: TapEvent['source']) =>
    p.workload !== undefined ? `${p.namespace}/${p.workload}` : (p.ip ?? '?');
  const dest = e.destination.service ?? peer(e.destination);
  const port = e.kind === 'connection' && e.destination.port !== undefined ? `:${e.destination.port}` : '';
  return {
    time: e.time,
    reporter: e.reporter,
    source: peer(e.source),
    sourceIdentity: e.source.identity !== undefined ? stripScheme(e.source.identity) : undefined,
    destination: `${dest}${port}`,
    request: e.kind === 'request' ? `${e.method ?? '?'} ${e.path ?? '/'}` : undefined,
    status: e.status,
    policy: e.policy,
    reason: e.error ?? (e.policy !== undefined ? `denied by ${e.policy}` : `denied (${e.flags})`),
  };
}

export function buildPolicies(
  targets: readonly AdminTargetState[],
  events: readonly TapEvent[],
): { policies: PolicySummary[]; denials: Denial[] } {
  const objects = meshObjects(targets);
  const policies = objects.policies.map((p) => ({
    ...summarizePolicy(p),
    matches: objects.workloads
      .filter((w) => w.namespace === p.namespace && w.inMesh && policySelects(p, w, objects.services))
      .map((w) => `${w.namespace}/${w.name}`),
  }));
  policies.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  const denials = events.filter(isDenial).slice(-200).reverse().map(toDenial);
  return { policies, denials };
}
