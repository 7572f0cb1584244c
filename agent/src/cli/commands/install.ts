// `hypha install` / `hypha uninstall`: render the kustomize manifests (manifests/base or an overlay)
// and apply them to a cluster through the API.
//
// Rendering: `kubectl kustomize <dir>` when kubectl is on PATH (the reference), else a small
// built-in renderer for what Hypha's kustomizations use (resources, images, JSON 6902 patches with
// a target). The tests check that both render the same objects.
// Applying: server-side apply (PATCH application/apply-patch+yaml, fieldManager hypha, force), so a
// re-run converges and fields owned by others (e.g. a Service's clusterIP) are left alone. Order:
// Namespaces, then CRDs, then wait until the API serves their kinds, then everything else.
// Uninstall deletes in reverse order and keeps the CRDs unless --crds (deleting a CRD deletes every
// policy of that kind in the cluster).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { durationFlagMs, UsageError } from '../errors.js';

export interface ManifestObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

export class InstallError extends Error {
  readonly code: 'RENDER_FAILED' | 'APPLY_FAILED';
  constructor(code: 'RENDER_FAILED' | 'APPLY_FAILED', message: string) {
    super(message);
    this.name = 'InstallError';
    this.code = code;
  }
}

/** The repository's (or image's) manifests/ directory: $HYPHA_MANIFESTS, else found beside the package. */
export function findManifestsDir(): string {
  const env = process.env.HYPHA_MANIFESTS;
  if (env) return resolve(env);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const candidate = join(dir, 'manifests', 'base', 'kustomization.yaml');
    if (existsSync(candidate)) return join(dir, 'manifests');
    dir = dirname(dir);
  }
  throw new InstallError(
    'RENDER_FAILED',
    'cannot find the manifests/ directory; pass --manifests <dir> or set HYPHA_MANIFESTS',
  );
}

// yaml loads on first use, not with the CLI (see program.ts).
async function parseObjects(text: string, source: string): Promise<ManifestObject[]> {
  const { parseAllDocuments } = await import('yaml');
  const out: ManifestObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0)
      throw new InstallError('RENDER_FAILED', `${source}: invalid YAML: ${doc.errors[0]!.message}`);
    const o = doc.toJS() as ManifestObject | null;
    if (o !== null && o !== undefined) out.push(o);
  }
  return out;
}

/** `kubectl kustomize dir`; undefined when kubectl is not installed. */
function kubectlKustomize(dir: string): Promise<string | undefined> {
  return new Promise((resolvePromise, reject) => {
    execFile('kubectl', ['kustomize', dir], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') resolvePromise(undefined);
      else if (err)
        reject(
          new InstallError('RENDER_FAILED', `kubectl kustomize ${dir}: ${stderr.trim() || err.message}`),
        );
      else resolvePromise(stdout);
    });
  });
}

interface Kustomization {
  resources?: string[];
  images?: { name: string; newName?: string; newTag?: string; digest?: string }[];
  patches?: {
    target?: { kind?: string; name?: string; namespace?: string };
    patch?: string;
    path?: string;
  }[];
  namespace?: string;
}

/** The built-in renderer: resources (files and directories), images, JSON 6902 patches. */
export async function renderKustomization(dir: string): Promise<ManifestObject[]> {
  const file = join(dir, 'kustomization.yaml');
  const k = (await parseObjects(await readFile(file, 'utf8'), file))[0] as unknown as Kustomization;
  let objects: ManifestObject[] = [];
  for (const r of k.resources ?? []) {
    const path = join(dir, r);
    if (existsSync(join(path, 'kustomization.yaml'))) objects.push(...(await renderKustomization(path)));
    else objects.push(...(await parseObjects(await readFile(path, 'utf8'), path)));
  }
  if (k.namespace) {
    objects = objects.map((o) =>
      o.metadata.namespace !== undefined || !CLUSTER_SCOPED.has(o.kind)
        ? { ...o, metadata: { ...o.metadata, namespace: k.namespace as string } }
        : o,
    );
  }
  for (const p of k.patches ?? []) {
    const ops = (
      await parseObjects(p.patch ?? (await readFile(join(dir, p.path ?? ''), 'utf8')), `${file} patch`)
    )[0];
    if (!Array.isArray(ops))
      throw new InstallError(
        'RENDER_FAILED',
        `${file}: only JSON 6902 patches are supported without kubectl`,
      );
    for (const o of objects) {
      const t = p.target ?? {};
      if ((t.kind && t.kind !== o.kind) || (t.name && t.name !== o.metadata.name)) continue;
      if (t.namespace && t.namespace !== o.metadata.namespace) continue;
      applyJsonPatch(o, ops as JsonPatchOp[], file);
    }
  }
  for (const img of k.images ?? []) {
    for (const o of objects) {
      const spec = (o.spec as { template?: { spec?: PodSpecLike } } | undefined)?.template?.spec;
      for (const c of [...(spec?.containers ?? []), ...(spec?.initContainers ?? [])]) {
        const [name, tag] = splitImage(c.image);
        if (name !== img.name) continue;
        c.image = `${img.newName ?? name}${img.digest ? `@${img.digest}` : `:${img.newTag ?? tag ?? 'latest'}`}`;
        if (!img.newTag && !img.digest && tag === undefined) c.image = img.newName ?? name;
      }
    }
  }
  return objects;
}

