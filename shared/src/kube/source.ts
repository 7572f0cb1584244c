// The Kubernetes config source: one informer per watched kind (list, then watch from the list's
// resourceVersion, with bookmarks), each object trimmed, translated by the same code as the file
// source, and committed to the config state in batches.
//
//   API server ──list/watch──▶ ListWatch (client-node) ──add/update/delete──▶ translateObject
//        ▲   BookmarkWatch (watch.ts) trims objects before the cache │ ok / ignored / invalid
//        └── restart with backoff on errors                          ▼
//                                                 pending batch ──microtask──▶ state.update()
//
// Invariants:
// - The state sees nothing until every informer has finished its first list; then it gets one
//   batch, so readers never observe a half-synced cluster (e.g. pods without their namespace's
//   opt-in label, or a policy missing while its peers are present). `ready` resolves after that batch.
// - A watch that expires (410 Gone) is relisted by client-node's ListWatch, which diffs the new list
//   against its cache: objects gone during the gap are deleted, changed ones updated. No ghosts and
//   no lost objects, as long as every cache change passes through the callbacks below.
// - Any other failure stops a ListWatch; we restart it after a jittered exponential backoff. It
//   resumes from its last resourceVersion (bookmarks keep that fresh), or relists if it has none.
// - An invalid object never reaches the state. Its last good version stays in force (as with the
//   file source); one never seen valid is skipped. Each problem is logged once per resourceVersion.
import { KubeConfig, ListWatch } from '@kubernetes/client-node';
import type { ConfigError } from '../config/errors.js';
import { type ConfigState, createConfigState } from '../config/state.js';
import { isConfigKind, translateObject } from '../config/translate.js';
import type { ConfigObject, ConfigObjectKey } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import { createSilentLogger } from '../log/logger.js';
import { KubeError } from './errors.js';
import { WATCHED_KINDS, type WatchedKind } from './kinds.js';
import { fetchKube } from './request.js';
import { stripObject } from './strip.js';
import { BookmarkWatch } from './watch.js';

export type KubeconfigOption =
  /** Path to a kubeconfig file. */
  | string
  | KubeConfig
  /** The pod's ServiceAccount (KUBERNETES_SERVICE_HOST/PORT and the mounted token). */
  | { inCluster: true; pathPrefix?: string };

export interface KubeSourceOptions {
  /** Default: $KUBECONFIG, else in-cluster, else ~/.kube/config (client-node's loadFromDefault). */
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

export function loadKubeConfig(option: KubeconfigOption | undefined): KubeConfig {
  if (option instanceof KubeConfig) return option;
  const kc = new KubeConfig();
  try {
    if (typeof option === 'string') kc.loadFromFile(option);
    else if (option && 'inCluster' in option) kc.loadFromCluster(option.pathPrefix);
    else kc.loadFromDefault();
  } catch (err) {
    throw new KubeError(
      'KUBECONFIG',
      `could not load Kubernetes credentials${typeof option === 'string' ? ` from ${option}` : ''}: ${(err as Error).message}`,
    );
  }
  if (!kc.getCurrentCluster()) {
    throw new KubeError(
      'KUBECONFIG',
      'no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a pod with a ServiceAccount',
    );
  }
  return kc;
}

export function createKubeSource(options: KubeSourceOptions = {}): KubeSource {
  return new InformerKubeSource(options);
}

type RawObject = Record<string, unknown> & {
  metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string };
};

interface ListResponse {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: unknown[];
}

interface PendingChange {
  upsert?: ConfigObject;
  remove?: ConfigObjectKey;
}

class KindInformer {
  readonly kind: WatchedKind;
  readonly informer: ListWatch<never>;
  synced = false;
  lists = 0;
  watchEvents = 0;
  bookmarks = 0;
  expired = 0;
  errors = 0;
  #attempt = 0;
  #timer: NodeJS.Timeout | undefined;
  closed = false;
  readonly #kc: KubeConfig;
  readonly #log: Logger;
  readonly #source: InformerKubeSource;

  constructor(kc: KubeConfig, kind: WatchedKind, source: InformerKubeSource, log: Logger) {
    this.kind = kind;
    this.#kc = kc;
    this.#source = source;
    this.#log = log.child({ kind: kind.kind });
    const listFn = () => this.#list() as never;
    this.informer = new ListWatch<never>(
      kind.path,
      new BookmarkWatch(
        kc,
        () => this.closed,
        (phase, obj) => this.onWatchEvent(phase, obj),
      ),
      listFn,
      false,
    );
    this.informer.on('add', (o) => source.onObject(kind, o));
    this.informer.on('update', (o) => source.onObject(kind, o));
    this.informer.on('delete', (o) => source.onDelete(kind, o));
    this.informer.on('error', (err) => this.#onError(err));
  }

  start(): void {
    this.informer.start().catch((err: unknown) => this.#onError(err));
  }

  stop(): void {
    this.closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    void this.informer.stop();
  }

  onWatchEvent(phase: string, obj: unknown): unknown {
    this.#attempt = 0;
    if (phase === 'BOOKMARK') {
      this.bookmarks += 1;
      return obj;
    }
    if (phase === 'ERROR') {
      const status = obj as { code?: number; message?: string };
      if (status.code === 410) {
        this.expired += 1;
        this.#log.info(
          { code: 410 },
          `${this.kind.kind} watch expired (${status.message ?? '410 Gone'}); relisting to reconcile`,
        );
      } else
        this.#log.warn(
          { status },
          `${this.kind.kind} watch ended with an error event: ${status.message ?? ''}`,
        );
      return obj;
    }
    this.watchEvents += 1;
    return stripObject(obj, this.kind.apiVersion, this.kind.kind);
  }

