// The agent's data path: inbound, outbound, the HBONE server and pool, the connection tracker and
// its metrics, live re-evaluation on policy changes, revocations and drain. One per event loop:
// the agent process builds one (`--workers 1`), and with `--workers N` each worker process builds
// its own over its copy of the state (workers.ts, worker.ts).
import type { Socket } from 'node:net';
import type { Logger } from '@hypha/shared';
import type { ConfigState } from '@hypha/shared/config';
import { createHbonePool, createHboneServer, type HbonePool, type HboneServer } from '@hypha/shared/hbone';
import { type CertManager, tryParseSpiffeId } from '@hypha/shared/identity';
import { L4Metrics, TapHub } from '@hypha/shared/telemetry';
import type { Registry } from 'prom-client';
import { createHostLookup } from '../dns/index.js';
import { getOriginalDst } from '../native/index.js';
import type { AgentConfig } from './config.js';
import { ConnectionTracker } from './connections.js';
import { createHboneSocketTuner } from './hbone-socket.js';
import { Inbound, stripV4Mapped } from './inbound.js';
import { Outbound } from './outbound.js';
import { PolicyMetrics } from './policy-metrics.js';
import { WaypointGuard } from './waypoint-guard.js';

export type CertSource = Pick<CertManager, 'findCertificate' | 'fetchCertificate'>;

export interface DataPath {
  readonly tracker: ConnectionTracker;
  readonly tap: TapHub;
  readonly outbound: Outbound;
  onOutbound(s: Socket): void;
  onPlaintext(s: Socket): void;
  onHbone(s: Socket): void;
  /** Replaces the revoked serials and identities; cuts their live connections. */
  setRevocations(
    serials: ReadonlySet<string>,
    ids: ReadonlySet<string>,
  ): { cut: number; closedConnections: number };
  /** Lets live connections finish (HBONE peers get GOAWAY) until the deadline, then cuts the rest. */
  drain(graceful: boolean, progress?: (live: number) => void): Promise<{ cut: number }>;
  close(): Promise<void>;
}

