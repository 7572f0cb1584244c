// Writes route status (route-status.ts) to the API server as the config state changes.
//
//   state.onChange ──debounce──▶ pass: for each attached route whose spec or verdict changed since
//   the last write: GET route ─▶ computeOne(observed) ─▶ PATCH …/status (merge patch, guarded by the
//   GET's resourceVersion) when status.parents differs; routes that detached get our entries removed.
//
// Invariants:
// - One pass at a time; changes during a pass mark it dirty and run one more pass after it.
// - A merge patch replaces the whole `status.parents` array, so each PATCH carries the
//   resourceVersion it was computed from: a concurrent writer (another controller) turns it into a 409,
//   and the route is fetched and merged again, never overwritten blind.
// - Nothing is written when the live status already says the same (no write storms, no watch echo).
// - Bounded: per route and pass at most `maxAttempts` tries with exponential backoff on 409/429/5xx
//   and unreachable servers; a route that still fails is retried by a later pass.
import type { Logger } from '@hypha/shared';
import { createSilentLogger } from '@hypha/shared';
import type { ConfigState, GrpcRouteObject, HttpRouteObject, WaypointRef } from '@hypha/shared/config';
import { fetchKube, type KubeconfigOption, KubeError, loadKubeConfig } from '@hypha/shared/kube';
import {
  computeOne,
  DEFAULT_CONTROLLER_NAME,
  dropOwnParents,
  findAttachedRoutes,
  formatTime,
  type GatewayListener,
  jsonEqual,
  type ObservedRoute,
  type RouteKind,
  type RouteParentStatus,
  type StatusContext,
} from './route-status.js';

export interface RouteStatusReporterOptions {
  /**
   * Path, KubeConfig, or `{ inCluster: true }`. Default as createKubeSource: $KUBECONFIG, else
   * in-cluster, else ~/.kube/config.
   */
  kubeconfig?: KubeconfigOption | undefined;
  state: ConfigState;
  /** This waypoint's Gateway. */
  waypoint: WaypointRef;
  logger?: Logger;
  /** Wait this long after a change before writing, so a burst of changes costs one pass. Default 250. */
  debounceMs?: number;
  controllerName?: string;
  /** `gateway` for an ingress gateway (messages, allowedRoutes); default `waypoint`. */
  role?: 'waypoint' | 'gateway';
  /** Backoff between tries of one route. Default 200 ms doubling to 5 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Tries per route per pass. Default 5. */
  maxAttempts?: number;
}

export interface RouteStatusReporterStats {
  passes: number;
  patches: number;
  conflicts: number;
  failures: number;
}

export interface RouteStatusReporter {
  readonly stats: Readonly<RouteStatusReporterStats>;
  /** Resolves once no pass is scheduled or running (tests, graceful shutdown). */
  whenIdle(): Promise<void>;
  /** Stops listening and waits for a running pass to stop. Idempotent. */
  close(): Promise<void>;
}

const PLURAL: Record<RouteKind, string> = { HTTPRoute: 'httproutes', GRPCRoute: 'grpcroutes' };

interface LiveObject {
  metadata?: { generation?: number; resourceVersion?: string };
  status?: { parents?: RouteParentStatus[] };
  spec?: { listeners?: { name?: unknown; port?: unknown }[] };
}

/** `refused`: an answer retrying cannot change (403 RBAC, 422 invalid); tried again only when the
 * route or its verdict changes, so a missing RoleBinding costs one warning, not a retry loop. */
type Outcome = 'unchanged' | 'patched' | 'gone' | 'refused';

export function createRouteStatusReporter(options: RouteStatusReporterOptions): RouteStatusReporter {
  return new Reporter(options);
}

