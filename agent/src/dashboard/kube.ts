// The dashboard in a Kubernetes cluster: agents and waypoints found through the API server (pods
// labelled app.kubernetes.io/name=hypha-agent, and pods of a Gateway), each one's readiness read
// through the API server's pod proxy (GET .../pods/<pod>:15021/proxy/healthz/ready), so the health
// page shows every node without a port-forward.
//
// The admin port (127.0.0.1:15000) listens on localhost inside the pod, which the pod proxy (it
// dials podIP:port) cannot reach. So each running pod also gets an admin endpoint whose
// connections are port-forwards through the API server (PortForwardAgent: WebSocket
// .../pods/<pod>/portforward?ports=15000, kept alive and reused, at most 3 at once per pod, a new
// one after a break), as istioctl reaches ztunnel's admin port. The admin poller reads config,
// certificates, connections and the tap through it; a pod it cannot reach shows the reason (a 403
// names the missing verb on `pods/portforward`).
import type { KubeConfig, PortForwardAgent } from '@hypha/shared/kube';
import type { Endpoint } from './fetch.js';

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
  /** One admin endpoint per running agent/waypoint/gateway pod, reached through port-forward. */
  adminEndpoints(): Endpoint[];
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
export const ADMIN_PORT = 15000;

export async function createKubeHealthSource(
  kc: KubeConfig,
  pollMs = 2000,
  options: {
    /** The port asked through the proxy (tests point it at stand-ins). Default 15021. */
    readinessPort?: (pod: string) => number;
    /** Reach each pod's admin port through port-forward (default true). */
    portForward?: boolean;
  } = {},
): Promise<KubeHealthSource> {
  const portOf = options.readinessPort ?? (() => READINESS_PORT);
  let pods: KubePodHealth[] = [];
  let error: string | undefined = 'not polled yet';
  const { fetchKube, PortForwardAgent: Forwarder } = await import('@hypha/shared/kube');
  /** ns/pod → its admin endpoint (the agent keeps its port-forward connections between polls). */
  const admins = new Map<string, Endpoint & { agent: PortForwardAgent }>();

  const syncAdmins = (running: { ns: string; pod: string; kind: 'agent' | 'waypoint'; name: string }[]) => {
    if (options.portForward === false) return;
    const keep = new Set(running.map((r) => `${r.ns}/${r.pod}`));
    for (const [key, ep] of admins) {
      if (keep.has(key)) continue;
      ep.agent.destroy();
      admins.delete(key);
    }
    for (const r of running) {
      const key = `${r.ns}/${r.pod}`;
      if (admins.has(key)) continue;
      admins.set(key, {
        label: `${key} (port-forward :${ADMIN_PORT})`,
        host: 'localhost',
        port: ADMIN_PORT,
        agent: new Forwarder(kc, r.ns, r.pod, ADMIN_PORT),
        kind: r.kind,
        name: r.name,
      });
    }
  };

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
      syncAdmins(
        all
          .filter(({ p }) => p.status?.podIP !== undefined && (p.status?.phase ?? 'Running') === 'Running')
          .map(({ p, kind, name }) => ({ ns: p.metadata.namespace, pod: p.metadata.name, kind, name })),
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
    adminEndpoints: () => [...admins.values()],
    refresh,
    close: () => {
      clearInterval(timer);
      for (const ep of admins.values()) ep.agent.destroy();
      admins.clear();
    },
  };
}
