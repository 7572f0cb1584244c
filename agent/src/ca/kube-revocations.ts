// The revocation list in Kubernetes: ConfigMap `hypha-ca-revocations` in the CA's namespace, key
// `revocations.json`, holding the same document as the file (revocations.ts).
//
//   hypha ca revoke --kubernetes ──GET, then POST (absent) or PUT (resourceVersion precondition)──▶
//        ConfigMap hypha-ca-revocations ──list/watch (fieldSelector metadata.name)──▶ KubeRevocationList
//        ──▶ CaServer: GET /v1/revocations, and no new certificates for revoked identities
//
// Invariants:
// - Writers never lose an entry: every write carries the resourceVersion it read (or is a create),
//   so two concurrent revokes conflict (409) and the loser re-reads and applies its entry again.
// - The CA serves only lists that parsed. A malformed ConfigMap leaves the last good list in force
//   and is logged once per resourceVersion, with the ConfigMap's name and what is wrong. A missing
//   ConfigMap (never created, or deleted) is the empty list, version 0.
// - The CA only reads (get/list/watch on the one name); writes come from the operator's
//   credentials through `hypha ca revoke --kubernetes`.
import { createSilentLogger, type Logger } from '@hypha/shared';
import type { SpiffeId } from '@hypha/shared/identity';
import { fetchKube, Informer, type KubeconfigOption, KubeError, loadKubeConfig } from '@hypha/shared/kube';
import {
  applyRevocation,
  EMPTY_REVOCATIONS,
  formatRevocationDocument,
  parseRevocationDocument,
  REVOCATIONS_FILE,
  type RevocationDocument,
  RevocationError,
  type RevocationRequest,
  type RevocationSnapshot,
  type RevocationSource,
  snapshotOf,
} from './revocations.js';

export const REVOCATIONS_CONFIGMAP = 'hypha-ca-revocations';
export const REVOCATIONS_KEY = REVOCATIONS_FILE;

export type KubeRevocationErrorCode =
  /** The ConfigMap exists but does not hold a valid list. */
  | 'KUBE_REVOCATIONS_INVALID'
  /** RBAC refused the read or write. */
  | 'KUBE_REVOCATIONS_FORBIDDEN'
  /** The namespace does not exist. */
  | 'KUBE_REVOCATIONS_NO_NAMESPACE'
  /** Other writers kept changing the ConfigMap between our read and write. */
  | 'KUBE_REVOCATIONS_CONFLICT'
  /** The API could not be reached, refused the credentials, or failed otherwise. */
  | 'KUBE_REVOCATIONS_API';

export class KubeRevocationError extends Error {
  readonly code: KubeRevocationErrorCode;
  constructor(code: KubeRevocationErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'KubeRevocationError';
    this.code = code;
  }
}

interface ConfigMapObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    resourceVersion?: string;
    uid?: string;
    [k: string]: unknown;
  };
  data?: Record<string, string>;
  [k: string]: unknown;
}

function describeConfigMap(namespace: string): string {
  return `ConfigMap ${namespace}/${REVOCATIONS_CONFIGMAP}`;
}

/**
 * The document a ConfigMap holds. No data at all (e.g. `kubectl create configmap` with nothing)
 * is the empty list; data without the revocations.json key is a mistake worth naming.
 */
export function parseRevocationConfigMap(cm: ConfigMapObject, namespace: string): RevocationDocument {
  const where = describeConfigMap(namespace);
  const data = cm.data ?? {};
  const text = data[REVOCATIONS_KEY];
  if (text === undefined) {
    const keys = Object.keys(data);
    if (keys.length === 0) return { version: 0, entries: [] };
    throw new KubeRevocationError(
      'KUBE_REVOCATIONS_INVALID',
      `${where} has no key ${REVOCATIONS_KEY} (it has ${keys.join(', ')})`,
    );
  }
  try {
    return parseRevocationDocument(text, `${where} key ${REVOCATIONS_KEY}`);
  } catch (err) {
    if (err instanceof RevocationError)
      throw new KubeRevocationError('KUBE_REVOCATIONS_INVALID', err.message, { cause: err });
    throw err;
  }
}

export interface KubeRevocationListOptions {
  kubeconfig?: KubeconfigOption;
  /** The CA's namespace. Default hypha-system. */
  namespace?: string;
  logger?: Logger;
  /** Restart delays after a failed list/watch. Default 500 ms doubling to 30 s. */
  backoff?: { initialMs?: number; maxMs?: number };
}

