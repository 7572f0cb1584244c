// A list+watch informer for one collection: our replacement for client-node's ListWatch.
//
//   start ──▶ list (pages of `limit`, continue) ──diff against cache──▶ onAdd / onUpdate / onDelete
//               ▲                                                         │ resourceVersion
//               │ 410 Gone (status or ERROR event)                         ▼
//               └──────────── watch ?watch=true&allowWatchBookmarks=true&resourceVersion=RV
//                               │ newline-delimited JSON: ADDED MODIFIED DELETED BOOKMARK ERROR
//                               │ clean end: watch again from RV
//                               └─ any other failure: wait (jittered exponential backoff), then
//                                  watch from RV, or list if there is none
//
// Invariants:
// - Every cache change goes through the handler, so whoever mirrors the cache (the config state)
//   never holds an object the API no longer has: a relist after 410 deletes what vanished in the
//   gap and updates what changed (resourceVersion differs).
// - `transform` (trimming) runs on every object before it is handed on; the cache holds only each
//   object's key (namespace/name) and resourceVersion: all a relist's diff and a deletion need.
//   Whoever mirrors the cache keeps the object in its own form (the config state keeps the
//   translated object), so holding the trimmed object here too would double the memory per object
//   (at 100k pods about 140 MB of heap); an identity object per key cost another 12 MB.
// - The resourceVersion only moves forward with what was applied (list, event, bookmark); a restart
//   resumes from it, so no event is applied twice or skipped.
// - The backoff lives here and nowhere else: the owner is told each failure and the delay chosen.
//   Any list or watch event resets it. A 410 right after a list that made no progress (another
//   410, or a watch that expired before its first event) also waits, so no relist loop hammers
//   the API server.
// - close() aborts whatever is in flight, a request still connecting included, and cancels a
//   pending retry; no handler runs after it returns.
// - A watch line longer than maxEventBytes fails the watch (and is retried with backoff) instead of
//   buffering without bound.
import type { IncomingMessage } from 'node:http';
import { KubeError } from './errors.js';
import type { KubeConfig } from './kubeconfig.js';
import { fetchKube, openKube, readBody, statusError } from './request.js';

export interface KubeObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  [k: string]: unknown;
}

export type KubeObject = Record<string, unknown> & { metadata?: KubeObjectMeta };

export interface InformerHandler {
  onAdd(obj: KubeObject): void;
  onUpdate(obj: KubeObject): void;
  onDelete(obj: KubeObject): void;
  /** A list begins (its objects follow, page by page, then what vanished is deleted). */
  onListStart?(): void;
  /** After the first list is applied (once). */
  onSynced?(): void;
  /** After each list is applied; `relist` is false for the first. */
  onListed?(info: { objects: number; resourceVersion: string; relist: boolean }): void;
  /** The watch expired (410 Gone); a relist follows. */
  onExpired?(message: string): void;
  /** A list or watch failed; the informer retries in `retryInMs`. */
  onError?(err: Error, retryInMs: number, attempt: number): void;
}

export interface InformerOptions {
  kubeconfig: KubeConfig;
  /** Collection path, e.g. /api/v1/pods. */
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** Items per list page (limit/continue). Default 500. */
  pageSize?: number;
  /** Applied to every listed or watched object before the cache (e.g. stripObject). */
  transform?: (obj: unknown) => unknown;
  handler: InformerHandler;
  /** Restart delays after a failure. Default 500 ms doubling to 30 s, each ×[0.5, 1.5). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Longest watch event accepted, in bytes. Default 16 MiB (etcd caps objects near 1.5 MiB). */
  maxEventBytes?: number;
  /** Per-request idle timeout for lists. Default 60 s. */
  listTimeoutMs?: number;
}

export interface InformerStats {
  objects: number;
  lists: number;
  watchEvents: number;
  bookmarks: number;
  expired: number;
  errors: number;
  resourceVersion: string;
}

const DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024;
/**
 * A watch that sees no byte this long is presumed dead (a half-open connection) and fails. Longer
 * than the timeoutSeconds we ask for (at most 10 min), so a healthy server always ends it first.
 */
const WATCH_IDLE_MS = 11 * 60_000;

interface ListResponse {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: unknown[];
}

interface WatchEvent {
  type?: string;
  object?: KubeObject & { code?: number; message?: string; reason?: string };
}

