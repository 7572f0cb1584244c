// `hypha agent --workers N`: the supervisor's side. The agent process keeps everything that is
// one per node (config source, certificates and the CA client, capture, revocation polling, the
// admin/metrics/readiness endpoints, the DNS proxy, the upgrade hand-off socket and the listening
// sockets themselves) and runs N worker processes (worker.ts), each with its own event loop, data
// path and HBONE pool, all accepting on the same listening sockets (the kernel spreads accepts).
//
// Replication without a window of inconsistency that goes unnoticed:
// - Every commit to the supervisor's state is forwarded, in order, as the same input (the config
//   objects), so each worker's state goes through the same versions. A worker acknowledges each
//   version; the agent is not ready while any worker is behind (findNotReadyReasons).
// - A new or restarted worker gets, in this order over one ordered channel: the config snapshot,
//   every held certificate, the revocation list, and only then the listening sockets. It accepts
//   nothing before it holds the state; connections that arrive while no worker accepts wait in the
//   kernel's accept queue of the supervisor-held socket (never served unchecked).
// - A worker that loses the supervisor exits (it would otherwise serve policy nobody updates).
import { type ChildProcess, fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Logger } from '@hypha/shared';
import type { ConfigObject, ConfigObjectKey, ConfigState, ConfigUpdate } from '@hypha/shared/config';
import type { WorkloadCertificate } from '@hypha/shared/identity';
import type { TapHub, TapLine } from '@hypha/shared/telemetry';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue, Registry } from 'prom-client';
import type { AgentConfig } from './config.js';

export type WireCertificate = Omit<WorkloadCertificate, 'id'> & { id: string };

export type ToWorker =
  | {
      t: 'init';
      index: number;
      config: AgentConfig;
      logLevel: string;
      endpoints: 'selector' | 'endpoint-slices';
    }
  | { t: 'config'; op: 'snapshot'; objects: ConfigObject[]; version: number }
  | { t: 'config'; op: 'update'; upsert: ConfigObject[]; remove: ConfigObjectKey[]; version: number }
  | { t: 'cert'; cert: WireCertificate }
  | { t: 'forget'; id: string }
  | { t: 'certReply'; reqId: number; cert?: WireCertificate; error?: string }
  | { t: 'revocations'; serials: string[]; ids: string[] }
  | { t: 'listen'; name: string }
  | { t: 'request'; reqId: number; what: 'metrics' | 'connections' }
  /** Forward finished-connection events (while the supervisor's /tap has readers) or stop. */
  | { t: 'tap'; on: boolean }
  | { t: 'stop' }
  | { t: 'drain'; graceful: boolean }
  | { t: 'exit' };

export type ToSupervisor =
  | { t: 'started' }
  | { t: 'applied'; version: number }
  | { t: 'listening'; name: string }
  | { t: 'refused'; name: string }
  | { t: 'fetchCert'; reqId: number; id: string }
  | { t: 'reply'; reqId: number; value: unknown }
  | { t: 'live'; n: number }
  /** One event of the worker's tap, or `{kind: 'dropped'}` when its IPC backlog was full. */
  | { t: 'tap'; event: TapLine }
  | { t: 'drained'; cut: number };

/** A bound (and, once a worker listens, listening) TCP socket that this process never accepts on. */
export interface ListenHandle {
  readonly fd: number;
  close(): void;
}

type NetInternals = {
  _createServerHandle(
    address: string | null,
    port: number | null,
    addressType: number | null,
    fd?: number,
    flags?: number,
  ): ListenHandle | number;
};

const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT']);

/**
 * Binds `port` on `::` (both families) or 0.0.0.0 as listenAllFamilies does, or wraps a handed-over
 * descriptor, without listening: the workers listen and accept on it. Node's own cluster module
 * shares sockets the same way (net._createServerHandle).
 */
export function createListenHandle(port: number, fd?: number): { handle: ListenHandle; port: number } {
  const create = (net as unknown as NetInternals)._createServerHandle;
  const errname = (n: number) => {
    const e = new Error(`bind failed: ${errnoName(n)}`) as NodeJS.ErrnoException;
    e.code = errnoName(n);
    return e;
  };
  let h = fd !== undefined ? create(null, null, null, fd) : create('::', port, 6, undefined, 0);
  if (typeof h === 'number' && fd === undefined && NO_IPV6.has(errnoName(h))) h = create('0.0.0.0', port, 4);
  if (typeof h === 'number') throw errname(h);
  const out: { port?: number } = {};
  (h as unknown as { getsockname(o: object): number }).getsockname(out);
  return { handle: h, port: out.port ?? port };
}

