// One worker process of `hypha agent --workers N` (the supervisor is workers.ts). It runs a data
// path (datapath.ts) over its own copy of the state, fed by the supervisor over IPC:
//
//   supervisor                                        worker
//   init (config)                     ────────────►   build the state and the data path
//   config snapshot, certificates,    ────────────►   apply in order (IPC keeps the order)
//   revocations
//   listen + the listening socket     ────────────►   accept on it (the kernel spreads accepts)
//   config update (version V)         ────────────►   apply, re-check live connections
//                                     ◄────────────   applied V (the supervisor is not ready until
//                                                     every worker applied the latest version)
//
// Fail closed: a worker accepts only once it holds the state (a socket that arrives earlier is
// refused, not served), and exits when the supervisor goes away (it would serve stale policy).
import type { Server } from 'node:net';
import net from 'node:net';
import { createLogger, type LogLevel } from '@hypha/shared';
import { type ConfigState, createConfigState } from '@hypha/shared/config';
import { LARGE_LOAD_OBJECTS, releaseFreedMemory, releaseFreedMemoryAfter } from '@hypha/shared/daemon';
import { type SpiffeId, tryParseSpiffeId, type WorkloadCertificate } from '@hypha/shared/identity';
import type { TapLine } from '@hypha/shared/telemetry';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { type CertSource, createDataPath, type DataPath } from './datapath.js';
import type { ToSupervisor, ToWorker, WireCertificate } from './workers.js';

const TAP_BACKLOG = 256;

function send(m: ToSupervisor): void {
  if (process.connected) process.send?.(m);
}

