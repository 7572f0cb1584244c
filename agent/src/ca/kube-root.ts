// The CA's signing key in Kubernetes, and the trust bundle it publishes.
//
// Where the signing key comes from, first match wins:
//   1. a plug-in directory (`--dir`, the `cacerts` Secret mounted by the Deployment) holding
//      Istio's layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem);
//   2. the Secret `cacerts` in the CA's namespace, read through the API (same layout);
//   3. the Secret `hypha-ca-root` (a root Hypha generated earlier);
//   4. none: generate a root and CREATE `hypha-ca-root`. Creation is the lock: when several replicas
//      start together exactly one create succeeds; the others get 409 AlreadyExists and load the
//      winner's Secret, so the cluster ends up with one root. Nothing ever overwrites the Secret.
//
// The trust bundle (root-cert.pem) is published to the ConfigMap `hypha-ca-root-cert` in the CA's
// namespace (and any extra namespaces asked for): agents mount it at /var/run/hypha, waypoints in
// other namespaces read it through the API (the RBAC grants every ServiceAccount read access).
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSilentLogger, type Logger } from '@hypha/shared';
import { CA_FILES, CertificateAuthority } from '@hypha/shared/identity';
import { fetchKube, KubeError, type loadKubeConfig } from '@hypha/shared/kube';

type KubeConfig = ReturnType<typeof loadKubeConfig>;

export const ROOT_SECRET = 'hypha-ca-root';
export const PLUGIN_SECRET = 'cacerts';
export const TRUST_BUNDLE_CONFIGMAP = 'hypha-ca-root-cert';
export const TRUST_BUNDLE_KEY = 'root-cert.pem';

export type KubeRootSource = 'plugin-dir' | 'plugin-secret' | 'existing-secret' | 'created';

export interface KubeRootOptions {
  kubeconfig: KubeConfig;
  /** The CA's namespace. Default hypha-system. */
  namespace?: string;
  trustDomain?: string;
  maxTtlSeconds?: number;
  /** A mounted plug-in directory; used when it holds ca-key.pem. */
  pluginDir?: string;
  logger?: Logger;
}

export class KubeRootError extends Error {
  readonly code = 'KUBE_ROOT' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'KubeRootError';
  }
}

interface SecretObject {
  metadata?: { name?: string; resourceVersion?: string };
  data?: Record<string, string>;
}

const SECRET_FILES = [CA_FILES.caCert, CA_FILES.caKey, CA_FILES.rootCert, CA_FILES.certChain, CA_FILES.meta];

/** Loads (or creates once) the CA's signing material; see the order at the top of this file. */
export async function fetchKubeCaRoot(
  opts: KubeRootOptions,
): Promise<{ ca: CertificateAuthority; source: KubeRootSource }> {
  const ns = opts.namespace ?? 'hypha-system';
  const log = (opts.logger ?? createSilentLogger()).child({ component: 'ca-root' });
  const loadOpts = {
    ...(opts.trustDomain !== undefined ? { trustDomain: opts.trustDomain } : {}),
    ...(opts.maxTtlSeconds !== undefined ? { maxTtlSeconds: opts.maxTtlSeconds } : {}),
  };
  if (opts.pluginDir !== undefined && (await isFile(join(opts.pluginDir, CA_FILES.caKey)))) {
    const ca = await CertificateAuthority.load(opts.pluginDir, loadOpts);
    log.info({ dir: opts.pluginDir }, 'using the plug-in CA from the mounted directory');
    return { ca, source: 'plugin-dir' };
  }
  const plugin = await fetchSecret(opts.kubeconfig, ns, PLUGIN_SECRET);
  if (plugin) {
    log.info({ secret: `${ns}/${PLUGIN_SECRET}` }, 'using the plug-in CA from the cacerts Secret');
    return { ca: await loadFromSecret(plugin, `${ns}/${PLUGIN_SECRET}`, loadOpts), source: 'plugin-secret' };
  }
  const existing = await fetchSecret(opts.kubeconfig, ns, ROOT_SECRET);
  if (existing) {
    log.info({ secret: `${ns}/${ROOT_SECRET}` }, 'using the root kept in the Secret');
    return {
      ca: await loadFromSecret(existing, `${ns}/${ROOT_SECRET}`, loadOpts),
      source: 'existing-secret',
    };
  }
  const generated = await CertificateAuthority.init({
    ...(opts.trustDomain !== undefined ? { trustDomain: opts.trustDomain } : {}),
    ...(opts.maxTtlSeconds !== undefined ? { maxTtlSeconds: opts.maxTtlSeconds } : {}),
  });
  const data = await secretDataOf(generated);
  try {
    await fetchKube(opts.kubeconfig, `/api/v1/namespaces/${encodeURIComponent(ns)}/secrets`, {
      method: 'POST',
      body: {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name: ROOT_SECRET,
          namespace: ns,
          labels: { 'app.kubernetes.io/part-of': 'hypha', 'app.kubernetes.io/component': 'ca' },
        },
        type: 'Opaque',
        data,
      },
      timeoutMs: 15_000,
    });
    log.info({ secret: `${ns}/${ROOT_SECRET}` }, 'generated a new root and stored it in the Secret');
    return { ca: generated, source: 'created' };
  } catch (err) {
    if (!(err instanceof KubeError && err.status === 409)) throw err;
  }
  // Another replica won the race: its root is the cluster's root.
  const winner = await fetchSecret(opts.kubeconfig, ns, ROOT_SECRET);
  if (!winner) {
    throw new KubeRootError(
      `creating Secret ${ns}/${ROOT_SECRET} reported AlreadyExists, but it cannot be read; check the CA's RBAC (get secrets/${ROOT_SECRET})`,
    );
  }
  log.info({ secret: `${ns}/${ROOT_SECRET}` }, 'another replica created the root first; using it');
  return { ca: await loadFromSecret(winner, `${ns}/${ROOT_SECRET}`, loadOpts), source: 'existing-secret' };
}

