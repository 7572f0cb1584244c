// The ingress gateway daemon (`hypha gateway`): one Deployment per Gateway of class `hypha`, the
// waypoint's L7 engine behind listeners that face clients outside the mesh.
//
//   config source ─► ConfigState ─► buildGatewayPlan ─► engine.updateConfig + listeners.apply (each change)
//   CA ─► CertManager: spiffe://<td>/ns/<ns>/sa/<gateway> (renewed at half life)
//   :80/:443/... (Gateway listeners) ─► GatewayListeners ─► L7 engine (routes, authz, splits, retries)
//        ─► hboneConnectUpstream (gateway cert) ─► endpoint's node agent :15008, or the waypoint of a
//           waypoint-bound Service (authority VIP:port); plain TCP to endpoints outside the mesh
//   :15000 admin (localhost), :15020 /metrics (reporter="gateway"), :15021 /healthz/ready
//   Kubernetes: Gateway status (conditions, listeners, addresses, attached routes)
//
// Invariants: the gateway enters the mesh only with its own identity (AuthorizationPolicies can name
// exactly it); it never serves a listener whose certificate did not load; private keys never reach
// a log line, the admin endpoint or a status message.

import net from 'node:net';
import type { Duplex } from 'node:stream';
import { createSilentLogger, type Logger, SpiffeId } from '@hypha/shared';
import { type ConfigState, createFileSource } from '@hypha/shared/config';
import {
  certificatesView,
  type Endpoints,
  type MemoryRelease,
  releaseFields,
  releaseStartupMemory,
  startEndpoints,
} from '@hypha/shared/daemon';
import { createHbonePool, type HboneSocketTuner } from '@hypha/shared/hbone';
import { TapHub } from '@hypha/shared/telemetry';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { startDaemonCertificate } from '../daemon/certificate.js';
import { workloadInfo } from '../daemon/input.js';
import { hboneConnectUpstream } from '../hbone-upstream.js';
import { createWaypoint, type Waypoint } from '../proxy.js';
import type { ConnectUpstream } from '../upstream.js';
import { buildGatewayPlan, type GatewayPlan } from './input.js';
import { GatewayListeners } from './server.js';
import {
  computeGatewayStatus,
  createGatewayStatusReporter,
  GATEWAY_CONTROLLER_NAME,
  type GatewayStatus,
  type GatewayStatusReporter,
} from './status.js';

export interface GatewayDaemonConfig {
  /** The Gateway (class hypha) this gateway serves; its pods run as the service account of the same name. */
  gateway: { name: string; namespace: string };
  source: import('@hypha/shared/daemon').ConfigSource;
  trustDomain: string;
  ca: { address: string; tokenFile: string; rootFile: string };
  /** The node agents' HBONE port (15008). */
  hbonePort: number;
  adminAddress: string;
  metricsAddress: string;
  readinessAddress: string;
  drainMs: number;
  accessLog: boolean;
}

export interface GatewayDaemon {
  readonly state: ConfigState;
  readonly engine: Waypoint;
  readonly endpoints: Endpoints;
  readonly ready: Promise<void>;
  /** The status the Gateway would get now (what Kubernetes is sent; the admin config_dump shows it). */
  findStatus(): GatewayStatus | undefined;
  findNotReadyReasons(): string[];
  shutdown(reason?: string): Promise<void>;
}

