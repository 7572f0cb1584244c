// Who may ask the CA for which identity.
//
// Authentication (bearer token → node name) and node authorization (may this node obtain this
// SPIFFE id?) are interfaces, so Kubernetes TokenReview and an informer-backed pod index can replace
// the file-based implementations here without touching the server.
//
// Rule: an agent may only obtain the identity of a pod scheduled on its own node.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { SpiffeId } from '@hypha/shared/identity';
import { parseAllDocuments } from 'yaml';

export interface Caller {
  /** The node the calling agent runs on. */
  node: string;
  /**
   * Who authenticated (Kubernetes callers). `agent`: a node agent, may obtain identities of pods
   * on its node. `workload`: any other pod, may obtain only its own identity.
   */
  role?: 'agent' | 'workload';
  serviceAccount?: { namespace: string; name: string };
  /** The pod a bound token belongs to. */
  pod?: { name: string; uid?: string };
}

export interface Authenticator {
  /** The caller behind a bearer token, or undefined if the token is unknown. */
  authenticate(token: string): Caller | undefined | Promise<Caller | undefined>;
}

export interface NodeAuthorizer {
  /** `caller` is the whole authenticated caller (role, service account, pod) when known. */
  authorize(node: string, id: SpiffeId, caller?: Caller): boolean | Promise<boolean>;
}

export class AuthConfigError extends Error {
  readonly code = 'AUTH_CONFIG_INVALID' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AuthConfigError';
  }
}

export const MIN_TOKEN_LENGTH = 16;

function tokenKey(token: string): string {
  // Tokens are kept and compared as SHA-256 digests, so a map lookup leaks nothing about them.
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Static bootstrap tokens from a YAML file (outside Kubernetes):
 *
 *   tokens:
 *     - token: 3f6c0c1e9b7a4d2e8f10a2b4c6d8e0f1
 *       node: node-1
 *
 * (`tokens:` may also be a mapping of token → node name.)
 */
export class StaticTokenAuthenticator implements Authenticator {
  readonly #byDigest: Map<string, string>;

  constructor(entries: Iterable<{ token: string; node: string }>) {
    this.#byDigest = new Map();
    for (const { token, node } of entries) this.#byDigest.set(tokenKey(token), node);
  }

  get size(): number {
    return this.#byDigest.size;
  }

  static async fromFile(path: string): Promise<StaticTokenAuthenticator> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new AuthConfigError(`cannot read token file ${path}: ${(err as Error).message}`, { cause: err });
    }
    return new StaticTokenAuthenticator(parseTokenFile(text, path));
  }

  authenticate(token: string): Caller | undefined {
    if (token.length === 0) return undefined;
    const node = this.#byDigest.get(tokenKey(token));
    return node === undefined ? undefined : { node };
  }
}

export function parseTokenFile(text: string, source = 'token file'): { token: string; node: string }[] {
  const docs = parseYaml(text, source);
  const root = docs[0] as { tokens?: unknown } | undefined;
  if (docs.length !== 1 || !isObject(root) || root.tokens === undefined) {
    throw new AuthConfigError(`${source}: expected one YAML document with a "tokens:" list of {token, node}`);
  }
  const raw = root.tokens;
  const entries: { token: unknown; node: unknown }[] = Array.isArray(raw)
    ? raw.map((e) => (isObject(e) ? { token: e.token, node: e.node } : { token: undefined, node: undefined }))
    : isObject(raw)
      ? Object.entries(raw).map(([token, node]) => ({ token, node }))
      : [];
  if (entries.length === 0)
    throw new AuthConfigError(`${source}: "tokens:" is empty; add at least one {token, node}`);
  const seen = new Set<string>();
  return entries.map((e, i) => {
    if (typeof e.token !== 'string' || typeof e.node !== 'string' || e.node.length === 0) {
      throw new AuthConfigError(`${source}: tokens[${i}] needs string fields "token" and "node"`);
    }
    if (e.token.length < MIN_TOKEN_LENGTH) {
      throw new AuthConfigError(
        `${source}: tokens[${i}] (node ${e.node}) is shorter than ${MIN_TOKEN_LENGTH} characters; use a random token, e.g. \`openssl rand -hex 16\``,
      );
    }
    if (seen.has(e.token)) throw new AuthConfigError(`${source}: tokens[${i}] repeats an earlier token`);
    seen.add(e.token);
    return { token: e.token, node: e.node };
  });
}

export interface PodPlacement {
  namespace: string;
  serviceAccount: string;
  node: string;
}

