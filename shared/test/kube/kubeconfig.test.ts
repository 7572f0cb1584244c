// Loading credentials the way an operator hands them over: a kubeconfig (YAML or JSON, a KUBECONFIG
// list, client certificates, a CA file, tls-server-name), or the pod's ServiceAccount, whose token
// rotates. And when they are wrong, an error that names the file and the entry to fix.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fetchKube, KubeError, loadKubeConfig } from '@hypha/shared/kube';
import { createKubeApiServer, DEFAULT_API_AUDIENCE, type KubeApiServer } from '@hypha/test';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

const run = promisify(execFile);
let dir: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-kubeconfig-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
async function write(doc: unknown, yaml = true): Promise<string> {
  const path = join(dir, `config-${files++}`);
  await writeFile(path, yaml ? stringify(doc) : JSON.stringify(doc));
  return path;
}

function config(opts: {
  server?: string;
  cluster?: Record<string, unknown>;
  user?: Record<string, unknown>;
  current?: string | null;
  name?: string;
}): Record<string, unknown> {
  const name = opts.name ?? 'main';
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: { server: opts.server ?? 'https://10.0.0.1:6443', ...opts.cluster } }],
    users: [{ name: `${name}-user`, user: opts.user ?? { token: `${name}-token` } }],
    contexts: [{ name, context: { cluster: name, user: `${name}-user`, namespace: 'shop' } }],
    ...(opts.current === null ? {} : { 'current-context': opts.current ?? name }),
  };
}

function withEnv(vars: Record<string, string | undefined>): void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  cleanups.push(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

function failure(fn: () => unknown): KubeError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KubeError);
    expect((err as KubeError).code).toBe('KUBECONFIG');
    return err as KubeError;
  }
  throw new Error('expected a KubeError');
}

describe('loadKubeConfig: files', () => {
  it('reads the current context of a YAML kubeconfig: server, namespace, token, CA file relative to it', async () => {
    await writeFile(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const doc = config({ cluster: { 'certificate-authority': 'ca.pem', 'tls-server-name': 'kubernetes' } });
    (doc.clusters as unknown[]).push({ name: 'other', cluster: { server: 'https://10.9.9.9' } });
    (doc.contexts as unknown[]).unshift({ name: 'other', context: { cluster: 'other' } });
    const kc = loadKubeConfig(await write(doc));
    expect(kc.getCurrentCluster().server).toBe('https://10.0.0.1:6443');
    expect(kc.contextName).toBe('main');
    expect(kc.namespace).toBe('shop');
    expect(kc.cluster.ca).toContain('BEGIN CERTIFICATE');
    expect(kc.cluster.tlsServerName).toBe('kubernetes');
    expect(await kc.fetchToken()).toBe('main-token');
  });

  it('merges a KUBECONFIG list as kubectl does: first definition and first current-context win', async () => {
    const first = await write({ ...config({ name: 'a' }), 'current-context': 'b' });
    const second = await write(config({ name: 'b', server: 'https://10.0.0.2' }));
    const shadowed = await write(config({ name: 'a', server: 'https://10.6.6.6' }));
    withEnv({ KUBECONFIG: [first, join(dir, 'missing'), second, shadowed].join(':') });
    const kc = loadKubeConfig();
    expect(kc.cluster.server).toBe('https://10.0.0.2');
    expect(await kc.fetchToken()).toBe('b-token');
    withEnv({ KUBECONFIG: [shadowed, first].join(':') });
    expect(loadKubeConfig().cluster.server).toBe('https://10.6.6.6');
  });

  it('defaults to $KUBECONFIG, else ~/.kube/config', async () => {
    const home = join(dir, 'home');
    await mkdir(join(home, '.kube'), { recursive: true });
    await writeFile(join(home, '.kube', 'config'), stringify(config({ server: 'https://home.example' })));
    const env = await write(config({ server: 'https://env.example' }));
    withEnv({ HOME: home, KUBECONFIG: env, KUBERNETES_SERVICE_HOST: undefined });
    expect(loadKubeConfig().cluster.server).toBe('https://env.example');
    withEnv({ KUBECONFIG: undefined });
    expect(loadKubeConfig().cluster.server).toBe('https://home.example');
    withEnv({ HOME: join(dir, 'nobody') });
    expect(failure(() => loadKubeConfig()).message).toMatch(/--kubeconfig.*KUBECONFIG/);
  });

  it('names the file, context or user at fault', async () => {
    expect(failure(() => loadKubeConfig(join(dir, 'nope'))).message).toContain(
      `${join(dir, 'nope')}: no such file`,
    );
    const noCurrent = await write(config({ current: null }));
    expect(failure(() => loadKubeConfig(noCurrent)).message).toMatch(
      /has no current-context.*contexts: main/,
    );
    const wrongCurrent = await write(config({ current: 'prod' }));
    expect(failure(() => loadKubeConfig(wrongCurrent)).message).toContain(
      'current-context "prod" is not among',
    );
    const exec = await write(
      config({ user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: 'aws' } } }),
    );
    const execErr = failure(() => loadKubeConfig(exec)).message;
    expect(execErr).toContain(`${exec}: user "main-user" uses an exec credential plugin`);
    expect(execErr).toContain('kubectl create token');
    const provider = await write(config({ user: { 'auth-provider': { name: 'gcp' } } }));
    expect(failure(() => loadKubeConfig(provider)).message).toContain(
      'user "main-user" uses an auth-provider',
    );
    const badBool = await write(config({ cluster: { 'insecure-skip-tls-verify': 'yes' } }));
    expect(failure(() => loadKubeConfig(badBool)).message).toContain(
      'cluster "main" insecure-skip-tls-verify must be true or false',
    );
    const badData = await write(config({ cluster: { 'certificate-authority-data': 'bm90IGEgcGVt' } }));
    expect(failure(() => loadKubeConfig(badData)).message).toContain(
      'certificate-authority-data is not base64-encoded PEM',
    );
    const halfCert = await write(config({ user: { 'client-certificate': join(dir, 'ca.pem') } }));
    expect(failure(() => loadKubeConfig(halfCert)).message).toContain('client certificate without its key');
    const badServer = await write(config({ server: 'not a url' }));
    expect(failure(() => loadKubeConfig(badServer)).message).toContain('server "not a url" is not a URL');
    const notYaml = join(dir, 'broken');
    await writeFile(notYaml, 'clusters: [\n');
    expect(failure(() => loadKubeConfig(notYaml)).message).toContain(
      `kubeconfig ${notYaml} is not valid YAML`,
    );
  });
});

