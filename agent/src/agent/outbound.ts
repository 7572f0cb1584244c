// Outbound: TCP from a local mesh pod, redirected to 15001 by capture.
//
//   accept ─► original destination (SO_ORIGINAL_DST) ─► source workload (must be a local mesh pod)
//          ─► resolve: service VIP with a waypoint → HBONE to the waypoint (authority VIP:port)
//                      service VIP → pick a ready endpoint (round robin) → HBONE to endpoint:15008
//                      mesh pod IP → HBONE directly (via its waypoint when bound)
//                      ServiceEntry address (allocated VIP, spec.addresses) → its waypoint when
//                        bound; STATIC: an endpoint; DNS: the host (or endpoint) resolved upstream
//                        (the one fetch* on the way); NONE: where the pod sent it
//                      anything else → plain TCP passthrough (ALLOW_ANY), or refused, logged and
//                        counted (REGISTRY_ONLY: MeshConfig hypha-system/default, else --outbound-policy)
//          ─► same node? hand to Inbound in-process : pooled HBONE tunnel ─► copy bytes
//
// Invariants:
// - The agent always presents the *source workload's* certificate; it never tunnels for an IP
//   that is not a local mesh pod.
// - A service bound to a waypoint whose waypoint is missing fails closed: no direct fallback,
//   or L7 policy could be bypassed by waiting for the waypoint to go away.
// - The outbound traffic policy fails closed: a MeshConfig the agent cannot read counts as
//   REGISTRY_ONLY (translate.ts), and the problems are logged whenever it changes.
import net, { isIP, type Socket } from 'node:net';
import type { Logger } from '@hypha/shared';
import type {
  ConfigState,
  MeshConfigObject,
  OutboundTrafficPolicyMode,
  Service,
  ServiceEntry,
  ServiceEntryPort,
  Workload,
} from '@hypha/shared/config';
import { copyBidirectional, createByteCounters, type HbonePool, isHboneError } from '@hypha/shared/hbone';
import type { CertManager, SpiffeId } from '@hypha/shared/identity';
import type { ConnectionStart, ConnectionTracker } from './connections.js';
import { type Inbound, stripV4Mapped } from './inbound.js';

export interface OutboundOptions {
  state: ConfigState;
  nodeName: string;
  pool: HbonePool;
  /** Certificates of local pods (the CertManager, or a worker's copy of the supervisor's). */
  certs: Pick<CertManager, 'findCertificate' | 'fetchCertificate'>;
  inbound: Inbound;
  tracker: ConnectionTracker;
  logger: Logger;
  /** The mesh default when no MeshConfig says otherwise (`--outbound-policy`). */
  outboundPolicy: 'passthrough' | 'registry-only';
  /**
   * Resolves a ServiceEntry host (`resolution: DNS`) to an address of the wanted family, via the
   * upstream resolvers. Undefined: such entries are refused with a clear reason.
   */
  fetchHostAddress?: (host: string, family: 4 | 6) => Promise<string>;
  /** SO_ORIGINAL_DST of an accepted socket. */
  findOriginalDestination: (socket: Socket) => { ip: string; port: number };
  hbonePort?: number;
}

/** What a connection is to, for telemetry: a Service, or a ServiceEntry named by its host. */
interface Destination {
  readonly name: string;
  readonly namespace: string;
  readonly host?: string | undefined;
}

/** Where one connection goes: `findTarget`'s answer. */
export type OutboundTarget =
  | {
      kind: 'hbone';
      ip: string;
      authority: string;
      expected: SpiffeId[];
      workload: Workload | undefined;
      service: Destination | undefined;
      port: number;
      viaWaypoint: boolean;
    }
  | { kind: 'local'; ip: string; workload: Workload; port: number; service: Destination | undefined }
  | {
      kind: 'plain';
      ip: string;
      port: number;
      workload: Workload | undefined;
      service: Destination | undefined;
    }
  | { kind: 'refuse'; flag: string; reason: string; service: Destination | undefined }
  | { kind: 'resolve'; host: string; port: number; service: Destination };

export class Outbound {
  readonly #o: OutboundOptions;
  readonly #log: Logger;
  /** Round-robin cursor per service (namespace/name). */
  readonly #rr = new Map<string, number>();

