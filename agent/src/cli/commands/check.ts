// `hypha check [--pre]`: is this cluster ready for Hypha (--pre), and is Hypha working on it?
// Each check is one row: NAME, STATUS (ok | warn | fail), and what to do. Exit 1 when any fails.
//
// Pre-flight: API reachable, nftables on this node, Gateway API CRDs served.
// Post-install: API reachable, Hypha CRDs present, an agent ready on every node, the CA Deployment
// available (and its /healthz with --ca-address), no node where two agents overlapped past the
// hand-off and drain deadline (a stuck upgrade), the trust bundle parses and is not expiring,
// NetworkPolicies that would block HBONE (TCP 15008) into mesh pods, flagged by name; the mesh's
// outbound traffic policy (MeshConfig) and ServiceEntries the agents cannot read.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import type { Command } from 'commander';

type KubeConfig = ReturnType<typeof import('@hypha/shared/kube').loadKubeConfig>;

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
}

export interface CheckOptions {
  pre?: boolean;
  namespace?: string;
  /** Probe the CA's /healthz directly (https URL); otherwise only the Deployment's status is read. */
  caAddress?: string;
  /** Warn when the root expires sooner than this. Default 30 days. */
  expiryWarningDays?: number;
  /** The nft binary to look for (tests). */
  nftCommand?: string;
  now?: Date;
}

const CRDS = [
  'authorizationpolicies.security.hypha.dev',
  'requestauthentications.security.hypha.dev',
  'peerauthentications.security.hypha.dev',
  'trafficpolicies.traffic.hypha.dev',
  'serviceentries.networking.hypha.dev',
  'meshconfigs.networking.hypha.dev',
];
const HBONE_PORT = 15008;

interface K8sList<T> {
  items?: T[];
}
interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    labels?: Record<string, string>;
    creationTimestamp?: string;
  };
  spec?: { nodeName?: string };
  status?: { conditions?: { type: string; status: string }[] };
}
interface NetworkPolicyLike {
  metadata?: { name?: string; namespace?: string };
  spec?: {
    podSelector?: { matchLabels?: Record<string, string>; matchExpressions?: unknown[] };
    policyTypes?: string[];
    ingress?: { ports?: { port?: number | string; endPort?: number; protocol?: string }[] }[];
  };
}