/**
 * Writes the trust bundle to ConfigMap `hypha-ca-root-cert` (key root-cert.pem) in each namespace:
 * create, or update when the content differs (resourceVersion precondition, retried on conflict).
 * Returns the namespaces where something changed.
 */
export async function publishTrustBundle(
  kc: KubeConfig,
  bundlePem: string,
  namespaces: readonly string[],
): Promise<string[]> {
  const changed: string[] = [];
  for (const ns of namespaces) {
    const base = `/api/v1/namespaces/${encodeURIComponent(ns)}/configmaps`;
    const body = (resourceVersion?: string) => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: TRUST_BUNDLE_CONFIGMAP,
        namespace: ns,
        labels: { 'app.kubernetes.io/part-of': 'hypha' },
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      data: { [TRUST_BUNDLE_KEY]: bundlePem },
    });
    for (let attempt = 0; ; attempt++) {
      let current: { metadata?: { resourceVersion?: string }; data?: Record<string, string> } | undefined;
      try {
        current = (await fetchKube(kc, `${base}/${TRUST_BUNDLE_CONFIGMAP}`)) as typeof current;
      } catch (err) {
        if (!(err instanceof KubeError && err.status === 404)) throw err;
      }
      try {
        if (!current) {
          await fetchKube(kc, base, { method: 'POST', body: body() });
        } else if (current.data?.[TRUST_BUNDLE_KEY] !== bundlePem) {
          await fetchKube(kc, `${base}/${TRUST_BUNDLE_CONFIGMAP}`, {
            method: 'PUT',
            body: body(current.metadata?.resourceVersion),
          });
        } else break;
        changed.push(ns);
        break;
      } catch (err) {
        // Lost a race with another replica (create or update): read again and compare.
        if (err instanceof KubeError && err.status === 409 && attempt < 5) continue;
        throw err;
      }
    }
  }
  return changed;
}

async function fetchSecret(kc: KubeConfig, ns: string, name: string): Promise<SecretObject | undefined> {
  try {
    return (await fetchKube(
      kc,
      `/api/v1/namespaces/${encodeURIComponent(ns)}/secrets/${encodeURIComponent(name)}`,
      { timeoutMs: 15_000 },
    )) as SecretObject;
  } catch (err) {
    if (err instanceof KubeError && err.status === 404) return undefined;
    throw err;
  }
}

async function secretDataOf(ca: CertificateAuthority): Promise<Record<string, string>> {
  const dir = await mkdtemp(join(tmpdir(), 'hypha-ca-root-'));
  try {
    await ca.save(join(dir, 'ca'));
    const data: Record<string, string> = {};
    for (const f of SECRET_FILES) data[f] = (await readFile(join(dir, 'ca', f))).toString('base64');
    return data;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function loadFromSecret(
  secret: SecretObject,
  what: string,
  opts: { trustDomain?: string; maxTtlSeconds?: number },
): Promise<CertificateAuthority> {
  const data = secret.data ?? {};
  for (const f of [CA_FILES.caCert, CA_FILES.caKey, CA_FILES.rootCert]) {
    if (typeof data[f] !== 'string') {
      throw new KubeRootError(
        `Secret ${what} has no key ${f}; it needs Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)`,
      );
    }
  }
  // CertificateAuthority.load reads a directory: write the keys to a private temporary one.
  const dir = await mkdtemp(join(tmpdir(), 'hypha-ca-secret-'));
  try {
    for (const f of SECRET_FILES) {
      const v = data[f];
      if (typeof v === 'string') await writeFile(join(dir, f), Buffer.from(v, 'base64'), { mode: 0o600 });
    }
    return await CertificateAuthority.load(dir, opts);
  } catch (err) {
    throw new KubeRootError(`cannot load the CA from Secret ${what}: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
