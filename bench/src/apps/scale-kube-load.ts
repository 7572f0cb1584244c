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
import { parseArgs } from 'node:util';
import { createKubeSource, fetchKube, loadKubeConfig } from '@hypha/shared/kube';
import { measureLookups, median, peakRss } from '../scale-measure.js';
import { PODS_PER_NAMESPACE, podIp } from '../scale-objects.js';

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

// ---- lookups (after the RSS figures) ----
const lookups = measureLookups(state, pods, services);

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
    heapTotal: mem.heapTotal,
    peakRss: peakRss(),
    apiChangeMs: median(changeMs),
    apiChangeMaxMs: Math.max(...changeMs),
    ...lookups,
  })}\n`,
);