/** Pods (as Kubernetes YAML) → where each runs and as which service account. Non-Pod objects are skipped. */
export function podPlacementsFromYaml(text: string, source = 'pods file'): PodPlacement[] {
  const out: PodPlacement[] = [];
  const visit = (obj: unknown, where: string): void => {
    if (Array.isArray(obj)) {
      for (const [i, o] of obj.entries()) visit(o, `${where}[${i}]`);
      return;
    }
    if (!isObject(obj)) return;
    if (obj.kind === 'List' || (obj.kind === undefined && Array.isArray(obj.items))) {
      visit(obj.items, `${where}.items`);
      return;
    }
    if (obj.kind !== 'Pod') return;
    const meta = isObject(obj.metadata) ? obj.metadata : {};
    const spec = isObject(obj.spec) ? obj.spec : {};
    const name = typeof meta.name === 'string' ? meta.name : where;
    const namespace = meta.namespace ?? 'default';
    const serviceAccount = spec.serviceAccountName ?? 'default';
    const node = spec.nodeName;
    if (typeof namespace !== 'string' || typeof serviceAccount !== 'string') {
      throw new AuthConfigError(
        `${source}: pod ${name}: metadata.namespace and spec.serviceAccountName must be strings`,
      );
    }
    // Not scheduled yet: no node may ask for it.
    if (typeof node !== 'string' || node.length === 0) return;
    out.push({ namespace, serviceAccount, node });
  };
  for (const [i, d] of parseYaml(text, source).entries()) visit(d, `document ${i + 1}`);
  return out;
}

/**
 * Authorizes from a YAML file (or a directory of *.yaml/*.yml files) of Pods. The file is re-read
 * when its modification time or size changes (looked at once a second by default), so pods added by
 * the demo or tests count almost at once.
 */
export class PodFileNodeAuthorizer implements NodeAuthorizer {
  readonly #path: string;
  readonly #recheckMs: number;
  #stamp = '';
  #checkedAt = 0;
  #index = new Map<string, Set<string>>();
  #loading: Promise<void> | undefined;

  private constructor(path: string, recheckMs: number) {
    this.#path = path;
    this.#recheckMs = recheckMs;
  }

  /** `recheckMs`: how often to look at the files for changes (default 1 s; 0 = on every request). */
  static async fromPath(path: string, opts: { recheckMs?: number } = {}): Promise<PodFileNodeAuthorizer> {
    const a = new PodFileNodeAuthorizer(path, opts.recheckMs ?? 1000);
    await a.refresh(true);
    return a;
  }

  /** Number of scheduled pods known (for logs). */
  get podCount(): number {
    let n = 0;
    for (const s of this.#index.values()) n += s.size;
    return n;
  }

  async authorize(node: string, id: SpiffeId): Promise<boolean> {
    await this.refresh();
    return this.#index.get(node)?.has(`${id.namespace}/${id.serviceAccount}`) ?? false;
  }

  /** Re-reads the pods if the file(s) changed. Concurrent callers share one read. */
  async refresh(force = false): Promise<void> {
    if (!force && Date.now() - this.#checkedAt < this.#recheckMs) return;
    if (this.#loading) return this.#loading;
    this.#loading = this.#reload().finally(() => {
      this.#loading = undefined;
    });
    return this.#loading;
  }

  async #reload(): Promise<void> {
    this.#checkedAt = Date.now();
    const files = await this.#files();
    const stats = await Promise.all(files.map(async (f) => ({ f, s: await stat(f) })));
    const stamp = stats.map(({ f, s }) => `${f}:${s.mtimeMs}:${s.size}`).join('|');
    if (stamp === this.#stamp) return;
    const index = new Map<string, Set<string>>();
    for (const f of files) {
      const text = await readFile(f, 'utf8');
      for (const p of podPlacementsFromYaml(text, f)) {
        let set = index.get(p.node);
        if (!set) {
          set = new Set();
          index.set(p.node, set);
        }
        set.add(`${p.namespace}/${p.serviceAccount}`);
      }
    }
    this.#index = index;
    this.#stamp = stamp;
  }

  async #files(): Promise<string[]> {
    let s: Awaited<ReturnType<typeof stat>>;
    try {
      s = await stat(this.#path);
    } catch (err) {
      throw new AuthConfigError(`cannot read pods from ${this.#path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (!s.isDirectory()) return [this.#path];
    const names = (await readdir(this.#path)).filter((n) => /\.ya?ml$/.test(n)).sort();
    return names.map((n) => join(this.#path, n));
  }
}

function parseYaml(text: string, source: string): unknown[] {
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  return list
    .map((d) => {
      if (d.errors.length > 0) throw new AuthConfigError(`${source}: invalid YAML: ${d.errors[0]!.message}`);
      return d.toJS() as unknown;
    })
    .filter((d) => d !== null && d !== undefined);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
