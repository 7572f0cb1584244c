// Trimming objects before they are cached must bound memory without changing what the mesh sees.
import { translateObject } from '@hypha/shared/config';
import { stripObject } from '@hypha/shared/kube';
import { describe, expect, it } from 'vitest';

const managed = [
  { manager: 'kubectl', operation: 'Update', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': {} } },
];
const lastApplied = {
  'kubectl.kubernetes.io/last-applied-configuration': '{"big":"blob"}',
  'hypha.dev/note': 'kept',
};

const pod = {
  metadata: {
    name: 'web-7d9f',
    namespace: 'shop',
    uid: 'u-1',
    resourceVersion: '42',
    labels: { app: 'web', 'hypha.dev/dataplane-mode': 'ambient' },
    annotations: lastApplied,
    managedFields: managed,
    ownerReferences: [{ kind: 'ReplicaSet', name: 'web-7d9f', uid: 'r' }],
    creationTimestamp: '2026-01-01T00:00:00Z',
  },
  spec: {
    nodeName: 'node-a',
    serviceAccountName: 'web',
    containers: [
      {
        name: 'app',
        image: 'example/web:1',
        env: Array.from({ length: 50 }, (_, i) => ({ name: `VAR_${i}`, value: 'x'.repeat(100) })),
        ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
        volumeMounts: [{ name: 'data', mountPath: '/data' }],
      },
    ],
    volumes: [{ name: 'data', emptyDir: {} }],
  },
  status: {
    phase: 'Running',
    podIP: '10.1.0.10',
    podIPs: [{ ip: '10.1.0.10' }],
    hostIP: '192.168.0.2',
    conditions: [
      { type: 'Ready', status: 'True', lastTransitionTime: '2026-01-01T00:00:00Z', lastProbeTime: null },
    ],
    containerStatuses: [
      { name: 'app', ready: true, restartCount: 0, image: 'example/web:1', imageID: 'sha256:abc' },
    ],
  },
};

const objects: Array<[string, string, Record<string, unknown>]> = [
  ['v1', 'Pod', pod],
  [
    'v1',
    'Namespace',
    {
      metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' }, managedFields: managed },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    },
  ],
  [
    'v1',
    'Service',
    {
      metadata: { name: 'web', namespace: 'shop', managedFields: managed, annotations: lastApplied },
      spec: {
        clusterIP: '10.96.0.10',
        clusterIPs: ['10.96.0.10'],
        selector: { app: 'web' },
        ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }],
      },
      status: { loadBalancer: {} },
    },
  ],
  [
    'discovery.k8s.io/v1',
    'EndpointSlice',
    {
      metadata: {
        name: 'web-abc',
        namespace: 'shop',
        labels: { 'kubernetes.io/service-name': 'web' },
        managedFields: managed,
      },
      addressType: 'IPv4',
      endpoints: [
        {
          addresses: ['10.1.0.10'],
          conditions: { ready: true },
          nodeName: 'node-a',
          targetRef: { kind: 'Pod', name: 'web-7d9f' },
        },
      ],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    },
  ],
  [
    'security.hypha.dev/v1',
    'AuthorizationPolicy',
    {
      metadata: { name: 'allow', namespace: 'shop', managedFields: managed, generation: 3 },
      spec: {
        selector: { matchLabels: { app: 'web' } },
        action: 'ALLOW',
        rules: [{ from: [{ source: { namespaces: ['shop'] } }] }],
      },
    },
  ],
];

describe('stripObject', () => {
  it.each(objects)(
    '%s %s: the translation of the trimmed object equals that of the original',
    (apiVersion, kind, raw) => {
      const full = translateObject(
        { apiVersion, kind, ...raw },
        { source: 'kubernetes', readyWhenConditionAbsent: false },
      );
      // List items of built-in kinds arrive without apiVersion/kind; stripObject restores them.
      const trimmed = stripObject(raw, apiVersion, kind);
      expect(full.status).toBe('ok');
      expect(translateObject(trimmed, { source: 'kubernetes', readyWhenConditionAbsent: false })).toEqual(
        full,
      );
      const text = JSON.stringify(trimmed);
      expect(text).not.toContain('managedFields');
      expect(text).not.toContain('last-applied-configuration');
    },
  );

  it('drops container specs, env, volumes and container statuses from pods', () => {
    const trimmed = stripObject(pod, 'v1', 'Pod');
    expect(JSON.stringify(trimmed).length).toBeLessThan(JSON.stringify(pod).length / 5);
    expect(trimmed).toEqual({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'web-7d9f',
        namespace: 'shop',
        uid: 'u-1',
        resourceVersion: '42',
        labels: { app: 'web', 'hypha.dev/dataplane-mode': 'ambient' },
        annotations: { 'hypha.dev/note': 'kept' },
      },
      spec: {
        nodeName: 'node-a',
        serviceAccountName: 'web',
        containers: [{ ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }],
      },
      status: {
        phase: 'Running',
        podIP: '10.1.0.10',
        podIPs: [{ ip: '10.1.0.10' }],
        hostIP: '192.168.0.2',
        conditions: [{ type: 'Ready', status: 'True' }],
      },
    });
  });
});
