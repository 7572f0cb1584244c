// A stand-in Kubernetes API server for tests: real HTTPS, the real REST paths, Status errors,
// list + watch with resourceVersions, bookmarks, 410 Expired, TokenReview and TokenRequest.
// `@kubernetes/client-node` (and kubectl, for the verbs implemented) talk to it unchanged.
//
//   client ──HTTPS──▶ route(path) ──▶ ObjectStore (objects, global rv, bounded history)
//                        │                    │ synchronous events
//                        └─ watch ◀───────────┘ (replay history from rv, then live; bookmarks)
//
// Test hooks: put/remove objects directly, compact history (next resume → 410), drop every watch
// mid-stream, hold new watches until released, inject failures by method/path, and a request log.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jsonPatch, mergePatch, PatchError, strategicMergePatch } from './patch.js';
import {
  createPortForwardRelay,
  PORT_FORWARD_PROTOCOLS,
  type PortForwardTarget,
  parsePorts,
} from './portforward.js';
import {
  ADMIN_USER,
  type AuthorizationDecision,
  authorize,
  forbiddenStatus,
  nameFromFieldSelector,
  type RbacPolicySource,
  type ResourceAttributes,
  serviceAccountUser,
  storePolicySource,
  type UserInfo,
  type Verb,
} from './rbac.js';
import { apiVersionOf, type ResourceType, shortNamesOf, verbsOf } from './resources.js';
import {
  type FieldMatcher,
  type LabelMatcher,
  parseFieldSelector,
  parseLabelSelector,
  SelectorError,
} from './selectors.js';
import { ApiError, type KubeObject, ObjectStore, type ObjectStoreOptions, type StoreEvent } from './store.js';
import { createServingCertificate } from './tls.js';

export const DEFAULT_API_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

export interface KubeApiServerOptions extends ObjectStoreOptions {
  /** Serve HTTPS with a self-signed certificate (default) or plain HTTP. */
  tls?: boolean;
  /** How often watches that asked for bookmarks get one. Real servers: about a minute. Default 1000 ms. */
  bookmarkIntervalMs?: number;
  /** Close every watch after this long, as the real server's request timeout does. Default: never. */
  watchTimeoutMs?: number;
  /** Audiences of the API server itself (TokenReview without spec.audiences uses these). */
  apiAudiences?: string[];
  /** Check that a token's service account (and bound pod) still exist, as real TokenReview does. Default true. */
  checkTokenBindings?: boolean;
  /**
   * Authorize every resource request with RBAC, against the Roles, ClusterRoles and bindings stored
   * in this server (see rbac.ts). The admin token (system:masters) is always allowed. Default false:
   * any authenticated caller may do anything.
   */
  rbac?: boolean;
}

export interface ServiceAccountTokenSpec {
  namespace: string;
  serviceAccount: string;
  audiences: string[];
  /** Bind the token to a pod (projected tokens are): TokenReview then reports its name, uid and node. */
  pod?: string;
  /** The node claim; defaults to the bound pod's spec.nodeName at review time. */
  node?: string;
  expiresInSeconds?: number;
}

export interface FailureInjection {
  method?: string;
  /** Substring or pattern matched against the request path (without query). */
  path?: string | RegExp;
  /** Only watch requests (true), only non-watch (false), or both (unset). */
  watch?: boolean;
  status: number;
  message?: string;
  /** How many matching requests fail; default 1. */
  times?: number;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
  status: number;
  /** Who the bearer token authenticated as (unset for anonymous or refused tokens). */
  user?: string;
  /** The RBAC decision, when the server runs with `rbac: true` and the request named a resource. */
  authorization?: AuthorizationDecision;
}

export interface KubeApiServer {
  readonly url: string;
  readonly kubeconfigPath: string;
  readonly caPem: string | undefined;
  readonly adminToken: string;
  readonly store: ObjectStore;
  readonly requests: RequestRecord[];
  readonly activeWatches: number;
  /** Create or replace an object as a test fixture (status kept). apiVersion and kind pick the type. */
  put(object: KubeObject): KubeObject;
  /** Delete an object as a test fixture; returns false when it did not exist. */
  remove(apiVersion: string, kind: string, name: string, namespace?: string): boolean;
  find(apiVersion: string, kind: string, name: string, namespace?: string): KubeObject | undefined;
  /** Issue a service-account token (a JWT-shaped string) that TokenReview and API auth accept. */
  issueToken(spec: ServiceAccountTokenSpec): string;
  revokeToken(token: string): void;
  /**
   * A kubeconfig file whose user is a service account (an API-audience token from issueToken), for
   * running a component as its own ServiceAccount: with `rbac: true` it gets exactly what RBAC grants.
   */
  writeServiceAccountKubeconfig(spec: Omit<ServiceAccountTokenSpec, 'audiences'>): Promise<string>;
  compactHistory(): void;
  /** Destroy every open watch connection abruptly, as a load balancer or server crash would. */
  dropWatches(): void;
  /** Close every open watch cleanly (the server's request timeout). */
  endWatches(): void;
  /** Park new watch requests until the returned function is called. */
  holdWatches(): () => void;
  injectFailure(failure: FailureInjection): void;
  /** Resolves once `count` watches are open (bounded by timeoutMs). */
  waitForWatches(count: number, timeoutMs?: number): Promise<void>;
  /**
   * Where port `port` "inside" pod namespace/pod leads for the portforward subresource (the test
   * cluster's pods are network namespaces, so tests name a host:port or unix socket that reaches
   * it); undefined makes it refuse, as a port nothing listens on. Unset ports refuse too.
   */
  forwardPort(namespace: string, pod: string, port: number, target: PortForwardTarget | undefined): void;
  /** Port-forward WebSockets open now. */
  readonly openPortForwards: number;
  close(): Promise<void>;
}