  async #list(): Promise<{ metadata: { resourceVersion: string }; items: unknown[] }> {
    this.lists += 1;
    const items: unknown[] = [];
    let resourceVersion = '';
    let cont: string | undefined;
    const pageSize = this.#source.pageSize;
    // Bounded: a 100k-object list at 500 per page is 200 pages.
    for (let page = 0; page < 100_000; page++) {
      const query = new URLSearchParams({ limit: String(pageSize) });
      if (cont) query.set('continue', cont);
      const res = (await fetchKube(this.#kc, `${this.kind.path}?${query}`)) as ListResponse;
      for (const item of res.items ?? []) items.push(stripObject(item, this.kind.apiVersion, this.kind.kind));
      resourceVersion = res.metadata?.resourceVersion ?? resourceVersion;
      cont = res.metadata?.continue;
      if (!cont) break;
    }
    if (this.lists > 1)
      this.#log.info({ objects: items.length, resourceVersion }, `${this.kind.kind} relisted`);
    this.#attempt = 0;
    // ListWatch applies the items synchronously after this promise settles; mark synced after that.
    setImmediate(() => {
      if (this.closed || this.synced) return;
      this.synced = true;
      this.#source.onSynced();
    });
    return { metadata: { resourceVersion }, items };
  }

  #onError(err: unknown): void {
    if (this.closed) return;
    this.errors += 1;
    const { initialMs, maxMs } = this.#source.backoff;
    const base = Math.min(maxMs, initialMs * 2 ** this.#attempt);
    const delay = Math.round(base * (0.5 + Math.random()));
    this.#attempt = Math.min(this.#attempt + 1, 30);
    const message = err instanceof Error ? err.message : String(err);
    this.#log.warn(
      { err: message, retryInMs: delay, attempt: this.#attempt },
      `${this.kind.kind} list/watch failed: ${message}; retrying in ${delay} ms`,
    );
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.closed) this.start();
    }, delay);
  }
}

function objectId(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
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
  #flushQueued = false;
  readonly #invalid = new Map<string, ConfigError[]>();
  /** Objects whose last good version is (or is about to be) in the state. */
  readonly #good = new Set<string>();
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
      const cluster = this.#kc.getCurrentCluster();
      this.#log.info(
        { server: cluster?.server, node: this.#nodeName, kinds: this.#informers.map((i) => i.kind.kind) },
        `watching the Kubernetes API at ${cluster?.server}`,
      );
      for (const informer of this.#informers) informer.start();
    }
    return this.ready;
  }

  stats(): KindStats[] {
    return this.#informers.map((i) => ({
      kind: i.kind.kind,
      synced: i.synced,
      objects: i.informer.list().length,
      lists: i.lists,
      watchEvents: i.watchEvents,
      bookmarks: i.bookmarks,
      expired: i.expired,
      errors: i.errors,
      resourceVersion: i.informer.latestResourceVersion(),
    }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const informer of this.#informers) informer.stop();
    if (!this.#isReady)
      this.#rejectReady(new KubeError('CLOSED', 'the Kubernetes source was closed before it synced'));
  }

  onSynced(): void {
    if (this.#isReady || this.#closed || !this.#informers.every((i) => i.synced)) return;
    this.#flush();
    this.#isReady = true;
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
    this.#resolveReady();
  }

  onObject(kind: WatchedKind, raw: RawObject): void {
    const meta = raw.metadata ?? {};
    const namespace = kind.kind === 'Namespace' ? '' : (meta.namespace ?? '');
    const id = objectId(kind.kind, namespace, meta.name ?? '');
    const result = translateObject(raw, { source: 'kubernetes', readyWhenConditionAbsent: false });
    if (result.status === 'ok') {
      this.#invalid.delete(id);
      this.#queue(id, { upsert: result.object });
      return;
    }
    if (result.status === 'ignored') {
      // e.g. a Gateway whose class changed away from hypha-waypoint: forget what it was.
      this.#invalid.delete(id);
      if (isConfigKind(kind.kind))
        this.#queue(id, { remove: { kind: kind.kind, namespace, name: meta.name ?? '' } });
      this.#log.debug(
        { kind: kind.kind, namespace, name: meta.name },
        `ignoring ${kind.kind}: ${result.reason}`,
      );
      return;
    }
    this.#invalid.set(id, result.errors);
    const known = this.#good.has(id);
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
    this.#queue(id, { remove: { kind: kind.kind, namespace, name: meta.name ?? '' } });
  }

  #queue(id: string, change: PendingChange): void {
    this.#pending.set(id, change);
    if (change.upsert) this.#good.add(id);
    else this.#good.delete(id);
    if (!this.#isReady || this.#flushQueued) return;
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
    for (const change of this.#pending.values()) {
      if (change.upsert) upsert.push(change.upsert);
      else if (change.remove) remove.push(change.remove);
    }
    this.#pending.clear();
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