  constructor(options: OutboundOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'outbound' });
    this.#reportMeshConfig(options.state.findMeshConfig());
    options.state.onChange((change) => {
      if (change.meshConfig) {
        this.#reportMeshConfig(change.meshConfig.current);
        this.#cutUnregistered();
      }
    });
  }

  /**
   * Under REGISTRY_ONLY, live passthrough connections to destinations in no registry are cut, as
   * policy changes cut the connections they now deny: the policy holds for what is open, not only
   * for what opens next.
   */
  #cutUnregistered(): void {
    if (this.findOutboundTrafficPolicy() !== 'REGISTRY_ONLY') return;
    const cut = this.#o.tracker.abortWhere((c) => {
      if (c.direction !== 'passthrough' || c.destination.service !== undefined) return undefined;
      if (c.destination.workload !== undefined) return undefined;
      const dst = formatHostPort(c.destination.ip, c.destination.port);
      // Still unknown now? (A Service or ServiceEntry may have appeared for it since.)
      if (this.findTarget(c.destination.ip, c.destination.port).kind !== 'refuse') return undefined;
      return {
        reason: `REGISTRY_ONLY: ${dst} is neither a known Service, pod nor ServiceEntry`,
        responseFlags: 'REGISTRY_ONLY',
      };
    });
    if (cut > 0)
      this.#log.warn(
        { cut, reason: 'REGISTRY_ONLY' },
        `closed ${cut} live connection(s) outside the registry`,
      );
  }

  /** REGISTRY_ONLY or ALLOW_ANY for a new connection: the MeshConfig's, else the agent's flag. */
  findOutboundTrafficPolicy(): OutboundTrafficPolicyMode {
    return (
      this.#o.state.findMeshConfig()?.outboundTrafficPolicy ??
      (this.#o.outboundPolicy === 'registry-only' ? 'REGISTRY_ONLY' : 'ALLOW_ANY')
    );
  }

  #reportMeshConfig(mesh: MeshConfigObject | undefined): void {
    const mode = this.findOutboundTrafficPolicy();
    // The MeshConfig decides only when it sets a mode; otherwise the agent's flag does.
    const from =
      mesh?.outboundTrafficPolicy !== undefined
        ? `MeshConfig ${mesh.namespace}/${mesh.name}`
        : '--outbound-policy';
    if (mesh !== undefined && mesh.problems.length > 0) {
      this.#log.error(
        { meshConfig: `${mesh.namespace}/${mesh.name}`, problems: mesh.problems },
        `MeshConfig ${mesh.namespace}/${mesh.name} is invalid (${mesh.problems.join('; ')}); outbound traffic policy REGISTRY_ONLY until it is fixed`,
      );
      return;
    }
    this.#log.info({ outboundTrafficPolicy: mode, from }, `outbound traffic policy ${mode}`);
  }

  handleSocket(socket: Socket): void {
    socket.on('error', () => {});
    void this.#handle(socket).catch((err) => {
      this.#log.error({ err }, 'outbound connection failed unexpectedly');
      socket.destroy();
    });
  }

  async #handle(socket: Socket): Promise<void> {
    const srcIp = stripV4Mapped(socket.remoteAddress ?? '');
    const srcPort = socket.remotePort ?? 0;
    let dst: { ip: string; port: number };
    try {
      dst = this.#o.findOriginalDestination(socket);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message, src: `${srcIp}:${srcPort}` }, 'no original destination');
      socket.destroy();
      return;
    }
    const source = this.#o.state.findWorkloadByIp(srcIp);
    const start: Omit<ConnectionStart, 'abort'> = {
      direction: 'outbound',
      source: { ip: srcIp, port: srcPort, workload: source, identity: source?.identity.toString() },
      destination: { ip: dst.ip, port: dst.port },
      mutualTls: false,
    };
    if (source === undefined || source.node !== this.#o.nodeName || !source.inMesh) {
      this.#o.tracker.recordRefused(start, {
        responseFlags: 'IDENTITY_ERROR',
        error: `source ${srcIp} is not a mesh pod on node ${this.#o.nodeName}`,
      });
      socket.destroy();
      return;
    }
    const target = this.findTarget(dst.ip, dst.port);
    const svc = target.service
      ? { name: target.service.name, namespace: target.service.namespace, host: target.service.host }
      : undefined;
    start.destination.service = svc;
    switch (target.kind) {
      case 'resolve': {
        let ip: string;
        try {
          if (this.#o.fetchHostAddress === undefined) throw new Error('the agent has no resolver for hosts');
          ip = await this.#o.fetchHostAddress(target.host, familyOf(dst.ip));
        } catch (err) {
          this.#o.tracker.recordRefused(start, {
            responseFlags: 'DNS_RESOLUTION_FAILED',
            error: `ServiceEntry ${target.service.namespace}/${target.service.name}: ${(err as Error).message}`,
          });
          socket.destroy();
          return;
        }
        if (socket.destroyed) return;
        start.direction = 'passthrough';
        start.destination = { ...start.destination, ip, port: target.port };
        return this.#plain(socket, start, ip, target.port);
      }
      case 'refuse':
        if (target.flag === 'REGISTRY_ONLY') {
          this.#log.warn(
            {
              dst: formatHostPort(dst.ip, dst.port),
              src_workload: `${source.namespace}/${source.name}`,
              reason: 'REGISTRY_ONLY',
            },
            `refused ${formatHostPort(dst.ip, dst.port)} from ${source.namespace}/${source.name}: REGISTRY_ONLY and the destination is neither a known Service, pod nor ServiceEntry`,
          );
        }
        this.#o.tracker.recordRefused(start, { responseFlags: target.flag, error: target.reason });
        socket.destroy();
        return;
      case 'plain':
        start.direction = 'passthrough';
        start.destination = {
          ...start.destination,
          ip: target.ip,
          port: target.port,
          workload: target.workload,
        };
        return this.#plain(socket, start, target.ip, target.port);
      case 'local':
        start.destination = {
          ...start.destination,
          ip: target.ip,
          port: target.port,
          workload: target.workload,
          identity: target.workload.identity.toString(),
        };
        start.mutualTls = true;
        return this.#local(socket, start, source, target.port);
      case 'hbone':
        start.destination = {
          ...start.destination,
          ip: target.ip,
          port: target.port,
          workload: target.workload,
          identity: target.expected.map(String).join(','),
        };
        start.mutualTls = true;
        return this.#tunnel(socket, start, source, target);
    }
  }

  /** Decides where a connection to ip:port goes. Synchronous map reads only. */
  findTarget(ip: string, port: number): OutboundTarget {
    const state = this.#o.state;
    const service = state.findServiceByVip(ip, port);
    if (service !== undefined) {
      if (service.waypoint !== undefined) return this.#viaWaypoint(service.waypoint, service, ip, port);
      const picked = this.#pickEndpoint(service, port, familyOf(ip));
      if (picked === undefined) {
        return {
          kind: 'refuse',
          flag: 'NO_HEALTHY_UPSTREAM',
          reason: `service ${service.namespace}/${service.name} has no ready endpoint for port ${port}`,
          service,
        };
      }
      const { ip: endpointIp, targetPort, workload } = picked;
      return this.#toWorkload(endpointIp, targetPort, workload, service);
    }
    const workload = state.findWorkloadByIp(ip);
    if (workload !== undefined) {
      const bound = workload.inMesh ? state.findWaypointFor(workload) : undefined;
      if (bound !== undefined) return this.#viaWaypoint(bound.ref, undefined, ip, port);
      return this.#toWorkload(ip, port, workload, undefined);
    }
    const entry = state.findServiceEntryByAddress(ip, port);
    if (entry !== undefined) return this.#toServiceEntry(entry.entry, entry.host, entry.port, ip, port);
    if (this.findOutboundTrafficPolicy() === 'REGISTRY_ONLY') {
      return {
        kind: 'refuse',
        flag: 'REGISTRY_ONLY',
        reason: `REGISTRY_ONLY: ${formatHostPort(ip, port)} is neither a known Service, pod nor ServiceEntry`,
        // Istio's name for where such traffic goes, so dashboards that look for it find it.
        service: { name: 'BlackHoleCluster', namespace: '', host: 'BlackHoleCluster' },
      };
    }
    return { kind: 'plain', ip, port, workload: undefined, service: undefined };
  }

  /** A destination registered by a ServiceEntry: waypoint, endpoint, resolved host, or as sent. */
  #toServiceEntry(
    entry: ServiceEntry,
    host: string | undefined,
    p: ServiceEntryPort,
    ip: string,
    port: number,
  ): OutboundTarget {
    const dest: Destination = { name: entry.name, namespace: entry.namespace, host: host ?? entry.hosts[0] };
    if (entry.waypoint !== undefined) return this.#viaWaypoint(entry.waypoint, dest, ip, port);
    if (entry.resolution === 'NONE') return { kind: 'plain', ip, port, workload: undefined, service: dest };
    const targetPort = (ports: Readonly<Record<string, number>> | undefined) =>
      (p.name !== undefined ? ports?.[p.name] : undefined) ?? p.targetPort ?? p.number;
    if (entry.endpoints.length > 0) {
      const endpoint =
        entry.endpoints[this.#next(`se/${entry.namespace}/${entry.name}`) % entry.endpoints.length]!;
      const epPort = targetPort(endpoint.ports);
      if (entry.resolution === 'DNS' && isIP(endpoint.address) === 0) {
        return { kind: 'resolve', host: endpoint.address, port: epPort, service: dest };
      }
      // MESH_INTERNAL endpoints that are mesh pods are reached over HBONE like any pod.
      const workload = this.#o.state.findWorkloadByIp(endpoint.address);
      const t = this.#toWorkload(endpoint.address, epPort, workload, undefined);
      return { ...t, service: dest } as OutboundTarget;
    }
    if (host === undefined) {
      return {
        kind: 'refuse',
        flag: 'NO_HEALTHY_UPSTREAM',
        reason: `ServiceEntry ${entry.namespace}/${entry.name} has no host to resolve for ${formatHostPort(ip, port)}`,
        service: dest,
      };
    }
    return { kind: 'resolve', host, port: targetPort(undefined), service: dest };
  }

  #toWorkload(
    ip: string,
    port: number,
    workload: Workload | undefined,
    service: Destination | undefined,
  ): OutboundTarget {
    if (workload === undefined || !workload.inMesh) return { kind: 'plain', ip, port, workload, service };
    if (workload.node === this.#o.nodeName) return { kind: 'local', ip, workload, port, service };
    return {
      kind: 'hbone',
      ip,
      authority: formatHostPort(ip, port),
      expected: [workload.identity],
      workload,
      service,
      port,
      viaWaypoint: false,
    };
  }

  #viaWaypoint(
    ref: { namespace: string; name: string },
    service: Destination | undefined,
    dstIp: string,
    port: number,
  ): OutboundTarget {
    const authority = formatHostPort(dstIp, port);
    const lookup = this.#o.state.findWaypoint(ref.namespace, ref.name);
    if (lookup === undefined) {
      return {
        kind: 'refuse',
        flag: 'NO_HEALTHY_UPSTREAM',
        reason: `waypoint ${ref.namespace}/${ref.name} does not exist; failing closed`,
        service,
      };
    }
    const pods = this.#o.state.findWaypointWorkloads(ref).filter((w) => w.ready && w.ips.length > 0);
    const pod =
      pods.length > 0 ? pods[this.#next(`wp/${ref.namespace}/${ref.name}`) % pods.length] : undefined;
    if (pod === undefined) {
      return {
        kind: 'refuse',
        flag: 'NO_HEALTHY_UPSTREAM',
        reason: `waypoint ${ref.namespace}/${ref.name} has no ready pod; failing closed`,
        service,
      };
    }
    return {
      kind: 'hbone',
      // The waypoint pod's address of the destination's family (IPv6 for an IPv6 VIP) when it has one.
      ip: sameFamily(pod.ips, familyOf(dstIp)) ?? pod.ips[0]!,
      authority,
      expected: [lookup.identity],
      workload: pod,
      service,
      port,
      viaWaypoint: true,
    };
  }

  /** Round robin over `findEndpointCandidates` (one cursor per service). */
  #pickEndpoint(service: Service, port: number, family: 4 | 6): EndpointCandidate | undefined {
    const ready = findEndpointCandidates(this.#o.state, service, port, family);
    if (ready.length === 0) return undefined;
    return ready[this.#next(`${service.namespace}/${service.name}`) % ready.length];
  }

  #next(key: string): number {
    const n = this.#rr.get(key) ?? 0;
    this.#rr.set(key, n + 1);
    return n;
  }

  #plain(socket: Socket, start: Omit<ConnectionStart, 'abort'>, ip: string, port: number): void {
    const upstream = net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true });
    const bytes = createByteCounters();
    let finish: ((info?: { responseFlags?: string; error?: string }) => void) | undefined;
    upstream.once('connect', () => {
      finish = this.#o.tracker.open(
        { ...start, abort: (why) => upstream.destroy(new Error(why)) },
        bytes,
      ).finish;
      void copyBidirectional(socket, upstream, { counters: bytes }).then((r) =>
        finish?.({ responseFlags: '-', ...(r.error ? { error: r.error.message } : {}) }),
      );
    });
    upstream.once('error', (err) => {
      if (finish) return;
      this.#o.tracker.recordRefused(start, { responseFlags: 'UPSTREAM_CONNECT_FAILURE', error: err.message });
      socket.destroy();
    });
  }

  async #local(
    socket: Socket,
    start: Omit<ConnectionStart, 'abort'>,
    source: Workload,
    port: number,
  ): Promise<void> {
    const podIp = start.destination.ip;
    const admission = this.#o.inbound.admit({
      destinationIp: podIp,
      port,
      peer: source.identity,
      sourceIp: start.source.ip,
    });
    if (!admission.ok) {
      this.#o.tracker.recordRefused(
        { ...start, direction: 'inbound' },
        { responseFlags: admission.flag, error: admission.reason, policy: admission.policy },
      );
      socket.destroy();
      return;
    }
    // Same node: one tracked connection, reported from the destination's side like an inbound one.
    await this.#o.inbound.pipeToPod(socket, { ...start, direction: 'inbound' }, start.source.ip, podIp, port);
  }

  async #tunnel(
    socket: Socket,
    start: Omit<ConnectionStart, 'abort'>,
    source: Workload,
    target: Extract<OutboundTarget, { kind: 'hbone' }>,
  ): Promise<void> {
    const abort = new AbortController();
    const onClose = () => abort.abort();
    socket.once('close', onClose);
    try {
      const cert =
        this.#o.certs.findCertificate(source.identity) ??
        (await this.#o.certs.fetchCertificate(source.identity));
      const tunnel = await this.#o.pool.connect({
        source: cert,
        destination: { ip: target.ip, port: this.#o.hbonePort ?? 15008 },
        expectedIdentities: target.expected,
        authority: target.authority,
        forwardedFor: { ip: start.source.ip, port: start.source.port },
        signal: abort.signal,
      });
      socket.off('close', onClose);
      if (socket.destroyed) {
        tunnel.stream.destroy();
        return;
      }
      const bytes = createByteCounters();
      const { finish } = this.#o.tracker.open(
        { ...start, abort: (why) => socket.destroy(new Error(why)) },
        bytes,
      );
      const r = await copyBidirectional(socket, tunnel.stream, { counters: bytes });
      finish({ responseFlags: '-', ...(r.error ? { error: r.error.message } : {}) });
    } catch (err) {
      socket.off('close', onClose);
      const flag = isHboneError(err) ? err.responseFlag : 'CONNECT';
      this.#o.tracker.recordRefused(start, { responseFlags: flag, error: (err as Error).message });
      socket.destroy();
    }
  }
}

function formatHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function familyOf(ip: string): 4 | 6 {
  return ip.includes(':') ? 6 : 4;
}

/** The first address of `family` among `ips`. */
function sameFamily(ips: readonly string[], family: 4 | 6): string | undefined {
  return ips.find((ip) => familyOf(ip) === family);
}

export interface EndpointCandidate {
  /** The address to tunnel to: the endpoint's address of the VIP's family when it has one. */
  ip: string;
  targetPort: number;
  workload: Workload | undefined;
}

/**
 * The ready endpoints of `service` serving `port`, each at its address of the VIP's family: a
 * dual-stack pod listed once (selector) or once per family (EndpointSlices of both families) is
 * one candidate, at its IPv6 address for an IPv6 VIP. Only when no endpoint has an address of that
 * family do the others serve (the tunnel carries either family; the agent there connects to the
 * pod). Synchronous map reads only.
 */
export function findEndpointCandidates(
  state: ConfigState,
  service: Service,
  port: number,
  family: 4 | 6,
): EndpointCandidate[] {
  const matching: EndpointCandidate[] = [];
  const other: EndpointCandidate[] = [];
  const seen = new Set<string>();
  for (const endpoint of service.endpoints) {
    if (!endpoint.ready) continue;
    const targetPort = endpoint.targetPorts.get(port);
    if (targetPort === undefined) continue;
    const workload = endpoint.workloadUid
      ? state.findWorkloadByUid(endpoint.workloadUid)
      : state.findWorkloadByIp(endpoint.ip);
    const ip =
      familyOf(endpoint.ip) === family
        ? endpoint.ip
        : (sameFamily(workload?.ips ?? [], family) ?? endpoint.ip);
    if (seen.has(ip)) continue;
    seen.add(ip);
    (familyOf(ip) === family ? matching : other).push({ ip, targetPort, workload });
  }
  return matching.length > 0 ? matching : other;
}