/** The CA's view of the ConfigMap, kept current by a list/watch on that one name. */
export class KubeRevocationList implements RevocationSource {
  readonly namespace: string;
  readonly #log: Logger;
  readonly #informer: Informer;
  readonly #where: string;
  #current: RevocationSnapshot = EMPTY_REVOCATIONS;
  #ids = new Set<string>();
  #problem: string | undefined;
  #reported = '';
  #closed = false;
  #started = false;
  #synced = false;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;
  readonly ready: Promise<void>;

  constructor(opts: KubeRevocationListOptions = {}) {
    this.namespace = opts.namespace ?? 'hypha-system';
    const kc = loadKubeConfig(opts.kubeconfig);
    this.#log = (opts.logger ?? createSilentLogger()).child({ component: 'ca-revocations' });
    this.#where = describeConfigMap(this.namespace);
    this.#informer = new Informer({
      kubeconfig: kc,
      path: `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/configmaps`,
      fieldSelector: `metadata.name=${REVOCATIONS_CONFIGMAP}`,
      listTimeoutMs: 15_000,
      ...(opts.backoff ? { backoff: opts.backoff } : {}),
      handler: {
        onAdd: (o) => this.#onObject(o as ConfigMapObject),
        onUpdate: (o) => this.#onObject(o as ConfigMapObject),
        onDelete: () => this.#onDelete(),
        onSynced: () => this.#onSynced(),
        onError: (err, retryInMs) =>
          this.#log.warn(
            { configMap: this.#where, err: err.message, retryInMs },
            `list/watch of ${this.#where} failed: ${err.message}; retrying in ${retryInMs} ms (the current list stays in force)`,
          ),
      },
    });
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {});
  }

  /** Lists the ConfigMap and starts watching it; resolves after the first list. */
  start(): Promise<void> {
    if (!this.#started && !this.#closed) {
      this.#started = true;
      this.#informer.start();
    }
    return this.ready;
  }

  /** The list in force (the last good one). */
  findSnapshot(): RevocationSnapshot {
    return this.#current;
  }

  /** What is wrong with the ConfigMap right now, if anything (the last good list stays in force). */
  get problem(): string | undefined {
    return this.#problem;
  }

  async fetchSnapshot(): Promise<RevocationSnapshot> {
    return this.#current;
  }

  async isIdentityRevoked(id: SpiffeId): Promise<boolean> {
    return this.#ids.has(id.toString());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#informer.close();
    if (!this.#synced)
      this.#rejectReady(
        new KubeError('CLOSED', `the revocation list was closed before ${this.#where} was read`),
      );
  }

  #onSynced(): void {
    if (this.#synced || this.#closed) return;
    this.#synced = true;
    this.#log.info(
      {
        configMap: this.#where,
        version: this.#current.version,
        serials: this.#current.serials.length,
        ids: this.#current.ids.length,
      },
      `watching ${this.#where} for revocations`,
    );
    this.#resolveReady();
  }

  #onObject(cm: ConfigMapObject): void {
    let doc: RevocationDocument;
    try {
      doc = parseRevocationConfigMap(cm, this.namespace);
    } catch (err) {
      this.#problem = (err as Error).message;
      // One line per bad version: relists and resyncs deliver the same object again.
      const key = `${cm.metadata?.uid ?? ''}@${cm.metadata?.resourceVersion ?? ''}`;
      if (key !== this.#reported) {
        this.#reported = key;
        this.#log.error(
          {
            configMap: this.#where,
            resourceVersion: cm.metadata?.resourceVersion,
            servingVersion: this.#current.version,
          },
          `${this.#problem}; still serving the last good revocation list (version ${this.#current.version})`,
        );
      }
      return;
    }
    this.#problem = undefined;
    this.#reported = '';
    this.#apply(snapshotOf(doc));
  }

  #onDelete(): void {
    this.#problem = undefined;
    this.#reported = '';
    this.#apply(EMPTY_REVOCATIONS);
  }

  #apply(next: RevocationSnapshot): void {
    const before = this.#current;
    this.#current = next;
    this.#ids = new Set(next.ids);
    if (before.version === next.version && same(before, next)) return;
    this.#log.info(
      { configMap: this.#where, version: next.version, serials: next.serials.length, ids: next.ids.length },
      'revocation list updated',
    );
  }
}

function same(a: RevocationSnapshot, b: RevocationSnapshot): boolean {
  return a.serials.join(',') === b.serials.join(',') && a.ids.join(',') === b.ids.join(',');
}

export interface RecordKubeRevocationOptions {
  /** The CA's namespace. Default hypha-system. */
  namespace?: string;
  /** Tries when the ConfigMap changes between our read and write (409). Default 5. */
  maxAttempts?: number;
  timeoutMs?: number;
}

