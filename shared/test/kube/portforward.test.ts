// Port-forward through the API server (WebSocket, v4.channel.k8s.io): the stand-in's subresource
// (framing, channels, the error channel, RBAC get+create on pods/portforward), cross-checked with
// client-node's own PortForward, and Hypha's client (openPortForward, PortForwardAgent) on top.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { KubeError, loadKubeConfig, openPortForward, PortForwardAgent } from '@hypha/shared/kube';
import { createKubeApiServer, type KubeApiServer, type KubeObject } from '@hypha/test';
import { KubeConfig as ClientNodeConfig, PortForward } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A TCP echo server standing in for a port inside the pod. */
async function echoServer(): Promise<number> {
  const s: Server = createServer((c) => c.pipe(c));
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => s.close(r)));
  return (s.address() as AddressInfo).port;
}

async function setup(rbac = false): Promise<KubeApiServer> {
  const api = await createKubeApiServer({ rbac });
  cleanups.push(() => api.close());
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'hypha-system' } });
  api.put({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'agent-a', namespace: 'hypha-system' },
    spec: { containers: [{ name: 'agent', image: 'hypha' }] },
    status: { phase: 'Running', podIP: '10.1.0.5' },
  });
  return api;
}

/** A raw WebSocket client collecting messages (channel byte included). */
async function rawClient(api: KubeApiServer, query: string, protocols = ['v4.channel.k8s.io']) {
  const ws = new WebSocket(
    `${api.url.replace('https', 'wss')}/api/v1/namespaces/hypha-system/pods/agent-a/portforward?${query}`,
    protocols,
    { ca: api.caPem, headers: { Authorization: `Bearer ${api.adminToken}` } },
  );
  cleanups.push(() => ws.terminate());
  const messages: Buffer[] = [];
  const waiters: (() => void)[] = [];
  ws.on('message', (d: Buffer) => {
    messages.push(d);
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<void>((r) => ws.on('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const until = async (count: number) => {
    while (messages.length < count) await new Promise<void>((r) => waiters.push(r));
  };
  return { ws, messages, until, closed };
}

const portFrame = (channel: number, port: number) => {
  const b = Buffer.alloc(3);
  b[0] = channel;
  b.writeUInt16LE(port, 1);
  return b;
};

describe("the stand-in API server's pods/portforward (WebSocket)", () => {
  it('sends each port little-endian on its data and error channel first, then relays data channel bytes', async () => {
    const api = await setup();
    api.forwardPort('hypha-system', 'agent-a', 15000, { host: '127.0.0.1', port: await echoServer() });
    const c = await rawClient(api, 'ports=15000');
    expect(c.ws.protocol).toBe('v4.channel.k8s.io');
    await c.until(2);
    // 15000 = 0x3a98: little-endian 98 3a.
    expect(c.messages.slice(0, 2)).toEqual([Buffer.from([0, 0x98, 0x3a]), Buffer.from([1, 0x98, 0x3a])]);
    c.ws.send(Buffer.concat([Buffer.of(0), Buffer.from('ping')]));
    await c.until(3);
    expect(c.messages[2]).toEqual(Buffer.concat([Buffer.of(0), Buffer.from('ping')]));
    expect(api.requests.at(-1)).toMatchObject({
      method: 'GET',
      path: '/api/v1/namespaces/hypha-system/pods/agent-a/portforward',
      status: 101,
    });
  });

  it('reaches a pod port the test maps to a unix socket (as LocalMesh.exposeAdmin() gives)', async () => {
    const api = await setup();
    const dir = await mkdtemp(join(tmpdir(), 'hypha-pf-'));
    const path = join(dir, 'admin.sock');
    const s: Server = createServer((c) => c.end('from the socket'));
    await new Promise<void>((r) => s.listen(path, r));
    cleanups.push(async () => {
      await new Promise((r) => s.close(r));
      await rm(dir, { recursive: true, force: true });
    });
    api.forwardPort('hypha-system', 'agent-a', 15000, { path });
    const stream = await openPortForward(
      loadKubeConfig(api.kubeconfigPath),
      'hypha-system',
      'agent-a',
      15000,
    );
    let got = '';
    for await (const chunk of stream) got += String(chunk);
    // The pod's side closed: the stream ends cleanly after the bytes.
    expect(got).toBe('from the socket');
  });

  it('gives port i channels 2i and 2i+1 when several ports are asked', async () => {
    const api = await setup();
    const echo = await echoServer();
    api.forwardPort('hypha-system', 'agent-a', 15000, { host: '127.0.0.1', port: echo });
    api.forwardPort('hypha-system', 'agent-a', 15021, { host: '127.0.0.1', port: echo });
    const c = await rawClient(api, 'ports=15000,15021');
    await c.until(4);
    expect(c.messages.slice(0, 4)).toEqual([
      portFrame(0, 15000),
      portFrame(1, 15000),
      portFrame(2, 15021),
      portFrame(3, 15021),
    ]);
    c.ws.send(Buffer.concat([Buffer.of(2), Buffer.from('second')]));
    await c.until(5);
    expect(c.messages[4]).toEqual(Buffer.concat([Buffer.of(2), Buffer.from('second')]));
  });

  it('reports a port nothing listens on as text on the error channel, then closes', async () => {
    const api = await setup();
    const c = await rawClient(api, 'ports=15000');
    await c.closed;
    const errors = c.messages.filter((m) => m[0] === 1).map((m) => m.subarray(1));
    expect(errors[0]).toEqual(Buffer.from([0x98, 0x3a]));
    expect(Buffer.concat(errors.slice(1)).toString()).toMatch(
      /^error forwarding port 15000 to pod agent-a, uid [^:]*: failed to connect to localhost:15000 .*connection refused/,
    );
  });

  it('refuses an upgrade without ports, with an unknown subprotocol, or to a pod that is not running', async () => {
    const api = await setup();
    const kc = loadKubeConfig(api.kubeconfigPath);
    await expect(rawClient(api, '')).rejects.toThrow(/Unexpected server response: 400/);
    await expect(rawClient(api, 'ports=15000', ['v5.channel.k8s.io'])).rejects.toThrow(
      /Unexpected server response: 400/,
    );
    await expect(openPortForward(kc, 'hypha-system', 'gone', 15000)).rejects.toThrow(
      /port-forward to hypha-system\/gone:15000: 404 pods "gone" not found/,
    );
    api.put({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'pending', namespace: 'hypha-system' },
      spec: { containers: [{ name: 'c', image: 'x' }] },
      status: { phase: 'Pending' },
    });
    await expect(openPortForward(kc, 'hypha-system', 'pending', 15000)).rejects.toThrow(
      /400 pod pending is not running \(phase Pending\)/,
    );
  });

  it('is what client-node’s own PortForward expects', async () => {
    const api = await setup();
    api.forwardPort('hypha-system', 'agent-a', 15000, { host: '127.0.0.1', port: await echoServer() });
    const kc = new ClientNodeConfig();
    kc.loadFromFile(api.kubeconfigPath);
    const output = new PassThrough();
    const input = new PassThrough();
    const ws = (await new PortForward(kc).portForward(
      'hypha-system',
      'agent-a',
      [15000],
      output,
      null,
      input,
    )) as {
      close(): void;
    };
    cleanups.push(() => ws.close());
    const got = new Promise<string>((r) => output.once('data', (d: Buffer) => r(d.toString())));
    input.write('through client-node');
    expect(await got).toBe('through client-node');
  });
});

describe('RBAC for port-forward: verbs get and create on pods/portforward', () => {
  const RBAC = 'rbac.authorization.k8s.io/v1';
  async function rbacSetup(verbs: string[]) {
    const api = await setup(true);
    api.put({
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: 'viewer', namespace: 'hypha-system' },
    });
    api.put({
      apiVersion: RBAC,
      kind: 'Role',
      metadata: { name: 'dashboard', namespace: 'hypha-system' },
      rules: [
        { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] },
        ...(verbs.length > 0 ? [{ apiGroups: [''], resources: ['pods/portforward'], verbs }] : []),
      ],
    } as KubeObject);
    api.put({
      apiVersion: RBAC,
      kind: 'RoleBinding',
      metadata: { name: 'dashboard', namespace: 'hypha-system' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'dashboard' },
      subjects: [{ kind: 'ServiceAccount', name: 'viewer', namespace: 'hypha-system' }],
    } as KubeObject);
    api.forwardPort('hypha-system', 'agent-a', 15000, { host: '127.0.0.1', port: await echoServer() });
    const kc = loadKubeConfig(
      await api.writeServiceAccountKubeconfig({ namespace: 'hypha-system', serviceAccount: 'viewer' }),
    );
    return { api, kc };
  }

  it('403 with get alone (a pre-1.35 role), naming the verb and resource to grant', async () => {
    const { api, kc } = await rbacSetup(['get']);
    const err = (await openPortForward(kc, 'hypha-system', 'agent-a', 15000).catch((e) => e)) as KubeError;
    expect(err).toBeInstanceOf(KubeError);
    expect(err.status).toBe(403);
    expect(err.message).toContain(
      'port-forward to hypha-system/agent-a:15000: 403 pods "agent-a" is forbidden: User "system:serviceaccount:hypha-system:viewer" cannot create resource "pods/portforward" in API group "" in the namespace "hypha-system"',
    );
    expect(err.message).toContain(
      'needs verbs "get" and "create" on "pods/portforward" in namespace hypha-system',
    );
    expect(api.requests.at(-1)?.authorization?.attributes).toMatchObject({
      verb: 'create',
      resource: 'pods',
      subresource: 'portforward',
    });
  });

  it('403 with create alone: the upgrade is a GET', async () => {
    const { kc } = await rbacSetup(['create']);
    await expect(openPortForward(kc, 'hypha-system', 'agent-a', 15000)).rejects.toThrow(
      /403 pods "agent-a" is forbidden: User "system:serviceaccount:hypha-system:viewer" cannot get resource "pods\/portforward"/,
    );
  });

  it('connects with both', async () => {
    const { kc } = await rbacSetup(['get', 'create']);
    const s = await openPortForward(kc, 'hypha-system', 'agent-a', 15000);
    cleanups.push(() => s.destroy());
    const got = new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
    s.write('allowed');
    expect(await got).toBe('allowed');
  });
});

