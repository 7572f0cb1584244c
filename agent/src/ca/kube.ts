// The CA as it runs in a cluster (`hypha ca serve --config kubernetes`), wired in one place:
//
//   signing key ◀── plug-in dir | Secret cacerts | Secret hypha-ca-root (created once)   (kube-root.ts)
//   trust bundle ──▶ ConfigMap hypha-ca-root-cert in hypha-system (+ extra namespaces)
//   token ──▶ TokenReview (audience hypha-ca) ──▶ caller {node, role, serviceAccount, pod} (kube-auth.ts)
//   Pods informer ──▶ ConfigState ──▶ node authorization                                (kube-auth.ts)
//   ConfigMap hypha-ca-revocations ──watch──▶ revocation list (+ <plug-in dir>/revocations.json,
//     union: an entry in either is revoked)                                      (kube-revocations.ts)
//   CaServer (HTTPS :15012), unchanged from file mode
import { createSilentLogger, type Logger } from '@hypha/shared';
import type { CertificateAuthority } from '@hypha/shared/identity';
import {
  createKubeSource,
  type KubeconfigOption,
  type KubeSource,
  loadKubeConfig,
  WATCHED_KINDS,
} from '@hypha/shared/kube';
import { CA_TOKEN_AUDIENCE, KubeNodeAuthorizer, TokenReviewAuthenticator } from './kube-auth.js';
import { KubeRevocationList } from './kube-revocations.js';
import { fetchKubeCaRoot, type KubeRootSource, publishTrustBundle } from './kube-root.js';
import { mergeRevocationSources, RevocationList, type RevocationSource } from './revocations.js';
import { CaServer } from './server.js';

export interface KubeCaOptions {
  kubeconfig?: KubeconfigOption;
  namespace?: string;
  trustDomain?: string;
  maxTtlSeconds?: number;
  audience?: string;
  /** `namespace/name` of node-agent ServiceAccounts. Default `<namespace>/hypha-agent`. */
  agentServiceAccounts?: readonly string[];
  /** Namespaces that get the trust-bundle ConfigMap besides the CA's own. */
  publishNamespaces?: readonly string[];
  /**
   * Plug-in directory (mounted cacerts Secret). A revocations.json there stays in force next to
   * the ConfigMap hypha-ca-revocations: an entry in either is revoked.
   */
  pluginDir?: string;
  host?: string;
  port?: number;
  serverDnsNames?: string[];
  serverIpAddresses?: string[];
  logger?: Logger;
}

export interface KubeCa {
  readonly ca: CertificateAuthority;
  readonly rootSource: KubeRootSource;
  readonly server: CaServer;
  readonly pods: KubeSource;
  /** ConfigMap hypha-ca-revocations, as watched. */
  readonly revocations: KubeRevocationList;
  close(graceMs?: number): Promise<void>;
}

/** Loads the root, publishes the trust bundle, syncs Pods and builds the server (not yet listening). */
export async function createKubeCa(opts: KubeCaOptions): Promise<KubeCa> {
  const logger = opts.logger ?? createSilentLogger();
  const namespace = opts.namespace ?? 'hypha-system';
  const kc = loadKubeConfig(opts.kubeconfig);
  const { ca, source } = await fetchKubeCaRoot({
    kubeconfig: kc,
    namespace,
    logger,
    ...(opts.trustDomain !== undefined ? { trustDomain: opts.trustDomain } : {}),
    ...(opts.maxTtlSeconds !== undefined ? { maxTtlSeconds: opts.maxTtlSeconds } : {}),
    ...(opts.pluginDir !== undefined ? { pluginDir: opts.pluginDir } : {}),
  });
  const targets = [...new Set([namespace, ...(opts.publishNamespaces ?? [])])];
  const changed = await publishTrustBundle(kc, ca.trustBundlePem, targets);
  logger.info({ namespaces: targets, changed }, 'trust bundle published to ConfigMap hypha-ca-root-cert');

  // Pods for node authorization; Namespaces so every mesh namespace gets the trust bundle
  // (waypoints and workloads there mount ConfigMap hypha-ca-root-cert, as with Istio's
  // istio-ca-root-cert).
  const pods = createKubeSource({
    kubeconfig: kc,
    kinds: WATCHED_KINDS.filter((k) => k.kind === 'Pod' || k.kind === 'Namespace'),
    trustDomain: ca.trustDomain,
    logger,
  });
  const revocations = new KubeRevocationList({ kubeconfig: kc, namespace, logger });
  try {
    await Promise.all([pods.start(), revocations.start()]);
  } catch (err) {
    await Promise.all([pods.close(), revocations.close()]);
    throw err;
  }
  const revocationSources: RevocationSource[] = [revocations];
  if (opts.pluginDir !== undefined) revocationSources.push(new RevocationList(opts.pluginDir));
  const published = new Set(targets);
  let publishing = Promise.resolve();
  const publishToMeshNamespaces = () => {
    const fresh = [...pods.state.namespaces()]
      .filter((n) => n.dataplaneMode === 'ambient' && !published.has(n.name))
      .map((n) => n.name);
    if (fresh.length === 0) return;
    for (const n of fresh) published.add(n);
    publishing = publishing
      .then(() => publishTrustBundle(kc, ca.trustBundlePem, fresh))
      .then(
        (done) =>
          logger.info({ namespaces: fresh, changed: done }, 'trust bundle published to mesh namespaces'),
        (err: Error) => {
          for (const n of fresh) published.delete(n);
          logger.warn(
            { namespaces: fresh, err: err.message },
            'publishing the trust bundle failed; will retry on the next change',
          );
        },
      );
  };
  publishToMeshNamespaces();
  const unsubscribe = pods.state.onChange((change) => {
    if (change.namespaces.added.length + change.namespaces.updated.length > 0) publishToMeshNamespaces();
  });
  const server = await CaServer.create({
    ca,
    authenticator: new TokenReviewAuthenticator({
      kubeconfig: kc,
      audience: opts.audience ?? CA_TOKEN_AUDIENCE,
      agentServiceAccounts: opts.agentServiceAccounts ?? [`${namespace}/hypha-agent`],
      logger,
    }),
    authorizer: new KubeNodeAuthorizer(pods.state),
    revocations: mergeRevocationSources(revocationSources),
    ...(opts.host !== undefined ? { host: opts.host } : {}),
    ...(opts.port !== undefined ? { port: opts.port } : {}),
    ...(opts.serverDnsNames ? { serverDnsNames: opts.serverDnsNames } : {}),
    ...(opts.serverIpAddresses ? { serverIpAddresses: opts.serverIpAddresses } : {}),
    logger,
  });
  return {
    ca,
    rootSource: source,
    server,
    pods,
    revocations,
    async close(graceMs = 5000) {
      unsubscribe();
      await server.close(graceMs);
      await publishing;
      await Promise.all([pods.close(), revocations.close()]);
    },
  };
}