interface PodSpecLike {
  containers?: { image: string }[];
  initContainers?: { image: string }[];
}

function splitImage(image: string): [string, string | undefined] {
  const at = image.indexOf('@');
  if (at >= 0) return [image.slice(0, at), undefined];
  const colon = image.lastIndexOf(':');
  if (colon > image.lastIndexOf('/')) return [image.slice(0, colon), image.slice(colon + 1)];
  return [image, undefined];
}

type JsonPatchOp = { op: 'add' | 'replace' | 'remove'; path: string; value?: unknown };

function applyJsonPatch(target: unknown, ops: JsonPatchOp[], source: string): void {
  for (const op of ops) {
    const parts = op.path
      .split('/')
      .slice(1)
      .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop();
    let cur = target as Record<string, unknown> | unknown[];
    for (const p of parts) {
      const next = Array.isArray(cur) ? cur[Number(p)] : cur[p];
      if (typeof next !== 'object' || next === null)
        throw new InstallError('RENDER_FAILED', `${source}: patch path ${op.path} does not exist`);
      cur = next as Record<string, unknown>;
    }
    if (last === undefined) throw new InstallError('RENDER_FAILED', `${source}: empty patch path`);
    if (Array.isArray(cur)) {
      const i = last === '-' ? cur.length : Number(last);
      if (op.op === 'add') cur.splice(i, 0, structuredClone(op.value));
      else if (op.op === 'replace') cur[i] = structuredClone(op.value);
      else cur.splice(i, 1);
    } else if (op.op === 'remove') delete cur[last];
    else cur[last] = structuredClone(op.value);
  }
}

const CLUSTER_SCOPED = new Set([
  'Namespace',
  'CustomResourceDefinition',
  'ClusterRole',
  'ClusterRoleBinding',
  'GatewayClass',
  'Node',
  'PriorityClass',
]);

/** Renders manifests/base (or an overlay) as objects, with kubectl when present. */
export async function renderManifests(
  opts: { manifestsDir?: string; overlay?: string; kubectl?: boolean } = {},
): Promise<{ objects: ManifestObject[]; renderer: 'kubectl' | 'built-in'; dir: string }> {
  const root = opts.manifestsDir ?? findManifestsDir();
  const dir = opts.overlay ? join(root, 'overlays', opts.overlay) : join(root, 'base');
  if (!existsSync(join(dir, 'kustomization.yaml'))) {
    throw new InstallError(
      'RENDER_FAILED',
      `no kustomization.yaml in ${dir}${opts.overlay ? ' (unknown --overlay?)' : ''}`,
    );
  }
  if (opts.kubectl !== false) {
    const text = await kubectlKustomize(dir);
    if (text !== undefined)
      return { objects: await parseObjects(text, `kubectl kustomize ${dir}`), renderer: 'kubectl', dir };
  }
  return { objects: await renderKustomization(dir), renderer: 'built-in', dir };
}

// ---- applying through the API ----

type KubeConfig = ReturnType<typeof import('@hypha/shared/kube').loadKubeConfig>;

interface ApiResource {
  name: string;
  kind: string;
  namespaced: boolean;
}

/** Finds the REST path of kinds through discovery (cached per group/version). */
class ResourceMapper {
  readonly #kc: KubeConfig;
  readonly #cache = new Map<string, ApiResource[] | undefined>();
  constructor(kc: KubeConfig) {
    this.#kc = kc;
  }

  forget(apiVersion: string): void {
    this.#cache.delete(apiVersion);
  }