interface TokenEntry {
  spec: ServiceAccountTokenSpec;
  expiresAt: number;
  podUid?: string;
  jti: string;
}

interface OpenWatch {
  res: ServerResponse;
  end(): void;
}

const MAX_BODY = 3 * 1024 * 1024;
const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'Conflict',
  410: 'Expired',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

function base64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-cache, private',
    ...headers,
  });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new ApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, 'BadRequest', `error decoding request body: ${(err as Error).message}`);
  }
}

/** Built-in list items carry no apiVersion/kind in real JSON; custom resources keep them. */
function presentListItem(resource: ResourceType, obj: KubeObject): KubeObject {
  if (resource.custom) return obj;
  const { apiVersion: _a, kind: _k, ...rest } = obj;
  return rest as KubeObject;
}

interface ParsedPath {
  group: string;
  version: string;
  /** undefined → the group/version discovery document */
  plural?: string;
  namespace?: string;
  name?: string;
  subresource?: string;
}

function parsePath(path: string): ParsedPath | undefined {
  const segs = path
    .split('/')
    .filter((s) => s.length > 0)
    .map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (segs[0] === 'api' && segs[1]) {
    group = '';
    version = segs[1];
    rest = segs.slice(2);
  } else if (segs[0] === 'apis' && segs[1] && segs[2]) {
    group = segs[1];
    version = segs[2];
    rest = segs.slice(3);
  } else return undefined;
  if (rest.length === 0) return { group, version };
  // /namespaces/{ns}/{plural}[/{name}[/{sub}]] vs /namespaces[/{name}[/{sub}]]
  if (
    rest[0] === 'namespaces' &&
    rest.length >= 3 &&
    !(rest.length === 3 && ['status', 'finalize'].includes(rest[2] ?? ''))
  ) {
    return { group, version, namespace: rest[1], plural: rest[2], name: rest[3], subresource: rest[4] };
  }
  return { group, version, plural: rest[0], name: rest[1], subresource: rest[2] };
}

