// The Kubernetes config source: one informer per watched kind (list, then watch from the list's
// resourceVersion, with bookmarks), each object trimmed, translated by the same code as the file
// source, and committed to the config state in batches.
//
//   API server ──list/watch──▶ Informer (informer.ts) ──add/update/delete──▶ translateObject
//        ▲   objects trimmed (strip.ts) before the cache     │ ok / ignored / invalid
//        └── restart with backoff on errors                  ▼
//                                        pending batch ──microtask──▶ state.update()
//
// Invariants:
// - The state sees nothing until every informer has finished its first list; then it gets one
//   batch, so readers never observe a half-synced cluster (e.g. pods without their namespace's
//   opt-in label, or a policy missing while its peers are present). `ready` resolves after that batch.
// - A watch that expires (410 Gone) is relisted by the informer, which diffs the new list against
//   its cache: objects gone during the gap are deleted, changed ones updated. No ghosts and no lost
//   objects, as long as every cache change passes through the callbacks below.
// - Any other failure restarts the list/watch after a jittered exponential backoff (in the
//   informer). It resumes from its last resourceVersion (bookmarks keep that fresh), or relists if
//   it has none.
// - An invalid object never reaches the state. Its last good version stays in force (as with the
//   file source); one never seen valid is skipped. Each problem is logged once per resourceVersion.
import type { ConfigError } from '../config/errors.js';
import { type ConfigState, createConfigState } from '../config/state.js';
import { isConfigKind, translateObject } from '../config/translate.js';
import type { ConfigObject, ConfigObjectKey } from '../config/types.js';
import { LARGE_LOAD_OBJECTS, releaseFreedMemoryAfter } from '../daemon/memory.js';
import type { Logger } from '../log/logger.js';
import { createSilentLogger } from '../log/logger.js';
import { KubeError } from './errors.js';
import { Informer } from './informer.js';
import { WATCHED_KINDS, type WatchedKind } from './kinds.js';
import { type KubeConfig, type KubeconfigOption, loadKubeConfig } from './kubeconfig.js';
import { fetchKube } from './request.js';
import { stripObject } from './strip.js';

export type { KubeconfigOption } from './kubeconfig.js';

export interface KubeSourceOptions {
  /** Default: $KUBECONFIG, else in-cluster, else ~/.kube/config (see kubeconfig.ts). */
  kubeconfig?: KubeconfigOption;
  /** The state to feed; default a new one that takes endpoints from EndpointSlices. */
  state?: ConfigState;
  trustDomain?: string;
  logger?: Logger;
  /** This agent's node: named in logs and as the Event reporting instance. */
  nodeName?: string;
  /** Kinds to watch; default all the mesh reads (WATCHED_KINDS). */
  kinds?: readonly WatchedKind[];
  /**
   * Post a Warning Event on objects that fail validation. Off by default: with one agent per node
   * every node would post the same Event; turn it on in one component (or in tests).
   */
  reportEvents?: boolean;
  backoff?: { initialMs?: number; maxMs?: number };
  /** Items per list page (limit/continue). Default 500. */
  pageSize?: number;
}

export interface KindStats {
  kind: string;
  synced: boolean;
  objects: number;
  lists: number;
  watchEvents: number;
  bookmarks: number;
  expired: number;
  errors: number;
  resourceVersion: string;
}

export interface KubeSource {
  readonly state: ConfigState;
  /** Resolves once every informer has listed and the state holds the first full batch. */
  readonly ready: Promise<void>;
  readonly isReady: boolean;
  /** Problems of the objects currently invalid (what was logged). */
  readonly errors: readonly ConfigError[];
  /** Starts every informer; resolves when ready. Rejects if closed first. */
  start(): Promise<void>;
  stats(): KindStats[];
  close(): Promise<void>;
}

export function createKubeSource(options: KubeSourceOptions = {}): KubeSource {
  return new InformerKubeSource(options);
}

type RawObject = Record<string, unknown> & {
  metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string };
};

interface PendingChange {
  /** The watched kind it came from (held back while that kind is being listed). */
  kind: string;
  upsert?: ConfigObject;
  remove?: ConfigObjectKey;
}

class KindInformer {
  readonly kind: WatchedKind;
  readonly informer: Informer;
  readonly #log: Logger;

