// Builders of Kubernetes-shaped test objects (what a user writes in YAML).
import { type ConfigObject, translateObject } from '@hypha/shared/config';

export function ns(name: string, labels: Record<string, string> = {}) {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

export interface PodOptions {
  namespace?: string;
  node?: string;
  ip?: string;
  labels?: Record<string, string>;
  sa?: string;
  ready?: boolean;
  ports?: Record<string, number>;
  uid?: string;
}

export function pod(name: string, o: PodOptions = {}) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: o.namespace ?? 'demo',
      labels: o.labels ?? {},
      ...(o.uid ? { uid: o.uid } : {}),
    },
    spec: {
      nodeName: o.node ?? 'node-a',
      ...(o.sa !== undefined ? { serviceAccountName: o.sa } : {}),
      containers: [
        {
          name: 'app',
          ports: Object.entries(o.ports ?? {}).map(([n, p]) => ({ name: n, containerPort: p })),
        },
      ],
    },
    status: {
      ...(o.ip !== undefined ? { podIP: o.ip } : {}),
      ...(o.ready !== undefined
        ? { conditions: [{ type: 'Ready', status: o.ready ? 'True' : 'False' }] }
        : {}),
    },
  };
}

export function svc(
  name: string,
  vip: string,
  selector: Record<string, string> | undefined,
  ports: { port: number; targetPort?: number | string; name?: string }[],
  o: { namespace?: string; labels?: Record<string, string> } = {},
) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: o.namespace ?? 'demo', labels: o.labels ?? {} },
    spec: { clusterIP: vip, ...(selector ? { selector } : {}), ports },
  };
}

export function gateway(name: string, namespace: string, waypointFor?: string) {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace, labels: waypointFor ? { 'hypha.dev/waypoint-for': waypointFor } : {} },
    spec: {
      gatewayClassName: 'hypha-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  };
}

export function authz(namespace: string, name: string, spec: Record<string, unknown>) {
  return {
    apiVersion: 'security.hypha.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { namespace, name },
    spec,
  };
}

/** Translates objects that must be valid (the test is about something else). */
export function typed(...raws: unknown[]): ConfigObject[] {
  return raws.map((raw) => {
    const r = translateObject(raw, { source: 'test' });
    if (r.status !== 'ok') throw new Error(`test object not ok: ${JSON.stringify(r)}`);
    return r.object;
  });
}