describe('PortForwardAgent: HTTP to a pod-local port through the API server', () => {
  async function httpPod(api: KubeApiServer): Promise<HttpServer> {
    const s = createHttpServer((req, res) => res.end(`pod answered ${req.url}`));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      s.closeAllConnections();
      return new Promise((r) => s.close(r));
    });
    api.forwardPort('hypha-system', 'agent-a', 15000, {
      host: '127.0.0.1',
      port: (s.address() as AddressInfo).port,
    });
    return s;
  }
  const get = (agent: PortForwardAgent, path: string) =>
    new Promise<string>((resolve, reject) => {
      const req = request({ host: 'localhost', port: 15000, path, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve(`${res.statusCode} ${body}`));
      });
      req.on('error', reject);
      req.end();
    });

  it('answers requests over one reused port-forward connection', async () => {
    const api = await setup();
    await httpPod(api);
    const agent = new PortForwardAgent(loadKubeConfig(api.kubeconfigPath), 'hypha-system', 'agent-a', 15000);
    cleanups.push(() => agent.destroy());
    expect(await get(agent, '/certs')).toBe('200 pod answered /certs');
    expect(await get(agent, '/connections')).toBe('200 pod answered /connections');
    const upgrades = api.requests.filter((r) => r.path.endsWith('/portforward'));
    expect(upgrades).toHaveLength(1);
    expect(api.openPortForwards).toBe(1);
  });

  it('opens at most maxSockets tunnels for requests sent at once, and serves them all', async () => {
    const api = await setup();
    await httpPod(api);
    const agent = new PortForwardAgent(loadKubeConfig(api.kubeconfigPath), 'hypha-system', 'agent-a', 15000, {
      maxSockets: 2,
    });
    cleanups.push(() => agent.destroy());
    const answers = await Promise.all(['/a', '/b', '/c', '/d', '/e'].map((p) => get(agent, p)));
    expect(answers).toEqual(['/a', '/b', '/c', '/d', '/e'].map((p) => `200 pod answered ${p}`));
    expect(api.requests.filter((r) => r.path.endsWith('/portforward')).length).toBeLessThanOrEqual(2);
    expect(agent.tunnels).toBeLessThanOrEqual(2);
  });

  it('fails a request with the reason when the port cannot be reached, and connects again later', async () => {
    const api = await setup();
    const agent = new PortForwardAgent(loadKubeConfig(api.kubeconfigPath), 'hypha-system', 'agent-a', 15000);
    cleanups.push(() => agent.destroy());
    await expect(get(agent, '/certs')).rejects.toThrow(
      /port-forward to hypha-system\/agent-a:15000: error forwarding port 15000 .*connection refused/,
    );
    await httpPod(api);
    expect(await get(agent, '/certs')).toBe('200 pod answered /certs');
  });
});
