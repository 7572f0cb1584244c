// The dashboard in a Kubernetes cluster: agents and waypoints found through the API server (pods
// labelled app.kubernetes.io/name=hypha-agent, and pods of a Gateway), each one's readiness read
// through the API server's pod proxy (GET .../pods/<pod>:15021/proxy/healthz/ready), so the health
// page shows every node without a port-forward.
//
// What the pod proxy cannot reach: the admin port (127.0.0.1:15000) listens on localhost, and the
// proxy connects to the pod's address. Config, certificates, connections and the tap still need
// --admin (on the node, or through kubectl port-forward).
import type { KubeConfig } from '@hypha/shared/kube';

export interface KubePodHealth {
  kind: 'agent' | 'waypoint';
  /** Agents: the node; waypoints: ns/gateway. */
  name: string;
  pod: string;
  node: string | undefined;
  ready: boolean;
  /** What /healthz/ready said when not ready, or why it could not be asked. */
  reasons: string[];
}

export interface KubeHealthSource {
  /** The last poll's answer; `error` when the API server itself did not answer. */
  snapshot(): { pods: KubePodHealth[]; error: string | undefined };
  refresh(): Promise<void>;
  close(): void;
}

interface PodList {
  items: {
    metadata: { name: string; namespace: string; labels?: Record<string, string> };
    spec?: { nodeName?: string };
    status?: { podIP?: string; phase?: string };
  }[];
}

const AGENTS = 'app.kubernetes.io/name=hypha-agent';
const GATEWAY_LABEL = 'gateway.networking.k8s.io/gateway-name';
export const READINESS_PORT = 15021;

export async function createKubeHealthSource(
  kc: KubeConfig,
  pollMs = 2000,
  options: {
    /** The port asked through the proxy (tests point it at stand-ins). Default 15021. */
    readinessPort?: (pod: string) => number;
  } = {},
): Promise<KubeHealthSource> {
  const portOf = options.readinessPort ?? (() => READINESS_PORT);
  let pods: KubePodHealth[] = [];
  let error: string | undefined = 'not polled yet';
  const { fetchKube } = await import('@hypha/shared/kube');

  const readiness = async (ns: string, pod: string): Promise<{ ready: boolean; reasons: string[] }> => {
    try {
      await fetchKube(kc, `/api/v1/namespaces/${ns}/pods/${pod}:${portOf(pod)}/proxy/healthz/ready`, {
        timeoutMs: 3000,
      });
      return { ready: true, reasons: [] };
    } catch (err) {
      const text = (err as Error).message;
      const listed = [...text.matchAll(/- ([^\n]+)/g)].map((m) => m[1]!);
      return {
        ready: false,
        reasons: listed.length > 0 ? listed : [`/healthz/ready through the pod proxy: ${text}`],
      };
    }
  };

  const refresh = async (): Promise<void> => {
    try {
      const [agents, gateways] = (await Promise.all([
        fetchKube(kc, `/api/v1/pods?labelSelector=${encodeURIComponent(AGENTS)}`, { timeoutMs: 5000 }),
        fetchKube(kc, `/api/v1/pods?labelSelector=${encodeURIComponent(GATEWAY_LABEL)}`, { timeoutMs: 5000 }),
      ])) as [PodList, PodList];
      const all = [
        ...agents.items.map((p) => ({
          p,
          kind: 'agent' as const,
          name: p.spec?.nodeName ?? p.metadata.name,
        })),
        ...gateways.items
          // Waypoint pods carry the Gateway's name; ingress gateways are shown the same way.
          .map((p) => ({
            p,
            kind: 'waypoint' as const,
            name: `${p.metadata.namespace}/${p.metadata.labels?.[GATEWAY_LABEL]}`,
          })),
      ];
      pods = await Promise.all(
        all.map(async ({ p, kind, name }) => {
          const r =
            p.status?.podIP === undefined
              ? {
                  ready: false,
                  reasons: [`pod ${p.metadata.name} has no IP yet (${p.status?.phase ?? 'Pending'})`],
                }
              : await readiness(p.metadata.namespace, p.metadata.name);
          return {
            kind,
            name,
            pod: `${p.metadata.namespace}/${p.metadata.name}`,
            node: p.spec?.nodeName,
            ...r,
          };
        }),
      );
      error = undefined;
    } catch (err) {
      error = `the Kubernetes API did not answer: ${(err as Error).message}`;
    }
  };
  await refresh();
  const timer = setInterval(() => void refresh(), pollMs);
  timer.unref();
  return {
    snapshot: () => ({ pods, error }),
    refresh,
    close: () => clearInterval(timer),
  };
}
