// The list+watch informer against the stand-in API server (and, for what no honest server does,
// small hostile ones): what its owner notices is the sequence of add/update/delete calls, and that
// it never holds an object the API no longer has.
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createNetServer, type Socket } from 'node:net';
import { Informer, type KubeObject, loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer } from '@hypha/test';
import { afterEach, describe, expect, it } from 'vitest';

const servers: Array<{ close(): Promise<void> | void }> = [];
const informers: Informer[] = [];

afterEach(async () => {
  for (const i of informers.splice(0)) i.close();
  for (const s of servers.splice(0)) await s.close();
});

async function startServer(options: Parameters<typeof createKubeApiServer>[0] = {}): Promise<KubeApiServer> {
  const server = await createKubeApiServer({ bookmarkIntervalMs: 100, ...options });
  servers.push(server);
  return server;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function configMap(
  name: string,
  data: Record<string, string> = {},
): KubeObject & { metadata: { name: string } } {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'shop' }, data };
}

interface Recorded {
  calls: string[];
  errors: string[];
  expired: string[];
  synced: boolean;
}

function informer(
  kubeconfig: string,
  extra: Partial<ConstructorParameters<typeof Informer>[0]> = {},
): { informer: Informer; seen: Recorded } {
  const seen: Recorded = { calls: [], errors: [], expired: [], synced: false };
  const name = (o: KubeObject) => String(o.metadata?.name);
  const i = new Informer({
    kubeconfig: loadKubeConfig(kubeconfig),
    path: '/api/v1/namespaces/shop/configmaps',
    backoff: { initialMs: 20, maxMs: 200 },
    handler: {
      onAdd: (o) => seen.calls.push(`add ${name(o)}`),
      onUpdate: (o) => seen.calls.push(`update ${name(o)}`),
      onDelete: (o) => seen.calls.push(`delete ${name(o)}`),
      onSynced: () => {
        seen.synced = true;
      },
      onExpired: (m) => seen.expired.push(m),
      onError: (err) => seen.errors.push(err.message),
    },
    ...extra,
  });
  informers.push(i);
  return { informer: i, seen };
}

function names(i: Informer): string[] {
  return i
    .list()
    .map((o) => String(o.metadata?.name))
    .sort();
}

