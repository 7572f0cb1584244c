import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaClient, type CaClientError, parseSpiffeId, type RevocationSnapshot } from '@hypha/shared/identity';
import { createKubeApiServer, type KubeApiServer, type KubeObject } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKubeCa } from '../../src/ca/kube.js';
import {
  KubeRevocationError,
  KubeRevocationList,
  REVOCATIONS_CONFIGMAP,
  recordKubeRevocation,
} from '../../src/ca/kube-revocations.js';
import { recordRevocation } from '../../src/ca/revocations.js';
import { type HyphaRun, runHypha, seedCaCluster, startKubeCa } from '../run-hypha.js';

const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const NS = 'hypha-system';

const hypha = (...args: string[]): Promise<HyphaRun> => runHypha(args);

interface ConfigMap {
  metadata: { resourceVersion: string };
  data: Record<string, string>;
}

function findList(api: KubeApiServer, ns = NS): { version: number; entries: Record<string, string>[] } {
  const cm = api.find('v1', 'ConfigMap', REVOCATIONS_CONFIGMAP, ns) as unknown as ConfigMap | undefined;
  if (!cm) throw new Error(`no ConfigMap ${ns}/${REVOCATIONS_CONFIGMAP}`);
  return JSON.parse(cm.data['revocations.json']!);
}

