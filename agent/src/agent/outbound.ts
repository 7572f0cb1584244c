// Outbound: TCP from a local mesh pod, redirected to 15001 by capture.
//
//   accept ─► original destination (SO_ORIGINAL_DST) ─► source workload (must be a local mesh pod)
//          ─► resolve: service VIP with a waypoint → HBONE to the waypoint (authority VIP:port)
//                      service VIP → pick a ready endpoint (round robin) → HBONE to endpoint:15008
//                      mesh pod IP → HBONE directly (via its waypoint when bound)
//                      anything else → plain TCP passthrough (or refused in registry-only mode)
//          ─► same node? hand to Inbound in-process : pooled HBONE tunnel ─► copy bytes
//
// Invariants:
// - The agent always presents the *source workload's* certificate; it never tunnels for an IP
//   that is not a local mesh pod.
// - A service bound to a waypoint whose waypoint is missing fails closed: no direct fallback,
//   or L7 policy could be bypassed by waiting for the waypoint to go away.
import net, { type Socket } from 'node:net';
import type { Logger } from '@hypha/shared';
import type { ConfigState, Service, Workload } from '@hypha/shared/config';
import { copyBidirectional, createByteCounters, type HbonePool, isHboneError } from '@hypha/shared/hbone';
import type { CertManager, SpiffeId } from '@hypha/shared/identity';
import type { ConnectionStart, ConnectionTracker } from './connections.js';
import { type Inbound, stripV4Mapped } from './inbound.js';

export interface OutboundOptions {
  state: ConfigState;
  nodeName: string;
  pool: HbonePool;
  certs: CertManager;
  inbound: Inbound;
  tracker: ConnectionTracker;
  logger: Logger;
  outboundPolicy: 'passthrough' | 'registry-only';
  /** SO_ORIGINAL_DST of an accepted socket. */
  findOriginalDestination: (socket: Socket) => { ip: string; port: number };
  hbonePort?: number;
}

type Target =
  | {
      kind: 'hbone';
      ip: string;
      authority: string;
      expected: SpiffeId[];
      workload: Workload | undefined;
      service: Service | undefined;
      port: number;
      viaWaypoint: boolean;
    }
  | { kind: 'local'; ip: string; workload: Workload; port: number; service: Service | undefined }
  | { kind: 'plain'; ip: string; port: number; workload: Workload | undefined; service: Service | undefined }
  | { kind: 'refuse'; flag: string; reason: string; service: Service | undefined };

export class Outbound {
  readonly #o: OutboundOptions;
  readonly #log: Logger;
  /** Round-robin cursor per service (namespace/name). */
  readonly #rr = new Map<string, number>();

  constructor(options: OutboundOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'outbound' });
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
    const target = this.#resolve(dst.ip, dst.port);
    const svc = target.service
      ? { name: target.service.name, namespace: target.service.namespace }
      : undefined;
    start.destination.service = svc;
    switch (target.kind) {
      case 'refuse':
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
  #resolve(ip: string, port: number): Target {
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
    if (this.#o.outboundPolicy === 'registry-only') {
      return {
        kind: 'refuse',
        flag: 'NO_ROUTE',
        reason: `${ip}:${port} is not in the mesh registry`,
        service: undefined,
      };
    }
    return { kind: 'plain', ip, port, workload: undefined, service: undefined };
  }

  #toWorkload(
    ip: string,
    port: number,
    workload: Workload | undefined,
    service: Service | undefined,
  ): Target {
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
    service: Service | undefined,
    dstIp: string,
    port: number,
  ): Target {
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
    target: Extract<Target, { kind: 'hbone' }>,
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
