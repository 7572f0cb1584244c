// The node agent, wired the way the component diagram reads:
//
//   config source (file | kubernetes) ─► ConfigState ─► local mesh pods ─┬─► capture set (nftables)
//                                                                        └─► certificates (CA client)
//   :15001 outbound ─► Outbound ─► HBONE pool ─────────► remote agent :15008
//                          └─► same node ─► Inbound
//   :15008 HBONE server ─► Inbound ─► pod
//   :15006 plaintext    ─► Inbound ─► pod
//   :15000 admin, :15020 metrics, :15021 readiness
//   :15053 DNS proxy (--dns-proxy) ─► Service names from ConfigState, the rest upstream (dns/)
//
// Start order matters: config first (so we know our pods), then certificates are requested, then
// capture is adopted (the whole table replaced in one transaction with the full set of local pods:
// rules a previous agent left are never missing for a moment), then listeners open; readiness
// turns green only when config is synced and every local pod's certificate is held.
//
// Fail closed: stopping never removes capture (see shutdown). With no agent listening, mesh pods'
// connections are refused; they never pass in plain text. Capture goes only when the node leaves
// the mesh: `hypha agent cleanup`, or a shutdown told to (`removeCapture`, the uninstall path).
//
// Upgrade: a new agent on the node takes this one's listening sockets through the hand-off socket
// (handoff.ts) once it is ready; this one then stops accepting, drains, and exits.
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import net, { type Server, type Socket } from 'node:net';
import type { Logger } from '@hypha/shared';
import { type ConfigState, createFileSource, LABEL_GATEWAY_NAME, type Workload } from '@hypha/shared/config';
import {
  certificatesView,
  daemonInfo,
  ENDPOINT_NAMES,
  type Endpoints,
  listenAllFamilies,
  type MemoryRelease,
  releaseFields,
  releaseStartupMemory,
  startEndpoints,
} from '@hypha/shared/daemon';
import { AGENT_NODE_FLAGS, missingAgentNodeFlags } from '@hypha/shared/hbone';
import { CaClient, CertManager, type SpiffeId, tryParseSpiffeId } from '@hypha/shared/identity';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { createNodeCapture, type NodeCapture } from '../capture/index.js';
import { type DnsProxy, startAgentDns } from '../dns/index.js';
import type { AgentConfig } from './config.js';
import { createDataPath } from './datapath.js';
import {
  HandoffError,
  type HandoffServer,
  handoffSocketPath,
  requestTakeover,
  serveHandoff,
  type Takeover,
} from './handoff.js';
import { createListenHandle, defaultWorkerEntry, WorkerPool } from './workers.js';

const TRANSPARENT_MARK = 0x111;
const REVOCATION_POLL_MS = 30_000;