/** How a watch ended without a failure. */
type WatchEnd = 'expired' | 'ended' | 'ended-quiet' | 'closed';

export class Informer {
  readonly path: string;
  lists = 0;
  watchEvents = 0;
  bookmarks = 0;
  expired = 0;
  errors = 0;
  readonly #kc: KubeConfig;
  readonly #h: InformerHandler;
  readonly #transform: (obj: unknown) => unknown;
  readonly #fieldSelector: string | undefined;
  readonly #labelSelector: string | undefined;
  readonly #pageSize: number;
  readonly #backoff: { initialMs: number; maxMs: number };
  readonly #maxEventBytes: number;
  readonly #listTimeoutMs: number;
  /** namespace/name → the object's resourceVersion ('' when it had none), as storedVersion keeps it. */
  #cache = new Map<string, StoredVersion>();
  #resourceVersion = '';
  #attempt = 0;
  /** A watch event or bookmark arrived since the last list (so a 410 now is not a loop). */
  #progress = true;
  #synced = false;
  #started = false;
  readonly #abort = new AbortController();

  constructor(opts: InformerOptions) {
    this.path = opts.path;
    this.#kc = opts.kubeconfig;
    this.#h = opts.handler;
    this.#transform = opts.transform ?? ((o) => o);
    this.#fieldSelector = opts.fieldSelector;
    this.#labelSelector = opts.labelSelector;
    this.#pageSize = opts.pageSize ?? 500;
    this.#backoff = { initialMs: opts.backoff?.initialMs ?? 500, maxMs: opts.backoff?.maxMs ?? 30_000 };
    this.#maxEventBytes = opts.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
    this.#listTimeoutMs = opts.listTimeoutMs ?? 60_000;
  }

  get synced(): boolean {
    return this.#synced;
  }

  get closed(): boolean {
    return this.#abort.signal.aborted;
  }

  get resourceVersion(): string {
    return this.#resourceVersion;
  }

  /** The cached objects' identities (metadata: name, namespace if any, resourceVersion). */
  list(): KubeObject[] {
    return [...this.#cache].map(([key, rv]) => identityOf(key, rv));
  }

  stats(): InformerStats {
    return {
      objects: this.#cache.size,
      lists: this.lists,
      watchEvents: this.watchEvents,
      bookmarks: this.bookmarks,
      expired: this.expired,
      errors: this.errors,
      resourceVersion: this.#resourceVersion,
    };
  }

  /** Lists, then watches until closed. Failures are reported through the handler, never thrown. */
  start(): void {
    if (this.#started || this.closed) return;
    this.#started = true;
    void this.#run();
  }

  close(): void {
    if (!this.closed) this.#abort.abort(new KubeError('CLOSED', `the informer for ${this.path} was closed`));
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      try {
        if (!this.#resourceVersion) await this.#relist(signal);
        const end = await this.#watch(signal);
        if (end === 'expired') await this.#expire(signal);
        else if (end === 'ended-quiet')
          // Closed before it delivered anything: not a failure, but no reason to reconnect at once
          // either (a proxy that cuts every watch would otherwise make us spin).
          await this.#sleep(this.#nextDelay(), signal);
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof KubeError && err.status === 410) {
          // A list's continue token expired mid-pagination: start the list over.
          this.expired += 1;
          this.#h.onExpired?.(err.message);
          await this.#expire(signal);
          continue;
        }
        this.errors += 1;
        const delay = this.#nextDelay();
        this.#h.onError?.(err instanceof Error ? err : new Error(String(err)), delay, this.#attempt);
        await this.#sleep(delay, signal);
      }
    }
  }

  /**
   * Forget the resourceVersion so the next round relists. Right away after a watch that made
   * progress; after a backoff when the last list was followed by nothing but another 410, so a
   * server that keeps answering 410 is not relisted in a tight loop.
   */
  async #expire(signal: AbortSignal): Promise<void> {
    this.#resourceVersion = '';
    if (!this.#progress) await this.#sleep(this.#nextDelay(), signal);
    this.#progress = false;
  }

  #nextDelay(): number {
    const base = Math.min(this.#backoff.maxMs, this.#backoff.initialMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return Math.round(base * (0.5 + Math.random()));
  }

  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }

  #query(extra: Record<string, string>): string {
    const q = new URLSearchParams(extra);
    if (this.#fieldSelector) q.set('fieldSelector', this.#fieldSelector);
    if (this.#labelSelector) q.set('labelSelector', this.#labelSelector);
    return q.toString();
  }

  async #relist(signal: AbortSignal): Promise<void> {
    this.lists += 1;
    this.#h.onListStart?.();
    // Each page is applied as it arrives (newer versions of the objects in it, from the list's one
    // snapshot), so no more than one page of raw objects is held at a time; what the cache has and
    // no page had is deleted at the end. If the list fails part-way, the resourceVersion is not
    // moved and the retry relists, so the partial application is completed, never left.
    const seen = new Set<string>();
    let resourceVersion = '';
    let cont: string | undefined;
    // Bounded: a 100k-object list at 500 per page is 200 pages.
    for (let page = 0; page < 100_000; page++) {
      const extra: Record<string, string> = { limit: String(this.#pageSize) };
      if (cont) extra.continue = cont;
      const res = (await fetchKube(this.#kc, `${this.path}?${this.#query(extra)}`, {
        signal,
        timeoutMs: this.#listTimeoutMs,
      })) as ListResponse;
      if (signal.aborted) return;
      for (const item of res.items ?? []) {
        const obj = this.#transform(item) as KubeObject;
        const key = keyOf(obj);
        seen.add(key);
        this.#upsert(key, obj);
      }
      resourceVersion = res.metadata?.resourceVersion ?? resourceVersion;
      cont = res.metadata?.continue;
      if (!cont) break;
    }
    if (signal.aborted) return;
    this.#attempt = 0;
    for (const [key, rv] of this.#cache) {
      if (!seen.has(key)) {
        this.#cache.delete(key);
        this.#h.onDelete(identityOf(key, rv));
      }
    }
    this.#resourceVersion = resourceVersion;
    this.#progress = false;
    this.#h.onListed?.({ objects: seen.size, resourceVersion, relist: this.lists > 1 });
    if (!this.#synced) {
      this.#synced = true;
      this.#h.onSynced?.();
    }
  }

  #upsert(key: string, obj: KubeObject): void {
    const old = this.#cache.get(key);
    const rv = storedVersion(obj.metadata?.resourceVersion ?? '');
    if (old !== undefined && old !== '' && old === rv) return;
    this.#cache.set(key, rv);
    if (old !== undefined) this.#h.onUpdate(obj);
    else this.#h.onAdd(obj);
  }

