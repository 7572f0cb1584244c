// The stand-in API server's storage: objects by type, one monotonic resourceVersion for the whole
// cluster (as etcd's revision is), and a bounded history of change events from which watches
// resume.
//
// Invariants:
// - every mutation bumps the global resourceVersion by one and appends exactly one event, whose
//   rv equals the object's new metadata.resourceVersion (DELETED carries the deletion's rv);
// - history holds every event with rv > compactedRv; a watch from N is served iff N >= compactedRv,
//   otherwise it gets 410 Expired, exactly when a real server would have lost events the client needs;
// - listeners are called synchronously after each mutation, so a watch that replays history and
//   then subscribes within one tick cannot miss or duplicate an event.
import { randomBytes, randomUUID } from 'node:crypto';
import { apiVersionOf, DEFAULT_RESOURCES, type ResourceType, resourceKey } from './resources.js';

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  [key: string]: unknown;
}

export interface StatusCause {
  field: string;
  message: string;
  reason?: string;
}

/** A failure the real API server would answer with this Status. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }

  toStatus(): Record<string, unknown> {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  rv: number;
  type: EventType;
  resource: ResourceType;
  object: KubeObject;
  /** The object before the change (MODIFIED/DELETED), so selector watches can turn edges into ADDED/DELETED. */
  previous?: KubeObject;
}

export type StoreListener = (event: StoreEvent) => void;

/** Checks an object before it is stored; returns causes to refuse it with 422 Invalid. */
export type ObjectValidator = (resource: ResourceType, object: KubeObject) => StatusCause[] | undefined;

export interface ObjectStoreOptions {
  resources?: readonly ResourceType[];
  /** Events kept for resuming watches; older ones are compacted away. Default 1000. */
  historyLimit?: number;
  /** Refuse namespaced objects in namespaces that do not exist (the NamespaceLifecycle admission). Default true. */
  requireNamespaces?: boolean;
  validate?: ObjectValidator;
  /** First resourceVersion handed out. */
  initialResourceVersion?: number;
}

export interface WriteOptions {
  /** Keep `status` from the input on create (seeding from a test); HTTP create drops it like a real server. */
  keepStatus?: boolean;
  subresource?: 'status';
}

function qualifiedKind(resource: ResourceType): string {
  return resource.group === '' ? resource.plural : `${resource.plural}.${resource.group}`;
}