/** What the agent needs of a config source (file or Kubernetes). */
interface ConfigSourceHandle {
  readonly state: ConfigState;
  readonly ready: Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface Agent {
  readonly state: ConfigState;
  readonly endpoints: Endpoints;
  readonly ports: { outbound: number; inboundPlaintext: number; hbone: number; dns: number | undefined };
  /** Resolves once config is synced and every local mesh pod has its certificate. */
  readonly ready: Promise<void>;
  findNotReadyReasons(): string[];
  /**
   * Graceful stop: stop accepting, drain live connections until the deadline. Capture rules stay
   * (fail closed) unless `removeCapture` (the node leaves the mesh).
   */
  shutdown(reason?: string, options?: { removeCapture?: boolean }): Promise<void>;
  /** Resolves when a new agent took over and this one drained: the process should exit. */
  readonly handedOff: Promise<void>;
  /** Keeps serving until a successor takes over (resolves true) or `ms` pass (false). */
  awaitSuccessor(ms: number): Promise<boolean>;
}

export async function startAgent(config: AgentConfig, logger: Logger): Promise<Agent> {
  const log = logger.child({ component: 'agent' });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  // 1. Configuration: a YAML file (demo, tests, laptops) or the Kubernetes API; both feed the
  // same translation into the same state.
  const source: ConfigSourceHandle =
    config.source.kind === 'file'
      ? createFileSource({ path: config.source.path, trustDomain: config.trustDomain, logger })
      : // Loaded only when used: the Kubernetes source (informers, kubeconfig) is not needed in file mode.
        (await import('@hypha/shared/kube')).createKubeSource({
          ...(config.source.kubeconfig ? { kubeconfig: config.source.kubeconfig } : {}),
          trustDomain: config.trustDomain,
          nodeName: config.nodeName,
          logger,
        });
  const missingFlags = missingAgentNodeFlags();
  if (missingFlags.length > 0) {
    log.warn(
      { missing: missingFlags },
      `started without the agent's V8 flags: bulk HBONE throughput will be lower; run it as: node ${AGENT_NODE_FLAGS.join(' ')} <path>/hypha.js agent ...`,
    );
  }
  // --workers N > 1: N worker processes serve the data path over copies of this state (workers.ts).
  const workers =
    (config.workers ?? 1) > 1
      ? new WorkerPool({
          count: config.workers ?? 1,
          entry: config.workerEntry ?? defaultWorkerEntry(),
          config,
          logLevel: logger.level,
          endpoints: config.source.kind === 'file' ? 'selector' : 'endpoint-slices',
          state: source.state,
          logger,
          fetchCertificate: (id) => {
            const parsed = tryParseSpiffeId(id);
            return parsed === undefined
              ? Promise.reject(new Error(`not a SPIFFE id: ${id}`))
              : certs.fetchCertificate(parsed);
          },
          heldCertificates: () =>
            [...wanted.values()].flatMap((id) => {
              const c = certs.findCertificate(id);
              return c === undefined ? [] : [c];
            }),
          revocations: () => ({ serials: [...revoked.serials], ids: [...revoked.ids] }),
        })
      : undefined;
  log.info({ source: config.source }, 'loading config');
  await source.start();
  const state = source.state;

  // 2. Certificates for local pods.
  const caRoot = await readFile(config.ca.rootFile, 'utf8').catch((err: Error) => {
    throw new Error(`cannot read the CA root certificate ${config.ca.rootFile}: ${err.message}`);
  });
  const caClient = new CaClient({
    url: config.ca.address,
    token: async () => (await readFile(config.ca.tokenFile, 'utf8')).trim(),
    caTrustBundlePem: caRoot,
  });
  const ttl = config.certTtlSeconds === undefined ? {} : { ttlSeconds: config.certTtlSeconds };
  const certs = new CertManager({
    provider: (id) => caClient.fetchWorkloadCertificate(id, ttl),
    onRenewalFailed: (f) =>
      log.warn(
        {
          identity: f.id.toString(),
          notAfter: f.notAfter,
          err: f.error.message,
          failures: f.failures,
          retryInMs: Math.max(0, Math.round(f.nextAttemptAt - Date.now())),
        },
        f.notAfter.getTime() > Date.now()
          ? 'certificate renewal failed; serving with the held certificate until it expires'
          : 'certificate renewal failed; the held certificate has expired',
      ),
    onExpired: (e) =>
      log.error(
        { identity: e.id.toString(), notAfter: e.notAfter, err: e.lastError },
        `certificate expired: ${e.id} (notAfter ${e.notAfter.toISOString()}); new connections for it fail until the CA answers`,
      ),
  });
  const revoked = { serials: new Set<string>(), ids: new Set<string>(), version: -1, content: '' };
  // Workers get every new certificate (first fetch and renewals) as the supervisor gets it.
  if (workers) certs.subscribe((_id, cert) => workers.certificate(cert));

  // 3. Capture.
  const capture: NodeCapture | undefined =
    config.capture === 'node'
      ? createNodeCapture({
          ports: {
            outbound: config.ports.outbound,
            inboundPlaintext: config.ports.inboundPlaintext,
            hbone: config.ports.hbone,
            ...(config.dns ? { dns: config.dns.port } : {}),
          },
          mark: TRANSPARENT_MARK,
          logger,
        })
      : undefined;

  const localMesh = new Map<string, Workload>(); // uid → workload
  const wanted = new Map<string, SpiffeId>(); // identity string → id
  const reconcileLocalPods = async (): Promise<void> => {
    localMesh.clear();
    const ids = new Map<string, SpiffeId>();
    for (const w of state.findWorkloadsOnNode(config.nodeName)) {
      if (!w.inMesh || w.hostNetwork || w.ips.length === 0) continue;
      // Waypoint pods terminate HBONE themselves and dial endpoints over HBONE: never capture them.
      const gateway = w.labels[LABEL_GATEWAY_NAME];
      if (gateway !== undefined && state.findWaypoint(w.namespace, gateway) !== undefined) continue;
      localMesh.set(w.uid, w);
      ids.set(w.identity.toString(), w.identity);
    }
    for (const [key, id] of wanted) {
      if (!ids.has(key)) {
        certs.forget(id);
        workers?.forget(key);
        wanted.delete(key);
        log.info({ identity: key }, 'certificate dropped: no local pod uses it any more');
      }
    }
    for (const [key, id] of ids) {
      if (wanted.has(key)) continue;
      wanted.set(key, id);
      certs.fetchCertificate(id).then(
        (c) => log.info({ identity: key, serial: c.serial, notAfter: c.notAfter }, 'certificate ready'),
        (err: Error) =>
          log.warn({ identity: key, err: err.message }, 'certificate request failed; retrying with backoff'),
      );
    }
    if (capture) {
      const ips = [...localMesh.values()].flatMap((w) => w.ips);
      await capture.setMeshPods(ips);
    }
  };
  let reconciling = Promise.resolve();
  const scheduleReconcile = () => {
    reconciling = reconciling
      .then(reconcileLocalPods)
      .catch((err: Error) => log.error({ err: err.message }, 'reconciling local pods failed'));
  };

  // 4. Data path (with --workers N > 1 the workers run theirs; this one then carries nothing).
  const dataPath = createDataPath({ config, state, certs, registry, logger });
  const { tracker, tap, outbound } = dataPath;
  workers?.forwardTapInto(tap);
  state.onChange((change) => {
    if (
      change.workloads.added.length + change.workloads.removed.length + change.workloads.updated.length >
      0
    ) {
      scheduleReconcile();
    }
  });

  // Capture is adopted only once the config is synced: the table is replaced in one transaction
  // with every local mesh pod in its set, so a restarted agent never installs an empty set over the
  // rules its predecessor left (that would let pods' traffic pass uncaptured for a moment).
  await source.ready;
  await reconcileLocalPods();
  // DNS: listening before capture sends pods' port-53 traffic to it. Not part of the hand-off: its
  // sockets use SO_REUSEPORT, so a new agent binds beside the old one (docs/decisions.md).
  const dns: DnsProxy | undefined = config.dns
    ? await startAgentDns({ ...config.dns, state, registry, logger })
    : undefined;
  await capture?.start();
  if (workers) {
    log.info({ workers: workers.count }, 'starting agent workers');
    await workers.start();
  }

  // Admin views (used by the endpoints below).
  const certsView = () => certificatesView(certs);

  const configDump = () => ({
    node: config.nodeName,
    version: state.stats().version,
    hypha: daemonInfo(),
    stats: state.stats(),
    workloads: [...state.workloads()].map((w) => ({ ...w, identity: w.identity.toString() })),
    services: [...state.services()].map((s) => ({
      ...s,
      endpoints: s.endpoints.map((e) => ({ ...e, targetPorts: Object.fromEntries(e.targetPorts) })),
    })),
    waypoints: [...state.waypoints()].map((w) => ({ ...w, identity: w.identity.toString() })),
    policies: [...state.authorizationPolicies()].map((p) => p.object),
    certificates: certsView(),
    capture: capture?.findState(),
    serviceEntries: [...state.serviceEntries()],
    outboundTrafficPolicy: outbound.findOutboundTrafficPolicy(),
    ...(workers ? { workers: workers.pids() } : {}),
  });

  // 5. Listeners: our own, or the running agent's (upgrade hand-off).
  const findNotReadyReasons = (): string[] => {
    const reasons: string[] = [];
    for (const [key, id] of wanted)
      if (certs.findCertificate(id) === undefined) reasons.push(`no certificate yet for ${key}`);
    return reasons;
  };
  let takeover: Takeover | undefined;
  if (config.handoffDir !== undefined) {
    await mkdir(config.handoffDir, { recursive: true, mode: 0o700 });
    if (existsSync(handoffSocketPath(config.handoffDir))) {
      // An agent may be serving: take over only once we can serve everything it serves.
      log.info(
        { dir: config.handoffDir },
        'hand-off socket present: taking over from the running agent once ready (config synced, certificates held)',
      );
      for (let waited = 0; findNotReadyReasons().length > 0; waited += 100) {
        if (waited > 0 && waited % 10_000 === 0)
          log.info({ missing: findNotReadyReasons() }, 'not ready yet; the running agent keeps serving');
        await new Promise((r) => setTimeout(r, 100));
      }
      takeover = await requestTakeover(config.handoffDir, logger);
      if (takeover === undefined)
        log.info('no agent answers on the hand-off socket (stale); binding the ports');
    }
    if (takeover === undefined && config.takeover === 'required') {
      throw new HandoffError(
        'HANDOFF_FAILED',
        `--takeover: no running agent answers at ${handoffSocketPath(config.handoffDir)}; start without --takeover to bind the ports`,
      );
    }
  }
  const listeners = new Map<string, Server>();
  const listen = async (port: number, onSocket: (s: Socket) => void, name: string): Promise<number> => {
    const fd = takeover?.fds.get(name);
    if (workers) {
      // The workers accept on it; this process holds it (for restarted workers and the hand-off).
      try {
        const { handle, port: bound } = createListenHandle(port, fd);
        workers.listen(name, handle);
        return bound;
      } catch (err) {
        throw new Error(
          fd === undefined
            ? `cannot listen on ${name} port ${port}: ${(err as Error).message}`
            : `cannot listen on the ${name} socket handed over by the running agent: ${(err as Error).message}`,
        );
      }
    }
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onSocket);
    try {
      await listenAllFamilies(server, port, fd);
    } catch (err) {
      const inUse = (err as NodeJS.ErrnoException).code === 'EADDRINUSE';
      throw new Error(
        fd === undefined
          ? `cannot listen on ${name} port ${port}: ${(err as Error).message}${inUse ? ' (is another agent running on this node? a new agent takes over through --handoff-dir)' : ''}`
          : `cannot listen on the ${name} socket handed over by the running agent: ${(err as Error).message}`,
      );
    }
    listeners.set(name, server);
    return (server.address() as net.AddressInfo).port;
  };
  if (takeover !== undefined) {
    // Fault injection for tests and chaos runs: hold the received sockets (not accepting) this long
    // before asking for them, so a new agent can be killed mid-hand-off on purpose.
    const delay = Number(process.env.HYPHA_FAULT_HANDOFF_DELAY_MS ?? 0);
    if (delay > 0) {
      log.warn({ delayMs: delay }, 'HYPHA_FAULT_HANDOFF_DELAY_MS: pausing the hand-off (fault injection)');
      await new Promise((r) => setTimeout(r, delay));
    }
    // From here the old agent stops accepting; connections queue in the same kernel sockets until
    // we listen on them just below.
    await takeover.commit();
  }
  let outboundPort: number;
  let plaintextPort: number;
  let hbonePort: number;
  let endpoints: Endpoints;
  try {
    outboundPort = await listen(config.ports.outbound, dataPath.onOutbound, 'outbound');
    plaintextPort = await listen(config.ports.inboundPlaintext, dataPath.onPlaintext, 'inboundPlaintext');
    hbonePort = await listen(config.ports.hbone, dataPath.onHbone, 'hbone');
    endpoints = await startEndpoints({
      logger,
      registry: workers ? workers.aggregatedRegistry(registry) : registry,
      readiness: {
        findNotReadyReasons: () => [...findNotReadyReasons(), ...(workers?.findNotReadyReasons() ?? [])],
      },
      adminAddress: config.adminAddress,
      metricsAddress: config.metricsAddress,
      readinessAddress: config.readinessAddress,
      inherited: Object.fromEntries(
        ENDPOINT_NAMES.flatMap((name) => {
          const fd = takeover?.fds.get(name);
          return fd === undefined ? [] : [[name, fd]];
        }),
      ),
      admin: {
        configDump: () => configDump(),
        certs: () => certsView(),
        connections: () => (workers ? workers.connections() : tracker.snapshot()),
        tap,
        ...(dns ? { debug: { dns: () => dns.findDebugView() } } : {}),
        quit: () => void shutdown('/quitquitquit').then(() => process.exit(0)),
      },
    });
  } catch (err) {
    takeover?.abort((err as Error).message);
    for (const l of listeners.values()) l.close();
    await workers?.close();
    await dns?.close();
    throw err;
  }
  if (takeover !== undefined) {
    const from = takeover.fromPid;
    log.info({ from }, 'took over the listening sockets from the running agent; no connection was refused');
    void takeover.finished.then((r) => log.info({ from, ...r }, 'the previous agent has exited'));
  }

