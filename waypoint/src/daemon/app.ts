// The waypoint daemon (`hypha waypoint`): one Deployment per Gateway of class hypha-waypoint.
//
//   config source ─► ConfigState ─► buildWaypointInput ─► waypoint.updateConfig (on every change)
//   CA ─► CertManager: spiffe://<td>/ns/<ns>/sa/<gateway> (renewed at half life)
//   :15008 HBONE server (waypoint cert) ─► hboneIngressHandler ─► L7 engine
//        ─► hboneConnectUpstream (shared pool, waypoint cert) ─► endpoint's node agent :15008
//   :15000 admin (localhost), :15020 /metrics, :15021 /healthz/ready
//
// Invariants: the waypoint always presents its own identity, both as server and as client, so the
// destination agents (which admit pods behind a waypoint only from that identity) can tell it apart
// from a client dialing the pod directly. Readiness is green only once the config is synced, the
// Gateway exists and the certificate is held.
import net, { type Server, type Socket } from 'node:net';
import { createSilentLogger, type Logger, SpiffeId } from '@hypha/shared';
import { type ConfigState, createFileSource } from '@hypha/shared/config';
import {
  certificatesView,
  daemonInfo,
  type Endpoints,
  listenAllFamilies,
  type MemoryRelease,
  releaseFields,
  releaseStartupMemory,
  startEndpoints,
} from '@hypha/shared/daemon';
import { createHbonePool, createHboneServer, type HboneSocketTuner } from '@hypha/shared/hbone';
import { TapHub } from '@hypha/shared/telemetry';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { createHostResolver } from '../egress/resolve.js';
import { hboneIngressHandler } from '../hbone-ingress.js';
import { hboneConnectUpstream } from '../hbone-upstream.js';
import { createWaypoint, type Waypoint } from '../proxy.js';
import { startDaemonCertificate } from './certificate.js';
import { type WaypointDaemonConfig, WaypointDaemonError } from './config.js';
import { buildWaypointInput } from './input.js';

export interface WaypointDaemon {
  readonly state: ConfigState;
  readonly waypoint: Waypoint;
  readonly endpoints: Endpoints;
  readonly hbonePort: number;
  /** Resolves once config is synced, the Gateway exists and the certificate is held. */
  readonly ready: Promise<void>;
  findNotReadyReasons(): string[];
  shutdown(reason?: string): Promise<void>;
}