  constructor(kc: KubeConfig, kind: WatchedKind, source: InformerKubeSource, log: Logger) {
    this.kind = kind;
    this.#log = log.child({ kind: kind.kind });
    this.informer = new Informer({
      kubeconfig: kc,
      path: kind.path,
      ...(kind.fieldSelector !== undefined ? { fieldSelector: kind.fieldSelector } : {}),
      pageSize: source.pageSize,
      backoff: source.backoff,
      transform: (obj) => stripObject(obj, kind.apiVersion, kind.kind),
      handler: {
        onAdd: (o) => source.onObject(kind, o),
        onUpdate: (o) => source.onObject(kind, o),
        onDelete: (o) => source.onDelete(kind, o),
        onSynced: () => source.onSynced(),
        onListStart: () => source.onListStart(kind),
        onListed: ({ objects, resourceVersion, relist }) => {
          source.onListEnd(kind);
          if (!relist) return;
          this.#log.info({ objects, resourceVersion }, `${kind.kind} relisted`);
          // After the relist's changes are flushed and its pages are garbage.
          if (objects >= LARGE_LOAD_OBJECTS) setImmediate(() => source.releaseMemory(`${kind.kind} relist`));
        },
        onExpired: (message) =>
          this.#log.info({ code: 410 }, `${kind.kind} watch expired (${message}); relisting to reconcile`),
        onError: (err, retryInMs, attempt) =>
          this.#log.warn(
            { err: err.message, retryInMs, attempt },
            `${kind.kind} list/watch failed: ${err.message}; retrying in ${retryInMs} ms`,
          ),
      },
    });
  }

  get synced(): boolean {
    return this.informer.synced;
  }
}

function objectId(kind: string, namespace: string, name: string): string {
  // join: one flat string (kept per good object), not a cons string and its prefix.
  return [kind, namespace, name].join('/');
}

class InformerKubeSource implements KubeSource {
  readonly state: ConfigState;
  readonly ready: Promise<void>;
  readonly backoff: { initialMs: number; maxMs: number };
  readonly pageSize: number;
  #isReady = false;
  #closed = false;
  #started = false;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;
  readonly #log: Logger;
  readonly #kc: KubeConfig;
  readonly #informers: KindInformer[];
  readonly #pending = new Map<string, PendingChange>();
  /**
   * Kinds in the middle of a list. A list is applied page by page as it arrives; its changes are
   * held in #pending until the last page (and the deletions that follow it), so a relist reaches
   * the state as one update, never half of one. Other kinds' changes flow on meanwhile.
   */
  readonly #listing = new Set<string>();
  #flushQueued = false;
  readonly #invalid = new Map<string, ConfigError[]>();
  /** uid/resourceVersion of invalid objects already reported, so a relist does not repeat them. */
  readonly #reported = new Set<string>();
  readonly #reportEvents: boolean;
  readonly #nodeName: string | undefined;

  constructor(options: KubeSourceOptions) {
    this.#log = (options.logger ?? createSilentLogger()).child({ component: 'config-kube' });
    this.#kc = loadKubeConfig(options.kubeconfig);
    this.state =
      options.state ??
      createConfigState({
        trustDomain: options.trustDomain ?? 'cluster.local',
        endpoints: 'endpoint-slices',
      });
    this.backoff = { initialMs: options.backoff?.initialMs ?? 500, maxMs: options.backoff?.maxMs ?? 30_000 };
    this.pageSize = options.pageSize ?? 500;
    this.#reportEvents = options.reportEvents ?? false;
    this.#nodeName = options.nodeName;
    this.#informers = (options.kinds ?? WATCHED_KINDS).map(
      (k) => new KindInformer(this.#kc, k, this, this.#log),
    );
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // A caller that never awaits `ready` must not see an unhandled rejection on close.
    this.ready.catch(() => {});
  }

  get isReady(): boolean {
    return this.#isReady;
  }