function errnoName(n: number): string {
  try {
    return (
      (process as unknown as { binding(n: string): { errname?(n: number): string } })
        .binding('uv')
        .errname?.(n) ?? String(n)
    );
  } catch {
    return String(n);
  }
}

interface Slot {
  index: number;
  child?: ChildProcess;
  applied: number;
  listening: Set<string>;
  live: number;
  drained?: (cut: number) => void;
  everReady: boolean;
  restarts: number;
}

export interface WorkerPoolOptions {
  count: number;
  /** The script that runs `hypha agent-worker` (the CLI's entry). */
  entry: string;
  config: AgentConfig;
  logLevel: string;
  endpoints: 'selector' | 'endpoint-slices';
  state: ConfigState;
  logger: Logger;
  fetchCertificate(id: string): Promise<WorkloadCertificate>;
  heldCertificates(): WorkloadCertificate[];
  revocations(): { serials: string[]; ids: string[] };
}

const recordKey = (o: { kind: string; namespace?: string; name: string }) =>
  `${o.kind}/${o.kind === 'Namespace' ? '' : (o.namespace ?? '')}/${o.name}`;
const toWire = (c: WorkloadCertificate): WireCertificate => ({ ...c, id: c.id.toString() });

export class WorkerPool {
  readonly #o: WorkerPoolOptions;
  readonly #log: Logger;
  /** The config objects the state holds now: what a new worker starts from. */
  readonly #mirror = new Map<string, ConfigObject>();
  readonly #handles = new Map<string, ListenHandle>();
  readonly #slots: Slot[] = [];
  readonly #requests = new Map<number, { left: number; values: unknown[]; done: (v: unknown[]) => void }>();
  #nextRequest = 1;
  #stopping = false;
  #loggedVersion = -1;
  #accepting = true;
  #tap: TapHub | undefined;

  constructor(o: WorkerPoolOptions) {
    this.#o = o;
    this.#log = o.logger.child({ component: 'workers' });
    // Replicate every commit: the same input, in the same order, to every worker.
    const state = o.state as unknown as Record<string, unknown>;
    const applySnapshot = o.state.applySnapshot.bind(o.state);
    const update = o.state.update.bind(o.state);
    state.applySnapshot = (objects: Iterable<ConfigObject>) => {
      const list = [...objects];
      this.#mirror.clear();
      for (const obj of list) this.#mirror.set(recordKey(obj), obj);
      const change = applySnapshot(list);
      if (change) this.#broadcast({ t: 'config', op: 'snapshot', objects: list, version: o.state.version });
      return change;
    };
    state.update = (batch: ConfigUpdate) => {
      const upsert = [...(batch.upsert ?? [])];
      const remove = [...(batch.remove ?? [])];
      for (const k of remove) this.#mirror.delete(recordKey(k));
      for (const obj of upsert) this.#mirror.set(recordKey(obj), obj);
      const change = update({ upsert, remove });
      if (change) this.#broadcast({ t: 'config', op: 'update', upsert, remove, version: o.state.version });
      return change;
    };
    state.upsert = (obj: ConfigObject) => (state.update as ConfigState['update'])({ upsert: [obj] });
    state.remove = (key: ConfigObjectKey) => (state.update as ConfigState['update'])({ remove: [key] });
  }

