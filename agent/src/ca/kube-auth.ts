// Who may ask the CA for which identity, in Kubernetes.
//
// Authentication: the caller's projected ServiceAccount token (audience `hypha-ca`) is checked by
// the API server through TokenReview. The review says which ServiceAccount it is, and for bound
// tokens which pod and node (`authentication.kubernetes.io/pod-name`, `node-name`).
//
// Authorization (invariants):
// - A node agent (the ServiceAccount hypha-system/hypha-agent, configurable) may obtain the
//   identity of any pod scheduled on ITS node, and nothing else. Its node comes from the token's
//   node claim, or from its bound pod's spec.nodeName. A token that names no node is refused.
// - Any other caller (a waypoint, a pod using its own token) may obtain only its OWN identity
//   (the token's namespace/ServiceAccount), and only with a token bound to a pod that still
//   exists. Being in the cluster is not enough: a stolen unbound token mints nothing.
// - Pods come from an informer (the same Kubernetes source as the agent, Pods only), so a pod
//   deleted a moment ago stops counting as soon as its watch event arrives.
// - Nothing is cached across requests: every certificate request costs one TokenReview. Agents
//   ask a handful of times a day per identity, so correctness wins over the round trip.
import { createSilentLogger, type Logger } from '@hypha/shared';
import type { ConfigState } from '@hypha/shared/config';
import type { SpiffeId } from '@hypha/shared/identity';
import { fetchKube, KubeError, type loadKubeConfig } from '@hypha/shared/kube';
import type { Authenticator, Caller, NodeAuthorizer } from './auth.js';

type KubeConfig = ReturnType<typeof loadKubeConfig>;

export const CA_TOKEN_AUDIENCE = 'hypha-ca';
export const DEFAULT_AGENT_SERVICE_ACCOUNT = 'hypha-system/hypha-agent';
const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';
const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';

export interface TokenReviewAuthenticatorOptions {
  kubeconfig: KubeConfig;
  /** The audience agents' tokens must carry. Default `hypha-ca`. */
  audience?: string;
  /** `namespace/name` of ServiceAccounts that are node agents. Default hypha-system/hypha-agent. */
  agentServiceAccounts?: readonly string[];
  logger?: Logger;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/** `namespace/name` → parts; throws on anything else. */
export function parseServiceAccountRef(ref: string): { namespace: string; name: string } {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(ref);
  if (!m)
    throw new Error(
      `"${ref}" is not a ServiceAccount reference; write namespace/name, e.g. hypha-system/hypha-agent`,
    );
  return { namespace: m[1]!, name: m[3]! };
}

export class TokenReviewAuthenticator implements Authenticator {
  readonly #kc: KubeConfig;
  readonly #audience: string;
  readonly #agents: Set<string>;
  readonly #log: Logger;

  constructor(opts: TokenReviewAuthenticatorOptions) {
    this.#kc = opts.kubeconfig;
    this.#audience = opts.audience ?? CA_TOKEN_AUDIENCE;
    this.#agents = new Set(
      (opts.agentServiceAccounts ?? [DEFAULT_AGENT_SERVICE_ACCOUNT]).map((r) => {
        const { namespace, name } = parseServiceAccountRef(r);
        return `${namespace}/${name}`;
      }),
    );
    this.#log = (opts.logger ?? createSilentLogger()).child({ component: 'ca-tokenreview' });
  }

  async authenticate(token: string): Promise<Caller | undefined> {
    if (token.length === 0) return undefined;
    const review = (await fetchKube(this.#kc, '/apis/authentication.k8s.io/v1/tokenreviews', {
      method: 'POST',
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: [this.#audience] },
      },
      timeoutMs: 10_000,
    })) as { status?: TokenReviewStatus } | undefined;
    const status = review?.status ?? {};
    if (status.authenticated !== true) {
      this.#log.info({ reason: status.error ?? 'not authenticated' }, 'token refused by TokenReview');
      return undefined;
    }
    // The API server checked the audience; a server that ignores spec.audiences (very old ones)
    // would say nothing, so insist on seeing ours.
    if (!(status.audiences ?? []).includes(this.#audience)) {
      this.#log.info({ audiences: status.audiences }, `token is not for audience ${this.#audience}`);
      return undefined;
    }
    const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(status.user?.username ?? '');
    if (!m) {
      this.#log.info({ user: status.user?.username }, 'token is not a ServiceAccount token');
      return undefined;
    }
    const serviceAccount = { namespace: m[1]!, name: m[2]! };
    const extra = status.user?.extra ?? {};
    const podName = extra[EXTRA_POD_NAME]?.[0];
    const podUid = extra[EXTRA_POD_UID]?.[0];
    let node = extra[EXTRA_NODE_NAME]?.[0];
    if (node === undefined && podName !== undefined)
      node = await this.#fetchPodNode(serviceAccount.namespace, podName);
    const role = this.#agents.has(`${serviceAccount.namespace}/${serviceAccount.name}`)
      ? 'agent'
      : 'workload';
    if (node === undefined || node === '') {
      this.#log.info(
        { serviceAccount, pod: podName },
        'token names no node (not bound to a scheduled pod); refusing it',
      );
      return undefined;
    }
    const caller: Caller = { node, role, serviceAccount };
    if (podName !== undefined)
      caller.pod = podUid === undefined ? { name: podName } : { name: podName, uid: podUid };
    return caller;
  }

  async #fetchPodNode(namespace: string, name: string): Promise<string | undefined> {
    try {
      const pod = (await fetchKube(
        this.#kc,
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
        { timeoutMs: 10_000 },
      )) as { spec?: { nodeName?: string } };
      return pod.spec?.nodeName;
    } catch (err) {
      if (err instanceof KubeError && err.status === 404) return undefined;
      throw err;
    }
  }
}

/**
 * Node authorization from a config state fed by a Kubernetes source (Pods are enough). See the
 * invariants at the top of this file.
 */
export class KubeNodeAuthorizer implements NodeAuthorizer {
  readonly #state: ConfigState;

  constructor(state: ConfigState) {
    this.#state = state;
  }

  authorize(node: string, id: SpiffeId, caller?: Caller): boolean {
    if (caller?.role === 'workload') {
      const sa = caller.serviceAccount;
      if (!sa || !caller.pod) return false;
      if (id.namespace !== sa.namespace || id.serviceAccount !== sa.name) return false;
      const pod = this.#state.findWorkloadByName(sa.namespace, caller.pod.name);
      return (
        pod !== undefined &&
        pod.serviceAccount === sa.name &&
        pod.node === node &&
        (caller.pod.uid === undefined || pod.uid === caller.pod.uid)
      );
    }
    return this.#state
      .findWorkloadsOnNode(node)
      .some((w) => w.namespace === id.namespace && w.serviceAccount === id.serviceAccount);
  }
}