function putList(api: KubeApiServer, data: Record<string, string>): void {
  api.put({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: REVOCATIONS_CONFIGMAP, namespace: NS },
    data,
  } as KubeObject);
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('hypha ca revoke --kubernetes (built CLI)', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await createKubeApiServer();
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('creates the ConfigMap, bumps the version per change, and a repeat changes nothing', async () => {
    const first = await hypha(
      'ca',
      'revoke',
      '--kubernetes',
      '--kubeconfig',
      api.kubeconfigPath,
      '--serial',
      '00:5C:1F:0E:9A',
      '--reason',
      'key leaked',
    );
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(
      `Revoked serial 5c1f0e9a in ConfigMap ${NS}/${REVOCATIONS_CONFIGMAP} (revocation list version 1; created the ConfigMap)\n`,
    );
    const list = findList(api);
    expect(list.version).toBe(1);
    expect(list.entries).toEqual([
      { serial: '5c1f0e9a', revokedAt: expect.any(String), reason: 'key leaked' },
    ]);
    const rv = (api.find('v1', 'ConfigMap', REVOCATIONS_CONFIGMAP, NS) as unknown as ConfigMap).metadata
      .resourceVersion;

    const again = await hypha(
      'ca',
      'revoke',
      '--kubernetes',
      '--kubeconfig',
      api.kubeconfigPath,
      '--serial',
      '5c1f0e9a',
    );
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(
      `serial 5c1f0e9a was already revoked in ConfigMap ${NS}/${REVOCATIONS_CONFIGMAP} (revocation list version 1)\n`,
    );
    const cm = api.find('v1', 'ConfigMap', REVOCATIONS_CONFIGMAP, NS) as unknown as ConfigMap;
    expect(cm.metadata.resourceVersion).toBe(rv);
    expect(findList(api).version).toBe(1);

    const id = await hypha(
      'ca',
      'revoke',
      '--kubernetes',
      '--kubeconfig',
      api.kubeconfigPath,
      '--id',
      WEB.toString(),
    );
    expect(id.code).toBe(0);
    expect(id.stdout).toMatch(
      /^Revoked identity spiffe:\/\/cluster.local\/ns\/shop\/sa\/web in ConfigMap .* \(revocation list version 2\)\n$/,
    );
    expect(findList(api).entries.map((e) => e.serial ?? e.id)).toEqual(['5c1f0e9a', WEB.toString()]);
  });

  it('refuses bad flags with exit 2 before touching the API; --help has a Kubernetes example', async () => {
    const before = api.requests.length;
    const kube = ['ca', 'revoke', '--kubernetes', '--kubeconfig', api.kubeconfigPath];
    const cases: Array<[string[], RegExp]> = [
      [[...kube, '--serial', 'xyz'], /--serial must be hexadecimal/],
      [
        [...kube, '--dir', '/tmp', '--serial', 'ab'],
        /exactly one of --dir <dir> \(file mode\) or --kubernetes/,
      ],
      [
        [...kube, '--namespace', 'Bad_NS', '--serial', 'ab'],
        /--namespace must be a Kubernetes namespace name/,
      ],
      [
        ['ca', 'revoke', '--dir', '/tmp/x', '--namespace', 'x', '--serial', 'ab'],
        /--namespace applies only with --kubernetes/,
      ],
    ];
    const [help, ...runs] = await Promise.all([
      hypha('ca', 'revoke', '--help'),
      ...cases.map(([args]) => hypha(...args)),
    ]);
    for (const [i, [args, message]] of cases.entries()) {
      expect(runs[i]!.code, args.join(' ')).toBe(2);
      expect(runs[i]!.stderr, args.join(' ')).toMatch(message);
    }
    expect(api.requests.length).toBe(before);
    expect(help!.code).toBe(0);
    expect(help!.stdout).toMatch(
      /hypha ca revoke --kubernetes --id spiffe:\/\/cluster.local\/ns\/shop\/sa\/web/,
    );
  });

  it('says what is wrong in one line, exit 1: forbidden, malformed list, unreachable API, missing namespace', async () => {
    api.injectFailure({
      method: 'GET',
      path: `/namespaces/${NS}/configmaps/${REVOCATIONS_CONFIGMAP}`,
      status: 403,
    });
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'broken' } });
    api.put({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: REVOCATIONS_CONFIGMAP, namespace: 'broken' },
      data: { 'revocations.json': '{"version": 3, "entries": [' },
    } as KubeObject);
    const dir = await mkdtemp(join(tmpdir(), 'hypha-kubeconfig-'));
    const dead = join(dir, 'kubeconfig');
    await writeFile(
      dead,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
        'users: [{name: u, user: {token: t}}]',
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'current-context: x',
      ].join('\n'),
    );
    const revoke = (kubeconfig: string, ...more: string[]) =>
      hypha('ca', 'revoke', '--kubernetes', '--kubeconfig', kubeconfig, '--serial', 'ab', ...more);
    const failure = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: unknown) => e as KubeRevocationError,
      );
    const [forbidden, malformed, unreachable, noNs] = await Promise.all([
      revoke(api.kubeconfigPath),
      revoke(api.kubeconfigPath, '--namespace', 'broken'),
      failure(recordKubeRevocation(dead, { serial: 'ab' })),
      failure(recordKubeRevocation(api.kubeconfigPath, { serial: 'ab' }, { namespace: 'nowhere' })),
    ]).finally(() => rm(dir, { recursive: true, force: true }));

    expect(forbidden!.code).toBe(1);
    expect(forbidden!.stderr).toMatch(
      /^hypha: error: forbidden to get ConfigMap hypha-system\/hypha-ca-revocations: .*kubectl auth can-i get configmaps\/hypha-ca-revocations -n hypha-system\)\n$/,
    );
    expect(unreachable?.code).toBe('KUBE_REVOCATIONS_API');
    expect(unreachable?.message).toMatch(
      /^cannot get ConfigMap hypha-system\/hypha-ca-revocations: .*ECONNREFUSED.*is the API server reachable from here\?\)$/,
    );
    expect(noNs?.code).toBe('KUBE_REVOCATIONS_NO_NAMESPACE');
    expect(noNs?.message).toMatch(
      /^cannot create ConfigMap nowhere\/hypha-ca-revocations: namespace "nowhere" does not exist/,
    );
    expect(malformed!.code).toBe(1);
    expect(malformed!.stderr).toMatch(
      /ConfigMap broken\/hypha-ca-revocations key revocations.json is not valid JSON.*; fix it first \(kubectl edit configmap hypha-ca-revocations -n broken\) so no entry is lost\n$/,
    );
    // Nothing was overwritten.
    const kept = api.find('v1', 'ConfigMap', REVOCATIONS_CONFIGMAP, 'broken') as unknown as ConfigMap;
    expect(kept.data['revocations.json']).toBe('{"version": 3, "entries": [');
  });
});