export async function startWaypointDaemon(
  config: WaypointDaemonConfig,
  logger: Logger,
  /** Socket options for HBONE TCP sockets (the CLI passes the agent's native send-buffer tuner). */
  tuneHboneSocket?: HboneSocketTuner,
): Promise<WaypointDaemon> {
  const gw = config.gateway;
  const log = logger.child({ component: 'waypoint-daemon', gateway: `${gw.namespace}/${gw.name}` });
  const identity = SpiffeId.of(config.trustDomain, gw.namespace, gw.name);

  // The Kubernetes source (our own informers, shared/src/kube; no @kubernetes/client-node) and the
  // route status reporter load only for a Kubernetes source; a file-configured waypoint skips them.
  const kube =
    config.source.kind === 'kubernetes'
      ? {
          ...(await import('@hypha/shared/kube')),
          ...(await import('../status/reporter.js')),
        }
      : undefined;
  const source =
    kube === undefined || config.source.kind === 'file'
      ? createFileSource({
          path: config.source.kind === 'file' ? config.source.path : '',
          trustDomain: config.trustDomain,
          logger,
        })
      : kube.createKubeSource({
          ...(config.source.kubeconfig ? { kubeconfig: config.source.kubeconfig } : {}),
          trustDomain: config.trustDomain,
          logger,
        });
  log.info({ source: config.source }, 'loading config');
  await source.start();
  const state = source.state;
  // In Kubernetes, tell route authors whether their routes attached and resolved (route status);
  // started only after the first full sync so a half-synced state never reports BackendNotFound.
  const routeStatus =
    kube !== undefined && config.source.kind === 'kubernetes'
      ? kube.createRouteStatusReporter({
          ...(config.source.kubeconfig ? { kubeconfig: config.source.kubeconfig } : {}),
          state,
          waypoint: gw,
          logger,
        })
      : undefined;

  const { certs, caClient, certificate } = await startDaemonCertificate(config.ca, identity, log);

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // `hypha tap` reads finished requests from here (admin /tap); free while nobody listens.
  const tap = new TapHub();
  const pool = createHbonePool({ logger, ...(tuneHboneSocket ? { tuneSocket: tuneHboneSocket } : {}) });
  const waypoint = await createWaypoint({
    config: buildWaypointInput(state, gw),
    connectUpstream: hboneConnectUpstream({
      pool,
      certificate,
      trustDomain: config.trustDomain,
      hbonePort: config.hbonePort,
    }),
    registry,
    logger,
    accessLog: config.accessLog ? logger.child({ component: 'access' }) : createSilentLogger(),
    egress: { resolver: createHostResolver({ servers: config.dnsUpstream ?? [] }) },
    trustDomain: config.trustDomain,
    tap: { hub: tap, reporter: `waypoint ${gw.namespace}/${gw.name}` },
  });
  const unsubscribe = state.onChange(() => {
    const errors = waypoint.updateConfig(buildWaypointInput(state, gw));
    log.info({ version: state.stats().version, rejected: errors.length }, 'config applied');
  });

  const hbone = createHboneServer({
    findCertificate: () => certs.findCertificate(identity),
    handler: hboneIngressHandler(waypoint),
    trustDomain: config.trustDomain,
    ...(tuneHboneSocket ? { tuneSocket: tuneHboneSocket } : {}),
    logger,
  });
  const listener: Server = await new Promise((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s: Socket) => {
      s.on('error', () => {});
      hbone.handleSocket(s, {});
    });
    listenAllFamilies(server, config.hbonePort).then(
      () => resolve(server),
      (err: Error) =>
        reject(
          new WaypointDaemonError(
            'WAYPOINT_START',
            `cannot listen on HBONE port ${config.hbonePort}: ${err.message}`,
          ),
        ),
    );
  });
  const hbonePort = (listener.address() as net.AddressInfo).port;

  const findNotReadyReasons = (): string[] => {
    const reasons: string[] = [];
    if (state.findWaypoint(gw.namespace, gw.name) === undefined)
      reasons.push(`Gateway ${gw.namespace}/${gw.name} (class hypha-waypoint) not found in the config`);
    if (certs.findCertificate(identity) === undefined)
      reasons.push(`no certificate yet for ${identity.toString()}`);
    return reasons;
  };

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (reason = 'shutdown requested'): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info({ reason, drainMs: config.drainMs }, 'draining');
      listener.close();
      unsubscribe();
      await Promise.race([
        hbone.drain(config.drainMs),
        new Promise((r) => setTimeout(r, config.drainMs).unref()),
      ]);
      await hbone.close();
      await waypoint.flushTraces().catch(() => {});
      await waypoint.close();
      pool.close();
      certs.close();
      caClient.close();
      await routeStatus?.close();
      await source.close();
      await endpoints.close();
      log.info('stopped');
    })();
    return shuttingDown;
  };

  const endpoints = await startEndpoints({
    logger,
    registry,
    readiness: { findNotReadyReasons },
    adminAddress: config.adminAddress,
    metricsAddress: config.metricsAddress,
    readinessAddress: config.readinessAddress,
    admin: {
      configDump: () => {
        const input = buildWaypointInput(state, gw);
        return {
          gateway: gw,
          identity: identity.toString(),
          version: state.stats().version,
          hypha: daemonInfo(),
          services: input.services.map((s) => ({
            ...s,
            endpoints: s.endpoints.map((e) => ({
              ...e,
              targetPorts: e.targetPorts instanceof Map ? Object.fromEntries(e.targetPorts) : e.targetPorts,
            })),
          })),
          httpRoutes: input.httpRoutes,
          grpcRoutes: input.grpcRoutes,
          authorizationPolicies: input.authorizationPolicies,
          trafficPolicies: input.trafficPolicies,
          configErrors: waypoint.configErrors.map((e) => e.message),
        };
      },
      certs: () => certificatesView(certs),
      connections: () => hbone.stats(),
      tap,
      quit: () => void shutdown('/quitquitquit').then(() => process.exit(0)),
    },
  });

  let startupRelease: MemoryRelease | undefined;
  const ready = (async () => {
    await source.ready;
    while (findNotReadyReasons().length > 0) {
      if (shuttingDown) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    // Start-up's garbage back to the kernel before serving (shared/src/daemon/memory.ts).
    startupRelease = releaseStartupMemory();
  })();
  void ready.then(() => {
    if (shuttingDown) return;
    log.info(
      {
        services: buildWaypointInput(state, gw).services.length,
        ...(startupRelease ? releaseFields(startupRelease) : {}),
      },
      'ready',
    );
  });
  log.info(
    { hbone: hbonePort, metrics: endpoints.metrics, readiness: endpoints.readiness },
    'waypoint listening',
  );
  return { state, waypoint, endpoints, hbonePort, ready, findNotReadyReasons, shutdown };
}