export async function runChecks(kc: KubeConfig, opts: CheckOptions = {}): Promise<CheckResult[]> {
  const { fetchKube, KubeError } = await import('@hypha/shared/kube');
  const ns = opts.namespace ?? 'hypha-system';
  const results: CheckResult[] = [];
  const add = (name: string, status: CheckStatus, detail: string) => results.push({ name, status, detail });
  const get = async <T>(path: string): Promise<T | undefined> => {
    try {
      return (await fetchKube(kc, path, { timeoutMs: 10_000 })) as T;
    } catch (err) {
      if (err instanceof KubeError && err.status === 404) return undefined;
      throw err;
    }
  };
  const server = kc.getCurrentCluster()?.server ?? '?';

  try {
    const v = (await fetchKube(kc, '/version', { timeoutMs: 10_000 })) as { gitVersion?: string };
    add('kubernetes-api', 'ok', `${server} (${v.gitVersion ?? 'unknown version'})`);
  } catch (err) {
    add('kubernetes-api', 'fail', `${server} not reachable: ${(err as Error).message}`);
    if (opts.pre) results.push(await checkNft(opts.nftCommand ?? 'nft'));
    return results;
  }

  if (opts.pre) {
    results.push(await checkNft(opts.nftCommand ?? 'nft'));
    try {
      const gw = await get<{ resources?: { name: string }[] }>('/apis/gateway.networking.k8s.io/v1');
      const served = new Set((gw?.resources ?? []).map((r) => r.name));
      const missing = ['gateways', 'httproutes', 'grpcroutes'].filter((r) => !served.has(r));
      if (missing.length === 0)
        add('gateway-api', 'ok', 'Gateway API v1 (gateways, httproutes, grpcroutes) served');
      else
        add(
          'gateway-api',
          'fail',
          `not served: ${missing.join(', ')}; install the Gateway API CRDs (standard channel v1.1+) before Hypha`,
        );
    } catch (err) {
      add('gateway-api', 'fail', (err as Error).message);
    }
    for (const crd of CRDS) {
      const found = await get(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd}`).catch(
        () => undefined,
      );
      if (found)
        add('existing-install', 'warn', `CRD ${crd} already exists: "hypha install" will upgrade in place`);
    }
    return results;
  }

  // Post-install.
  try {
    const missing: string[] = [];
    for (const crd of CRDS)
      if (!(await get(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd}`))) missing.push(crd);
    if (missing.length === 0) add('crds', 'ok', CRDS.join(', '));
    else add('crds', 'fail', `missing CRD ${missing.join(', ')}: run "hypha install"`);
  } catch (err) {
    add('crds', 'fail', (err as Error).message);
  }

  try {
    const ds = await get<{
      spec?: { template?: { spec?: { terminationGracePeriodSeconds?: number } } };
      status?: { desiredNumberScheduled?: number; numberReady?: number };
    }>(`/apis/apps/v1/namespaces/${ns}/daemonsets/hypha-agent`);
    if (!ds) add('agents', 'fail', `DaemonSet ${ns}/hypha-agent not found: run "hypha install"`);
    else {
      const nodes = (await get<K8sList<{ metadata?: { name?: string } }>>('/api/v1/nodes'))?.items ?? [];
      const pods =
        (
          await get<K8sList<PodLike>>(
            `/api/v1/namespaces/${ns}/pods?labelSelector=${encodeURIComponent('app.kubernetes.io/name=hypha-agent')}`,
          )
        )?.items ?? [];
      const readyOn = new Set(
        pods
          .filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
          .map((p) => p.spec?.nodeName),
      );
      const names = nodes.map((n) => n.metadata?.name ?? '?');
      const without = names.filter((n) => !readyOn.has(n));
      if (names.length === 0) add('agents', 'fail', 'the cluster lists no nodes');
      else if (without.length === 0)
        add('agents', 'ok', `an agent is ready on each of ${names.length} node(s)`);
      else
        add(
          'agents',
          'fail',
          `no ready agent on ${without.length} of ${names.length} node(s): ${without.join(', ')} (kubectl -n ${ns} get pods -l app.kubernetes.io/name=hypha-agent -o wide; logs say why)`,
        );
      results.push(
        checkOverlaps(
          pods,
          ds.spec?.template?.spec?.terminationGracePeriodSeconds ?? 190,
          opts.now ?? new Date(),
          ns,
        ),
      );
    }
  } catch (err) {
    add('agents', 'fail', (err as Error).message);
  }

  results.push(...(await checkEgress(get, ns)));

  try {
    const dep = await get<{ spec?: { replicas?: number }; status?: { availableReplicas?: number } }>(
      `/apis/apps/v1/namespaces/${ns}/deployments/hypha-ca`,
    );
    if (!dep) add('ca', 'fail', `Deployment ${ns}/hypha-ca not found: run "hypha install"`);
    else if ((dep.status?.availableReplicas ?? 0) < 1)
      add(
        'ca',
        'fail',
        `Deployment ${ns}/hypha-ca has no available replica (kubectl -n ${ns} logs deploy/hypha-ca)`,
      );
    else
      add('ca', 'ok', `${dep.status?.availableReplicas}/${dep.spec?.replicas ?? '?'} CA replicas available`);
  } catch (err) {
    add('ca', 'fail', (err as Error).message);
  }

  let bundle: string | undefined;
  try {
    const cm = await get<{ data?: Record<string, string> }>(
      `/api/v1/namespaces/${ns}/configmaps/hypha-ca-root-cert`,
    );
    bundle = cm?.data?.['root-cert.pem'];
    if (bundle === undefined)
      add(
        'certificates',
        'fail',
        `ConfigMap ${ns}/hypha-ca-root-cert (root-cert.pem) missing: the CA publishes it when it starts`,
      );
    else results.push(checkBundle(bundle, opts.now ?? new Date(), opts.expiryWarningDays ?? 30));
  } catch (err) {
    add('certificates', 'fail', (err as Error).message);
  }

  if (opts.caAddress) results.push(await probeCa(opts.caAddress, bundle));

  try {
    const namespaces =
      (
        await get<K8sList<{ metadata?: { name?: string; labels?: Record<string, string> } }>>(
          '/api/v1/namespaces',
        )
      )?.items ?? [];
    const mesh = new Set(
      namespaces
        .filter((n) => n.metadata?.labels?.['hypha.dev/dataplane-mode'] === 'ambient')
        .map((n) => n.metadata?.name),
    );
    const policies =
      (await get<K8sList<NetworkPolicyLike>>('/apis/networking.k8s.io/v1/networkpolicies'))?.items ?? [];
    const blocking = policies
      .filter((p) => mesh.has(p.metadata?.namespace) && blocksHbone(p))
      .map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`);
    if (blocking.length === 0)
      add('network-policies', 'ok', `none blocks TCP ${HBONE_PORT} in ${mesh.size} mesh namespace(s)`);
    else
      add(
        'network-policies',
        'fail',
        `would block HBONE (TCP ${HBONE_PORT}) into mesh pods: ${blocking.join(', ')}; add an ingress rule allowing TCP ${HBONE_PORT}`,
      );
  } catch (err) {
    add('network-policies', 'warn', `could not read NetworkPolicies: ${(err as Error).message}`);
  }
  return results;
}

/**
 * During an upgrade two agent pods run on a node for as long as the hand-off and the old one's drain
 * take, which the pod's grace period bounds. Longer means the old agent never handed over (the new
 * one is not getting ready, or the hand-off directory is not shared) or does not exit.
 */
export function checkOverlaps(
  pods: readonly PodLike[],
  deadlineSeconds: number,
  now: Date,
  ns: string,
): CheckResult {
  const byNode = new Map<string, PodLike[]>();
  for (const p of pods) {
    const node = p.spec?.nodeName ?? '?';
    byNode.set(node, [...(byNode.get(node) ?? []), p]);
  }
  const stuck: string[] = [];
  const upgrading: string[] = [];
  for (const [node, list] of byNode) {
    if (list.length < 2) continue;
    const newest = Math.max(...list.map((p) => Date.parse(p.metadata?.creationTimestamp ?? '') || 0));
    const seconds = Math.round((now.getTime() - newest) / 1000);
    const names = list.map((p) => p.metadata?.name).join(', ');
    if (seconds > deadlineSeconds) stuck.push(`${node} (${names}: ${seconds} s)`);
    else upgrading.push(`${node} (${seconds} s)`);
  }
  if (stuck.length > 0)
    return {
      name: 'agent-upgrades',
      status: 'fail',
      detail: `two agents have overlapped longer than the hand-off and drain deadline (${deadlineSeconds} s) on ${stuck.join('; ')}: the old agent did not hand over; read both pods' logs (kubectl -n ${ns} logs <pod> | grep hand-off)`,
    };
  if (upgrading.length > 0)
    return {
      name: 'agent-upgrades',
      status: 'ok',
      detail: `hand-off in progress on ${upgrading.join(', ')}`,
    };
  return { name: 'agent-upgrades', status: 'ok', detail: 'one agent per node' };
}