class Reporter implements RouteStatusReporter {
  readonly stats: RouteStatusReporterStats = { passes: 0, patches: 0, conflicts: 0, failures: 0 };
  readonly #kc;
  readonly #state: ConfigState;
  readonly #waypoint: WaypointRef;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #controller: string;
  readonly #role: 'waypoint' | 'gateway';
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #maxAttempts: number;
  readonly #unsubscribe: () => void;
  readonly #abort = new AbortController();
  /** Route key → signature (spec + our verdicts without times) last confirmed on the server. */
  readonly #written = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #dirty = false;
  #idle: (() => void)[] = [];

  constructor(o: RouteStatusReporterOptions) {
    this.#kc = loadKubeConfig(o.kubeconfig);
    this.#state = o.state;
    this.#waypoint = { namespace: o.waypoint.namespace, name: o.waypoint.name };
    this.#log = (o.logger ?? createSilentLogger()).child({ component: 'route-status' });
    this.#debounceMs = o.debounceMs ?? 250;
    this.#controller = o.controllerName ?? DEFAULT_CONTROLLER_NAME;
    this.#role = o.role ?? 'waypoint';
    this.#initialMs = o.backoff?.initialMs ?? 200;
    this.#maxMs = o.backoff?.maxMs ?? 5000;
    this.#maxAttempts = Math.max(1, o.maxAttempts ?? 5);
    this.#unsubscribe = this.#state.onChange(() => this.#schedule(this.#debounceMs));
    // The state may already be synced: report what it says now.
    this.#schedule(0);
  }

