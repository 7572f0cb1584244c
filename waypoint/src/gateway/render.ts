// The objects `hypha gateway apply` writes for an ingress gateway: ServiceAccount, Deployment
// running `hypha gateway`, its Service of type LoadBalancer (one port per listener port), and its
// RBAC (ClusterRoleBinding to hypha-gateway; a Role and RoleBinding for the TLS Secrets and the
// Gateway status of its own namespace), built from the manifests/gateway template so the template
// stays the single source of truth. The Gateway itself (listeners, hostnames, certificates) is the
// user's.
import type { KubeObject } from '../daemon/render.js';

export interface RenderGatewayOptions {
  namespace: string;
  name: string;
  /** Listener ports the Service and the container expose. */
  ports: readonly number[];
  template: readonly Record<string, unknown>[];
}

const KINDS = [
  'ServiceAccount',
  'Deployment',
  'Service',
  'ClusterRoleBinding',
  'Role',
  'RoleBinding',
] as const;
const GATEWAY_NAME = 'gateway.networking.k8s.io/gateway-name';

/** Port name for a listener port: http for 80, https for 443, else tcp-<port>. */
function portName(port: number): string {
  return port === 80 ? 'http' : port === 443 ? 'https' : `port-${port}`;
}

export function renderGatewayObjects(opts: RenderGatewayOptions): KubeObject[] {
  const { name, namespace } = opts;
  const out: KubeObject[] = [];
  for (const kind of KINDS) {
    const t = opts.template.find((o) => o.kind === kind);
    if (t === undefined) throw new Error(`the gateway template has no ${kind}`);
    const o = structuredClone(t) as unknown as KubeObject & {
      subjects?: { kind?: string; name?: string; namespace?: string }[];
      roleRef?: { kind?: string; name?: string };
    };
    o.metadata.name = name;
    o.metadata.namespace = namespace;
    const labels = o.metadata.labels ?? {};
    if (GATEWAY_NAME in labels) labels[GATEWAY_NAME] = name;
    o.metadata.labels = labels;
    if (kind === 'Deployment') {
      const spec = o.spec as {
        selector: { matchLabels: Record<string, string> };
        template: {
          metadata: { labels: Record<string, string> };
          spec: {
            serviceAccountName: string;
            containers: {
              args?: string[];
              ports?: { name: string; containerPort: number; protocol: string }[];
            }[];
          };
        };
      };
      spec.selector.matchLabels[GATEWAY_NAME] = name;
      spec.template.metadata.labels[GATEWAY_NAME] = name;
      spec.template.spec.serviceAccountName = name;
      for (const c of spec.template.spec.containers) {
        const args = c.args ?? [];
        const i = args.indexOf('--name');
        if (i >= 0 && i + 1 < args.length) args[i + 1] = name;
        const others = (c.ports ?? []).filter((p) => p.containerPort >= 15000);
        c.ports = [
          ...opts.ports.map((p) => ({ name: portName(p), containerPort: p, protocol: 'TCP' })),
          ...others,
        ];
      }
    }
    if (kind === 'Service') {
      const spec = o.spec as { selector: Record<string, string>; ports: unknown[] };
      spec.selector[GATEWAY_NAME] = name;
      spec.ports = opts.ports.map((p) => ({ name: portName(p), port: p, targetPort: p, protocol: 'TCP' }));
    }
    if (kind === 'ClusterRoleBinding') {
      // Cluster-scoped, so the name carries the namespace to stay unique per gateway.
      o.metadata.name = `hypha-gateway-${namespace}-${name}`;
      delete o.metadata.namespace;
    }
    if (kind === 'Role' || kind === 'RoleBinding') o.metadata.name = `hypha-gateway-${name}`;
    if (kind === 'RoleBinding' && o.roleRef) o.roleRef.name = `hypha-gateway-${name}`;
    for (const s of o.subjects ?? []) {
      if (s.kind !== 'ServiceAccount') continue;
      s.name = name;
      s.namespace = namespace;
    }
    out.push(o);
  }
  return out;
}
