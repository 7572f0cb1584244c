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
import { readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createFileSource, type PodObject, translateObject } from '@hypha/shared/config';
import { podIp, rawPod, serviceVip } from '../scale-objects.js';

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

function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

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

// The floor: a plain Map of every pod IP (and VIP) with the same keys, built after the RSS figures.
const ipFloor = new Map<string, number>();
for (let n = 0; n < pods; n++) ipFloor.set(podIp(n), n);
const vipFloor = new Map<string, number>();
for (let s = 0; s < services; s++) vipFloor.set(serviceVip(s), s);

process.stdout.write(
  `${JSON.stringify({
    pods,
    services,
    authorizationPolicies: stats.authorizationPolicies,
    loadMs,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    peakRss: peakRss(),
    upsertAddMs: median(addMs),
    upsertModifyMs: median(modifyMs),
    upsertMaxMs: Math.max(...addMs, ...modifyMs),
    fileChangeMs: median(fileMs),
    workloadByIpNs: nsPerLookup(ipKeys, (k) => state.findWorkloadByIp(k)),
    serviceByVipNs: nsPerLookup(vipKeys, (k) => state.findServiceByVip(k, 80)),
    mapIpNs: nsPerLookup(ipKeys, (k) => ipFloor.get(k)),
    mapVipNs: nsPerLookup(vipKeys, (k) => vipFloor.get(k)),
  })}\n`,
);