  whenIdle(): Promise<void> {
    if (this.#timer === undefined && this.#running === undefined) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async close(): Promise<void> {
    if (this.#abort.signal.aborted) return;
    this.#abort.abort();
    this.#unsubscribe();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
    this.#settle();
  }

  #schedule(delayMs: number): void {
    if (this.#abort.signal.aborted) return;
    this.#dirty = true;
    if (this.#timer !== undefined || this.#running !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.#loop().finally(() => {
        this.#running = undefined;
        this.#settle();
      });
    }, delayMs);
  }

  #settle(): void {
    if (this.#timer !== undefined || this.#running !== undefined) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }

  async #loop(): Promise<void> {
    let retryLater = false;
    while (this.#dirty && !this.#abort.signal.aborted) {
      this.#dirty = false;
      retryLater = !(await this.#pass());
    }
    if (retryLater && !this.#abort.signal.aborted) {
      // Some route could not be written: try again later even without a state change.
      this.#running = undefined;
      this.#schedule(this.#maxMs);
    }
  }

  /** One pass over the attached routes; false when some route could not be written. */
  async #pass(): Promise<boolean> {
    this.stats.passes++;
    const ctxBase = {
      state: this.#state,
      waypoint: this.#waypoint,
      controllerName: this.#controller,
      role: this.#role,
    };
    const routes = findAttachedRoutes(this.#state, this.#waypoint);
    const todo: { route: HttpRouteObject | GrpcRouteObject; key: string; sig: string }[] = [];
    for (const route of routes) {
      const key = routeKey(route.kind, route.namespace, route.name);
      // Verdicts without observed state and times: a stable fingerprint of what we would write.
      const draft = computeOne({ ...ctxBase, listeners: undefined, now: '' }, route, undefined);
      const sig = JSON.stringify([route.spec, draft.own.map((p) => [p.parentRef, p.conditions])]);
      if (this.#written.get(key) !== sig) todo.push({ route, key, sig });
    }
    const attached = new Set(routes.map((r) => routeKey(r.kind, r.namespace, r.name)));
    const detached = [...this.#written.keys()].filter((k) => !attached.has(k));
    if (todo.length === 0 && detached.length === 0) return true;

    let listeners: GatewayListener[] | undefined;
    try {
      listeners = await this.#fetchListeners();
    } catch (err) {
      this.#log.warn(
        { err: String(err) },
        'could not read the waypoint Gateway; listener names and ports not checked',
      );
    }
    let ok = true;
    for (const { route, key, sig } of todo) {
      if (this.#abort.signal.aborted) return true;
      const outcome = await this.#sync(route.kind, route.namespace, route.name, (observed) => {
        const ctx: StatusContext = { ...ctxBase, listeners, now: formatTime(new Date()) };
        return computeOne(ctx, route, observed).parents;
      });
      if (outcome === undefined) ok = false;
      else if (outcome === 'gone') this.#written.delete(key);
      else this.#written.set(key, sig);
    }
    for (const key of detached) {
      if (this.#abort.signal.aborted) return true;
      const [kind, namespace, name] = key.split('/') as [RouteKind, string, string];
      const outcome = await this.#sync(kind, namespace, name, (observed) =>
        dropOwnParents(this.#state, this.#waypoint, this.#controller, namespace, observed.parents ?? []),
      );
      if (outcome === undefined) ok = false;
      else this.#written.delete(key);
    }
    return ok;
  }

  async #fetchListeners(): Promise<GatewayListener[]> {
    const { namespace, name } = this.#waypoint;
    const gw = (await fetchKube(
      this.#kc,
      `/apis/gateway.networking.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/gateways/${encodeURIComponent(name)}`,
    )) as LiveObject;
    return (gw.spec?.listeners ?? []).flatMap((l) =>
      typeof l.name === 'string' && typeof l.port === 'number' ? [{ name: l.name, port: l.port }] : [],
    );
  }

  /** GET, compute, PATCH if different; retried. Undefined: gave up for this pass. */
  async #sync(
    kind: RouteKind,
    namespace: string,
    name: string,
    desired: (observed: ObservedRoute) => RouteParentStatus[],
  ): Promise<Outcome | undefined> {
    const path = `/apis/gateway.networking.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/${PLURAL[kind]}/${encodeURIComponent(name)}`;
    let delay = this.#initialMs;
    for (let attempt = 1; attempt <= this.#maxAttempts; attempt++) {
      try {
        const live = (await fetchKube(this.#kc, path)) as LiveObject;
        const observed: ObservedRoute = {
          generation: live.metadata?.generation,
          parents: Array.isArray(live.status?.parents) ? live.status.parents : [],
        };
        const parents = desired(observed);
        if (jsonEqual(observed.parents, parents)) return 'unchanged';
        await fetchKube(this.#kc, `${path}/status`, {
          method: 'PATCH',
          contentType: 'application/merge-patch+json',
          body: { metadata: { resourceVersion: live.metadata?.resourceVersion }, status: { parents } },
        });
        this.stats.patches++;
        this.#log.debug({ route: `${kind} ${namespace}/${name}` }, 'route status written');
        return 'patched';
      } catch (err) {
        const status = err instanceof KubeError ? err.status : undefined;
        if (status === 404) return 'gone';
        const retriable =
          status === 409 ||
          status === 429 ||
          (status !== undefined && status >= 500) ||
          (err instanceof KubeError && err.code === 'API_UNREACHABLE');
        if (status === 409) this.stats.conflicts++;
        if (!retriable || attempt === this.#maxAttempts) {
          this.stats.failures++;
          const outcome = retriable ? undefined : 'refused';
          this.#log.warn(
            { route: `${kind} ${namespace}/${name}`, err: (err as Error).message, attempts: attempt },
            status === 403
              ? 'cannot write route status: grant the waypoint ServiceAccount get and patch on httproutes/status and grpcroutes/status'
              : retriable
                ? 'cannot write route status; will retry on a later pass'
                : 'route status refused by the API server; not retried until the route changes',
          );
          return outcome;
        }
        // Conflicts clear as soon as we re-read; server errors need room.
        await sleep(status === 409 ? Math.min(delay, 50) : delay, this.#abort.signal);
        if (this.#abort.signal.aborted) return undefined;
        delay = Math.min(delay * 2, this.#maxMs);
      }
    }
    return undefined;
  }
}

function routeKey(kind: RouteKind, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