export function runAgentWorker(): void {
  if (process.send === undefined) {
    process.stderr.write('hypha: agent-worker is started by `hypha agent --workers N`, not by hand\n');
    process.exit(2);
  }
  // The supervisor coordinates stopping; a terminal's Ctrl-C reaches the whole process group.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  // Without the supervisor no config or revocation reaches us: stop rather than serve stale policy.
  process.on('disconnect', () => process.exit(1));

  let state: ConfigState | undefined;
  let dataPath: DataPath | undefined;
  let registry: Registry | undefined;
  let haveSnapshot = false;
  let log: ReturnType<typeof createLogger> | undefined;
  const certs = new Map<string, WorkloadCertificate>();
  const pending = new Map<
    number,
    { resolve: (c: WorkloadCertificate) => void; reject: (e: Error) => void }
  >();
  let nextRequest = 1;
  const servers = new Map<string, Server>();
  let stopTap: (() => void) | undefined;
  // Tap lines in flight to the supervisor: above TAP_BACKLOG the hub counts drops instead (it says
  // so with one `{"kind":"dropped"}` line once the channel drains), so a slow reader never makes
  // this worker buffer without bound.
  let tapInFlight = 0;
  let tapDrained: (() => void)[] = [];
  const tapSink = {
    write(event: TapLine): boolean {
      if (!process.connected) return true;
      tapInFlight++;
      process.send?.({ t: 'tap', event } satisfies ToSupervisor, undefined, undefined, () => {
        if (--tapInFlight > 0) return;
        const waiting = tapDrained;
        tapDrained = [];
        for (const l of waiting) l();
      });
      return tapInFlight < TAP_BACKLOG;
    },
    onDrain(listener: () => void) {
      tapDrained.push(listener);
    },
  };

  const certSource: CertSource = {
    findCertificate(id: SpiffeId) {
      const c = certs.get(id.toString());
      return c !== undefined && Date.now() < c.notAfter.getTime() ? c : undefined;
    },
    fetchCertificate(id: SpiffeId) {
      const held = certSource.findCertificate(id);
      if (held) return Promise.resolve(held);
      const reqId = nextRequest++;
      send({ t: 'fetchCert', reqId, id: id.toString() });
      return new Promise((resolve, reject) => pending.set(reqId, { resolve, reject }));
    },
  };
  const toCert = (w: WireCertificate): WorkloadCertificate | undefined => {
    const id = tryParseSpiffeId(w.id);
    return id === undefined ? undefined : { ...w, id };
  };
  const liveTimer = setInterval(() => send({ t: 'live', n: dataPath?.tracker.size ?? 0 }), 1000);
  liveTimer.unref();

  process.on('message', (m: ToWorker, handle: unknown) => {
    switch (m.t) {
      case 'init': {
        log = createLogger({
          level: m.logLevel as LogLevel,
          base: { node: m.config.nodeName, worker: m.index },
        });
        state = createConfigState({ trustDomain: m.config.trustDomain, endpoints: m.endpoints });
        registry = new Registry();
        collectDefaultMetrics({ register: registry });
        dataPath = createDataPath({ config: m.config, state, certs: certSource, registry, logger: log });
        return;
      }
      case 'config': {
        if (state === undefined) return;
        if (m.op === 'snapshot') {
          state.applySnapshot(m.objects);
          // The first snapshot comes before any listener (start-up's garbage: nothing is served
          // yet); a later one may be large. Either way its pages go back (daemon/memory.ts), once
          // the message itself is garbage too.
          if (!haveSnapshot || m.objects.length >= LARGE_LOAD_OBJECTS) {
            const what = `a config snapshot of ${m.objects.length} objects`;
            setImmediate(() => (log ? releaseFreedMemoryAfter(log, what) : releaseFreedMemory()));
          }
          haveSnapshot = true;
        } else state.update({ upsert: m.upsert, remove: m.remove });
        send({ t: 'applied', version: m.version });
        return;
      }
      case 'cert': {
        const c = toCert(m.cert);
        if (c) certs.set(m.cert.id, c);
        return;
      }
      case 'forget':
        certs.delete(m.id);
        return;
      case 'certReply': {
        const p = pending.get(m.reqId);
        pending.delete(m.reqId);
        const c = m.cert ? toCert(m.cert) : undefined;
        if (c) {
          certs.set(c.id.toString(), c);
          p?.resolve(c);
        } else p?.reject(new Error(m.error ?? 'no certificate'));
        return;
      }
      case 'revocations': {
        const r = dataPath?.setRevocations(new Set(m.serials), new Set(m.ids));
        if (r && r.cut + r.closedConnections > 0) log?.info(r, 'revocation list applied');
        return;
      }
      case 'listen': {
        if (dataPath === undefined || !haveSnapshot) {
          // Never reached in order (the supervisor sends the state first); fail closed if it were.
          log?.error({ name: m.name }, 'listening socket received before the state: not accepting on it');
          send({ t: 'refused', name: m.name });
          return;
        }
        const dp = dataPath;
        const onSocket =
          m.name === 'outbound' ? dp.onOutbound : m.name === 'hbone' ? dp.onHbone : dp.onPlaintext;
        const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onSocket);
        server.on('error', (err) => log?.error({ name: m.name, err: err.message }, 'listener error'));
        server.listen(handle as Parameters<Server['listen']>[0], () => {
          servers.set(m.name, server);
          send({ t: 'listening', name: m.name });
        });
        return;
      }
      case 'request': {
        void (async () => {
          const value =
            m.what === 'metrics'
              ? await (registry?.getMetricsAsJSON() ?? [])
              : (dataPath?.tracker.snapshot() ?? []).map((c) => ({ ...(c as object), worker: process.pid }));
          send({ t: 'reply', reqId: m.reqId, value });
        })();
        return;
      }
      case 'tap':
        if (m.on && stopTap === undefined) stopTap = dataPath?.tap.subscribe({}, tapSink);
        else if (!m.on) {
          stopTap?.();
          stopTap = undefined;
        }
        return;
      case 'stop':
        for (const s of servers.values()) s.close();
        servers.clear();
        return;
      case 'drain': {
        for (const s of servers.values()) s.close();
        servers.clear();
        void (async () => {
          const r = (await dataPath?.drain(m.graceful, (n) => send({ t: 'live', n }))) ?? { cut: 0 };
          send({ t: 'live', n: 0 });
          send({ t: 'drained', cut: r.cut });
        })();
        return;
      }
      case 'exit':
        void (async () => {
          await dataPath?.close();
          process.exit(0);
        })();
        return;
    }
  });
  send({ t: 'started' });
}