  /**
   * The supervisor's tap hub (admin /tap): while it has readers, every worker forwards its finished
   * connections into it, so `hypha tap` sees the whole agent.
   */
  forwardTapInto(tap: TapHub): void {
    this.#tap = tap;
    tap.onActiveChange((on) => this.#broadcast({ t: 'tap', on }));
    if (tap.active) this.#broadcast({ t: 'tap', on: true });
  }

  get count(): number {
    return this.#o.count;
  }

  /** Starts the workers; resolves when each holds the state. Rejects if one dies while starting. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      let left = this.#o.count;
      for (let i = 0; i < this.#o.count; i++) {
        const slot: Slot = {
          index: i,
          applied: -1,
          listening: new Set(),
          live: 0,
          everReady: false,
          restarts: 0,
        };
        this.#slots.push(slot);
        this.#spawn(slot, {
          ready: () => {
            if (--left === 0) resolve();
          },
          failed: reject,
        });
      }
    });
  }

  #spawn(slot: Slot, first?: { ready(): void; failed(err: Error): void }): void {
    const child = fork(this.#o.entry, ['agent-worker'], {
      serialization: 'advanced',
      execArgv: process.execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    slot.child = child;
    slot.applied = -1;
    slot.listening = new Set();
    slot.live = 0;
    const log = this.#log.child({ worker: slot.index, pid: child.pid });
    child.on('message', (m: ToSupervisor) => {
      switch (m.t) {
        case 'applied':
          slot.applied = Math.max(slot.applied, m.version);
          if (
            m.version > this.#loggedVersion &&
            this.#slots.every((s) => s.child === undefined || s.applied >= m.version)
          ) {
            this.#loggedVersion = m.version;
            this.#log.info({ version: m.version }, `every agent worker applied config version ${m.version}`);
          }
          if (!slot.everReady && slot.applied >= 0) {
            slot.everReady = true;
            log.info(
              { version: m.version },
              'agent worker holds the state; it accepts once given the sockets',
            );
            first?.ready();
          }
          return;
        case 'listening':
          slot.listening.add(m.name);
          return;
        case 'refused':
          log.error({ name: m.name }, 'worker refused a listening socket (it has no state yet)');
          return;
        case 'fetchCert':
          this.#o.fetchCertificate(m.id).then(
            (cert) => this.#send(slot, { t: 'certReply', reqId: m.reqId, cert: toWire(cert) }),
            (err: Error) => this.#send(slot, { t: 'certReply', reqId: m.reqId, error: err.message }),
          );
          return;
        case 'reply': {
          const r = this.#requests.get(m.reqId);
          if (r === undefined) return;
          r.values.push(m.value);
          if (--r.left === 0) {
            this.#requests.delete(m.reqId);
            r.done(r.values);
          }
          return;
        }
        case 'live':
          slot.live = m.n;
          return;
        case 'drained':
          slot.drained?.(m.cut);
          return;
        case 'tap': {
          const e = m.event;
          if (e.kind === 'dropped') this.#tap?.publishDropped(e.count);
          else this.#tap?.publish(() => e);
          return;
        }
      }
    });
    child.on('error', (err) => log.error({ err: err.message }, 'worker process error'));
    child.on('exit', (code, signal) => {
      slot.child = undefined;
      slot.listening = new Set();
      slot.live = 0;
      slot.drained?.(0);
      for (const [id, r] of this.#requests) {
        // Answer without the dead worker rather than hang the admin request.
        if (--r.left === 0) {
          this.#requests.delete(id);
          r.done(r.values);
        }
      }
      if (this.#stopping) return;
      if (!slot.everReady && first) {
        first.failed(
          new Error(
            `agent worker ${slot.index} exited while starting (${signal ?? `code ${code}`}); its log is above`,
          ),
        );
        return;
      }
      slot.restarts++;
      const delay = Math.min(10_000, 100 * 2 ** Math.min(slot.restarts, 7));
      log.error(
        { code, signal, restartInMs: delay },
        'agent worker exited; its connections are gone, the other workers keep serving; restarting it',
      );
      setTimeout(() => {
        if (!this.#stopping) this.#spawn(slot);
      }, delay).unref();
    });
    // The state first, then certificates and revocations, and only then the sockets (in order).
    this.#send(slot, {
      t: 'init',
      index: slot.index,
      config: this.#o.config,
      logLevel: this.#o.logLevel,
      endpoints: this.#o.endpoints,
    });
    this.#send(slot, {
      t: 'config',
      op: 'snapshot',
      objects: [...this.#mirror.values()],
      version: this.#o.state.version,
    });
    for (const c of this.#o.heldCertificates()) this.#send(slot, { t: 'cert', cert: toWire(c) });
    this.#send(slot, { t: 'revocations', ...this.#o.revocations() });
    if (this.#tap?.active) this.#send(slot, { t: 'tap', on: true });
    if (this.#accepting) for (const [name, h] of this.#handles) this.#send(slot, { t: 'listen', name }, h);
    log.info('agent worker started');
  }

  #send(slot: Slot, m: ToWorker, handle?: ListenHandle): void {
    const child = slot.child;
    if (child === undefined || !child.connected) return;
    child.send(m, handle as unknown as net.Server, (err) => {
      // A worker that cannot take its state is of no use: it is restarted.
      if (err && child.connected) {
        this.#log.error({ worker: slot.index, err: err.message }, 'cannot reach the worker; restarting it');
        child.kill('SIGKILL');
      }
    });
  }

  #broadcast(m: ToWorker): void {
    for (const s of this.#slots) this.#send(s, m);
  }

  /** Gives a listening socket to every worker (the supervisor itself never accepts on it). */
  listen(name: string, handle: ListenHandle): void {
    this.#handles.set(name, handle);
    for (const s of this.#slots) this.#send(s, { t: 'listen', name }, handle);
  }

  /** The sockets by name, shaped for the hand-off (which reads `_handle.fd`). */
  handoffListeners(): [string, net.Server][] {
    return [...this.#handles].map(([n, h]) => [n, { _handle: h } as unknown as net.Server]);
  }

  certificate(cert: WorkloadCertificate): void {
    this.#broadcast({ t: 'cert', cert: toWire(cert) });
  }

  forget(id: string): void {
    this.#broadcast({ t: 'forget', id });
  }

  revocations(serials: string[], ids: string[]): void {
    this.#broadcast({ t: 'revocations', serials, ids });
  }

  findNotReadyReasons(): string[] {
    const reasons: string[] = [];
    const version = this.#o.state.version;
    for (const s of this.#slots) {
      if (s.child === undefined || !s.everReady) reasons.push(`agent worker ${s.index} is starting`);
      else if (s.applied < version)
        reasons.push(`agent worker ${s.index} has not applied config version ${version} yet`);
      else if (this.#accepting && s.listening.size < this.#handles.size)
        reasons.push(`agent worker ${s.index} is not accepting yet`);
    }
    return reasons;
  }

  /** Live connections over all workers (as last reported, at most a second old). */
  live(): number {
    return this.#slots.reduce((n, s) => n + s.live, 0);
  }

  #ask(what: 'metrics' | 'connections'): Promise<unknown[]> {
    const alive = this.#slots.filter((s) => s.child?.connected);
    if (alive.length === 0) return Promise.resolve([]);
    const reqId = this.#nextRequest++;
    return new Promise((done) => {
      this.#requests.set(reqId, { left: alive.length, values: [], done });
      for (const s of alive) this.#send(s, { t: 'request', reqId, what });
    });
  }

  /** A registry whose scrape is the supervisor's own metrics plus every worker's, summed. */
  aggregatedRegistry(own: Registry): Registry {
    const r = new Registry();
    r.metrics = async () => {
      const parts = [
        await own.getMetricsAsJSON(),
        ...((await this.#ask('metrics')) as MetricObjectWithValues<MetricValue<string>>[][]),
      ];
      return AggregatorRegistry.aggregate(parts).metrics();
    };
    return r;
  }

  /** Every worker's live connections (each entry names its worker's pid). */
  async connections(): Promise<unknown[]> {
    return ((await this.#ask('connections')) as unknown[][]).flat();
  }

  /** Workers stop accepting (the supervisor keeps the sockets for a hand-off or a restart). */
  stopAccepting(): void {
    this.#accepting = false;
    this.#broadcast({ t: 'stop' });
    for (const h of this.#handles.values()) h.close();
    this.#handles.clear();
  }

  /** Every worker drains (GOAWAY to HBONE peers, cut at the deadline); resolves with the cut total. */
  async drain(graceful: boolean, progress?: (live: number) => void): Promise<{ cut: number }> {
    this.#accepting = false;
    const timer = progress ? setInterval(() => progress(this.live()), 1000) : undefined;
    const cuts = await Promise.all(
      this.#slots.map(
        (s) =>
          new Promise<number>((resolve) => {
            if (s.child === undefined) return resolve(0);
            s.drained = resolve;
            this.#send(s, { t: 'drain', graceful });
          }),
      ),
    );
    clearInterval(timer);
    return { cut: cuts.reduce((a, b) => a + b, 0) };
  }

  /** Stops the workers (after drain) and closes the supervisor's copies of the sockets. */
  async close(): Promise<void> {
    this.#stopping = true;
    await Promise.all(
      this.#slots.map(
        (s) =>
          new Promise<void>((resolve) => {
            const child = s.child;
            if (child === undefined) return resolve();
            const kill = setTimeout(() => child.kill('SIGKILL'), 2000);
            child.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            this.#send(s, { t: 'exit' });
          }),
      ),
    );
    for (const h of this.#handles.values()) h.close();
    this.#handles.clear();
  }

  /** Pids of the live workers (tests, `config_dump`). */
  pids(): number[] {
    return this.#slots.flatMap((s) => (s.child?.pid === undefined ? [] : [s.child.pid]));
  }
}

export function defaultWorkerEntry(): string {
  return fileURLToPath(new URL('../../bin/hypha.js', import.meta.url));
}