  get errors(): readonly ConfigError[] {
    return [...this.#invalid.values()].flat();
  }

  start(): Promise<void> {
    if (!this.#started && !this.#closed) {
      this.#started = true;
      const server = this.#kc.cluster.server;
      this.#log.info(
        { server, node: this.#nodeName, kinds: this.#informers.map((i) => i.kind.kind) },
        `watching the Kubernetes API at ${server}`,
      );
      for (const i of this.#informers) i.informer.start();
    }
    return this.ready;
  }

  stats(): KindStats[] {
    return this.#informers.map((i) => ({ kind: i.kind.kind, synced: i.synced, ...i.informer.stats() }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const i of this.#informers) i.informer.close();
    if (!this.#isReady)
      this.#rejectReady(new KubeError('CLOSED', 'the Kubernetes source was closed before it synced'));
  }

  onSynced(): void {
    if (this.#isReady || this.#closed || !this.#informers.every((i) => i.synced)) return;
    this.#flush();
    this.#isReady = true;
    const objects = this.#informers.reduce((n, i) => n + i.informer.stats().objects, 0);
    const s = this.state.stats();
    this.#log.info(
      {
        version: s.version,
        workloads: s.workloads,
        services: s.services,
        authorizationPolicies: s.authorizationPolicies,
      },
      'initial sync from the Kubernetes API complete',
    );
    if (objects < LARGE_LOAD_OBJECTS) {
      this.#resolveReady();
      return;
    }
    // Once the list's last page (still on this call's stack) is garbage too; then ready.
    setImmediate(() => {
      this.releaseMemory('initial sync');
      this.#resolveReady();
    });
  }

  onListStart(kind: WatchedKind): void {
    this.#listing.add(kind.kind);
  }

  onListEnd(kind: WatchedKind): void {
    this.#listing.delete(kind.kind);
    this.#scheduleFlush();
  }

  /** After a large list: the pages its parsing freed go back to the kernel (see daemon/memory.ts). */
  releaseMemory(after: string): void {
    if (!this.#closed) releaseFreedMemoryAfter(this.#log, `the ${after}`);
  }

  onObject(kind: WatchedKind, raw: RawObject): void {
    const meta = raw.metadata ?? {};
    const namespace = kind.kind === 'Namespace' ? '' : (meta.namespace ?? '');
    const id = objectId(kind.kind, namespace, meta.name ?? '');
    const result = translateObject(raw, { source: 'kubernetes', readyWhenConditionAbsent: false });
    if (result.status === 'ok') {
      this.#invalid.delete(id);
      this.#queue(id, { kind: kind.kind, upsert: result.object });
      return;
    }
    if (result.status === 'ignored') {
      // e.g. a Gateway whose class changed away from hypha-waypoint: forget what it was.
      this.#invalid.delete(id);
      if (isConfigKind(kind.kind))
        this.#queue(id, { kind: kind.kind, remove: { kind: kind.kind, namespace, name: meta.name ?? '' } });
      this.#log.debug(
        { kind: kind.kind, namespace, name: meta.name },
        `ignoring ${kind.kind}: ${result.reason}`,
      );
      return;
    }
    this.#invalid.set(id, result.errors);
    // Its last good version is (or is about to be) in the state.
    const pending = this.#pending.get(id);
    const known =
      pending !== undefined
        ? pending.upsert !== undefined
        : isConfigKind(kind.kind) && this.state.has({ kind: kind.kind, namespace, name: meta.name ?? '' });
    const reportKey = `${meta.uid ?? id}@${meta.resourceVersion ?? ''}`;
    if (this.#reported.has(reportKey)) return;
    if (this.#reported.size > 10_000) this.#reported.clear();
    this.#reported.add(reportKey);
    const consequence = known ? 'the previous version stays in force' : 'object skipped';
    for (const e of result.errors) this.#log.error(e.toLogFields(), `${e.message} (${consequence})`);
    if (this.#reportEvents) void this.#postEvent(kind, raw, result.errors, consequence);
  }

  onDelete(kind: WatchedKind, raw: RawObject): void {
    if (!isConfigKind(kind.kind)) return;
    const meta = raw.metadata ?? {};
    const namespace = kind.kind === 'Namespace' ? '' : (meta.namespace ?? '');
    const id = objectId(kind.kind, namespace, meta.name ?? '');
    this.#invalid.delete(id);
    this.#queue(id, { kind: kind.kind, remove: { kind: kind.kind, namespace, name: meta.name ?? '' } });
  }

  #queue(id: string, change: PendingChange): void {
    this.#pending.set(id, change);
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (!this.#isReady || this.#flushQueued || this.#pending.size === 0) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      this.#flush();
    });
  }

  #flush(): void {
    if (this.#pending.size === 0 || this.#closed) return;
    const upsert: ConfigObject[] = [];
    const remove: ConfigObjectKey[] = [];
    for (const [id, change] of this.#pending) {
      if (this.#listing.has(change.kind)) continue;
      if (change.upsert) upsert.push(change.upsert);
      else if (change.remove) remove.push(change.remove);
      this.#pending.delete(id);
    }
    if (upsert.length === 0 && remove.length === 0) return;
    const change = this.state.update({ upsert, remove });
    if (change)
      this.#log.debug(
        { version: change.version, upserts: upsert.length, removals: remove.length },
        'config updated',
      );
  }

  async #postEvent(
    kind: WatchedKind,
    raw: RawObject,
    errors: ConfigError[],
    consequence: string,
  ): Promise<void> {
    const meta = raw.metadata ?? {};
    const namespace = kind.kind === 'Namespace' || !meta.namespace ? 'default' : meta.namespace;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const message = `${errors.map((e) => (e.field ? `${e.field}: ${e.detail}` : e.detail)).join('; ')} (${consequence})`;
    const event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${meta.name ?? 'object'}.`, namespace },
      involvedObject: {
        apiVersion: kind.apiVersion,
        kind: kind.kind,
        name: meta.name,
        ...(kind.kind === 'Namespace' ? {} : { namespace: meta.namespace }),
        uid: meta.uid,
        resourceVersion: meta.resourceVersion,
      },
      reason: 'InvalidConfiguration',
      message: message.slice(0, 1024),
      type: 'Warning',
      source: { component: 'hypha', ...(this.#nodeName ? { host: this.#nodeName } : {}) },
      reportingComponent: 'hypha.dev/config',
      reportingInstance: this.#nodeName ?? 'hypha',
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await fetchKube(this.#kc, `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`, {
        method: 'POST',
        body: event,
      });
    } catch (err) {
      this.#log.warn(
        { err: (err as Error).message },
        `could not post an Event for ${kind.kind} ${meta.name}`,
      );
    }
  }
}
