// Child process of the `scale` bench: syncs one generated cluster from the stand-in API server
// (another process, `scale-kube-api.js`) through the Kubernetes source, and prints one JSON line of
// figures. Only this process is measured, so the RSS is the source's and its state's.
//   node --expose-gc scale-kube-load.js --kubeconfig FILE --pods N
// Reported:
// - syncMs: createKubeSource → `ready` (every kind listed in 500-item pages, trimmed, translated,
//   committed as one batch: what `hypha agent` does before it serves); it includes the stand-in's
//   serving of the pages (paging, JSON over HTTPS on the same machine);
// - rss/heap after sync (after two GCs), peak RSS (VmHWM) over the process;
// - one pod change through the API: a merge PATCH of one pod's status (Ready False, then back to
//   True) until the state shows it (its onChange), median and slowest of the rounds;
// - ns per lookup of findWorkloadByIp and findServiceByVip, and the plain Map.get floor, as the
//   file-source child does.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createKubeSource, fetchKube, loadKubeConfig } from '@hypha/shared/kube';
import { PODS_PER_NAMESPACE, podIp, serviceVip } from '../scale-objects.js';

const { values } = parseArgs({
  options: { kubeconfig: { type: 'string' }, pods: { type: 'string' } },
});
const kubeconfig = values.kubeconfig ?? '';
const pods = Number(values.pods);
const gc = (globalThis as { gc?: () => void }).gc;
if (kubeconfig === '' || !Number.isInteger(pods) || pods <= 0 || gc === undefined) {
  process.stderr.write('usage: node --expose-gc scale-kube-load.js --kubeconfig FILE --pods N\n');
  process.exit(2);
}
const services = Math.floor(pods / 5);

function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const t0 = performance.now();
const source = createKubeSource({ kubeconfig });
await source.start();
const syncMs = performance.now() - t0;
const state = source.state;
const stats = state.stats();
if (stats.workloads !== pods || stats.services !== services)
  throw new Error(
    `synced ${stats.workloads} workloads / ${stats.services} services, expected ${pods} / ${services}`,
  );
if (source.errors.length > 0) throw new Error(`config errors: ${source.errors[0]!.message}`);
const listPages = source.stats().reduce((sum, k) => sum + Math.max(1, Math.ceil(k.objects / 500)), 0);
gc!();
gc!();
const mem = process.memoryUsage();

// ---- one pod change through the API ----
const kc = loadKubeConfig(kubeconfig);
const changeMs: number[] = [];
const ROUNDS = 11;
for (let i = 0; i < ROUNDS; i++) {
  const n = (i * 7919) % pods;
  const ns = `ns-${Math.floor(n / PODS_PER_NAMESPACE)}`;
  for (const ready of [false, true]) {
    const seen = new Promise<void>((resolve) => {
      const off = state.onChange(() => {
        if (state.findWorkloadByIp(podIp(n))?.ready === ready) {
          off();
          resolve();
        }
      });
    });
    const t = performance.now();
    await fetchKube(kc, `/api/v1/namespaces/${ns}/pods/pod-${n}/status`, {
      method: 'PATCH',
      contentType: 'application/merge-patch+json',
      body: { status: { conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] } },
    });
    await seen;
    changeMs.push(performance.now() - t);
  }
}
await source.close();

// ---- lookups ----
function nsPerLookup(keys: string[], lookup: (k: string) => unknown): number {
  let sink = 0;
  const rounds = Math.max(1, Math.floor(2_000_000 / keys.length));
  for (const k of keys) if (lookup(k) !== undefined) sink++; // warm-up
  const t = process.hrtime.bigint();
  for (let r = 0; r < rounds; r++) for (const k of keys) if (lookup(k) !== undefined) sink++;
  const ns = Number(process.hrtime.bigint() - t) / (rounds * keys.length);
  if (sink !== (rounds + 1) * keys.length) throw new Error('lookup missed an existing key');
  return ns;
}
let seed = 12345;
const random = (n: number) => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
};
const ipKeys = Array.from({ length: 4096 }, () => podIp(random(pods)));
const vipKeys = Array.from({ length: 4096 }, () => serviceVip(random(services)));
const ipFloor = new Map<string, number>();
for (let n = 0; n < pods; n++) ipFloor.set(podIp(n), n);
const vipFloor = new Map<string, number>();
for (let s = 0; s < services; s++) vipFloor.set(serviceVip(s), s);

process.stdout.write(
  `${JSON.stringify({
    pods,
    services,
    authorizationPolicies: stats.authorizationPolicies,
    endpointSlices: stats.endpointSlices,
    listPages,
    syncMs,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    peakRss: peakRss(),
    apiChangeMs: median(changeMs),
    apiChangeMaxMs: Math.max(...changeMs),
    workloadByIpNs: nsPerLookup(ipKeys, (k) => state.findWorkloadByIp(k)),
    serviceByVipNs: nsPerLookup(vipKeys, (k) => state.findServiceByVip(k, 80)),
    mapIpNs: nsPerLookup(ipKeys, (k) => ipFloor.get(k)),
    mapVipNs: nsPerLookup(vipKeys, (k) => vipFloor.get(k)),
  })}\n`,
);