  async #watch(signal: AbortSignal): Promise<WatchEnd> {
    const query = this.#query({
      watch: 'true',
      allowWatchBookmarks: 'true',
      resourceVersion: this.#resourceVersion,
      // Server-side end, spread like client-go's (5–10 min), so watches do not all reconnect together.
      timeoutSeconds: String(300 + Math.floor(Math.random() * 300)),
    });
    const path = `${this.path}?${query}`;
    const res = await openKube(this.#kc, path, { signal, timeoutMs: WATCH_IDLE_MS });
    const status = res.statusCode ?? 0;
    if (status !== 200) {
      const text = await readBody(res, 'GET', path, signal, 1024 * 1024);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {}
      const err = statusError('GET', path, status, parsed, text);
      if (status === 410) {
        this.expired += 1;
        this.#h.onExpired?.(err.message);
        return 'expired';
      }
      throw err;
    }
    return this.#readEvents(res, path, signal);
  }

  #readEvents(res: IncomingMessage, path: string, signal: AbortSignal): Promise<WatchEnd> {
    return new Promise<WatchEnd>((resolve, reject) => {
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let events = 0;
      let settled = false;
      const finish = (outcome: WatchEnd | Error) => {
        if (settled) return;
        settled = true;
        res.removeAllListeners('data');
        res.destroy();
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      const onLine = (line: Buffer): WatchEnd | Error | undefined => {
        if (line.length > this.#maxEventBytes) return this.#tooLong(path);
        const text = line.toString('utf8').trim();
        if (!text) return undefined;
        let event: WatchEvent;
        try {
          event = JSON.parse(text) as WatchEvent;
        } catch {
          return new KubeError(
            'API_ERROR',
            `GET ${path}: the watch stream sent a line that is not JSON: ${text.slice(0, 120)}`,
          );
        }
        events += 1;
        return this.#apply(event, path);
      };
      res.on('data', (chunk: Buffer) => {
        if (settled || signal.aborted) return;
        let start = 0;
        for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
          const piece = chunk.subarray(start, nl);
          const line = pending.length > 0 ? Buffer.concat([...pending, piece]) : piece;
          pending = [];
          pendingBytes = 0;
          start = nl + 1;
          const outcome = onLine(line);
          if (outcome !== undefined) return finish(outcome);
        }
        if (start < chunk.length) {
          pending.push(chunk.subarray(start));
          pendingBytes += chunk.length - start;
          if (pendingBytes > this.#maxEventBytes) finish(this.#tooLong(path));
        }
      });
      res.on('end', () => {
        if (signal.aborted) return finish('closed');
        finish(events > 0 ? 'ended' : 'ended-quiet');
      });
      res.on('error', (err) => {
        if (signal.aborted) return finish('closed');
        finish(new KubeError('API_UNREACHABLE', `GET ${path}: the watch broke: ${err.message}`));
      });
      res.on('close', () => {
        if (signal.aborted) return finish('closed');
        // Closed without 'end' or 'error' (socket destroyed): a broken watch.
        finish(new KubeError('API_UNREACHABLE', `GET ${path}: the watch connection closed mid-stream`));
      });
    });
  }

  #tooLong(path: string): KubeError {
    return new KubeError(
      'API_ERROR',
      `GET ${path}: a watch event exceeded ${this.#maxEventBytes} bytes; dropped the watch rather than buffer it (is something in front of the API server corrupting the stream?)`,
    );
  }

  /** One watch event into the cache; a defined result ends the watch. */
  #apply(event: WatchEvent, path: string): WatchEnd | Error | undefined {
    const obj = event.object;
    switch (event.type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        if (!obj) return undefined;
        this.#attempt = 0;
        this.#progress = true;
        this.watchEvents += 1;
        const trimmed = this.#transform(obj) as KubeObject;
        const key = keyOf(trimmed);
        if (event.type === 'DELETED') {
          if (this.#cache.has(key)) {
            this.#cache.delete(key);
            this.#h.onDelete(trimmed);
          }
        } else this.#upsert(key, trimmed);
        this.#resourceVersion = trimmed.metadata?.resourceVersion ?? this.#resourceVersion;
        return undefined;
      }
      case 'BOOKMARK':
        this.#attempt = 0;
        this.#progress = true;
        this.bookmarks += 1;
        this.#resourceVersion = obj?.metadata?.resourceVersion ?? this.#resourceVersion;
        return undefined;
      case 'ERROR': {
        const message = obj?.message ?? 'no message';
        if (obj?.code === 410) {
          this.expired += 1;
          this.#h.onExpired?.(message);
          return 'expired';
        }
        return new KubeError(
          'API_ERROR',
          `GET ${path}: the watch ended with an error event: ${obj?.code ?? ''} ${message}`.replace(
            '  ',
            ' ',
          ),
          obj?.code,
          obj?.reason,
        );
      }
      default:
        return undefined;
    }
  }
}

function keyOf(obj: KubeObject): string {
  // join: one flat string per cached key (a template literal would keep a cons string and its prefix).
  return [obj.metadata?.namespace ?? '', obj.metadata?.name ?? ''].join('/');
}

/**
 * A resourceVersion as the cache keeps it. Only equality is ever asked of one (the API says they
 * are opaque); etcd's are decimal counters, kept as numbers, which in a Map cost nothing or a
 * HeapNumber per entry instead of a string (3 MB at 125k objects). Canonical decimals only (no
 * leading zero, at most 15 digits, so exact in a double): the mapping is one-to-one, any other
 * string stays a string, and a number never equals a string.
 */
type StoredVersion = number | string;
const CANONICAL_DECIMAL = /^[1-9][0-9]{0,14}$/;
function storedVersion(rv: string): StoredVersion {
  return CANONICAL_DECIMAL.test(rv) ? Number(rv) : rv;
}

/** An object's identity rebuilt from its cache entry (for onDelete and list()). */
function identityOf(key: string, stored: StoredVersion): KubeObject {
  const resourceVersion = String(stored);
  const slash = key.indexOf('/');
  const namespace = key.slice(0, slash);
  const metadata: KubeObjectMeta = { name: key.slice(slash + 1) };
  if (namespace !== '') metadata.namespace = namespace;
  if (resourceVersion !== '') metadata.resourceVersion = resourceVersion;
  return { metadata } as KubeObject;
}