export function createDataPath(opts: {
  config: AgentConfig;
  state: ConfigState;
  certs: CertSource;
  registry: Registry;
  logger: Logger;
}): DataPath {
  const { config, state, certs, registry, logger } = opts;
  const log = logger.child({ component: 'agent' });
  const l4 = new L4Metrics(registry);
  const policyMetrics = new PolicyMetrics(registry);
  // `hypha tap` reads finished connections from here (admin /tap); free while nobody listens.
  const tap = new TapHub();
  const tracker = new ConnectionTracker({
    metrics: l4,
    accessLog: logger.child({ component: 'access' }),
    tap,
    node: config.nodeName,
  });
  let revoked = {
    serials: new Set<string>() as ReadonlySet<string>,
    ids: new Set<string>() as ReadonlySet<string>,
  };

  const waypointGuard = new WaypointGuard();
  waypointGuard.rebuild(state);
  const inbound = new Inbound({
    state,
    nodeName: config.nodeName,
    tracker,
    waypointGuard,
    logger,
    transparent: config.capture === 'node',
    policyMetrics,
    isIdentityRevoked: (id) => revoked.ids.has(id.toString()),
  });
  const tuneSocket = createHboneSocketTuner(logger);
  const pool: HbonePool = createHbonePool({ logger, tuneSocket });
  const originalDestination = (socket: Socket): { ip: string; port: number } => {
    try {
      const d = getOriginalDst(socket);
      return { ip: stripV4Mapped(d.address), port: d.port };
    } catch (err) {
      if (config.capture === 'node') throw err;
      return { ip: stripV4Mapped(socket.localAddress ?? ''), port: socket.localPort ?? 0 };
    }
  };
  const outbound = new Outbound({
    state,
    nodeName: config.nodeName,
    pool,
    certs,
    inbound,
    tracker,
    logger,
    outboundPolicy: config.outboundPolicy,
    fetchHostAddress: createHostLookup(config.dns?.upstreams ?? []),
    findOriginalDestination: originalDestination,
    hbonePort: config.ports.hbone,
  });
  const hbone: HboneServer = createHboneServer({
    findCertificate: (conn) => {
      const ip = conn.originalDestination?.ip ?? conn.localAddress;
      const w = state.findWorkloadByIp(stripV4Mapped(ip));
      if (w === undefined || w.node !== config.nodeName || !w.inMesh) return undefined;
      return certs.findCertificate(w.identity);
    },
    handler: (req) => inbound.handleHbone(req),
    trustDomain: config.trustDomain,
    isRevoked: (peer) => revoked.serials.has(peer.serial) || revoked.ids.has(peer.id.toString()),
    tuneSocket,
    logger,
  });

  // Live re-evaluation: a policy or mode change re-checks every inbound connection.
  state.onChange((change) => {
    waypointGuard.rebuild(state);
    const policyChanged =
      change.authorizationPolicies.added.length +
        change.authorizationPolicies.removed.length +
        change.authorizationPolicies.updated.length +
        change.namespaces.updated.length +
        change.services.updated.length +
        change.waypoints.added.length +
        change.waypoints.removed.length >
        0 ||
      // A PeerAuthentication change reaches the workloads' mTLS settings only.
      change.workloads.updated.some((u) => u.previous.mtls !== u.current.mtls);
    if (policyChanged) {
      const closed = tracker.abortWhere((c) => {
        if (c.direction !== 'inbound' && c.direction !== 'inbound_plaintext') return undefined;
        const peer = c.source.identity && c.mutualTls ? tryParseSpiffeId(c.source.identity) : undefined;
        const a = inbound.admit(
          { destinationIp: c.destination.ip, port: c.destination.port, peer, sourceIp: c.source.ip },
          'recheck',
        );
        if (a.ok) return undefined;
        if (a.kind !== undefined) policyMetrics.recordClosedByPolicy(a.policy, a.kind);
        return { reason: `closed on re-evaluation: ${a.reason}`, responseFlags: a.flag, policy: a.policy };
      });
      if (closed > 0) log.info({ closed }, 'closed live connections that policy now denies');
    }
  });

  return {
    tracker,
    tap,
    outbound,
    onOutbound: (s) => outbound.handleSocket(s),
    onPlaintext: (s) => {
      let dst: { ip: string; port: number };
      try {
        dst = originalDestination(s);
      } catch {
        s.destroy();
        return;
      }
      void inbound.handlePlaintext(s, dst);
    },
    onHbone: (s) => {
      s.on('error', () => {});
      let dst: { ip: string; port: number } | undefined;
      try {
        dst = originalDestination(s);
      } catch {
        dst = undefined;
      }
      hbone.handleSocket(s, dst ? { originalDestination: dst } : {});
    },
    setRevocations(serials, ids) {
      revoked = { serials, ids };
      const cut = tracker.abortWhere((c) =>
        c.source.identity !== undefined && ids.has(c.source.identity) ? 'peer identity revoked' : undefined,
      );
      // Also close the HTTP/2 connections of revoked peers: a pooled connection would otherwise
      // keep carrying new streams for a certificate that passed its handshake before the revocation.
      const closedConnections = hbone.enforceRevocations();
      return { cut, closedConnections };
    },
    async drain(graceful, progress) {
      const deadline = Date.now() + config.drainMs;
      const hboneDrained = hbone.drain(config.drainMs, { finishHandshakes: graceful });
      let lastReport = Date.now();
      while (tracker.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        if (progress && Date.now() - lastReport >= 1000) {
          lastReport = Date.now();
          progress(tracker.size);
          log.info(
            { live: tracker.size, leftMs: deadline - Date.now() },
            'draining: still carrying connections',
          );
        }
      }
      const cut = tracker.abortWhere(() => 'agent shutting down');
      if (cut > 0) log.warn({ cut }, 'drain deadline reached; closed remaining connections');
      await Promise.race([
        hboneDrained,
        new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref()),
      ]);
      return { cut };
    },
    async close() {
      pool.close();
      await hbone.close();
    },
  };
}
