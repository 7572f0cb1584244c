// Child process of the `scale` bench: the stand-in Kubernetes API server (@hypha/test) holding the
// generated cluster, for the Kubernetes-source figures. A process of its own, so that the objects
// it stores (and serves) do not count in the measured source's RSS.
//   node scale-kube-api.js --pods N
// Prints one JSON line {kubeconfigPath, url, objects, putMs} once every object is in; serves until
// its stdin closes (the suite ends it that way), then closes the server and exits.
//
// The stand-in's list deep-copies and sorts the whole collection for every page (fine for tests,
// quadratic over a 100k-pod list in 500-item pages). Here its store's list returns the stored
// objects already sorted, cached until the next write: the server code still filters, pages and
// serializes each page, but the sync time measures the source rather than the stand-in's copying.
// Nothing mutates the returned objects (list items are copied or serialized).
import { parseArgs } from 'node:util';
import { createKubeApiServer, type KubeObject } from '@hypha/test';
import { clusterObjects } from '../scale-objects.js';

const { values } = parseArgs({ options: { pods: { type: 'string' } } });
const pods = Number(values.pods);
if (!Number.isInteger(pods) || pods <= 0) {
  process.stderr.write('usage: node scale-kube-api.js --pods N\n');
  process.exit(2);
}

const api = await createKubeApiServer({ bookmarkIntervalMs: 1000 });
const store = api.store;
const keyOf = (o: KubeObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
const plainList = store.list.bind(store);
// Snapshots of the stored objects (uncopied), sorted as the server's list sorts them.
const cache = new Map<string, { rv: number; items: KubeObject[] }>();
const byKey = (a: KubeObject, b: KubeObject) => {
  const ka = keyOf(a);
  const kb = keyOf(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
};
store.list = (type, namespace) => {
  const id = `${type.group}/${type.plural}/${namespace ?? ''}`;
  const hit = cache.get(id);
  if (hit && hit.rv === store.resourceVersion) return hit.items;
  // One deep copy per write generation, not per page.
  const items = plainList(type, namespace).sort(byKey);
  cache.set(id, { rv: store.resourceVersion, items });
  return items;
};

const t0 = performance.now();
let objects = 0;
for (const obj of clusterObjects(pods)) {
  api.put(obj as KubeObject);
  objects++;
}
const putMs = performance.now() - t0;
process.stdout.write(
  `${JSON.stringify({ kubeconfigPath: api.kubeconfigPath, url: api.url, objects, putMs })}\n`,
);

let closing = false;
const shutdown = async () => {
  if (closing) return;
  closing = true;
  await api.close();
  process.exit(0);
};
process.stdin.on('end', () => void shutdown());
process.stdin.on('close', () => void shutdown());
process.stdin.resume();
process.on('SIGTERM', () => void shutdown());