  async find(apiVersion: string, kind: string): Promise<ApiResource | undefined> {
    if (!this.#cache.has(apiVersion)) {
      const { fetchKube, KubeError } = await import('@hypha/shared/kube');
      const path = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
      try {
        const list = (await fetchKube(this.#kc, path, { timeoutMs: 15_000 })) as {
          resources?: ApiResource[];
        };
        this.#cache.set(apiVersion, list.resources ?? []);
      } catch (err) {
        if (err instanceof KubeError && err.status === 404) this.#cache.set(apiVersion, undefined);
        else throw err;
      }
    }
    return this.#cache.get(apiVersion)?.find((r) => r.kind === kind && !r.name.includes('/'));
  }

  async path(o: ManifestObject, withName = true): Promise<string> {
    const r = await this.find(o.apiVersion, o.kind);
    if (!r) {
      const hint = o.apiVersion.startsWith('gateway.networking.k8s.io')
        ? ' (install the Gateway API CRDs first: standard channel v1.1+)'
        : ' (is its CRD installed?)';
      throw new InstallError('APPLY_FAILED', `the cluster does not serve ${o.apiVersion} ${o.kind}${hint}`);
    }
    const prefix = o.apiVersion.includes('/') ? `/apis/${o.apiVersion}` : `/api/${o.apiVersion}`;
    const ns = r.namespaced ? `/namespaces/${encodeURIComponent(o.metadata.namespace ?? 'default')}` : '';
    return `${prefix}${ns}/${r.name}${withName ? `/${encodeURIComponent(o.metadata.name)}` : ''}`;
  }
}

export interface ApplyResult {
  object: string;
  action: 'created' | 'configured' | 'deleted' | 'absent' | 'failed';
  error?: string;
}

const describe = (o: ManifestObject) =>
  `${o.kind}/${o.metadata.name}${o.metadata.namespace ? ` (${o.metadata.namespace})` : ''}`;

function rank(o: ManifestObject): number {
  if (o.kind === 'Namespace') return 0;
  if (o.kind === 'CustomResourceDefinition') return 1;
  return 2;
}

/** Server-side applies every object (Namespaces, CRDs, wait for CRD kinds, the rest). */
export async function applyManifests(
  kc: KubeConfig,
  objects: readonly ManifestObject[],
  opts: { crdTimeoutMs?: number } = {},
): Promise<ApplyResult[]> {
  const { fetchKube } = await import('@hypha/shared/kube');
  const mapper = new ResourceMapper(kc);
  const results: ApplyResult[] = [];
  const sorted = [...objects].map((o, i) => ({ o, i })).sort((a, b) => rank(a.o) - rank(b.o) || a.i - b.i);
  let waitedForCrds = false;
  for (const { o } of sorted) {
    if (rank(o) === 2 && !waitedForCrds) {
      waitedForCrds = true;
      await waitForCrdKinds(mapper, objects, opts.crdTimeoutMs ?? 30_000);
    }
    try {
      const path = await mapper.path(o);
      let existed = true;
      try {
        await fetchKube(kc, path, { timeoutMs: 15_000 });
      } catch {
        existed = false;
      }
      await fetchKube(kc, `${path}?fieldManager=hypha&force=true`, {
        method: 'PATCH',
        body: o,
        contentType: 'application/apply-patch+yaml',
        timeoutMs: 30_000,
      });
      results.push({ object: describe(o), action: existed ? 'configured' : 'created' });
    } catch (err) {
      results.push({ object: describe(o), action: 'failed', error: (err as Error).message });
    }
  }
  return results;
}

/** After creating CRDs, the API serves their kinds only once they are Established. */
async function waitForCrdKinds(
  mapper: ResourceMapper,
  objects: readonly ManifestObject[],
  timeoutMs: number,
) {
  const kinds = objects
    .filter((o) => o.kind === 'CustomResourceDefinition')
    .map((o) => {
      const spec = o.spec as {
        group: string;
        names: { kind: string };
        versions: { name: string; served?: boolean }[];
      };
      const version = spec.versions.find((v) => v.served !== false)?.name ?? spec.versions[0]?.name;
      return { apiVersion: `${spec.group}/${version}`, kind: spec.names.kind };
    });
  const deadline = Date.now() + timeoutMs;
  for (const k of kinds) {
    for (;;) {
      mapper.forget(k.apiVersion);
      if (await mapper.find(k.apiVersion, k.kind)) break;
      if (Date.now() > deadline) return; // the apply of dependent objects will say what is missing
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Deletes the objects in reverse order; CRDs only when asked. */
export interface DeleteOptions {
  crds?: boolean;
  /** How long to wait for the agent pods to stop after their DaemonSet is deleted. Default 5 min. */
  agentTimeoutMs?: number;
  /** Progress lines (waiting for agents). */
  progress?: (line: string) => void;
}

/**
 * Deletes in reverse install order. The agent DaemonSet goes first, and the rest waits until its
 * pods are gone: each agent, stopped while its DaemonSet is being deleted, removes its node's
 * capture rules on the way out, and needs its ServiceAccount and RBAC to see that it is.
 */
export async function deleteManifests(
  kc: KubeConfig,
  objects: readonly ManifestObject[],
  opts: DeleteOptions = {},
): Promise<ApplyResult[]> {
  const { fetchKube, KubeError } = await import('@hypha/shared/kube');
  const mapper = new ResourceMapper(kc);
  const results: ApplyResult[] = [];
  const sorted = [...objects].map((o, i) => ({ o, i })).sort((a, b) => rank(b.o) - rank(a.o) || b.i - a.i);
  const remove = async (o: ManifestObject) => {
    try {
      const path = await mapper.path(o);
      await fetchKube(kc, `${path}?propagationPolicy=Foreground`, { method: 'DELETE', timeoutMs: 30_000 });
      results.push({ object: describe(o), action: 'deleted' });
      return true;
    } catch (err) {
      if (
        (err instanceof KubeError && err.status === 404) ||
        (err instanceof InstallError && o.kind !== 'Namespace')
      )
        results.push({ object: describe(o), action: 'absent' });
      else results.push({ object: describe(o), action: 'failed', error: (err as Error).message });
      return false;
    }
  };
  const daemonSets = sorted.filter(({ o }) => o.kind === 'DaemonSet').map(({ o }) => o);
  for (const ds of daemonSets) {
    await remove(ds);
    const left = await waitForPodsGone(kc, ds, opts.agentTimeoutMs ?? 300_000, opts.progress ?? (() => {}));
    for (const pod of left) {
      results.push({
        object: `Pod/${pod.name}`,
        action: 'failed',
        error: `still running on node ${pod.node}: its capture rules may stay; run "hypha agent cleanup" on that node`,
      });
    }
  }
  for (const { o } of sorted) {
    if (o.kind === 'CustomResourceDefinition' && !opts.crds) continue;
    if (o.kind === 'DaemonSet') continue;
    await remove(o);
  }
  return results;
}

/** Polls the DaemonSet's pods (by its selector) until none is left or the timeout passes. */
async function waitForPodsGone(
  kc: KubeConfig,
  ds: ManifestObject,
  timeoutMs: number,
  progress: (line: string) => void,
): Promise<{ name: string; node: string }[]> {
  const { fetchKube } = await import('@hypha/shared/kube');
  const labels = ((ds.spec as { selector?: { matchLabels?: Record<string, string> } } | undefined)?.selector
    ?.matchLabels ?? {}) as Record<string, string>;
  const selector = Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const ns = ds.metadata.namespace ?? 'default';
  const deadline = Date.now() + timeoutMs;
  let lastSaid = 0;
  for (;;) {
    let pods: { name: string; node: string }[];
    try {
      const list = (await fetchKube(
        kc,
        `/api/v1/namespaces/${ns}/pods?labelSelector=${encodeURIComponent(selector)}`,
        { timeoutMs: 10_000 },
      )) as { items?: { metadata?: { name?: string }; spec?: { nodeName?: string } }[] };
      pods = (list.items ?? []).map((p) => ({
        name: p.metadata?.name ?? '?',
        node: p.spec?.nodeName ?? '?',
      }));
    } catch (err) {
      progress(`cannot list the agent pods (${(err as Error).message}); not waiting for them`);
      return [];
    }
    if (pods.length === 0) return [];
    if (Date.now() >= deadline) return pods;
    if (Date.now() - lastSaid >= 5000) {
      lastSaid = Date.now();
      progress(
        `waiting for ${pods.length} agent pod(s) to stop; each removes its node's capture rules on the way out: ${pods.map((p) => p.node).join(', ')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function printResults(results: readonly ApplyResult[]): void {
  const width = Math.max(6, ...results.map((r) => r.object.length));
  for (const r of results) {
    process.stdout.write(`${r.object.padEnd(width)}  ${r.action}${r.error ? `: ${r.error}` : ''}\n`);
  }
}

interface InstallFlags {
  print: boolean;
  overlay?: string;
  kubeconfig?: string;
  manifests?: string;
}

export function register(program: Command): void {
  program
    .command('install')
    .description('render the Kubernetes manifests and apply them to the cluster (or print them)')
    .option('--print', 'print the rendered manifests (YAML) instead of applying them', false)
    .option('--overlay <name>', 'render manifests/overlays/<name> instead of manifests/base (e.g. dev)')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .option(
      '--manifests <dir>',
      'manifests directory (default: the one shipped with hypha; env HYPHA_MANIFESTS)',
    )
    .addHelpText(
      'after',
      `
Applies with server-side apply (field manager "hypha"), so running it again upgrades in place.
Order: Namespace, CRDs (waits until the API serves them), RBAC, CA, agent DaemonSet.

Examples:
  hypha install --print > hypha.yaml        same objects as: kubectl kustomize manifests/base
  hypha install                             apply to the current kubectl context
  hypha install --overlay dev               locally built hypha:dev image, one CA replica
  hypha check                               then verify the installation`,
    )
    .action(async (flags: InstallFlags) => {
      const { objects, dir, renderer } = await renderManifests({
        ...(flags.manifests ? { manifestsDir: resolve(flags.manifests) } : {}),
        ...(flags.overlay ? { overlay: flags.overlay } : {}),
      });
      if (flags.print) {
        const { stringify } = await import('yaml');
        process.stdout.write(objects.map((o) => stringify(o)).join('---\n'));
        return;
      }
      const { loadKubeConfig } = await import('@hypha/shared/kube');
      const kc = loadKubeConfig(flags.kubeconfig);
      process.stdout.write(
        `Installing Hypha (${objects.length} objects from ${dir}, rendered by ${renderer}) into ${kc.getCurrentCluster()?.server}\n`,
      );
      const results = await applyManifests(kc, objects);
      printResults(results);
      const failed = results.filter((r) => r.action === 'failed');
      if (failed.length > 0) {
        process.stderr.write(`hypha: ${failed.length} object(s) failed to apply; see above\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(
        'Done. Next: kubectl -n hypha-system rollout status ds/hypha-agent && hypha check\n' +
          'Opt a namespace in: kubectl label namespace <ns> hypha.dev/dataplane-mode=ambient\n',
      );
    });

  program
    .command('uninstall')
    .description('delete what "hypha install" created (CRDs and your policies are kept unless --crds)')
    .option(
      '--crds',
      'also delete the CRDs, and with them every AuthorizationPolicy and TrafficPolicy',
      false,
    )
    .option('--overlay <name>', 'the overlay that was installed')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .option('--manifests <dir>', 'manifests directory (default: the one shipped with hypha)')
    .option('--agent-timeout <duration>', 'how long to wait for the agents to remove capture and stop', '5m')
    .addHelpText(
      'after',
      `
The agent DaemonSet is deleted first; each agent, stopped while its DaemonSet is being deleted,
removes its node's capture rules (the node leaves the mesh). Uninstall waits for the agent pods to
be gone before it deletes their RBAC. A node whose agent does not stop in time is named: run
"hypha agent cleanup" there.`,
    )
    .action(
      async (flags: {
        crds: boolean;
        overlay?: string;
        kubeconfig?: string;
        manifests?: string;
        agentTimeout: string;
      }) => {
        if (flags.overlay !== undefined && !/^[a-z0-9-]+$/.test(flags.overlay))
          throw new UsageError(
            `--overlay must be a directory name under manifests/overlays, got "${flags.overlay}"`,
          );
        const { objects } = await renderManifests({
          ...(flags.manifests ? { manifestsDir: resolve(flags.manifests) } : {}),
          ...(flags.overlay ? { overlay: flags.overlay } : {}),
        });
        const { loadKubeConfig } = await import('@hypha/shared/kube');
        const kc = loadKubeConfig(flags.kubeconfig);
        const results = await deleteManifests(kc, objects, {
          crds: flags.crds,
          agentTimeoutMs: durationFlagMs('--agent-timeout', flags.agentTimeout),
          progress: (line) => process.stdout.write(`${line}\n`),
        });
        printResults(results);
        if (!flags.crds) process.stdout.write('CRDs kept (your policies survive); remove them with --crds\n');
        if (results.some((r) => r.action === 'failed')) process.exitCode = 1;
      },
    );
}