// A CA, a server certificate for "kubernetes.internal" only (not 127.0.0.1), and a client
// certificate: what a kubeadm cluster's admin.conf carries.
async function makePki(): Promise<
  Record<'ca' | 'serverCert' | 'serverKey' | 'clientCert' | 'clientKey', string>
> {
  const pki = join(dir, 'pki');
  await mkdir(pki, { recursive: true });
  const ossl = (...args: string[]) => run('openssl', args, { cwd: pki });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await ossl(
    'req',
    '-x509',
    ...ec,
    '-days',
    '2',
    '-subj',
    '/CN=test-ca',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  );
  for (const [name, subj, ext] of [
    ['server', '/CN=kube-apiserver', 'subjectAltName=DNS:kubernetes.internal\nextendedKeyUsage=serverAuth'],
    ['client', '/O=system:masters/CN=kubernetes-admin', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    await ossl('req', ...ec, '-subj', subj, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    await writeFile(join(pki, `${name}.ext`), `${ext}\n`);
    await ossl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    );
  }
  const read = (f: string) => readFile(join(pki, f), 'utf8');
  return {
    ca: await read('ca.crt'),
    serverCert: await read('server.crt'),
    serverKey: await read('server.key'),
    clientCert: await read('client.crt'),
    clientKey: await read('client.key'),
  };
}

describe('fetchKube with kubeconfig TLS', () => {
  it('presents the client certificate, verifies the server by CA and tls-server-name; refuses without them', async () => {
    const pki = await makePki();
    const server: Server = createHttpsServer(
      { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, requestCert: true, rejectUnauthorized: true },
      (req, res) => {
        const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ user: peer.subject?.CN, auth: req.headers.authorization ?? null }));
      },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    await writeFile(join(dir, 'client.crt'), pki.clientCert);
    await writeFile(join(dir, 'client.key'), pki.clientKey);

    const inline = await write(
      config({
        server: url,
        cluster: { 'certificate-authority-data': b64(pki.ca), 'tls-server-name': 'kubernetes.internal' },
        user: { 'client-certificate-data': b64(pki.clientCert), 'client-key-data': b64(pki.clientKey) },
      }),
    );
    expect(await fetchKube(loadKubeConfig(inline), '/version')).toEqual({
      user: 'kubernetes-admin',
      auth: null,
    });

    const fromFiles = await write(
      config({
        server: url,
        cluster: { 'certificate-authority-data': b64(pki.ca), 'tls-server-name': 'kubernetes.internal' },
        user: { 'client-certificate': 'client.crt', 'client-key': 'client.key' },
      }),
      false,
    );
    expect(await fetchKube(loadKubeConfig(fromFiles), '/version')).toMatchObject({
      user: 'kubernetes-admin',
    });

    // The certificate names kubernetes.internal, not 127.0.0.1: without tls-server-name it is refused.
    const noName = await write(
      config({
        server: url,
        cluster: { 'certificate-authority-data': b64(pki.ca) },
        user: { 'client-certificate-data': b64(pki.clientCert), 'client-key-data': b64(pki.clientKey) },
      }),
    );
    await expect(fetchKube(loadKubeConfig(noName), '/version')).rejects.toThrow(
      /127\.0\.0\.1.*altnames|altnames/i,
    );

    // insecure-skip-tls-verify: no CA needed (the client certificate still is).
    const insecure = await write(
      config({
        server: url,
        cluster: { 'insecure-skip-tls-verify': true },
        user: { 'client-certificate-data': b64(pki.clientCert), 'client-key-data': b64(pki.clientKey) },
      }),
    );
    expect(await fetchKube(loadKubeConfig(insecure), '/version')).toMatchObject({ user: 'kubernetes-admin' });

    // No client certificate: the server's handshake refuses us, and the error says where we went.
    const anonymous = await write(
      config({
        server: url,
        cluster: { 'certificate-authority-data': b64(pki.ca), 'tls-server-name': 'kubernetes.internal' },
        user: {},
      }),
    );
    await expect(fetchKube(loadKubeConfig(anonymous), '/version')).rejects.toMatchObject({
      code: 'API_UNREACHABLE',
      message: expect.stringContaining(url),
    });
  });
});

