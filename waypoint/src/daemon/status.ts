// `hypha waypoint status`: the waypoints of a namespace as the API sees them — each Gateway of class
// hypha-waypoint, its Deployment's ready replicas, and what is bound to it (the namespace label and
// the Services labelled hypha.dev/use-waypoint). A binding to a Gateway that does not exist is
// listed too: its traffic fails closed.
type KubeConfig = ReturnType<typeof import('@hypha/shared/kube').loadKubeConfig>;

export interface WaypointStatusRow {
  name: string;
  for: string;
  exists: boolean;
  ready: string;
  boundServices: string[];
  namespaceBound: boolean;
}

type Item = {
  metadata: { name: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
};

export async function fetchWaypointStatus(kc: KubeConfig, namespace: string): Promise<WaypointStatusRow[]> {
  const { fetchKube, KubeError } = await import('@hypha/shared/kube');
  const list = async (path: string): Promise<Item[]> => {
    try {
      return ((await fetchKube(kc, path, { timeoutMs: 15_000 })) as { items: Item[] }).items;
    } catch (err) {
      if (err instanceof KubeError && err.status === 404) return [];
      throw err;
    }
  };
  const ns = encodeURIComponent(namespace);
  const [gateways, deployments, services, nsObj] = await Promise.all([
    list(`/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/gateways`),
    list(`/apis/apps/v1/namespaces/${ns}/deployments`),
    list(`/api/v1/namespaces/${ns}/services`),
    fetchKube(kc, `/api/v1/namespaces/${ns}`, { timeoutMs: 15_000 }) as Promise<Item>,
  ]);
  const nsBinding = nsObj.metadata.labels?.['hypha.dev/use-waypoint'];
  const rows = new Map<string, WaypointStatusRow>();
  const row = (name: string): WaypointStatusRow => {
    let r = rows.get(name);
    if (r === undefined) {
      r = { name, for: '-', exists: false, ready: '-', boundServices: [], namespaceBound: false };
      rows.set(name, r);
    }
    return r;
  };
  for (const g of gateways) {
    if (g.spec?.gatewayClassName !== 'hypha-waypoint') continue;
    const r = row(g.metadata.name);
    r.exists = true;
    r.for = g.metadata.labels?.['hypha.dev/waypoint-for'] ?? 'service';
    const d = deployments.find(
      (x) => x.metadata.labels?.['gateway.networking.k8s.io/gateway-name'] === g.metadata.name,
    );
    r.ready = d
      ? `${Number(d.status?.readyReplicas ?? 0)}/${Number((d.spec as { replicas?: number }).replicas ?? 1)}`
      : 'no Deployment';
  }
  for (const s of services) {
    const b = s.metadata.labels?.['hypha.dev/use-waypoint'];
    if (b !== undefined && b !== 'none') row(b).boundServices.push(s.metadata.name);
  }
  if (nsBinding !== undefined && nsBinding !== 'none') row(nsBinding).namespaceBound = true;
  return [...rows.values()].sort((a, b) => a.name.localeCompare(b.name));
}

export function formatWaypointStatus(namespace: string, rows: readonly WaypointStatusRow[]): string {
  if (rows.length === 0)
    return `no waypoints in namespace ${namespace} (create one: hypha waypoint apply -n ${namespace})\n`;
  const lines = [['NAME', 'FOR', 'READY', 'BOUND']];
  for (const r of rows) {
    const bound = [
      ...(r.namespaceBound ? [`namespace ${namespace}`] : []),
      ...r.boundServices.map((s) => `service/${s}`),
    ];
    lines.push([
      r.name,
      r.for,
      r.exists ? r.ready : 'MISSING (bound traffic fails closed)',
      bound.join(', ') || '-',
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  return `${lines
    .map((l) =>
      l
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}