describe('a running kube-mode CA and ConfigMap hypha-ca-revocations', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await createKubeApiServer();
    seedCaCluster(api);
  });
  afterAll(async () => {
    await api?.close();
  });

  it('serves each change within seconds, refuses revoked identities, survives a malformed ConfigMap', async () => {
    const ca = await startKubeCa(api.kubeconfigPath, NS);
    const { child, url } = ca;
    let exited: number | null | undefined;
    child.once('exit', (code) => {
      exited = code;
    });
    const client: { c?: CaClient } = {};
    try {
      const bundle = (api.find('v1', 'ConfigMap', 'hypha-ca-root-cert', NS) as unknown as ConfigMap).data[
        'root-cert.pem'
      ]!;
      const token = api.issueToken({
        namespace: NS,
        serviceAccount: 'hypha-agent',
        audiences: ['hypha-ca'],
        pod: 'agent-1',
      });
      const c = new CaClient({ url, token, caTrustBundlePem: bundle, timeoutMs: 5000 });
      client.c = c;
      const served = (version: number) =>
        until<RevocationSnapshot>(`version ${version} on GET /v1/revocations`, async () => {
          const s = await c.fetchRevocations();
          return s.version === version ? s : undefined;
        });

      // No ConfigMap yet: the empty list, and certificates are issued.
      expect(await c.fetchRevocations()).toEqual({ version: 0, serials: [], ids: [] });
      expect((await c.fetchWorkloadCertificate(WEB)).id.equals(WEB)).toBe(true);

      const revoked = await hypha(
        'ca',
        'revoke',
        '--kubernetes',
        '--kubeconfig',
        api.kubeconfigPath,
        '--id',
        WEB.toString(),
      );
      expect(revoked.code).toBe(0);
      const t0 = Date.now();
      expect(await served(1)).toEqual({ version: 1, serials: [], ids: [WEB.toString()] });
      expect(Date.now() - t0).toBeLessThan(3000);
      const refused = (await c.fetchWorkloadCertificate(WEB).catch((e: unknown) => e)) as CaClientError;
      expect(refused.code).toBe('CA_FORBIDDEN');
      expect(refused.message).toMatch(/spiffe:\/\/cluster.local\/ns\/shop\/sa\/web is revoked/);

      await recordKubeRevocation(api.kubeconfigPath, { serial: 'abc123' });
      expect(await served(2)).toEqual({ version: 2, serials: ['abc123'], ids: [WEB.toString()] });

      // Malformed: the last good list stays, one error line names the ConfigMap and the problem.
      putList(api, { 'revocations.json': '{"version": 3, "entries": [{"serial": "not hex"}]}' });
      const line = await until('the malformed-ConfigMap log line', async () =>
        ca
          .log()
          .split('\n')
          .find((l) => l.includes('still serving the last good revocation list')),
      );
      expect(line).toMatch(/"level":"error"/);
      expect(line).toMatch(
        /ConfigMap hypha-system\/hypha-ca-revocations key revocations.json: entry 0 has serial \\"not hex\\", not hexadecimal; still serving the last good revocation list \(version 2\)/,
      );
      expect(await c.fetchRevocations()).toEqual({ version: 2, serials: ['abc123'], ids: [WEB.toString()] });
      expect((await c.fetchWorkloadCertificate(WEB).catch((e: unknown) => e)) as CaClientError).toMatchObject(
        {
          code: 'CA_FORBIDDEN',
        },
      );
      putList(api, { other: 'x' });
      await until('the missing-key log line', async () =>
        ca.log().includes('has no key revocations.json (it has other)') ? true : undefined,
      );
      expect(exited).toBeUndefined();
      expect(
        ca
          .log()
          .split('\n')
          .filter((l) => l.includes('still serving the last good')).length,
      ).toBe(2);

      // A fixed list is applied; deleting the ConfigMap empties the list and certificates flow again.
      putList(api, {
        'revocations.json': JSON.stringify({ version: 4, entries: [{ serial: 'ABC123', revokedAt: '' }] }),
      });
      expect(await served(4)).toEqual({ version: 4, serials: ['abc123'], ids: [] });
      expect((await c.fetchWorkloadCertificate(WEB)).id.equals(WEB)).toBe(true);
      api.remove('v1', 'ConfigMap', REVOCATIONS_CONFIGMAP, NS);
      expect(await served(0)).toEqual({ version: 0, serials: [], ids: [] });
    } finally {
      client.c?.close();
      if (exited === undefined) {
        const done = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
        child.kill('SIGTERM');
        expect(await done).toBe(0);
      }
    }
  });
});