export async function createKubeApiServer(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
  const store = new ObjectStore(options);
  const useTls = options.tls ?? true;
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
  const apiAudiences = options.apiAudiences ?? [DEFAULT_API_AUDIENCE];
  const checkBindings = options.checkTokenBindings ?? true;
  const adminToken = `admin-${randomBytes(12).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), 'hypha-kube-api-'));
  const tokens = new Map<string, TokenEntry>();
  const watches = new Set<OpenWatch>();
  const held: Array<() => void> = [];
  let holding = false;
  const failures: Array<FailureInjection & { left: number }> = [];
  const requests: RequestRecord[] = [];
  const watchWaiters = new Set<() => void>();
  let closing = false;
  const portTargets = new Map<string, PortForwardTarget>();
  const portForwards = createPortForwardRelay();

  const cert = useTls ? await createServingCertificate(dir) : undefined;

  function typeFor(group: string, version: string, plural: string): ResourceType {
    const type = store.findType(group, version, plural);
    if (!type) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    return type;
  }

  function typeForObject(obj: KubeObject): ResourceType {
    const type = obj.apiVersion && obj.kind ? store.findTypeByKind(obj.apiVersion, obj.kind) : undefined;
    if (!type) throw new Error(`the stand-in API server does not serve ${obj.apiVersion}/${obj.kind}`);
    return type;
  }

  function authenticate(req: IncomingMessage): UserInfo | undefined {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (!match) return undefined;
    const token = match[1]?.trim() ?? '';
    if (token === adminToken) return ADMIN_USER;
    const entry = tokens.get(token);
    // Like the real server: a token minted for another audience (e.g. hypha-ca) is not an API credential.
    if (
      entry === undefined ||
      entry.expiresAt <= Date.now() ||
      !entry.spec.audiences.some((a) => apiAudiences.includes(a))
    )
      return undefined;
    return serviceAccountUser(entry.spec.namespace, entry.spec.serviceAccount);
  }

  const rbacSource: RbacPolicySource = storePolicySource(store);

  /** The request as RBAC sees it (the real server's RequestInfo); undefined for discovery paths. */
  function attributesOf(
    method: string,
    parsed: ParsedPath,
    query: URLSearchParams,
    isWatch: boolean,
  ): ResourceAttributes | undefined {
    if (parsed.plural === undefined) return undefined;
    let verb: Verb;
    let name = parsed.name;
    if (name === undefined) {
      if (method === 'GET' || method === 'HEAD') {
        verb = isWatch ? 'watch' : 'list';
        name = nameFromFieldSelector(query.get('fieldSelector'));
      } else if (method === 'POST') verb = 'create';
      else if (method === 'DELETE') verb = 'deletecollection';
      else return undefined;
    } else {
      const verbs: Record<string, Verb> = {
        GET: isWatch ? 'watch' : 'get',
        HEAD: 'get',
        PUT: 'update',
        PATCH: 'patch',
        DELETE: 'delete',
        POST: 'create',
      };
      const v = verbs[method];
      if (!v) return undefined;
      verb = v;
    }
    // A Namespace object is "in" itself: a RoleBinding in namespace x may grant `get namespaces/x`.
    const namespace =
      parsed.namespace ?? (parsed.group === '' && parsed.plural === 'namespaces' ? parsed.name : undefined);
    return {
      verb,
      group: parsed.group,
      resource: parsed.plural,
      ...(parsed.subresource !== undefined ? { subresource: parsed.subresource } : {}),
      ...(namespace !== undefined ? { namespace } : {}),
      ...(name !== undefined ? { name } : {}),
    };
  }

  function matchFailure(method: string, path: string, watch: boolean): FailureInjection | undefined {
    for (const f of failures) {
      if (f.left <= 0) continue;
      if (f.method && f.method.toUpperCase() !== method) continue;
      if (f.watch !== undefined && f.watch !== watch) continue;
      if (f.path !== undefined && !(typeof f.path === 'string' ? path.includes(f.path) : f.path.test(path)))
        continue;
      f.left -= 1;
      return f;
    }
    return undefined;
  }

  function discovery(parsed: ParsedPath): unknown {
    const types = store.resources.filter((r) => r.group === parsed.group && r.version === parsed.version);
    if (types.length === 0)
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const resources: unknown[] = [];
    for (const t of types) {
      resources.push({
        name: t.plural,
        singularName: t.kind.toLowerCase(),
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: verbsOf(t),
        ...(shortNamesOf(t).length > 0 ? { shortNames: shortNamesOf(t) } : {}),
      });
      if (t.status) {
        resources.push({
          name: `${t.plural}/status`,
          singularName: '',
          namespaced: t.namespaced,
          kind: t.kind,
          verbs: ['get', 'patch', 'update'],
        });
      }
      if (t.kind === 'ServiceAccount') {
        resources.push({
          name: 'serviceaccounts/token',
          singularName: '',
          namespaced: true,
          group: 'authentication.k8s.io',
          version: 'v1',
          kind: 'TokenRequest',
          verbs: ['create'],
        });
      }
    }
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: apiVersionOf(types[0] as ResourceType),
      resources,
    };
  }

  function groupList(): unknown {
    const groups = new Map<string, Set<string>>();
    for (const r of store.resources) {
      if (r.group === '') continue;
      let versions = groups.get(r.group);
      if (!versions) {
        versions = new Set();
        groups.set(r.group, versions);
      }
      versions.add(r.version);
    }
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [...groups].map(([name, versions]) => {
        const list = [...versions].map((v) => ({ groupVersion: `${name}/${v}`, version: v }));
        return { name, versions: list, preferredVersion: list[0] };
      }),
    };
  }

  function issueToken(spec: ServiceAccountTokenSpec): string {
    const now = Math.floor(Date.now() / 1000);
    const exp = now + (spec.expiresInSeconds ?? 3600);
    const jti = randomUUID();
    const sa = store.findTypeByKind('v1', 'ServiceAccount');
    const saUid = sa ? store.tryGet(sa, spec.namespace, spec.serviceAccount)?.metadata.uid : undefined;
    const podType = store.findTypeByKind('v1', 'Pod');
    const pod = spec.pod && podType ? store.tryGet(podType, spec.namespace, spec.pod) : undefined;
    const nodeClaim = spec.node ?? (pod?.spec as { nodeName?: string } | undefined)?.nodeName;
    const claims: Record<string, unknown> = {
      aud: spec.audiences,
      exp,
      iat: now,
      nbf: now,
      iss: DEFAULT_API_AUDIENCE,
      jti,
      sub: `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`,
      'kubernetes.io': {
        namespace: spec.namespace,
        serviceaccount: { name: spec.serviceAccount, uid: saUid ?? '' },
        ...(spec.pod ? { pod: { name: spec.pod, uid: pod?.metadata.uid ?? '' } } : {}),
        ...(nodeClaim ? { node: { name: nodeClaim, uid: '' } } : {}),
      },
    };
    const token = `${base64url(JSON.stringify({ alg: 'ES256', kid: 'hypha-test' }))}.${base64url(JSON.stringify(claims))}.${base64url(randomBytes(48))}`;
    const entry: TokenEntry = { spec, expiresAt: exp * 1000, jti };
    if (pod?.metadata.uid) entry.podUid = pod.metadata.uid;
    tokens.set(token, entry);
    return token;
  }

  function reviewToken(body: KubeObject): KubeObject {
    const spec = (body.spec ?? {}) as { token?: string; audiences?: string[] };
    const wanted = spec.audiences && spec.audiences.length > 0 ? spec.audiences : apiAudiences;
    const refuse = (error: string): KubeObject => ({
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { creationTimestamp: null as unknown as string },
      spec: structuredClone(body.spec ?? {}),
      status: { user: {}, error },
    });
    const entry = spec.token ? tokens.get(spec.token) : undefined;
    if (!entry) return refuse('[invalid bearer token, square/go-jose: error in cryptographic primitive]');
    if (entry.expiresAt <= Date.now())
      return refuse('[invalid bearer token, service account token has expired]');
    const audiences = entry.spec.audiences.filter((a) => wanted.includes(a));
    if (audiences.length === 0) {
      return refuse(
        `[invalid bearer token, token audiences ${JSON.stringify(entry.spec.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]`,
      );
    }
    const { namespace, serviceAccount } = entry.spec;
    const saType = store.findTypeByKind('v1', 'ServiceAccount');
    const sa = saType ? store.tryGet(saType, namespace, serviceAccount) : undefined;
    if (checkBindings && !sa) {
      return refuse(`[invalid bearer token, serviceaccounts "${serviceAccount}" not found]`);
    }
    const extra: Record<string, string[]> = {
      'authentication.kubernetes.io/credential-id': [`JTI=${entry.jti}`],
    };
    let nodeName = entry.spec.node;
    if (entry.spec.pod) {
      const podType = store.findTypeByKind('v1', 'Pod');
      const pod = podType ? store.tryGet(podType, namespace, entry.spec.pod) : undefined;
      if (checkBindings && (!pod || (entry.podUid && pod.metadata.uid !== entry.podUid))) {
        return refuse(`[invalid bearer token, pods "${entry.spec.pod}" not found]`);
      }
      extra['authentication.kubernetes.io/pod-name'] = [entry.spec.pod];
      const podUid = pod?.metadata.uid ?? entry.podUid;
      if (podUid) extra['authentication.kubernetes.io/pod-uid'] = [podUid];
      nodeName ??= (pod?.spec as { nodeName?: string } | undefined)?.nodeName;
    }
    if (nodeName) {
      extra['authentication.kubernetes.io/node-name'] = [nodeName];
      const nodeType = store.findTypeByKind('v1', 'Node');
      const node = nodeType ? store.tryGet(nodeType, undefined, nodeName) : undefined;
      if (node?.metadata.uid) extra['authentication.kubernetes.io/node-uid'] = [node.metadata.uid];
    }
    return {
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { creationTimestamp: null as unknown as string },
      spec: structuredClone(body.spec ?? {}),
      status: {
        authenticated: true,
        user: {
          username: `system:serviceaccount:${namespace}:${serviceAccount}`,
          uid: sa?.metadata.uid ?? '',
          groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'],
          extra,
        },
        audiences,
      },
    };
  }

  function tokenRequest(namespace: string, name: string, body: KubeObject): KubeObject {
    const saType = store.findTypeByKind('v1', 'ServiceAccount');
    if (saType) store.get(saType, namespace, name);
    const spec = (body.spec ?? {}) as {
      audiences?: string[];
      expirationSeconds?: number;
      boundObjectRef?: { kind?: string; name?: string };
    };
    const expiresIn = spec.expirationSeconds ?? 3600;
    const tokenSpec: ServiceAccountTokenSpec = {
      namespace,
      serviceAccount: name,
      audiences: spec.audiences && spec.audiences.length > 0 ? spec.audiences : apiAudiences,
      expiresInSeconds: expiresIn,
    };
    if (spec.boundObjectRef?.kind === 'Pod' && spec.boundObjectRef.name)
      tokenSpec.pod = spec.boundObjectRef.name;
    const token = issueToken(tokenSpec);
    return {
      kind: 'TokenRequest',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { name, namespace, creationTimestamp: null as unknown as string },
      spec: { ...spec, audiences: tokenSpec.audiences, expirationSeconds: expiresIn },
      status: {
        token,
        expirationTimestamp: new Date(Date.now() + expiresIn * 1000).toISOString().replace(/\.\d+Z$/, 'Z'),
      },
    };
  }

  function list(type: ResourceType, namespace: string | undefined, query: URLSearchParams): unknown {
    const labels = parseLabelSelector(query.get('labelSelector'));
    const fields = parseFieldSelector(query.get('fieldSelector'), type.fieldSelectors);
    const keyOf = (o: KubeObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
    let items = store
      .list(type, namespace)
      .filter((o) => labels(o.metadata.labels) && fields(o))
      .sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0));
    const cont = query.get('continue');
    if (cont) {
      let start: string;
      try {
        start = (JSON.parse(Buffer.from(cont, 'base64url').toString('utf8')) as { start: string }).start;
      } catch {
        throw new ApiError(400, 'BadRequest', 'continue key is not valid: illegal base64 data');
      }
      items = items.filter((o) => keyOf(o) > start);
    }
    const limit = Number(query.get('limit') ?? '0');
    const metadata: Record<string, unknown> = { resourceVersion: String(store.resourceVersion) };
    if (limit > 0 && items.length > limit) {
      const remaining = items.length - limit;
      items = items.slice(0, limit);
      const last = items[items.length - 1];
      metadata.continue = Buffer.from(
        JSON.stringify({ rv: store.resourceVersion, start: last ? keyOf(last) : '' }),
      ).toString('base64url');
      metadata.remainingItemCount = remaining;
    }
    return {
      kind: `${type.kind}List`,
      apiVersion: apiVersionOf(type),
      metadata,
      items: items.map((o) => presentListItem(type, o)),
    };
  }

  function startWatch(
    req: IncomingMessage,
    res: ServerResponse,
    type: ResourceType,
    namespace: string | undefined,
    query: URLSearchParams,
  ): void {
    const labels: LabelMatcher = parseLabelSelector(query.get('labelSelector'));
    const fields: FieldMatcher = parseFieldSelector(query.get('fieldSelector'), type.fieldSelectors);
    const matches = (o: KubeObject | undefined): boolean =>
      o !== undefined &&
      (namespace === undefined || o.metadata.namespace === namespace) &&
      labels(o.metadata.labels) &&
      fields(o);
    const rvParam = query.get('resourceVersion') ?? '';
    const bookmarks = query.get('allowWatchBookmarks') === 'true' || query.get('allowWatchBookmarks') === '1';
    const timeoutSeconds = Number(query.get('timeoutSeconds') ?? '0');

    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();
    const write = (type: string, object: unknown) => {
      if (!res.destroyed && !res.writableEnded) res.write(`${JSON.stringify({ type, object })}\n`);
    };

    if (rvParam !== '' && rvParam !== '0') {
      const from = Number(rvParam);
      const replay = Number.isFinite(from) ? store.eventsSince(type, from) : 'expired';
      if (replay === 'expired') {
        write('ERROR', {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `too old resource version: ${rvParam} (${store.compactedResourceVersion})`,
          reason: 'Expired',
          code: 410,
        });
        res.end();
        return;
      }
      for (const event of replay) deliver(event);
    } else {
      // No resourceVersion: synthetic ADDED for everything current, then live (real server semantics).
      for (const obj of store.list(type, namespace)) if (matches(obj)) write('ADDED', obj);
    }

    function deliver(event: StoreEvent): void {
      if (event.resource !== type) return;
      const now = matches(event.object);
      const before = event.type === 'ADDED' ? false : matches(event.previous);
      if (event.type === 'DELETED') {
        if (before || now) write('DELETED', event.object);
      } else if (now && before) write('MODIFIED', event.object);
      else if (now) write('ADDED', event.object);
      else if (before) write('DELETED', event.object);
    }

    const unsubscribe = store.subscribe(deliver);
    const timers: NodeJS.Timeout[] = [];
    if (bookmarks && bookmarkIntervalMs > 0) {
      timers.push(
        setInterval(() => {
          write('BOOKMARK', {
            kind: type.kind,
            apiVersion: apiVersionOf(type),
            metadata: {
              resourceVersion: String(store.resourceVersion),
              creationTimestamp: null as unknown as string,
            },
          });
        }, bookmarkIntervalMs),
      );
    }
    const lifetime = timeoutSeconds > 0 ? timeoutSeconds * 1000 : options.watchTimeoutMs;
    const watch: OpenWatch = {
      res,
      end: () => {
        if (!res.writableEnded) res.end();
      },
    };
    if (lifetime && lifetime > 0) timers.push(setTimeout(() => watch.end(), lifetime));
    watches.add(watch);
    for (const waiter of [...watchWaiters]) waiter();
    const cleanup = () => {
      unsubscribe();
      for (const t of timers) clearTimeout(t);
      watches.delete(watch);
    };
    res.on('close', cleanup);
    req.on('close', () => {
      if (!res.writableEnded) res.end();
    });
  }

  async function handleResource(
    req: IncomingMessage,
    res: ServerResponse,
    parsed: ParsedPath,
    query: URLSearchParams,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    if (parsed.plural === undefined) {
      if (method !== 'GET')
        throw new ApiError(
          405,
          'MethodNotAllowed',
          `the server does not allow this method on the requested resource`,
        );
      sendJson(res, 200, discovery(parsed));
      return;
    }
    const type = typeFor(parsed.group, parsed.version, parsed.plural);
    const { namespace, name, subresource } = parsed;
    if (namespace !== undefined && !type.namespaced) {
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    const ns = type.namespaced ? namespace : undefined;

    if (type.kind === 'TokenReview') {
      if (method !== 'POST' || name !== undefined) {
        throw new ApiError(
          405,
          'MethodNotAllowed',
          'the server does not allow this method on the requested resource',
        );
      }
      sendJson(res, 201, reviewToken(parseJson(await readBody(req)) as KubeObject));
      return;
    }
    if (subresource === 'token' && type.kind === 'ServiceAccount' && ns && name && method === 'POST') {
      sendJson(res, 201, tokenRequest(ns, name, parseJson(await readBody(req)) as KubeObject));
      return;
    }
    if (subresource !== undefined && !(subresource === 'status' && type.status)) {
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    const statusSub = subresource === 'status' ? ({ subresource: 'status' } as const) : {};

    if (name === undefined) {
      switch (method) {
        case 'GET': {
          const watch = query.get('watch');
          if (watch === 'true' || watch === '1') {
            startWatch(req, res, type, ns, query);
            return;
          }
          sendJson(res, 200, list(type, ns, query));
          return;
        }
        case 'POST': {
          const body = parseJson(await readBody(req)) as KubeObject;
          if (body === null || typeof body !== 'object')
            throw new ApiError(400, 'BadRequest', 'the request body must be an object');
          if (body.kind && body.kind !== type.kind) {
            throw new ApiError(
              400,
              'BadRequest',
              `the API version in the data (${body.apiVersion}) does not match the expected API version (${apiVersionOf(type)})`,
            );
          }
          sendJson(res, 201, store.create(type, ns, body));
          return;
        }
        case 'DELETE': {
          const labels = parseLabelSelector(query.get('labelSelector'));
          const fields = parseFieldSelector(query.get('fieldSelector'), type.fieldSelectors);
          for (const obj of store.list(type, ns)) {
            if (labels(obj.metadata.labels) && fields(obj))
              store.delete(type, obj.metadata.namespace, obj.metadata.name ?? '');
          }
          sendJson(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' });
          return;
        }
        default:
          throw new ApiError(
            405,
            'MethodNotAllowed',
            'the server does not allow this method on the requested resource',
          );
      }
    }

    switch (method) {
      case 'GET':
        sendJson(res, 200, store.get(type, ns, name));
        return;
      case 'PUT': {
        const body = parseJson(await readBody(req)) as KubeObject;
        sendJson(res, 200, store.update(type, ns, name, body, statusSub));
        return;
      }
      case 'PATCH': {
        const contentType = (req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
        const patch = parseJson(await readBody(req));
        const existing = store.tryGet(type, ns, name);
        if (contentType === 'application/apply-patch+yaml') {
          if (!query.get('fieldManager')) {
            throw new ApiError(400, 'BadRequest', 'PATCH /apply requires fieldManager to be set');
          }
          if (!existing) {
            sendJson(res, 201, store.create(type, ns, patch as KubeObject));
            return;
          }
        }
        if (!existing)
          throw new ApiError(
            404,
            'NotFound',
            `${type.group === '' ? type.plural : `${type.plural}.${type.group}`} "${name}" not found`,
          );
        let patched: unknown;
        try {
          switch (contentType) {
            case 'application/merge-patch+json':
            case 'application/apply-patch+yaml':
              patched = mergePatch(existing, patch);
              break;
            case 'application/strategic-merge-patch+json':
              if (type.custom) {
                throw new ApiError(
                  415,
                  'UnsupportedMediaType',
                  `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`,
                );
              }
              patched = strategicMergePatch(existing, patch);
              break;
            case 'application/json-patch+json':
              patched = jsonPatch(existing, patch);
              break;
            default:
              throw new ApiError(
                415,
                'UnsupportedMediaType',
                `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml${type.custom ? '' : ', application/strategic-merge-patch+json'}`,
              );
          }
        } catch (err) {
          if (err instanceof PatchError) throw new ApiError(422, 'Invalid', err.message);
          throw err;
        }
        sendJson(res, 200, store.update(type, ns, name, patched as KubeObject, statusSub));
        return;
      }
      case 'DELETE':
        sendJson(res, 200, store.delete(type, ns, name));
        return;
      default:
        throw new ApiError(
          405,
          'MethodNotAllowed',
          'the server does not allow this method on the requested resource',
        );
    }
  }

  /**
   * GET .../namespaces/{ns}/pods/{name}[:{port}]/proxy/{path}: the API server's pod proxy, as
   * `kubectl get --raw` and dashboards use it: HTTP to the pod's IP (status.podIP) and port, the
   * answer relayed as it is; 503 when the pod has no IP or does not answer, as the real server.
   */
  async function proxyToPod(
    req: IncomingMessage,
    res: ServerResponse,
    parsed: ParsedPath,
    path: string,
    search: string,
  ): Promise<void> {
    const [name = '', portText = '80'] = (parsed.name ?? '').split(':');
    const pod = store.tryGet(typeFor('', 'v1', 'pods'), parsed.namespace, name) as
      | { status?: { podIP?: string } }
      | undefined;
    if (pod === undefined) throw new ApiError(404, 'NotFound', `pods "${name}" not found`);
    const ip = pod.status?.podIP;
    if (!ip) throw new ApiError(503, 'ServiceUnavailable', `pod ${name} has no IP address`);
    const rest = path.split('/proxy').slice(1).join('/proxy') || '/';
    await new Promise<void>((resolve) => {
      const upstream = httpRequest(
        { host: ip, port: Number(portText), path: `${rest}${search}`, method: req.method, timeout: 10_000 },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, {
            'Content-Type': answer.headers['content-type'] ?? 'text/plain',
          });
          answer.pipe(res);
          answer.on('end', resolve);
          answer.on('error', () => resolve());
        },
      );
      upstream.on('timeout', () => upstream.destroy(new Error('i/o timeout')));
      upstream.on('error', (err: NodeJS.ErrnoException) => {
        if (!res.headersSent) {
          const e = new ApiError(
            503,
            'ServiceUnavailable',
            `error trying to reach service: dial tcp ${ip}:${portText}: ${err.code ?? err.message}`,
          );
          sendJson(res, 503, e.toStatus());
        } else res.destroy();
        resolve();
      });
      req.pipe(upstream);
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (closing) {
      res.socket?.destroy();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const query = url.searchParams;
    const isWatch = query.get('watch') === 'true' || query.get('watch') === '1';
    const record: RequestRecord = {
      method,
      path,
      query: Object.fromEntries(query),
      watch: isWatch,
      status: 0,
    };
    requests.push(record);
    res.on('finish', () => {
      record.status = res.statusCode;
    });
    record.status = 200;
    try {
      if (path === '/version') {
        sendJson(res, 200, {
          major: '1',
          minor: '32',
          gitVersion: 'v1.32.0-hypha-stand-in',
          platform: 'linux/amd64',
        });
        return;
      }
      if (path === '/healthz' || path === '/readyz' || path === '/livez') {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('ok');
        return;
      }
      const user = authenticate(req);
      if (!user) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      record.user = user.username;
      const parsedForAuthz = options.rbac ? parsePath(path) : undefined;
      const attrs = parsedForAuthz ? attributesOf(method, parsedForAuthz, query, isWatch) : undefined;
      if (attrs) {
        const decision = authorize(rbacSource, user, attrs);
        record.authorization = decision;
        if (!decision.allowed) {
          sendJson(res, 403, forbiddenStatus(decision));
          return;
        }
      }
      const failure = matchFailure(method, path, isWatch);
      if (failure) {
        throw new ApiError(
          failure.status,
          REASONS[failure.status] ?? 'InternalError',
          failure.message ?? 'injected failure',
        );
      }
      if (path === '/api') {
        sendJson(res, 200, {
          kind: 'APIVersions',
          versions: ['v1'],
          serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }],
        });
        return;
      }
      if (path === '/apis') {
        sendJson(res, 200, groupList());
        return;
      }
      const parsed = parsePath(path);
      if (!parsed) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      if (parsed.plural === 'pods' && parsed.subresource === 'proxy' && parsed.group === '') {
        await proxyToPod(req, res, parsed, path, url.search);
        return;
      }
      if (isWatch && holding) {
        await new Promise<void>((resolve) => held.push(resolve));
        if (req.destroyed) return;
      }
      await handleResource(req, res, parsed, query);
    } catch (err) {
      let apiErr: ApiError;
      if (err instanceof ApiError) apiErr = err;
      else if (err instanceof SelectorError) apiErr = new ApiError(400, 'BadRequest', err.message);
      else apiErr = new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error).message}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(res, apiErr.code, apiErr.toStatus(), apiErr.code === 429 ? { 'Retry-After': '1' } : {});
    }
  }

  /** Answers a refused upgrade on the raw socket with a Status, as the real server does. */
  function refuseUpgrade(socket: import('node:stream').Duplex, err: ApiError): void {
    const body = JSON.stringify(err.toStatus());
    socket.end(
      `HTTP/1.1 ${err.code} ${STATUS_CODES[err.code] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }

  /**
   * WebSocket upgrades: only GET .../pods/{name}/portforward (the WebSocket form of port-forward).
   * RBAC: verbs `get` and `create` on `pods/portforward`.
   */
  function upgrade(req: IncomingMessage, socket: import('node:stream').Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (closing) {
      socket.destroy();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const record: RequestRecord = {
      method,
      path,
      query: Object.fromEntries(url.searchParams),
      watch: false,
      status: 101,
    };
    requests.push(record);
    const refuse = (err: ApiError) => {
      record.status = err.code;
      refuseUpgrade(socket, err);
    };
    try {
      const user = authenticate(req);
      if (!user) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      record.user = user.username;
      const parsed = parsePath(path);
      if (
        parsed?.group !== '' ||
        parsed.plural !== 'pods' ||
        parsed.subresource !== 'portforward' ||
        parsed.namespace === undefined ||
        parsed.name === undefined
      )
        throw new ApiError(400, 'BadRequest', `${path} does not take a connection upgrade`);
      // A WebSocket upgrade is a GET: the request filter authorizes it as `get`, and since 1.35
      // (AuthorizePodWebsocketUpgradeCreatePermission, on by default) the server also checks
      // `create`, the verb the POST (SPDY) form always needed. Both are required here.
      if (options.rbac) {
        for (const verb of ['get', 'create'] as const) {
          const attrs: ResourceAttributes = {
            verb,
            group: '',
            resource: 'pods',
            subresource: 'portforward',
            namespace: parsed.namespace,
            name: parsed.name,
          };
          const decision = authorize(rbacSource, user, attrs);
          record.authorization = decision;
          if (!decision.allowed) {
            record.status = 403;
            const body = forbiddenStatus(decision);
            refuseUpgrade(socket, new ApiError(403, 'Forbidden', String(body.message)));
            return;
          }
        }
      }
      const offered = (req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p.length > 0);
      if (offered.length > 0 && !offered.some((p) => PORT_FORWARD_PROTOCOLS.includes(p)))
        throw new ApiError(
          400,
          'BadRequest',
          `requested protocol(s) are not supported: [${offered.join(' ')}]; supports [${PORT_FORWARD_PROTOCOLS.join(' ')}]`,
        );
      let ports: number[];
      try {
        ports = parsePorts(url.searchParams);
      } catch (err) {
        throw new ApiError(400, 'BadRequest', (err as Error).message);
      }
      const pod = store.tryGet(typeFor('', 'v1', 'pods'), parsed.namespace, parsed.name) as
        | (KubeObject & { status?: { phase?: string } })
        | undefined;
      if (pod === undefined) throw new ApiError(404, 'NotFound', `pods "${parsed.name}" not found`);
      if (pod.status?.phase !== 'Running')
        throw new ApiError(
          400,
          'BadRequest',
          `pod ${parsed.name} is not running (phase ${pod.status?.phase ?? 'unknown'})`,
        );
      const ns = parsed.namespace;
      const name = parsed.name;
      portForwards.upgrade(
        req,
        socket,
        head,
        { namespace: ns, name, ...(pod.metadata.uid ? { uid: pod.metadata.uid } : {}) },
        ports,
        (port) => portTargets.get(`${ns}/${name}:${port}`),
      );
    } catch (err) {
      refuse(
        err instanceof ApiError
          ? err
          : new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error).message}`),
      );
    }
  }

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    void handle(req, res);
  };
  const server: Server = cert
    ? createHttpsServer({ cert: cert.certPem, key: cert.keyPem }, listener)
    : createHttpServer(listener);
  server.keepAliveTimeout = 30_000;
  server.on('upgrade', (req: IncomingMessage, socket: import('node:stream').Duplex, head: Buffer) =>
    upgrade(req, socket, head),
  );
  // Connections still in the accept queue when close() runs must not outlive it.
  server.on(useTls ? 'secureConnection' : 'connection', (socket: import('node:net').Socket) => {
    if (closing) socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${useTls ? 'https' : 'http'}://127.0.0.1:${port}`;

  const kubeconfigPath = join(dir, 'kubeconfig');
  const kubeconfigFor = (user: string, token: string) => ({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'stand-in',
        cluster: {
          server: url,
          ...(cert ? { 'certificate-authority-data': Buffer.from(cert.certPem).toString('base64') } : {}),
        },
      },
    ],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: 'stand-in', context: { cluster: 'stand-in', user, namespace: 'default' } }],
    'current-context': 'stand-in',
  });
  await writeFile(kubeconfigPath, JSON.stringify(kubeconfigFor('admin', adminToken), null, 2), {
    mode: 0o600,
  });

  return {
    url,
    kubeconfigPath,
    caPem: cert?.certPem,
    adminToken,
    store,
    requests,
    get activeWatches() {
      return watches.size;
    },
    put(object) {
      const type = typeForObject(object);
      const ns = type.namespaced ? object.metadata.namespace : undefined;
      const existing = store.tryGet(type, ns, object.metadata.name ?? '');
      if (!existing) return store.create(type, ns, object, { keepStatus: true });
      const next = structuredClone(object);
      next.metadata = { ...next.metadata, resourceVersion: existing.metadata.resourceVersion };
      const updated = store.update(type, ns, object.metadata.name ?? '', next);
      if (type.status && object.status !== undefined) {
        return store.update(
          type,
          ns,
          object.metadata.name ?? '',
          { ...updated, status: object.status },
          { subresource: 'status' },
        );
      }
      return updated;
    },
    remove(apiVersion, kind, name, namespace) {
      const type = typeForObject({ apiVersion, kind, metadata: {} });
      if (!store.tryGet(type, namespace, name)) return false;
      store.delete(type, type.namespaced ? namespace : undefined, name);
      return true;
    },
    find(apiVersion, kind, name, namespace) {
      const type = typeForObject({ apiVersion, kind, metadata: {} });
      return store.tryGet(type, type.namespaced ? namespace : undefined, name);
    },
    issueToken,
    revokeToken(token) {
      tokens.delete(token);
    },
    async writeServiceAccountKubeconfig(spec) {
      const token = issueToken({ ...spec, audiences: [apiAudiences[0] ?? DEFAULT_API_AUDIENCE] });
      const path = join(
        dir,
        `kubeconfig-${spec.namespace}-${spec.serviceAccount}-${randomBytes(4).toString('hex')}`,
      );
      const user = `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`;
      await writeFile(path, JSON.stringify(kubeconfigFor(user, token), null, 2), { mode: 0o600 });
      return path;
    },
    compactHistory() {
      store.compact();
    },
    dropWatches() {
      for (const w of [...watches]) w.res.socket?.destroy();
    },
    endWatches() {
      for (const w of [...watches]) w.end();
    },
    holdWatches() {
      holding = true;
      return () => {
        holding = false;
        for (const release of held.splice(0)) release();
      };
    },
    injectFailure(failure) {
      failures.push({ ...failure, left: failure.times ?? 1 });
    },
    waitForWatches(count, timeoutMs = 10_000) {
      if (watches.size >= count) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          watchWaiters.delete(check);
          reject(new Error(`only ${watches.size} of ${count} watches opened within ${timeoutMs} ms`));
        }, timeoutMs);
        const check = () => {
          if (watches.size >= count) {
            clearTimeout(timer);
            watchWaiters.delete(check);
            resolve();
          }
        };
        watchWaiters.add(check);
      });
    },
    forwardPort(namespace, pod, port, target) {
      const key = `${namespace}/${pod}:${port}`;
      if (target === undefined) portTargets.delete(key);
      else portTargets.set(key, target);
    },
    get openPortForwards() {
      return portForwards.open;
    },
    async close() {
      closing = true;
      portForwards.close();
      holding = false;
      for (const release of held.splice(0)) release();
      for (const w of [...watches]) w.res.socket?.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