/** An ingress policy blocks HBONE unless some rule allows TCP 15008 (a rule without ports allows all). */
export function blocksHbone(p: NetworkPolicyLike): boolean {
  const types = p.spec?.policyTypes ?? ['Ingress'];
  if (!types.includes('Ingress')) return false;
  const rules = p.spec?.ingress ?? [];
  return !rules.some(
    (r) =>
      r.ports === undefined ||
      r.ports.length === 0 ||
      r.ports.some(
        (port) =>
          (port.protocol ?? 'TCP') === 'TCP' &&
          (port.port === undefined ||
            port.port === HBONE_PORT ||
            port.port === String(HBONE_PORT) ||
            (typeof port.port === 'number' &&
              port.endPort !== undefined &&
              port.port <= HBONE_PORT &&
              HBONE_PORT <= port.endPort)),
      ),
  );
}

function checkBundle(pem: string, now: Date, warnDays: number): CheckResult {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0)
    return { name: 'certificates', status: 'fail', detail: 'hypha-ca-root-cert holds no PEM certificate' };
  let soonest: Date | undefined;
  for (const b of blocks) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(b);
    } catch (err) {
      return {
        name: 'certificates',
        status: 'fail',
        detail: `trust bundle does not parse: ${(err as Error).message}`,
      };
    }
    const notAfter = new Date(cert.validTo);
    if (notAfter <= now || new Date(cert.validFrom) > now)
      return {
        name: 'certificates',
        status: 'fail',
        detail: `root ${cert.subject.replace(/\n/g, ', ')} is not valid now (${cert.validFrom} .. ${cert.validTo})`,
      };
    if (!soonest || notAfter < soonest) soonest = notAfter;
  }
  const days = Math.floor(((soonest as Date).getTime() - now.getTime()) / 86_400_000);
  if (days < warnDays)
    return {
      name: 'certificates',
      status: 'warn',
      detail: `a root expires in ${days} day(s) (${(soonest as Date).toISOString()}): plan a rotation`,
    };
  return {
    name: 'certificates',
    status: 'ok',
    detail: `${blocks.length} root(s), valid until ${(soonest as Date).toISOString().slice(0, 10)}`,
  };
}