export interface KubeRevocationResult {
  snapshot: RevocationSnapshot;
  changed: boolean;
  /** The ConfigMap did not exist and was created. */
  created: boolean;
  /** 1 unless a conflict made us read and write again. */
  attempts: number;
}

/**
 * Adds one revocation to ConfigMap hypha-ca-revocations: create it when absent, else update it with
 * the resourceVersion just read as precondition; on 409 read again and retry. A repeat changes
 * nothing (no write). Errors are KubeRevocationError with an actionable message.
 */
export async function recordKubeRevocation(
  kubeconfig: KubeconfigOption | undefined,
  what: RevocationRequest,
  opts: RecordKubeRevocationOptions = {},
): Promise<KubeRevocationResult> {
  const ns = opts.namespace ?? 'hypha-system';
  const maxAttempts = Math.max(1, opts.maxAttempts ?? 5);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const kc = loadKubeConfig(kubeconfig);
  const base = `/api/v1/namespaces/${encodeURIComponent(ns)}/configmaps`;
  const where = describeConfigMap(ns);
  for (let attempt = 1; ; attempt++) {
    let current: ConfigMapObject | undefined;
    try {
      current = (await fetchKube(kc, `${base}/${REVOCATIONS_CONFIGMAP}`, { timeoutMs })) as ConfigMapObject;
    } catch (err) {
      if (!(err instanceof KubeError && err.status === 404)) throw explain(err, 'get', ns);
    }
    let doc: RevocationDocument = { version: 0, entries: [] };
    if (current) {
      try {
        doc = parseRevocationConfigMap(current, ns);
      } catch (err) {
        throw new KubeRevocationError(
          'KUBE_REVOCATIONS_INVALID',
          `${(err as Error).message}; fix it first (kubectl edit configmap ${REVOCATIONS_CONFIGMAP} -n ${ns}) so no entry is lost`,
          { cause: err },
        );
      }
    }
    const { next, changed } = applyRevocation(doc, what);
    if (!changed) return { snapshot: snapshotOf(next), changed: false, created: false, attempts: attempt };
    const text = formatRevocationDocument(next);
    try {
      if (!current) {
        await fetchKube(kc, base, {
          method: 'POST',
          timeoutMs,
          body: {
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: {
              name: REVOCATIONS_CONFIGMAP,
              namespace: ns,
              labels: { 'app.kubernetes.io/part-of': 'hypha', 'app.kubernetes.io/component': 'ca' },
            },
            data: { [REVOCATIONS_KEY]: text },
          },
        });
      } else {
        // The whole object as read, so labels and annotations survive; its resourceVersion is the
        // precondition (409 when someone wrote in between).
        await fetchKube(kc, `${base}/${REVOCATIONS_CONFIGMAP}`, {
          method: 'PUT',
          timeoutMs,
          body: { ...current, data: { ...(current.data ?? {}), [REVOCATIONS_KEY]: text } },
        });
      }
      return { snapshot: snapshotOf(next), changed: true, created: !current, attempts: attempt };
    } catch (err) {
      if (err instanceof KubeError && err.status === 409) {
        if (attempt < maxAttempts) {
          await new Promise((r) => setTimeout(r, Math.round(50 * attempt * (0.5 + Math.random()))));
          continue;
        }
        throw new KubeRevocationError(
          'KUBE_REVOCATIONS_CONFLICT',
          `${where} changed under us ${attempt} times (409 Conflict); nothing was written by this run, try again`,
          { cause: err },
        );
      }
      throw explain(err, current ? 'update' : 'create', ns);
    }
  }
}

function explain(err: unknown, verb: 'get' | 'create' | 'update', ns: string): Error {
  if (err instanceof KubeRevocationError) return err;
  if (!(err instanceof KubeError)) return err as Error;
  const where = describeConfigMap(ns);
  if (err.status === 403) {
    return new KubeRevocationError(
      'KUBE_REVOCATIONS_FORBIDDEN',
      `forbidden to ${verb} ${where}: the kubeconfig's user needs get, create and update on configmaps "${REVOCATIONS_CONFIGMAP}" in namespace ${ns} (check: kubectl auth can-i ${verb} configmaps/${REVOCATIONS_CONFIGMAP} -n ${ns})`,
      { cause: err },
    );
  }
  if (err.status === 404 && verb === 'create') {
    return new KubeRevocationError(
      'KUBE_REVOCATIONS_NO_NAMESPACE',
      `cannot create ${where}: namespace "${ns}" does not exist (is Hypha installed? is --namespace right?)`,
      { cause: err },
    );
  }
  return new KubeRevocationError('KUBE_REVOCATIONS_API', `cannot ${verb} ${where}: ${err.message}`, {
    cause: err,
  });
}
