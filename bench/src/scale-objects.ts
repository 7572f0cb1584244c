// The cluster of the `scale` bench: N pods, N/5 Services (5 pods each, endpoints from the selector)
// and N/20 AuthorizationPolicies, 500 pods and 100 Services per namespace, 100 nodes. Written as
// one YAML file, as a user would (`kubectl get pods,svc,... -A -o yaml` split into documents).

import { once } from 'node:events';
import { createWriteStream } from 'node:fs';

export const PODS_PER_NAMESPACE = 500;
const SERVICES_PER_NAMESPACE = PODS_PER_NAMESPACE / 5;

export function podIp(n: number): string {
  const v = n + 1;
  return `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`;
}

export function serviceVip(s: number): string {
  return `172.${16 + ((s >> 16) & 15)}.${(s >> 8) & 255}.${s & 255}`;
}

function podNamespace(n: number): string {
  return `ns-${Math.floor(n / PODS_PER_NAMESPACE)}`;
}

function serviceNamespace(s: number): string {
  return `ns-${Math.floor(s / SERVICES_PER_NAMESPACE)}`;
}

/** Pod n as a Kubernetes object; `service` places it behind that Service instead of its own. */
export function rawPod(n: number, o: { name?: string; service?: number; ready?: boolean } = {}) {
  const s = o.service ?? Math.floor(n / 5);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: o.name ?? `pod-${n}`,
      namespace: o.service === undefined ? podNamespace(n) : serviceNamespace(s),
      uid: `00000000-0000-4000-8000-${n.toString().padStart(12, '0')}`,
      labels: { app: `svc-${s}`, version: 'v1', 'pod-template-hash': `h${s}` },
    },
    spec: {
      nodeName: `node-${n % 100}`,
      serviceAccountName: `svc-${s}`,
      containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 }] }],
    },
    status: {
      phase: 'Running',
      podIP: podIp(n),
      // Explicit: the Kubernetes source (like kubelet-reported pods) reads a missing Ready as not ready.
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
    },
  };
}

function podYaml(n: number): string {
  const s = Math.floor(n / 5);
  return `apiVersion: v1
kind: Pod
metadata:
  name: pod-${n}
  namespace: ${podNamespace(n)}
  uid: 00000000-0000-4000-8000-${n.toString().padStart(12, '0')}
  labels:
    app: svc-${s}
    version: v1
    pod-template-hash: h${s}
spec:
  nodeName: node-${n % 100}
  serviceAccountName: svc-${s}
  containers:
    - name: app
      ports:
        - name: http
          containerPort: 8080
status:
  phase: Running
  podIP: ${podIp(n)}
`;
}

function serviceYaml(s: number): string {
  return `apiVersion: v1
kind: Service
metadata:
  name: svc-${s}
  namespace: ${serviceNamespace(s)}
spec:
  clusterIP: ${serviceVip(s)}
  selector:
    app: svc-${s}
  ports:
    - name: http
      port: 80
      targetPort: http
`;
}

function policyYaml(k: number): string {
  const s = k * 4;
  const ns = serviceNamespace(s);
  return `apiVersion: security.hypha.dev/v1
kind: AuthorizationPolicy
metadata:
  name: allow-svc-${s}
  namespace: ${ns}
spec:
  selector:
    matchLabels:
      app: svc-${s}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["cluster.local/ns/${ns}/sa/svc-${s + 1}"]
      to:
        - operation:
            ports: ["8080"]
`;
}

/** Writes the cluster of `pods` pods to `file`, streaming (the text is never held whole). */
export async function writeClusterYaml(file: string, pods: number): Promise<void> {
  const out = createWriteStream(file);
  const write = async (text: string) => {
    if (!out.write(text)) await once(out, 'drain');
  };
  const namespaces = Math.ceil(pods / PODS_PER_NAMESPACE);
  for (let i = 0; i < namespaces; i++) {
    await write(
      `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-${i}\n  labels:\n    hypha.dev/dataplane-mode: ambient\n---\n`,
    );
  }
  for (let n = 0; n < pods; n++) await write(`${podYaml(n)}---\n`);
  for (let s = 0; s < Math.floor(pods / 5); s++) await write(`${serviceYaml(s)}---\n`);
  const policies = Math.floor(pods / 20);
  for (let k = 0; k < policies; k++) await write(`${policyYaml(k)}${k < policies - 1 ? '---\n' : ''}`);
  out.end();
  await once(out, 'finish');
}

// ---- the same cluster as API objects, for the stand-in API server (Kubernetes source) ----

export function rawNamespace(i: number) {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: `ns-${i}`, labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
  };
}

export function rawService(s: number) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `svc-${s}`, namespace: serviceNamespace(s) },
    spec: {
      clusterIP: serviceVip(s),
      selector: { app: `svc-${s}` },
      ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }],
    },
  };
}

/** The EndpointSlice the endpoint-slice controller would write for Service s (its 5 ready pods). */
export function rawEndpointSlice(s: number) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `svc-${s}-abcde`,
      namespace: serviceNamespace(s),
      labels: { 'kubernetes.io/service-name': `svc-${s}` },
    },
    addressType: 'IPv4',
    endpoints: Array.from({ length: 5 }, (_, i) => {
      const n = s * 5 + i;
      return {
        addresses: [podIp(n)],
        conditions: { ready: true },
        nodeName: `node-${n % 100}`,
        targetRef: { kind: 'Pod', name: `pod-${n}`, namespace: serviceNamespace(s) },
      };
    }),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

export function rawAuthorizationPolicy(k: number) {
  const s = k * 4;
  const ns = serviceNamespace(s);
  return {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: `allow-svc-${s}`, namespace: ns },
    spec: {
      selector: { matchLabels: { app: `svc-${s}` } },
      action: 'ALLOW',
      rules: [
        {
          from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/svc-${s + 1}`] } }],
          to: [{ operation: { ports: ['8080'] } }],
        },
      ],
    },
  };
}

/** Every object of the cluster of `pods` pods, namespaces first (the API server needs them). */
export function* clusterObjects(pods: number): Generator<Record<string, unknown> & { metadata: object }> {
  const namespaces = Math.ceil(pods / PODS_PER_NAMESPACE);
  for (let i = 0; i < namespaces; i++) yield rawNamespace(i);
  for (let n = 0; n < pods; n++) yield rawPod(n);
  for (let s = 0; s < Math.floor(pods / 5); s++) {
    yield rawService(s);
    yield rawEndpointSlice(s);
  }
  for (let k = 0; k < Math.floor(pods / 20); k++) yield rawAuthorizationPolicy(k);
}
