// Child process of the `scale` bench: loads one generated cluster into a fresh agent state and
// prints one JSON line of figures. One process per size, so RSS is this load's alone.
//   node --expose-gc scale-load.js --dir DIR --pods N
// DIR holds cluster.yaml (written by the suite). Reported:
// - loadMs: createFileSource → `ready` (read, parse, translate, index: what `hypha agent` and
//   `hypha policy explain --config` do before they can answer);
// - rss/heap after load (after two GCs), peak RSS (VmHWM) over the process;
// - one pod change: through the state's mutator (`upsert`, what the Kubernetes source does per
//   watch event) and through the file source (a small file next to cluster.yaml is written, then
//   `reload()` is awaited: the debounce of the watcher is not counted);
// - ns per lookup of findWorkloadByIp and findServiceByVip over existing addresses, and of a plain
//   Map.get over the same keys (the floor: what any hash lookup at this size costs, caches included).
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createFileSource, type PodObject, translateObject } from '@hypha/shared/config';
import { measureLookups, median, peakRss } from '../scale-measure.js';
import { podIp, rawPod } from '../scale-objects.js';

const { values } = parseArgs({
  options: { dir: { type: 'string' }, pods: { type: 'string' } },
});
const dir = values.dir ?? '';
const pods = Number(values.pods);
const gc = (globalThis as { gc?: () => void }).gc;
if (dir === '' || !Number.isInteger(pods) || pods <= 0 || gc === undefined) {
  process.stderr.write('usage: node --expose-gc scale-load.js --dir DIR --pods N\n');
  process.exit(2);
}
const services = Math.floor(pods / 5);

const t0 = performance.now();
const source = createFileSource({ path: dir, watch: false, pollIntervalMs: 3_600_000 });
await source.start();
await source.ready;
const loadMs = performance.now() - t0;
const state = source.state;
const stats = state.stats();
if (stats.workloads !== pods || stats.services !== services)
  throw new Error(
    `loaded ${stats.workloads} workloads / ${stats.services} services, expected ${pods} / ${services}`,
  );
if (source.errors.length > 0) throw new Error(`config errors: ${source.errors[0]!.message}`);
gc!();
gc!();
const mem = process.memoryUsage();

// ---- one change through the mutator ----
const toObject = (raw: unknown): PodObject => {
  const r = translateObject(raw, { source: 'bench' });
  if (r.status !== 'ok') throw new Error(`bench pod did not translate: ${r.status}`);
  return r.object as PodObject;
};
const ROUNDS = 21;
const addMs: number[] = [];
const modifyMs: number[] = [];
for (let i = 0; i < ROUNDS; i++) {
  // A new pod that an existing Service selects (its endpoints change too), then removed again.
  const added = toObject(rawPod(pods + 1 + i, { name: `bench-extra-${i}`, service: i % services }));
  let t = performance.now();
  state.upsert(added);
  addMs.push(performance.now() - t);
  if (state.findWorkloadByName(added.namespace, added.name) === undefined) throw new Error('add not visible');
  state.remove({ kind: 'Pod', namespace: added.namespace, name: added.name });
  // An existing pod that stops being ready (leaves its Service's endpoints), and back.
  const target = (i * 7919) % pods;
  const off = toObject(rawPod(target, { ready: false }));
  t = performance.now();
  state.upsert(off);
  modifyMs.push(performance.now() - t);
  if (state.findWorkloadByIp(podIp(target))?.ready !== false) throw new Error('modify not visible');
  state.upsert(toObject(rawPod(target)));
}

// ---- one change through the file source ----
const fileMs: number[] = [];
const changeFile = join(dir, 'zz-change.yaml');
for (let i = 0; i < 5; i++) {
  const name = `bench-file-${i % 2}`;
  const yaml = `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ns-0, labels: {app: svc-0}}
spec: {nodeName: node-1}
status: {podIP: ${podIp(pods + 100 + i)}}
`;
  await writeFile(changeFile, yaml);
  const t = performance.now();
  await source.reload();
  fileMs.push(performance.now() - t);
  if (state.findWorkloadByIp(podIp(pods + 100 + i))?.name !== name)
    throw new Error('file change not visible');
}
await rm(changeFile);
await source.close();

// ---- lookups (after the RSS figures) ----
const lookups = measureLookups(state, pods, services);

process.stdout.write(
  `${JSON.stringify({
    pods,
    services,
    authorizationPolicies: stats.authorizationPolicies,
    loadMs,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    heapTotal: mem.heapTotal,
    peakRss: peakRss(),
    upsertAddMs: median(addMs),
    upsertModifyMs: median(modifyMs),
    upsertMaxMs: Math.max(...addMs, ...modifyMs),
    fileChangeMs: median(fileMs),
    ...lookups,
  })}\n`,
);