function notFound(resource: ResourceType, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${qualifiedKind(resource)} "${name}" not found`, {
    name,
    group: resource.group,
    kind: resource.plural,
  });
}

function specOf(object: KubeObject): string {
  const { metadata: _m, status: _s, ...rest } = object;
  return JSON.stringify(rest);
}

export class ObjectStore {
  readonly resources: readonly ResourceType[];
  #objects = new Map<string, Map<string, KubeObject>>();
  #history: StoreEvent[] = [];
  #historyLimit: number;
  #rv: number;
  #compactedRv: number;
  #listeners = new Set<StoreListener>();
  #requireNamespaces: boolean;
  #validate: ObjectValidator | undefined;

  constructor(options: ObjectStoreOptions = {}) {
    this.resources = options.resources ?? DEFAULT_RESOURCES;
    this.#historyLimit = options.historyLimit ?? 1000;
    this.#rv = options.initialResourceVersion ?? 1000;
    this.#compactedRv = this.#rv;
    this.#requireNamespaces = options.requireNamespaces ?? true;
    this.#validate = options.validate;
  }

  get resourceVersion(): number {
    return this.#rv;
  }

  get compactedResourceVersion(): number {
    return this.#compactedRv;
  }

  findType(group: string, version: string, plural: string): ResourceType | undefined {
    return this.resources.find((r) => r.group === group && r.version === version && r.plural === plural);
  }

  findTypeByKind(apiVersion: string, kind: string): ResourceType | undefined {
    return this.resources.find((r) => apiVersionOf(r) === apiVersion && r.kind === kind);
  }

  /** Deep copies, so callers can never mutate stored state. */
  list(resource: ResourceType, namespace?: string): KubeObject[] {
    const bucket = this.#objects.get(resourceKey(resource));
    if (!bucket) return [];
    const out: KubeObject[] = [];
    for (const obj of bucket.values()) {
      if (namespace === undefined || obj.metadata.namespace === namespace) out.push(structuredClone(obj));
    }
    return out;
  }

  get(resource: ResourceType, namespace: string | undefined, name: string): KubeObject {
    const obj = this.#bucket(resource).get(this.#key(resource, namespace, name));
    if (!obj) throw notFound(resource, name);
    return structuredClone(obj);
  }

  tryGet(resource: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    const obj = this.#bucket(resource).get(this.#key(resource, namespace, name));
    return obj ? structuredClone(obj) : undefined;
  }

  create(
    resource: ResourceType,
    namespace: string | undefined,
    input: KubeObject,
    options: WriteOptions = {},
  ): KubeObject {
    const obj = structuredClone(input);
    obj.metadata ??= {};
    const meta = obj.metadata;
    if (resource.namespaced) {
      const ns = namespace ?? meta.namespace;
      if (!ns) throw new ApiError(400, 'BadRequest', 'the namespace of the object must be set');
      if (meta.namespace && meta.namespace !== ns) {
        throw new ApiError(
          400,
          'BadRequest',
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
      meta.namespace = ns;
      if (this.#requireNamespaces && !this.#namespaceExists(ns)) {
        throw new ApiError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });
      }
    } else delete meta.namespace;
    if (!meta.name && meta.generateName)
      meta.name = meta.generateName + randomBytes(3).toString('hex').slice(0, 5);
    if (!meta.name) {
      throw this.#invalid(resource, '', [
        { field: 'metadata.name', message: 'Required value: name or generateName is required' },
      ]);
    }
    const key = this.#key(resource, meta.namespace, meta.name);
    if (this.#bucket(resource).has(key)) {
      throw new ApiError(409, 'AlreadyExists', `${qualifiedKind(resource)} "${meta.name}" already exists`, {
        name: meta.name,
        group: resource.group,
        kind: resource.plural,
      });
    }
    obj.apiVersion = apiVersionOf(resource);
    obj.kind = resource.kind;
    if (resource.status && !options.keepStatus) delete obj.status;
    this.#defaults(resource, obj);
    this.#check(resource, obj);
    meta.uid = randomUUID();
    meta.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    meta.generation = 1;
    delete meta.deletionTimestamp;
    delete meta.managedFields;
    return this.#commit('ADDED', resource, key, obj);
  }

  /**
   * PUT semantics: a resourceVersion in the input must match (409 otherwise). On the main resource
   * the stored status is kept; on `/status` only the status is taken.
   */
  update(
    resource: ResourceType,
    namespace: string | undefined,
    name: string,
    input: KubeObject,
    options: WriteOptions = {},
  ): KubeObject {
    const key = this.#key(resource, namespace, name);
    const current = this.#bucket(resource).get(key);
    if (!current) throw notFound(resource, name);
    const incoming = structuredClone(input);
    incoming.metadata ??= {};
    if (incoming.metadata.name && incoming.metadata.name !== name) {
      throw new ApiError(400, 'BadRequest', 'the name of the object does not match the name on the URL');
    }
    const wanted = incoming.metadata.resourceVersion;
    if (wanted && wanted !== current.metadata.resourceVersion) {
      throw new ApiError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${qualifiedKind(resource)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, group: resource.group, kind: resource.plural },
      );
    }
    let next: KubeObject;
    if (options.subresource === 'status') {
      next = structuredClone(current);
      if (incoming.status === undefined) delete next.status;
      else next.status = incoming.status;
    } else {
      next = incoming;
      next.metadata = {
        ...incoming.metadata,
        name,
        uid: current.metadata.uid,
        creationTimestamp: current.metadata.creationTimestamp,
        generation: current.metadata.generation,
      };
      if (resource.namespaced) next.metadata.namespace = current.metadata.namespace;
      if (current.metadata.deletionTimestamp)
        next.metadata.deletionTimestamp = current.metadata.deletionTimestamp;
      else delete next.metadata.deletionTimestamp;
      delete next.metadata.managedFields;
      if (resource.status) {
        if (current.status === undefined) delete next.status;
        else next.status = structuredClone(current.status);
      }
      next.apiVersion = apiVersionOf(resource);
      next.kind = resource.kind;
      if (specOf(next) !== specOf(current)) next.metadata.generation = (current.metadata.generation ?? 1) + 1;
    }
    this.#defaults(resource, next);
    this.#check(resource, next);
    if (
      JSON.stringify({ ...next, metadata: { ...next.metadata, resourceVersion: undefined } }) ===
      JSON.stringify({ ...current, metadata: { ...current.metadata, resourceVersion: undefined } })
    ) {
      // A no-op write does not bump the resourceVersion or notify watchers (as a real server).
      return structuredClone(current);
    }
    if (next.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0) {
      this.#bucket(resource).set(key, next);
      return this.#remove(resource, key);
    }
    return this.#commit('MODIFIED', resource, key, next, current);
  }

  /** Deletes now, or marks for deletion while finalizers remain. Deleting a namespace deletes its contents. */
  delete(resource: ResourceType, namespace: string | undefined, name: string): KubeObject {
    const key = this.#key(resource, namespace, name);
    const current = this.#bucket(resource).get(key);
    if (!current) throw notFound(resource, name);
    if ((current.metadata.finalizers ?? []).length > 0) {
      if (current.metadata.deletionTimestamp) return structuredClone(current);
      const marked = structuredClone(current);
      marked.metadata.deletionTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      return this.#commit('MODIFIED', resource, key, marked, current);
    }
    if (resource.kind === 'Namespace' && resource.group === '') {
      for (const other of this.resources) {
        if (!other.namespaced) continue;
        for (const obj of this.list(other, name)) {
          const otherKey = this.#key(other, name, obj.metadata.name ?? '');
          this.#remove(other, otherKey);
        }
      }
    }
    return this.#remove(resource, key);
  }

  /** Forget all history up to now: every watch resuming from an older version gets 410 Gone. */
  compact(): void {
    this.#history = [];
    this.#compactedRv = this.#rv;
  }

  /** Events of one type after `rv`, or 'expired' when some were compacted away. */
  eventsSince(resource: ResourceType, rv: number): StoreEvent[] | 'expired' {
    if (rv < this.#compactedRv) return 'expired';
    const key = resourceKey(resource);
    return this.#history.filter((e) => e.rv > rv && resourceKey(e.resource) === key);
  }

  subscribe(listener: StoreListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #remove(resource: ResourceType, key: string): KubeObject {
    const bucket = this.#bucket(resource);
    const current = bucket.get(key);
    if (!current) throw notFound(resource, key);
    bucket.delete(key);
    const gone = structuredClone(current);
    this.#rv += 1;
    gone.metadata.resourceVersion = String(this.#rv);
    this.#record({ rv: this.#rv, type: 'DELETED', resource, object: gone, previous: current });
    return structuredClone(gone);
  }

  #commit(
    type: EventType,
    resource: ResourceType,
    key: string,
    obj: KubeObject,
    previous?: KubeObject,
  ): KubeObject {
    this.#rv += 1;
    obj.metadata.resourceVersion = String(this.#rv);
    this.#bucket(resource).set(key, obj);
    this.#record({
      rv: this.#rv,
      type,
      resource,
      object: structuredClone(obj),
      ...(previous ? { previous } : {}),
    });
    return structuredClone(obj);
  }

  #record(event: StoreEvent): void {
    this.#history.push(event);
    while (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.shift();
      if (dropped) this.#compactedRv = dropped.rv;
    }
    for (const listener of [...this.#listeners]) listener(event);
  }

  #defaults(resource: ResourceType, obj: KubeObject): void {
    if (resource.group !== '') return;
    if (resource.kind === 'Namespace') {
      const name = obj.metadata.name ?? '';
      obj.metadata.labels = { ...obj.metadata.labels, 'kubernetes.io/metadata.name': name };
      obj.spec = { finalizers: ['kubernetes'], ...(obj.spec as object | undefined) };
      obj.status ??= { phase: 'Active' };
    } else if (resource.kind === 'Pod') {
      obj.status ??= { phase: 'Pending' };
    }
  }

  #check(resource: ResourceType, obj: KubeObject): void {
    const causes = this.#validate?.(resource, obj);
    if (causes && causes.length > 0) throw this.#invalid(resource, obj.metadata.name ?? '', causes);
  }

  #invalid(resource: ResourceType, name: string, causes: StatusCause[]): ApiError {
    const summary = causes.map((c) => `${c.field}: ${c.message}`).join(', ');
    const what = resource.group === '' ? resource.kind : `${resource.kind}.${resource.group}`;
    return new ApiError(422, 'Invalid', `${what} "${name}" is invalid: ${summary}`, {
      name,
      group: resource.group,
      kind: resource.kind,
      causes: causes.map((c) => ({
        reason: c.reason ?? 'FieldValueInvalid',
        message: c.message,
        field: c.field,
      })),
    });
  }

  #namespaceExists(name: string): boolean {
    const nsType = this.resources.find((r) => r.group === '' && r.kind === 'Namespace');
    return nsType ? this.#bucket(nsType).has(this.#key(nsType, undefined, name)) : true;
  }

  #bucket(resource: ResourceType): Map<string, KubeObject> {
    const key = resourceKey(resource);
    let bucket = this.#objects.get(key);
    if (!bucket) {
      bucket = new Map();
      this.#objects.set(key, bucket);
    }
    return bucket;
  }

  #key(resource: ResourceType, namespace: string | undefined, name: string): string {
    return resource.namespaced ? `${namespace ?? ''}/${name}` : name;
  }
}