describe('loadKubeConfig: in a pod', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await createKubeApiServer({});
  });
  afterAll(async () => {
    await api.close();
  });

  it('uses the mounted CA and the current token: a rotated token is picked up without a restart', async () => {
    const root = await mkdtemp(join(tmpdir(), 'hypha-incluster-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const sa = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
    await mkdir(sa, { recursive: true });
    const issue = () =>
      api.issueToken({
        namespace: 'hypha-system',
        serviceAccount: 'hypha-agent',
        audiences: [DEFAULT_API_AUDIENCE],
      });
    const first = issue();
    await writeFile(join(sa, 'token'), first);
    await writeFile(join(sa, 'ca.crt'), api.caPem ?? '');
    await writeFile(join(sa, 'namespace'), 'hypha-system\n');
    withEnv({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: new URL(api.url).port });

    const kc = loadKubeConfig({ inCluster: true, pathPrefix: root });
    expect(kc.namespace).toBe('hypha-system');
    expect(kc.cluster.server).toBe(api.url);
    await fetchKube(kc, '/api/v1/namespaces');
    expect(api.requests.at(-1)?.user).toBe('system:serviceaccount:hypha-system:hypha-agent');

    // The kubelet rotates the projected token; the old one stops working.
    const second = issue();
    await writeFile(join(sa, 'token'), second);
    api.revokeToken(first);
    await fetchKube(kc, '/api/v1/namespaces');
    expect(api.requests.at(-1)).toMatchObject({
      status: 200,
      user: 'system:serviceaccount:hypha-system:hypha-agent',
    });
  });

  it('says what is missing outside a pod', async () => {
    withEnv({ KUBERNETES_SERVICE_HOST: undefined, KUBERNETES_SERVICE_PORT: undefined });
    expect(failure(() => loadKubeConfig({ inCluster: true, pathPrefix: dir })).message).toContain(
      'KUBERNETES_SERVICE_HOST',
    );
    withEnv({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '443' });
    expect(failure(() => loadKubeConfig({ inCluster: true, pathPrefix: dir })).message).toContain(
      'automountServiceAccountToken',
    );
  });
});