export async function startGatewayDaemon(
  config: GatewayDaemonConfig,
  logger: Logger,
  /** Socket options for HBONE TCP sockets (the CLI passes the agent's native send-buffer tuner). */
  tuneHboneSocket?: HboneSocketTuner,
): Promise<GatewayDaemon> {
  const gw = config.gateway;
  const log = logger.child({ component: 'gateway-daemon', gateway: `${gw.namespace}/${gw.name}` });
  const identity = SpiffeId.of(config.trustDomain, gw.namespace, gw.name);

  const kubeSource = config.source.kind === 'kubernetes' ? await import('@hypha/shared/kube') : undefined;
  const kinds =
    kubeSource !== undefined && config.source.kind === 'kubernetes'
      ? await findServedKinds(kubeSource, config.source.kubeconfig, gw.namespace, log)
      : undefined;
  const source =
    kubeSource === undefined || config.source.kind === 'file'
      ? createFileSource({
          path: config.source.kind === 'file' ? config.source.path : '',
          trustDomain: config.trustDomain,
          logger,
        })
      : kubeSource.createKubeSource({
          ...(config.source.kubeconfig ? { kubeconfig: config.source.kubeconfig } : {}),
          trustDomain: config.trustDomain,
          logger,
          // TLSRoutes, TCPRoutes (when installed) and the TLS Secrets of this namespace only.
          ...(kinds !== undefined ? { kinds } : {}),
        });
  log.info({ source: config.source }, 'loading config');
  await source.start();
  const state = source.state;

  const { certs, caClient, certificate } = await startDaemonCertificate(config.ca, identity, log);

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const tap = new TapHub();
  const pool = createHbonePool({ logger, ...(tuneHboneSocket ? { tuneSocket: tuneHboneSocket } : {}) });
  const hbone = hboneConnectUpstream({
    pool,
    certificate,
    trustDomain: config.trustDomain,
    hbonePort: config.hbonePort,
  });
  // Mesh endpoints over HBONE with the gateway's identity; endpoints outside the mesh (no agent
  // captures them) over plain TCP, as an Istio gateway reaches them.
  const connectUpstream: ConnectUpstream = (ep) => {
    const w = state.findWorkloadByIp(ep.ip);
    if (ep.authorityHost === undefined && (w === undefined || !w.inMesh)) {
      return new Promise<Duplex>((resolve, reject) => {
        const s = net.connect({ host: ep.ip, port: ep.port, noDelay: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    }
    return hbone(ep);
  };

  const own = () => state.findWaypointWorkloads(gw)[0];
  const self = () => {
    const w = own();
    return {
      workload: w
        ? workloadInfo(w)
        : { name: gw.name, workload: gw.name, namespace: gw.namespace, serviceAccount: gw.name },
      principal: identity.toString(),
    };
  };
  const empty = { gateway: gw, services: [] };
  let plan: GatewayPlan | undefined = buildGatewayPlan(state, gw);
  const engine = await createWaypoint({
    config: plan?.input ?? empty,
    connectUpstream,
    registry,
    logger,
    accessLog: config.accessLog ? logger.child({ component: 'access' }) : createSilentLogger(),
    trustDomain: config.trustDomain,
    tap: { hub: tap, reporter: `gateway ${gw.namespace}/${gw.name}` },
    reporter: 'gateway',
    self: self(),
  });
  const listeners = new GatewayListeners({ engine, logger });

  const addresses = (): string[] => {
    const svc = state.findServiceByName(gw.namespace, gw.name);
    const fromGateway = plan?.gateway.addresses ?? [];
    if (fromGateway.length > 0 || (svc?.vips.length ?? 0) > 0)
      return [...new Set([...fromGateway, ...(svc?.vips ?? [])])];
    return state.findWaypointWorkloads(gw).flatMap((w) => [...w.ips]);
  };
  const findStatus = (generation?: number, previous?: Partial<GatewayStatus>): GatewayStatus | undefined =>
    plan === undefined
      ? undefined
      : computeGatewayStatus(plan, {
          addresses: addresses(),
          findPortError: (p) => listeners.findPortError(p),
          generation,
          previous,
        });

  // Routes attached to this Gateway get status.parents entries (controller hypha.dev/gateway).
  const routeStatus =
    config.source.kind === 'kubernetes'
      ? (await import('../status/reporter.js')).createRouteStatusReporter({
          ...(config.source.kubeconfig ? { kubeconfig: config.source.kubeconfig } : {}),
          state,
          waypoint: gw,
          logger,
          controllerName: GATEWAY_CONTROLLER_NAME,
          role: 'gateway',
        })
      : undefined;
  const statusReporter: GatewayStatusReporter | undefined =
    config.source.kind === 'kubernetes'
      ? await createGatewayStatusReporter({
          ...(config.source.kubeconfig ? { kubeconfig: config.source.kubeconfig } : {}),
          gateway: gw,
          compute: (g, prev) => findStatus(g, prev),
          logger,
        })
      : undefined;

  /** Logs each listener's verdict when it changes (the status says the same in Kubernetes). */
  const lastVerdicts = new Map<string, string>();
  const logVerdicts = () => {
    const status = findStatus();
    for (const l of status?.listeners ?? []) {
      const bad = l.conditions.find((c) =>
        c.type === 'Conflicted' ? c.status === 'True' : c.status === 'False',
      );
      const verdict = bad ? `${bad.type} ${bad.reason}: ${bad.message}` : 'serving';
      if (lastVerdicts.get(l.name) === verdict) continue;
      lastVerdicts.set(l.name, verdict);
      if (bad)
        log.warn(
          { listener: l.name, condition: bad.type, reason: bad.reason },
          `listener not serving: ${bad.message}`,
        );
      else log.info({ listener: l.name, attachedRoutes: l.attachedRoutes }, 'listener serving');
    }
  };

  let applying: Promise<void> = Promise.resolve();
  const apply = () => {
    plan = buildGatewayPlan(state, gw);
    const errors = engine.updateConfig(plan?.input ?? empty);
    const next = plan;
    applying = applying
      .then(() => listeners.apply(next))
      .then(() => {
        logVerdicts();
        statusReporter?.update();
      });
    log.info(
      { version: state.stats().version, rejected: errors.length, gateway: plan !== undefined },
      'config applied',
    );
  };
  const unsubscribe = state.onChange(apply);
  apply();

  const findNotReadyReasons = (): string[] => {
    const reasons: string[] = [];
    if (plan === undefined)
      reasons.push(`Gateway ${gw.namespace}/${gw.name} (class hypha) not found in the config`);
    if (certs.findCertificate(identity) === undefined)
      reasons.push(`no certificate yet for ${identity.toString()}`);
    return reasons;
  };

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (reason = 'shutdown requested'): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info({ reason, drainMs: config.drainMs }, 'draining');
      unsubscribe();
      // Stop accepting; keep-alive and in-flight connections get until the drain deadline, then
      // the engine closes what is left.
      await Promise.race([listeners.close(), new Promise((r) => setTimeout(r, config.drainMs).unref())]);
      await engine.flushTraces().catch(() => {});
      await engine.close();
      pool.close();
      certs.close();
      caClient.close();
      await statusReporter?.close();
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
      configDump: () => ({
        gateway: gw,
        identity: identity.toString(),
        version: state.stats().version,
        // Secrets by name only: certificates and keys are never dumped.
        listeners: plan?.compiled.listeners.map((l) => ({
          name: l.name,
          port: l.port,
          protocol: l.protocol,
          hostname: l.hostname,
          serving: l.serving,
          certificateSecret: l.certificate?.secret,
        })),
        status: findStatus(),
        httpRoutes: plan?.input.httpRoutes,
        grpcRoutes: plan?.input.grpcRoutes,
        tlsRoutes: plan?.tlsRoutes.map((r) => ({
          name: r.name,
          listener: r.listener.name,
          hostnames: r.hostnames,
          backends: r.backends,
        })),
        tcpRoutes: plan?.tcpRoutes.map((r) => ({
          name: r.name,
          listener: r.listener.name,
          backends: r.backends,
        })),
        services: plan?.input.services.map((s) => ({
          name: s.name,
          namespace: s.namespace,
          vips: s.vips,
          endpoints: s.endpoints.length,
        })),
        configErrors: engine.configErrors.map((e) => e.message),
      }),
      certs: () => certificatesView(certs),
      connections: () => ({}),
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
    await applying;
    // Start-up's garbage back to the kernel before serving (shared/src/daemon/memory.ts).
    startupRelease = releaseStartupMemory();
  })();
  void ready.then(() => {
    if (shuttingDown) return;
    log.info(
      {
        listeners: plan?.compiled.listeners.length ?? 0,
        ...(startupRelease ? releaseFields(startupRelease) : {}),
      },
      'ready',
    );
  });
  log.info({ metrics: endpoints.metrics, readiness: endpoints.readiness }, 'gateway started');
  return {
    state,
    engine,
    endpoints,
    ready,
    findStatus: () => findStatus(),
    findNotReadyReasons,
    shutdown,
  };
}

/**
 * What to watch: the mesh's kinds, the TLS Secrets of the gateway's namespace, and TLSRoute/TCPRoute
 * only when their CRDs are installed (they are in Gateway API's experimental channel; a watch on a
 * missing resource would keep the gateway from ever syncing).
 */
async function findServedKinds(
  kube: typeof import('@hypha/shared/kube'),
  kubeconfig: string | undefined,
  namespace: string,
  log: Logger,
): Promise<import('@hypha/shared/kube').WatchedKind[]> {
  const all = kube.gatewayWatchedKinds(namespace);
  const kc = kube.loadKubeConfig(kubeconfig);
  const served = new Set<string>();
  try {
    const list = (await kube.fetchKube(kc, '/apis/gateway.networking.k8s.io/v1alpha2', {
      timeoutMs: 15_000,
    })) as {
      resources?: { name?: string }[];
    };
    for (const r of list.resources ?? []) if (typeof r.name === 'string') served.add(r.name);
  } catch (err) {
    if (!(err instanceof kube.KubeError && err.status === 404)) throw err;
  }
  return all.filter((k) => {
    const plural = k.kind === 'TLSRoute' ? 'tlsroutes' : k.kind === 'TCPRoute' ? 'tcproutes' : undefined;
    if (plural === undefined || served.has(plural)) return true;
    log.warn(
      { kind: k.kind },
      `${k.kind} is not installed (gateway.networking.k8s.io/v1alpha2 ${plural}): ${k.kind === 'TLSRoute' ? 'TLS' : 'TCP'} listeners get no routes until it is`,
    );
    return false;
  });
}
