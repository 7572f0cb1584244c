// The config-scale budget (ARCHITECTURE.md §9): agent state for 100k pods and 20k services within
// 300 MB with O(1) lookups. This is a guard with a generous bound, not the benchmark.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type ConfigObject, createConfigState } from '@hypha/shared/config';
import { expect, it } from 'vitest';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heap(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

const NAMESPACES = 200;
const PODS_PER_NS = 500; // 100k pods
const SERVICES_PER_NS = 100; // 20k services, 5 pods each

function ip(n: number): string {
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

it('holds 100k pods and 20k services well under the 300 MB budget, with O(1) lookups', () => {
  const state = createConfigState();
  const before = heap();
  // Typed records are built directly: translation speed is not what this guards (translate.test.ts
  // covers translation), and skipping zod keeps the file fast on a busy 2-core machine.
  let objects: ConfigObject[] = [];
  for (let n = 0; n < NAMESPACES; n++) {
    const namespace = `ns-${n}`;
    objects.push({
      kind: 'Namespace',
      name: namespace,
      labels: { 'hypha.dev/dataplane-mode': 'ambient' },
      dataplaneMode: 'ambient',
      mtlsMode: undefined,
      waypoint: undefined,
    });
    for (let p = 0; p < PODS_PER_NS; p++) {
      const id = n * PODS_PER_NS + p;
      const app = `svc-${Math.floor(p / 5)}`;
      objects.push({
        kind: 'Pod',
        uid: `00000000-0000-0000-0000-${id.toString().padStart(12, '0')}`,
        name: `${app}-${p}`,
        namespace,
        labels: { app, version: 'v1', 'pod-template-hash': `h${Math.floor(p / 5)}` },
        serviceAccount: app,
        node: `node-${id % 100}`,
        ips: [ip(id + 1)],
        ready: true,
        hostNetwork: false,
        dataplaneMode: undefined,
        waypoint: undefined,
        namedPorts: { http: 8080 },
      });
    }
    for (let s = 0; s < SERVICES_PER_NS; s++) {
      objects.push({
        kind: 'Service',
        name: `svc-${s}`,
        namespace,
        labels: {},
        vips: [`172.${16 + (n >> 6)}.${(n & 63) * 4 + (s >> 6)}.${s & 63}`],
        ports: [{ port: 80, targetPort: 'http', name: 'http', protocol: 'TCP', appProtocol: undefined }],
        selector: { app: `svc-${s}` },
        waypoint: undefined,
      });
    }
  }
  const t1 = performance.now();
  state.applySnapshot(objects);
  const t2 = performance.now();
  objects = [];
  const grown = heap() - before;
  const mb = grown / 1024 / 1024;
  console.log(
    `scale: ${state.stats().workloads} workloads, ${state.stats().services} services: heap +${mb.toFixed(1)} MB; ` +
      `snapshot applied in ${(t2 - t1).toFixed(0)} ms`,
  );
  expect(state.stats()).toMatchObject({ workloads: 100_000, services: 20_000 });
  expect(mb).toBeLessThan(300);

  const svc = state.findServiceByVip('172.16.0.7', 80)!;
  expect(svc.endpoints).toHaveLength(5);
  expect(svc.endpoints[0]!.targetPorts.get(80)).toBe(8080);
  // Pods resolving the named port alike share one port map.
  expect(svc.endpoints[0]!.targetPorts).toBe(svc.endpoints[4]!.targetPorts);

  const t3 = performance.now();
  let found = 0;
  for (let i = 1; i <= 100_000; i++) if (state.findWorkloadByIp(ip(i)) !== undefined) found++;
  const t4 = performance.now();
  expect(found).toBe(100_000);
  console.log(`scale: 100k findWorkloadByIp in ${(t4 - t3).toFixed(0)} ms`);
  // Generous (50 µs per lookup) so a loaded CI machine does not flake; a linear scan would take minutes.
  expect(t4 - t3).toBeLessThan(5000);

  // A single pod update re-derives only what it touches.
  const t5 = performance.now();
  const change = state.upsert({
    kind: 'Pod',
    uid: 'moved',
    name: 'svc-1-5',
    namespace: 'ns-0',
    labels: { app: 'svc-1' },
    serviceAccount: 'default',
    node: 'node-1',
    ips: ['10.200.0.1'],
    ready: true,
    hostNetwork: false,
    dataplaneMode: undefined,
    waypoint: undefined,
    namedPorts: undefined,
  })!;
  const t6 = performance.now();
  expect(change.workloads.updated).toHaveLength(1);
  expect(change.services.updated.map((s) => s.current.name)).toEqual(['svc-1']);
  console.log(`scale: one pod update in ${(t6 - t5).toFixed(1)} ms`);
  expect(t6 - t5).toBeLessThan(1000);
});