async function probeCa(url: string, bundle: string | undefined): Promise<CheckResult> {
  const { request } = await import('node:https');
  return new Promise((resolve) => {
    const req = request(
      new URL('/healthz', url),
      {
        method: 'GET',
        timeout: 5000,
        ...(bundle ? { ca: bundle } : {}),
        checkServerIdentity: () => undefined,
      },
      (res) => {
        res.resume();
        resolve(
          res.statusCode === 200
            ? { name: 'ca-health', status: 'ok', detail: `${url}/healthz answered 200` }
            : { name: 'ca-health', status: 'fail', detail: `${url}/healthz answered ${res.statusCode}` },
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (err) =>
      resolve({ name: 'ca-health', status: 'fail', detail: `${url} unreachable: ${err.message}` }),
    );
    req.end();
  });
}

function checkNft(cmd: string): Promise<CheckResult> {
  return new Promise((resolve) => {
    execFile(cmd, ['--version'], { timeout: 5000 }, (err, stdout) => {
      if (err)
        resolve({
          name: 'nftables',
          status: 'fail',
          detail: `"${cmd} --version" failed on this node (${(err as NodeJS.ErrnoException).code ?? err.message}): install nftables (apt-get install nftables)`,
        });
      else resolve({ name: 'nftables', status: 'ok', detail: stdout.trim() });
    });
  });
}

/** The colour-free table `hypha check` prints. */
export function formatChecks(results: readonly CheckResult[]): string {
  const w = Math.max(5, ...results.map((r) => r.name.length));
  const lines = [`${'CHECK'.padEnd(w)}  STATUS  DETAIL`];
  for (const r of results) lines.push(`${r.name.padEnd(w)}  ${r.status.padEnd(6)}  ${r.detail}`);
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  lines.push(
    '',
    failed === 0
      ? `All checks passed${warned ? ` (${warned} warning(s))` : ''}.`
      : `${failed} check(s) failed.`,
  );
  return `${lines.join('\n')}\n`;
}

export function register(program: Command): void {
  program
    .command('check')
    .description('check that the cluster is ready for Hypha (--pre) or that Hypha works on it')
    .option('--pre', 'pre-flight checks before "hypha install"', false)
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .option('--namespace <ns>', "Hypha's namespace", 'hypha-system')
    .option('--ca-address <url>', 'also probe the CA at this https URL (e.g. through kubectl port-forward)')
    .addHelpText(
      'after',
      `
Exit codes: 0 every check passed (warnings allowed), 1 some check failed.
Examples:
  hypha check --pre        before installing: API, nftables on this node, Gateway API CRDs
  hypha check              after installing: CRDs, agents on every node, CA, trust bundle, NetworkPolicies`,
    )
    .action(async (flags: { pre: boolean; kubeconfig?: string; namespace: string; caAddress?: string }) => {
      const { loadKubeConfig } = await import('@hypha/shared/kube');
      const kc = loadKubeConfig(flags.kubeconfig);
      const results = await runChecks(kc, {
        pre: flags.pre,
        namespace: flags.namespace,
        ...(flags.caAddress ? { caAddress: flags.caAddress } : {}),
      });
      process.stdout.write(formatChecks(results));
      if (results.some((r) => r.status === 'fail')) process.exitCode = 1;
    });
}

/**
 * Egress: the outbound traffic policy in force (MeshConfig `default` in the root namespace, else the
 * agents' --outbound-policy) and ServiceEntries the agents would skip, read with the agents' own
 * translation so what this says is what they do.
 */
async function checkEgress(
  get: <T>(path: string) => Promise<T | undefined>,
  ns: string,
): Promise<CheckResult[]> {
  const { translateObject } = await import('@hypha/shared/config');
  const out: CheckResult[] = [];
  try {
    const mesh = await get<Record<string, unknown>>(
      `/apis/networking.hypha.dev/v1/namespaces/${ns}/meshconfigs/default`,
    );
    if (mesh === undefined) {
      out.push({
        name: 'outbound-traffic-policy',
        status: 'ok',
        detail: `no MeshConfig ${ns}/default: each agent's --outbound-policy decides (default passthrough = ALLOW_ANY)`,
      });
    } else {
      const t = translateObject(
        { apiVersion: 'networking.hypha.dev/v1', kind: 'MeshConfig', ...mesh },
        { source: 'kubernetes' },
      );
      if (t.status === 'ok' && t.object.kind === 'MeshConfig' && t.object.problems.length > 0) {
        out.push({
          name: 'outbound-traffic-policy',
          status: 'warn',
          detail: `MeshConfig ${ns}/default cannot be read (${t.object.problems.join('; ')}): agents treat it as REGISTRY_ONLY`,
        });
      } else if (t.status === 'ok' && t.object.kind === 'MeshConfig') {
        out.push({
          name: 'outbound-traffic-policy',
          status: 'ok',
          detail: `${t.object.outboundTrafficPolicy ?? "not set (agents' --outbound-policy)"} (MeshConfig ${ns}/default)`,
        });
      }
    }
  } catch (err) {
    out.push({ name: 'outbound-traffic-policy', status: 'warn', detail: (err as Error).message });
  }
  try {
    const list = await get<K8sList<Record<string, unknown>>>('/apis/networking.hypha.dev/v1/serviceentries');
    const items = list?.items ?? [];
    const problems: string[] = [];
    for (const item of items) {
      const t = translateObject(
        { apiVersion: 'networking.hypha.dev/v1', kind: 'ServiceEntry', ...item },
        { source: 'kubernetes' },
      );
      if (t.status === 'invalid')
        problems.push(...t.errors.map((e) => e.message.replace(/^kubernetes: /, '')));
    }
    if (problems.length === 0)
      out.push({ name: 'service-entries', status: 'ok', detail: `${items.length} ServiceEntry(ies)` });
    else
      out.push({
        name: 'service-entries',
        status: 'warn',
        detail: `agents skip ${problems.length === 1 ? 'this' : 'these'}: ${problems.join('; ')}`,
      });
  } catch (err) {
    out.push({ name: 'service-entries', status: 'warn', detail: (err as Error).message });
  }
  return out;
}
