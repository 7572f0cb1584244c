// Fuzzing the Kubernetes source through the stand-in API server: a running source watches a small
// cluster; each case replaces one of its objects with a mutated version (fields dropped, retyped,
// duplicated; the kind, name and namespace kept so it is an update of that object), then restores
// it. What an operator would notice:
// - the source stays up and ready, whatever an object holds;
// - an invalid update is reported with the field to fix and the last good version stays in force;
// - once the object is fixed the mesh's view is the cluster's again and no error remains.
// A marker object of the same kind, written after each update, tells when the watch has delivered
// it (one watch per kind, in order). Replay a failure with FUZZ_SEED (docs/reliability.md).
import { translateObject } from '@hypha/shared/config';
import { createKubeSource, type KubeSource } from '@hypha/shared/kube';
import {
  createKubeApiServer,
  fuzzParameters,
  fuzzTestTimeout,
  type KubeApiServer,
  type KubeObject,
} from '@hypha/test';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const NAMESPACE: KubeObject = {
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
};
const POD: KubeObject = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' } },
  spec: {
    nodeName: 'node-a',
    serviceAccountName: 'web',
    containers: [{ name: 'app', image: 'example/app:1', ports: [{ name: 'http', containerPort: 8080 }] }],
  },
  status: {
    phase: 'Running',
    podIP: '10.1.0.10',
    podIPs: [{ ip: '10.1.0.10' }],
    conditions: [{ type: 'Ready', status: 'True' }],
  },
};
const SERVICE: KubeObject = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'shop' },
  spec: {
    clusterIP: '10.96.0.10',
    clusterIPs: ['10.96.0.10'],
    selector: { app: 'web' },
    ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
  },
};
const POLICY: KubeObject = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-evil', namespace: 'shop' },
  spec: {
    selector: { matchLabels: { app: 'web' } },
    action: 'DENY',
    rules: [{ from: [{ source: { namespaces: ['evil'] } }] }],
  },
};

interface Target {
  good: KubeObject;
  /** The good version's effect, as the mesh sees it. */
  inForce(src: KubeSource): boolean;
  /** A distinct valid object of the same kind, and whether the source has it. */
  marker(n: number): KubeObject;
  hasMarker(src: KubeSource, n: number): boolean;
}

const markerIp = (n: number) => `10.9.${(n >> 8) & 255}.${n & 255}`;

const TARGETS: Target[] = [
  {
    good: NAMESPACE,
    inForce: (src) =>
      [...src.state.namespaces()].some((n) => n.name === 'shop' && n.dataplaneMode === 'ambient'),
    marker: (n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `marker-${n}` } }),
    hasMarker: (src, n) => [...src.state.namespaces()].some((x) => x.name === `marker-${n}`),
  },
  {
    good: POD,
    inForce: (src) => src.state.findWorkloadByIp('10.1.0.10')?.name === 'web',
    marker: (n) => ({
      ...structuredClone(POD),
      metadata: { name: `marker-${n}`, namespace: 'shop', labels: { app: 'marker' } },
      status: { ...structuredClone(POD.status as object), podIP: markerIp(n), podIPs: [{ ip: markerIp(n) }] },
    }),
    hasMarker: (src, n) => src.state.findWorkloadByIp(markerIp(n)) !== undefined,
  },
  {
    good: SERVICE,
    inForce: (src) => src.state.findServiceByVip('10.96.0.10', 80)?.name === 'web',
    marker: (n) => ({
      ...structuredClone(SERVICE),
      metadata: { name: `marker-${n}`, namespace: 'shop' },
      spec: { ...structuredClone(SERVICE.spec as object), clusterIP: markerIp(n), clusterIPs: [markerIp(n)] },
    }),
    hasMarker: (src, n) => src.state.findServiceByVip(markerIp(n), 80) !== undefined,
  },
  {
    good: POLICY,
    inForce: (src) =>
      [...src.state.authorizationPolicies()].some((p) => p.name === 'deny-evil' && p.action === 'DENY'),
    marker: (n) => ({ ...structuredClone(POLICY), metadata: { name: `marker-${n}`, namespace: 'shop' } }),
    hasMarker: (src, n) => [...src.state.authorizationPolicies()].some((p) => p.name === `marker-${n}`),
  },
];

// ---- mutations (the object's identity is kept: kind, apiVersion, metadata.name/namespace) ----

const KEPT = new Set(['kind', 'apiVersion', 'metadata', 'metadata.name', 'metadata.namespace']);

function pathsOf(v: Json, prefix: (string | number)[] = [], out: (string | number)[][] = []) {
  if (prefix.length > 12) return out;
  const children: [string | number, Json][] = Array.isArray(v)
    ? v.map((x, i) => [i, x])
    : v !== null && typeof v === 'object'
      ? Object.entries(v)
      : [];
  for (const [k, x] of children) {
    const p = [...prefix, k];
    if (!KEPT.has(p.join('.'))) out.push(p);
    pathsOf(x, p, out);
  }
  return out;
}

const oddValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
  fc.constantFrom<Json>('', -1, 0, 65536, 2 ** 53, '10.0.0.256', 'True', [], {}, 'x'.repeat(70_000)),
);

type Mutation =
  | { op: 'drop'; pick: number }
  | { op: 'retype'; pick: number; value: Json }
  | { op: 'duplicate'; pick: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('drop' as const), pick: fc.nat() }),
  fc.record({ op: fc.constant('retype' as const), pick: fc.nat(), value: oddValue }),
  fc.record({ op: fc.constant('duplicate' as const), pick: fc.nat() }),
);

function mutate(root: Json, m: Mutation): void {
  const paths = pathsOf(root);
  if (paths.length === 0) return;
  const path = paths[m.pick % paths.length]!;
  const parent = path.slice(0, -1).reduce<Json>((v, k) => (v as Record<string, Json>)[k]!, root) as
    | Json[]
    | Record<string, Json>;
  const key = path[path.length - 1]!;
  if (Array.isArray(parent)) {
    const i = key as number;
    if (m.op === 'drop') parent.splice(i, 1);
    else if (m.op === 'retype') parent[i] = structuredClone(m.value);
    else parent.splice(i, 0, structuredClone(parent[i]!));
    return;
  }
  const k = key as string;
  if (m.op === 'drop') delete parent[k];
  else if (m.op === 'retype') parent[k] = structuredClone(m.value);
  else parent[k] = [structuredClone(parent[k]!), structuredClone(parent[k]!)];
}

// ---- the cluster and the source ----

let server: KubeApiServer;
let src: KubeSource;
let markers = 0;

beforeAll(async () => {
  server = await createKubeApiServer({ bookmarkIntervalMs: 100 });
  for (const t of TARGETS) server.put(structuredClone(t.good));
  src = createKubeSource({ kubeconfig: server.kubeconfigPath, backoff: { initialMs: 20, maxMs: 200 } });
  await src.start();
});
afterAll(async () => {
  await src?.close();
  await server?.close();
});

async function waitFor(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(check(), what).toBe(true);
}

/** Writes a fresh marker of the target's kind and waits until the source has it, then removes it. */
async function delivered(t: Target): Promise<void> {
  const n = ++markers;
  const marker = t.marker(n);
  server.put(marker);
  await waitFor(`marker ${n} of ${t.good.kind} delivered`, () => t.hasMarker(src, n));
  const meta = marker.metadata as { name: string; namespace?: string };
  server.remove(marker.apiVersion as string, marker.kind as string, meta.name, meta.namespace);
  await waitFor(`marker ${n} of ${t.good.kind} removed`, () => !t.hasMarker(src, n));
}

const params = fuzzParameters({ runs: 40, timeLimitMs: 10_000 });

test('mutated objects from the API server are refused field by field, the last good version stays, and a fix restores it', {
  timeout: fuzzTestTimeout(params),
}, async () => {
  for (const t of TARGETS) expect(t.inForce(src), t.good.kind).toBe(true);
  await fc.assert(
    fc.asyncProperty(
      fc.nat({ max: TARGETS.length - 1 }),
      fc.array(mutation, { minLength: 1, maxLength: 3 }),
      async (i, ms) => {
        const t = TARGETS[i]!;
        const bad = structuredClone(t.good) as Json;
        for (const m of ms) mutate(bad, m);
        try {
          // The stand-in server, like a real one, normalizes some fields (labels, defaults): judge the
          // object as stored, which is what the watch delivers.
          const stored = server.put(bad as KubeObject);
          await delivered(t);
          expect(src.isReady).toBe(true);
          const verdict = translateObject(stored, { source: 'kubernetes', readyWhenConditionAbsent: false });
          // The source reads objects trimmed to the fields the mesh uses (strip.ts), so a broken field
          // it never reads (a container's ports that are not a list) is dropped rather than refused.
          // What it refuses, it refuses at a field, keeping the last good version; a valid object is
          // never refused.
          if (src.errors.length > 0) {
            expect(
              t.inForce(src),
              `the last good version stays in force; ${src.errors.map((e) => e.message).join(' | ')}`,
            ).toBe(true);
            for (const e of src.errors) expect(e.field, e.message).not.toBe('');
            expect(verdict.status, JSON.stringify(stored).slice(0, 1500)).toBe('invalid');
          }
          if (verdict.status !== 'invalid') expect(src.errors).toEqual([]);
        } finally {
          // Restored even when an expectation failed, so shrinking starts from the good cluster.
          server.put(structuredClone(t.good));
          await delivered(t);
        }
        expect(t.inForce(src), 'the fixed object is in force').toBe(true);
        expect(src.errors).toEqual([]);
      },
    ),
    params,
  );
});