describe('Informer', () => {
  it('lists, then follows adds, changes and deletes through the watch', async () => {
    const server = await startServer();
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    server.put(configMap('a'));
    const { informer: i, seen } = informer(server.kubeconfigPath);
    i.start();
    await waitFor('synced', () => seen.synced);
    expect(seen.calls).toEqual(['add a']);
    await server.waitForWatches(1);
    server.put(configMap('b'));
    server.put(configMap('a', { k: 'v' }));
    server.remove('v1', 'ConfigMap', 'b', 'shop');
    await waitFor('three events', () => seen.calls.length === 4);
    expect(seen.calls).toEqual(['add a', 'add b', 'update a', 'delete b']);
    expect(names(i)).toEqual(['a']);
    // The watch asked for bookmarks and resumed from the list's resourceVersion.
    const watch = server.requests.find((r) => r.watch);
    expect(watch?.query.allowWatchBookmarks).toBe('true');
    expect(watch?.query.resourceVersion).toBeTruthy();
  });

  it('after 410 Gone relists and reports what vanished in the gap as deleted', async () => {
    const server = await startServer();
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    for (const n of ['keep', 'gone', 'changed']) server.put(configMap(n));
    const { informer: i, seen } = informer(server.kubeconfigPath);
    i.start();
    await server.waitForWatches(1);
    const release = server.holdWatches();
    server.dropWatches();
    server.remove('v1', 'ConfigMap', 'gone', 'shop');
    server.put(configMap('changed', { v: '2' }));
    server.put(configMap('new'));
    server.compactHistory();
    release();
    await waitFor('relisted', () => i.lists === 2 && seen.calls.length === 6);
    // Pages are applied as they arrive; what no page had is deleted after the last one.
    expect(seen.calls.slice(3)).toEqual(['update changed', 'add new', 'delete gone']);
    expect(names(i)).toEqual(['changed', 'keep', 'new']);
    expect(seen.expired.length).toBeGreaterThanOrEqual(1);
    // `keep` did not change: no update for it, and it is still cached.
    expect(seen.calls.filter((c) => c.endsWith(' keep'))).toEqual(['add keep']);
  });

  it('relists on a 410 answer to the watch request itself', async () => {
    const server = await startServer();
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    server.put(configMap('a'));
    const { informer: i, seen } = informer(server.kubeconfigPath);
    i.start();
    await server.waitForWatches(1);
    server.injectFailure({
      path: '/configmaps',
      watch: true,
      status: 410,
      message: 'too old resource version',
    });
    server.endWatches();
    await waitFor('relisted', () => i.lists === 2);
    expect(seen.expired.join()).toContain('too old resource version');
    expect(seen.errors).toEqual([]);
    expect(names(i)).toEqual(['a']);
  });

  it('gets through a list that keeps expiring (410 on its pages) and syncs', async () => {
    const server = await startServer();
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    for (let n = 0; n < 5; n++) server.put(configMap(`cm-${n}`));
    server.injectFailure({
      path: '/configmaps',
      watch: false,
      status: 410,
      message: 'continue expired',
      times: 3,
    });
    const { informer: i, seen } = informer(server.kubeconfigPath, { pageSize: 2 });
    i.start();
    await waitFor('synced', () => seen.synced);
    expect(seen.expired).toHaveLength(3);
    expect(seen.errors).toEqual([]);
    expect(names(i)).toEqual(['cm-0', 'cm-1', 'cm-2', 'cm-3', 'cm-4']);
  });

  it('moves its resourceVersion on with bookmarks and resumes a dropped watch from there', async () => {
    const server = await startServer({ bookmarkIntervalMs: 50 });
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    server.put(configMap('a'));
    const { informer: i } = informer(server.kubeconfigPath);
    i.start();
    await server.waitForWatches(1);
    const listed = Number(i.resourceVersion);
    // Changes elsewhere (another namespace's objects) move the cluster's resourceVersion.
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'other' } });
    server.put({ ...configMap('x'), metadata: { name: 'x', namespace: 'other' } });
    const target = server.store.resourceVersion;
    await waitFor('a bookmark', () => Number(i.resourceVersion) >= target);
    expect(Number(i.resourceVersion)).toBeGreaterThan(listed);
    expect(i.bookmarks).toBeGreaterThan(0);
    server.dropWatches();
    await waitFor('resumed', () => server.requests.filter((r) => r.watch).length >= 2);
    const resumed = server.requests.filter((r) => r.watch)[1];
    expect(Number(resumed?.query.resourceVersion)).toBeGreaterThanOrEqual(target);
    expect(i.lists).toBe(1);
  });

  it('applies the transform before anything is cached or handed on', async () => {
    const server = await startServer();
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    server.put(configMap('a', { big: 'x'.repeat(10_000) }));
    const handed: KubeObject[] = [];
    const i = new Informer({
      kubeconfig: loadKubeConfig(server.kubeconfigPath),
      path: '/api/v1/namespaces/shop/configmaps',
      transform: (o) => ({ metadata: (o as KubeObject).metadata }),
      handler: { onAdd: (o) => handed.push(o), onUpdate: (o) => handed.push(o), onDelete: () => {} },
    });
    informers.push(i);
    i.start();
    await server.waitForWatches(1);
    server.put(configMap('b', { big: 'y'.repeat(10_000) }));
    await waitFor('two objects', () => handed.length === 2);
    expect(handed.every((o) => o.data === undefined)).toBe(true);
    expect(i.list().every((o) => o.data === undefined)).toBe(true);
  });

  it('drops a watch whose line never ends instead of buffering it, and says why', async () => {
    // A hostile or broken endpoint: a valid list, then a watch that streams one endless line.
    let watchSockets = 0;
    let closedWatchSockets = 0;
    const hostile: Server = createHttpServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.searchParams.get('watch') !== 'true') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ kind: 'ConfigMapList', metadata: { resourceVersion: '7' }, items: [] }));
        return;
      }
      watchSockets += 1;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 'a');
      const pump = () => {
        while (!res.destroyed && res.write(chunk)) {}
      };
      res.on('drain', pump);
      res.on('close', () => {
        closedWatchSockets += 1;
      });
      res.write('{"type":"ADDED","object":{"metadata":{"name":"');
      pump();
    });
    await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
    servers.push({
      close: () =>
        new Promise<void>((r) => {
          hostile.closeAllConnections();
          hostile.close(() => r());
        }),
    });
    const port = (hostile.address() as AddressInfo).port;
    const kubeconfig = await writeKubeconfig({ server: `http://127.0.0.1:${port}` });
    const { informer: i, seen } = informer(kubeconfig, { maxEventBytes: 1024 * 1024 });
    i.start();
    await waitFor('the watch refused', () => seen.errors.length > 0);
    expect(seen.errors[0]).toContain('exceeded 1048576 bytes');
    await waitFor('the connection closed', () => closedWatchSockets >= 1);
    expect(watchSockets).toBeGreaterThanOrEqual(1);
    expect(seen.calls).toEqual([]);
    expect(i.errors).toBeGreaterThanOrEqual(1);
  });

  it('close() aborts a request still connecting, and nothing is reported after it', async () => {
    // A server that accepts TCP and never answers: the list is stuck in the TLS handshake.
    const sockets: Socket[] = [];
    let closedSockets = 0;
    const silent = createNetServer((s) => {
      sockets.push(s);
      s.on('close', () => {
        closedSockets += 1;
      });
      s.on('error', () => {});
      s.resume(); // read, so the client's hang-up is seen
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    servers.push({
      close: () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          silent.close(() => r());
        }),
    });
    const port = (silent.address() as AddressInfo).port;
    const kubeconfig = await writeKubeconfig({ server: `https://127.0.0.1:${port}` });
    const { informer: i, seen } = informer(kubeconfig);
    i.start();
    await waitFor('connected', () => sockets.length === 1);
    i.close();
    await waitFor('the client hung up', () => closedSockets === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(seen.errors).toEqual([]);
    expect(seen.synced).toBe(false);
    expect(sockets).toHaveLength(1);
  });

  it('close() ends an open watch', async () => {
    const server = await startServer();
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    const { informer: i, seen } = informer(server.kubeconfigPath);
    i.start();
    await server.waitForWatches(1);
    i.close();
    await waitFor('no watch left', () => server.activeWatches === 0);
    server.put(configMap('after'));
    await new Promise((r) => setTimeout(r, 100));
    expect(seen.calls).toEqual([]);
    expect(seen.errors).toEqual([]);
  });
});

async function writeKubeconfig(cluster: Record<string, unknown>): Promise<string> {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'hypha-informer-'));
  const path = join(dir, 'kubeconfig');
  await writeFile(
    path,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster }],
      users: [{ name: 'u', user: { token: 't' } }],
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'x',
    }),
  );
  return path;
}
