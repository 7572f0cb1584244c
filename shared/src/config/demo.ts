// The configuration `hypha demo` starts from: two namespaces, four pods on two nodes, one Service.
// Addresses and node names are parameters because the demo cluster picks them at run time
// (every run has its own address block); the defaults are placeholders for docs and tests.
import { stringify } from 'yaml';

export interface DemoConfigParams {
  nodes?: { a: string; b: string };
  ips?: { client: string; echoV1: string; echoV2: string; plain: string };
  /** Second (IPv6) addresses of the pods in a dual-stack demo: written as `status.podIPs`. */
  ips6?: { client: string; echoV1: string; echoV2: string; plain: string };
  /** ClusterIP of Service demo/echo (IPv6 in an IPv6-only demo). */
  echoVip?: string;
  /** Second (IPv6) ClusterIP of Service demo/echo in a dual-stack demo: `spec.clusterIPs`. */
  echoVip6?: string;
  /** Port the echo pods listen on (the Service's targetPort). */
  echoPort?: number;
  /** Port of the Service. */
  servicePort?: number;
}

export const DEMO_DEFAULTS = {
  nodes: { a: 'node-a', b: 'node-b' },
  ips: { client: '10.244.1.10', echoV1: '10.244.1.11', echoV2: '10.244.2.10', plain: '10.244.2.11' },
  echoVip: '10.96.0.10',
  echoPort: 8080,
  servicePort: 80,
} as const;

/** Kubernetes-shaped objects of the demo (what a user would `kubectl apply`). */
export function demoConfigObjects(params: DemoConfigParams = {}): Record<string, unknown>[] {
  const nodes = params.nodes ?? DEMO_DEFAULTS.nodes;
  const ips = params.ips ?? DEMO_DEFAULTS.ips;
  const echoPort = params.echoPort ?? DEMO_DEFAULTS.echoPort;
  const ips6 = params.ips6;
  const pod = (
    name: string,
    namespace: string,
    node: string,
    ip: string,
    labels: Record<string, string>,
    port?: number,
    ip6?: string,
  ) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: {
      nodeName: node,
      serviceAccountName: name.startsWith('echo') ? 'echo' : name,
      containers: [
        {
          name: 'app',
          image: 'hypha-demo',
          ...(port !== undefined ? { ports: [{ name: 'http', containerPort: port }] } : {}),
        },
      ],
    },
    status: {
      podIP: ip,
      ...(ip6 !== undefined ? { podIPs: [{ ip }, { ip: ip6 }] } : {}),
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  });
  const vip = params.echoVip ?? DEMO_DEFAULTS.echoVip;
  return [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'demo', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
    },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'outside' } },
    pod('client', 'demo', nodes.a, ips.client, { app: 'client' }, undefined, ips6?.client),
    pod('echo-v1', 'demo', nodes.a, ips.echoV1, { app: 'echo', version: 'v1' }, echoPort, ips6?.echoV1),
    pod('echo-v2', 'demo', nodes.b, ips.echoV2, { app: 'echo', version: 'v2' }, echoPort, ips6?.echoV2),
    pod('plain', 'outside', nodes.b, ips.plain, { app: 'plain' }, echoPort, ips6?.plain),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'echo', namespace: 'demo' },
      spec: {
        clusterIP: vip,
        ...(params.echoVip6 !== undefined
          ? { clusterIPs: [vip, params.echoVip6], ipFamilyPolicy: 'PreferDualStack' }
          : {}),
        selector: { app: 'echo' },
        ports: [
          { name: 'http', port: params.servicePort ?? DEMO_DEFAULTS.servicePort, targetPort: echoPort },
        ],
      },
    },
  ];
}

/** The demo objects as one multi-document YAML text, ready to write to a file for the file source. */
export function demoConfigYaml(params: DemoConfigParams = {}): string {
  const header = '# Hypha demo configuration (generated). Edit and save: the agents pick changes up live.\n';
  return (
    header +
    demoConfigObjects(params)
      .map((o) => stringify(o))
      .join('---\n')
  );
}