  // 6. Revocations: refuse revoked peers at the handshake and cut their live connections.
  const pollRevocations = async () => {
    try {
      const snap = await caClient.fetchRevocations();
      // Compare the content, not only the version: a re-created ConfigMap starts again at 1.
      const content = JSON.stringify([snap.serials, snap.ids]);
      if (snap.version === revoked.version && content === revoked.content) return;
      revoked.version = snap.version;
      revoked.content = content;
      revoked.serials = new Set(snap.serials.map((s) => s.toLowerCase().replace(/^0+/, '')));
      revoked.ids = new Set(snap.ids);
      const { cut, closedConnections } = dataPath.setRevocations(revoked.serials, revoked.ids);
      workers?.revocations([...revoked.serials], [...revoked.ids]);
      log.info(
        {
          version: snap.version,
          serials: snap.serials.length,
          ids: snap.ids.length,
          cut,
          closedConnections,
        },
        'revocation list updated',
      );
    } catch (err) {
      log.debug({ err: (err as Error).message }, 'revocation list fetch failed');
    }
  };
  void pollRevocations();
  const revocationTimer = setInterval(
    () => void pollRevocations(),
    config.revocationPollMs ?? REVOCATION_POLL_MS,
  );
  revocationTimer.unref();

  // 7. Operator endpoints, shutdown and the hand-off socket.
  const allListeners = (): Map<string, Server> =>
    new Map<string, Server>([
      ...listeners,
      ...(workers?.handoffListeners() ?? []),
      ...ENDPOINT_NAMES.map((n) => [n, endpoints.servers[n]] as const),
    ]);
  let accepting = true;
  const stopAccepting = () => {
    if (!accepting) return;
    accepting = false;
    for (const l of [...listeners.values(), ...ENDPOINT_NAMES.map((n) => endpoints.servers[n])]) l.close();
    workers?.stopAccepting();
    void dns?.close();
  };
  /** Lets live connections finish (HBONE peers get GOAWAY) until the deadline, then cuts the rest. */
  const drain = async (graceful: boolean, progress?: (live: number) => void): Promise<{ cut: number }> => {
    clearInterval(revocationTimer);
    if (workers) return workers.drain(graceful, progress);
    return dataPath.drain(graceful, progress);
  };
  let shuttingDown: Promise<void> | undefined;
  let handoffServer: HandoffServer | undefined;
  const closeAll = async (removeCapture: boolean) => {
    await dns?.close();
    await workers?.close();
    await dataPath.close();
    certs.close();
    caClient.close();
    await source.close();
    await handoffServer?.close();
    if (capture && removeCapture) {
      await capture.stop();
    } else if (capture) {
      log.info(
        "capture rules left in place (fail closed: mesh pods' connections are refused until an agent runs again; `hypha agent cleanup` removes them)",
      );
    }
    await endpoints.close();
  };
  const shutdown = (
    reason = 'shutdown requested',
    options: { removeCapture?: boolean } = {},
  ): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info({ reason, live: tracker.size + (workers?.live() ?? 0), drainMs: config.drainMs }, 'draining');
      stopAccepting();
      await drain(false);
      await closeAll(options.removeCapture === true);
      log.info('stopped');
    })();
    return shuttingDown;
  };
  if (config.handoffDir !== undefined) {
    handoffServer = await serveHandoff(
      config.handoffDir,
      {
        listeners: allListeners,
        stopAccepting,
        live: () => tracker.size + (workers?.live() ?? 0),
        drain: (progress) => drain(true, progress),
      },
      logger,
    );
  }
  const handedOff = (async () => {
    if (handoffServer === undefined) return new Promise<void>(() => {});
    const r = await handoffServer.handedOff;
    shuttingDown ??= (async () => {
      await closeAll(false);
      log.info({ cut: r.cut }, 'handed off to the new agent and drained; stopped');
    })();
    await shuttingDown;
  })();
  const awaitSuccessor = async (ms: number): Promise<boolean> => {
    if (handoffServer === undefined || ms <= 0) return false;
    log.info({ waitMs: ms }, 'waiting for a new agent to take over; still serving');
    return Promise.race([
      handoffServer.handedOff.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref()),
    ]);
  };
  // Agent health metrics.
  new Gauge({
    name: 'hypha_agent_certificates',
    help: 'Workload certificates held by this agent',
    registers: [registry],
    collect() {
      this.set(certs.listCertificates().filter((c) => c.notAfter !== undefined).length);
    },
  });
  new Gauge({
    name: 'hypha_agent_certificates_by_state',
    help: 'Workload certificates of this agent by state (ready, renewing, backoff, fetching, expired)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const c of certs.listCertificates()) this.inc({ state: c.state });
    },
  });
  new Gauge({
    name: 'hypha_agent_certificate_expiry_seconds',
    help: 'Seconds until each held workload certificate expires',
    labelNames: ['identity'],
    registers: [registry],
    collect() {
      this.reset();
      for (const c of certs.listCertificates()) {
        if (c.notAfter) this.set({ identity: c.id.toString() }, (c.notAfter.getTime() - Date.now()) / 1000);
      }
    },
  });
  new Gauge({
    name: 'hypha_agent_config_objects',
    help: 'Objects in the agent config state, by kind',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const s = state.stats();
      this.set({ kind: 'workload' }, s.workloads);
      this.set({ kind: 'service' }, s.services);
      this.set({ kind: 'authorization_policy' }, s.authorizationPolicies);
      this.set({ kind: 'waypoint' }, s.waypoints);
    },
  });
  new Gauge({
    name: 'hypha_agent_capture_active',
    help: 'Whether the node capture rules are installed (1) or not (0: --capture none, or stopped)',
    registers: [registry],
    collect() {
      this.set(capture?.findState().started ? 1 : 0);
    },
  });
  new Gauge({
    name: 'hypha_agent_captured_pods',
    help: 'Local mesh pods whose traffic the agent captures',
    registers: [registry],
    collect() {
      this.set(localMesh.size);
    },
  });

  let startupRelease: MemoryRelease | undefined;
  const ready = (async () => {
    await source.ready;
    while (findNotReadyReasons().length > 0 || (workers?.findNotReadyReasons().length ?? 0) > 0) {
      if (shuttingDown) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    // Start-up's garbage (modules compiled, config parsed, keys made) sits in V8's page pool until
    // given back (daemon/memory.ts): 94 -> 85 MB of RSS for 63 ms, before ready, not while serving.
    startupRelease = releaseStartupMemory();
  })();
  void ready.then(() => {
    // The message stays exactly 'ready' (operators and the test mesh wait for it).
    log.info({ pods: localMesh.size, ...(startupRelease ? releaseFields(startupRelease) : {}) }, 'ready');
  });
  log.info(
    {
      outbound: outboundPort,
      inboundPlaintext: plaintextPort,
      hbone: hbonePort,
      dns: dns?.port,
      admin: endpoints.admin,
      capture: config.capture,
    },
    'agent listening',
  );

  return {
    state,
    endpoints,
    ports: { outbound: outboundPort, inboundPlaintext: plaintextPort, hbone: hbonePort, dns: dns?.port },
    ready,
    findNotReadyReasons,
    shutdown,
    handedOff,
    awaitSuccessor,
  };
}