describe('KubeRevocationList and recordKubeRevocation', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await createKubeApiServer();
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  });
  afterAll(async () => {
    await api?.close();
  });

  it('retries an update that hits 409 Conflict and keeps every entry', async () => {
    await recordKubeRevocation(api.kubeconfigPath, { serial: '01' });
    api.injectFailure({ method: 'PUT', path: `/configmaps/${REVOCATIONS_CONFIGMAP}`, status: 409, times: 2 });
    const r = await recordKubeRevocation(api.kubeconfigPath, { serial: '02' });
    expect(r).toMatchObject({ changed: true, created: false, attempts: 3 });
    expect(r.snapshot).toEqual({ version: 2, serials: ['1', '2'], ids: [] });
    const puts = api.requests.filter(
      (q) => q.method === 'PUT' && q.path.endsWith(`/${REVOCATIONS_CONFIGMAP}`),
    );
    expect(puts.map((q) => q.status)).toEqual([409, 409, 200]);
    expect(findList(api).version).toBe(2);

    // Out of attempts: a clear error and nothing written.
    api.injectFailure({
      method: 'PUT',
      path: `/configmaps/${REVOCATIONS_CONFIGMAP}`,
      status: 409,
      times: 10,
    });
    const err = await recordKubeRevocation(api.kubeconfigPath, { serial: '03' }, { maxAttempts: 3 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KubeRevocationError);
    expect((err as KubeRevocationError).code).toBe('KUBE_REVOCATIONS_CONFLICT');
    expect((err as Error).message).toMatch(/changed under us 3 times \(409 Conflict\)/);
    expect(findList(api).version).toBe(2);
  });

  it('concurrent writers lose nothing (resourceVersion preconditions)', async () => {
    const ns = 'racing';
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    const serials = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6'];
    await Promise.all(
      serials.map((serial) =>
        recordKubeRevocation(api.kubeconfigPath, { serial }, { namespace: ns, maxAttempts: 20 }),
      ),
    );
    const list = findList(api, ns);
    expect(list.version).toBe(serials.length);
    expect(list.entries.map((e) => e.serial).sort()).toEqual(serials);
  });

  it('in kubernetes mode a plug-in directory revocations.json counts too (union)', async () => {
    const ns = 'union';
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    const dir = await mkdtemp(join(tmpdir(), 'hypha-plugin-'));
    const kca = await createKubeCa({
      kubeconfig: api.kubeconfigPath,
      namespace: ns,
      pluginDir: dir,
      host: '127.0.0.1',
      port: 0,
    });
    try {
      await recordRevocation(dir, { serial: 'f1' });
      await recordKubeRevocation(api.kubeconfigPath, { id: WEB.toString() }, { namespace: ns });
      await recordKubeRevocation(api.kubeconfigPath, { serial: 'c1' }, { namespace: ns });
      const snap = await until('both lists merged', async () => {
        const merged = await kca.revocations.fetchSnapshot();
        return merged.version === 2 ? merged : undefined;
      });
      expect(snap.serials).toEqual(['c1']);
      const addr = await kca.server.start();
      const c = new CaClient({
        url: `https://127.0.0.1:${addr.port}`,
        token: 'unused',
        caTrustBundlePem: kca.ca.trustBundlePem,
      });
      try {
        expect(await c.fetchRevocations()).toEqual({
          version: 3,
          serials: ['c1', 'f1'],
          ids: [WEB.toString()],
        });
      } finally {
        c.close();
      }
    } finally {
      await kca.close(100);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('follows the ConfigMap across dropped watches and an expired (410) watch', async () => {
    const ns = 'watching';
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    const list = new KubeRevocationList({
      kubeconfig: api.kubeconfigPath,
      namespace: ns,
      backoff: { initialMs: 20, maxMs: 200 },
    });
    const version = (v: number) =>
      until(`version ${v}`, async () => (list.findSnapshot().version === v ? true : undefined));
    try {
      await list.start();
      expect(list.findSnapshot()).toEqual({ version: 0, serials: [], ids: [] });
      await recordKubeRevocation(api.kubeconfigPath, { serial: 'b1' }, { namespace: ns });
      await version(1);
      api.dropWatches();
      await recordKubeRevocation(api.kubeconfigPath, { serial: 'b2' }, { namespace: ns });
      await version(2);
      // Watches held while the history is compacted: the resumed watch gets 410 and relists.
      const release = api.holdWatches();
      api.dropWatches();
      await recordKubeRevocation(api.kubeconfigPath, { serial: 'b3' }, { namespace: ns });
      api.compactHistory();
      release();
      await version(3);
      expect(list.findSnapshot().serials).toEqual(['b1', 'b2', 'b3']);
      const lists = api.requests.filter(
        (r) => r.method === 'GET' && !r.watch && r.path === `/api/v1/namespaces/${ns}/configmaps`,
      );
      expect(lists.length).toBe(2);
      expect(await list.isIdentityRevoked(WEB)).toBe(false);
      await recordKubeRevocation(api.kubeconfigPath, { id: WEB }, { namespace: ns });
      await version(4);
      expect(await list.isIdentityRevoked(WEB)).toBe(true);
    } finally {
      await list.close();
    }
  });

  it('a list that closes before its first read rejects ready instead of hanging', async () => {
    const list = new KubeRevocationList({ kubeconfig: api.kubeconfigPath, namespace: NS });
    api.injectFailure({ method: 'GET', path: '/configmaps', status: 500, times: 1 });
    const started = list.start();
    await list.close();
    await expect(started).rejects.toThrow(
      /closed before ConfigMap hypha-system\/hypha-ca-revocations was read/,
    );
  });
});
