// The dashboard's JSON API against stand-ins: an admin endpoint (an agent's /config_dump, /certs,
// /connections, /tap) and a Prometheus HTTP API answering the graph's queries. What a page reads:
// edges with rate, success, p99 and mTLS; health with a node whose agent is gone; denials with the
// policy's name; bad input answered with a clear error while the server keeps serving.
import { createServer, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Dashboard, startDashboard } from '../../src/dashboard/index.js';
import { runHypha } from '../run-hypha.js';

const CLIENT = 'spiffe://cluster.local/ns/demo/sa/client';
const DB = 'spiffe://cluster.local/ns/demo/sa/db';
const inHours = (h: number) => new Date(Date.now() + h * 3600_000).toISOString();

const workload = (name: string, node: string, sa: string, labels: Record<string, string>) => ({
  name,
  namespace: 'demo',
  node,
  ips: ['10.1.0.2'],
  identity: `spiffe://cluster.local/ns/demo/sa/${sa}`,
  labels,
  inMesh: true,
  mtlsMode: 'permissive',
});

const configDump = {
  node: 'node-a',
  version: 4,
  workloads: [
    workload('client', 'node-a', 'client', { app: 'client' }),
    workload('db', 'node-b', 'db', { app: 'db' }),
  ],
  services: [{ name: 'db', namespace: 'demo', vips: ['10.2.0.1'], selector: { app: 'db' }, endpoints: [] }],
  waypoints: [],
  policies: [
    {
      kind: 'AuthorizationPolicy',
      name: 'db-only-client',
      namespace: 'demo',
      labels: {},
      action: 'DENY',
      selector: { app: 'db' },
      targetRefs: [],
      rules: [{ from: [{ source: { notPrincipals: ['cluster.local/ns/demo/sa/client'] } }] }],
    },
  ],
  certificates: [],
};
const certs = [
  { identity: CLIENT, state: 'ready', serial: '0a', notAfter: inHours(20), failures: 0 },
  {
    identity: 'spiffe://cluster.local/ns/demo/sa/other',
    state: 'ready',
    serial: '0b',
    notAfter: inHours(0.5),
    failures: 0,
  },
];
const denial = {
  kind: 'connection',
  time: new Date().toISOString(),
  reporter: 'agent node-a',
  direction: 'inbound',
  source: {
    ip: '10.1.0.9',
    workload: 'intruder',
    namespace: 'demo',
    identity: 'spiffe://cluster.local/ns/demo/sa/intruder',
  },
  destination: { ip: '10.1.0.3', port: 5432, workload: 'db', namespace: 'demo', identity: DB },
  mtls: true,
  flags: 'DENY',
  durationMs: 1,
  bytesSent: 0,
  bytesReceived: 0,
  error: 'denied by DENY policy demo/db-only-client rules[0]',
  policy: 'demo/db-only-client',
};

let admin: Server;
let prometheus: Server;
let promUp = true;
let dash: Dashboard;

function json(res: ServerResponse, body: unknown, status = 200): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function listen(s: Server): Promise<number> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as AddressInfo).port;
}

const tcpSample = (metric: Record<string, string>, value: number) => ({ metric, value: [0, String(value)] });

beforeAll(async () => {
  admin = createServer((req, res) => {
    if (req.url === '/config_dump') return json(res, configDump);
    if (req.url === '/certs') return json(res, certs);
    if (req.url === '/connections') return json(res, [{ id: 1 }, { id: 2 }]);
    if (req.url?.startsWith('/tap')) {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write(`${JSON.stringify(denial)}\n`);
      return;
    }
    res.writeHead(404).end();
  });
  prometheus = createServer((req, res) => {
    if (!promUp) {
      req.socket.destroy();
      return;
    }
    const q = new URL(req.url ?? '/', 'http://p').searchParams.get('query') ?? '';
    const edge = {
      source_workload: 'client',
      source_workload_namespace: 'demo',
      source_principal: CLIENT,
      destination_workload: 'db',
      destination_workload_namespace: 'demo',
      destination_principal: DB,
      connection_security_policy: 'mutual_tls',
    };
    if (q.includes('parse error')) return json(res, { status: 'error', error: 'parse error at char 1' }, 400);
    const result = q.includes('istio_tcp_connections_opened_total')
      ? [tcpSample(edge, 2.5)]
      : q.includes('istio_tcp_connections_failed_total')
        ? [tcpSample(edge, 0.5)]
        : [];
    json(res, { status: 'success', data: { resultType: 'vector', result } });
  });
  const adminPort = await listen(admin);
  const promPort = await listen(prometheus);
  dash = await startDashboard({
    address: '127.0.0.1',
    port: 0,
    prometheus: `http://127.0.0.1:${promPort}`,
    // node-b's agent is listed but nothing listens there (port 9: discard, closed).
    admins: [
      { label: `127.0.0.1:${adminPort}`, host: '127.0.0.1', port: adminPort },
      { label: '127.0.0.1:9', host: '127.0.0.1', port: 9 },
    ],
    config: undefined,
    pollMs: 200,
  });
  await dash.admin.refresh();
  while (dash.admin.recentEvents().length === 0) await new Promise((r) => setTimeout(r, 50));
});

afterAll(async () => {
  await dash?.close();
  admin?.close();
  admin?.closeAllConnections();
  prometheus?.close();
});

const api = async (path: string, init?: RequestInit) => {
  const r = await fetch(`${dash.url}${path.replace(/^\//, '')}`, init);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
};

describe('hypha dashboard JSON API', () => {
  it('graph: an L4 edge with its connection rate, failures as success rate, mTLS and both identities', async () => {
    const { body } = await api('/api/graph');
    expect(body.prometheus).toMatchObject({ ok: true });
    expect(body.from).toBe('prometheus');
    expect(body.edges).toEqual([
      expect.objectContaining({
        source: 'demo/client',
        target: 'demo/db',
        protocol: 'tcp',
        rate: 2.5,
        successRate: 0.8,
        mtls: true,
        sourcePrincipals: ['cluster.local/ns/demo/sa/client'],
        destinationPrincipals: ['cluster.local/ns/demo/sa/db'],
      }),
    ]);
  });

  it('health: the node whose agent does not answer is not ready; near-expiry certificates warned', async () => {
    const { body } = await api('/api/health');
    const nodes = body.nodes as { node: string; ready: boolean; reasons: string[]; connections?: number }[];
    expect(nodes.find((n) => n.node === 'node-a')).toMatchObject({ ready: true, connections: 2 });
    // node-b is known from the pods the config places there, though its agent is gone.
    const b = nodes.find((n) => n.node === 'node-b')!;
    expect(b.ready).toBe(false);
    expect(b.reasons.join()).toMatch(/^no agent runs here, or none was given \(--admin, --kubernetes\)$/);
    expect(body.warnings).toEqual([
      expect.objectContaining({
        level: 'warning',
        identity: 'cluster.local/ns/demo/sa/other',
        message: expect.stringMatching(/^expires in \d+ min$/),
      }),
    ]);
    const admins = body.admins as { label: string; ok: boolean; error: string }[];
    expect(admins.find((a) => a.label === '127.0.0.1:9')).toMatchObject({
      ok: false,
      error: 'cannot reach it (ECONNREFUSED)',
    });
  });

  it('policies: each policy with the pods it selects; the denial with its source, reason and policy', async () => {
    const { body } = await api('/api/policies');
    expect(body.policies).toEqual([
      expect.objectContaining({
        name: 'db-only-client',
        action: 'DENY',
        appliesTo: 'pods with app=db',
        matches: ['demo/db'],
      }),
    ]);
    expect(body.denials).toEqual([
      expect.objectContaining({
        source: 'demo/intruder',
        sourceIdentity: 'cluster.local/ns/demo/sa/intruder',
        destination: 'demo/db:5432',
        policy: 'demo/db-only-client',
        reason: 'denied by DENY policy demo/db-only-client rules[0]',
      }),
    ]);
  });

  it('workload: pods, nodes, the certificate it uses, the policy selecting it', async () => {
    const { body } = await api('/api/workload?namespace=demo&name=client');
    expect(body.workload).toMatchObject({
      nodes: ['node-a'],
      certificates: [{ identity: CLIENT, state: 'ready', holder: 'agent node-a' }],
      policies: [],
    });
    const db = await api('/api/workload?namespace=demo&name=db');
    expect((db.body.workload as { policies: { name: string }[] }).policies.map((p) => p.name)).toEqual([
      'db-only-client',
    ]);
    const none = await api('/api/workload?namespace=demo&name=nope');
    expect(none.status).toBe(404);
    expect(none.body.error).toBe('no workload demo/nope in the mesh config the agents hold');
  });

  it('bad input gets a clear error and the server keeps serving', async () => {
    expect((await api('/api/workload')).body.error).toBe('give ?namespace=<ns>&name=<workload>');
    const explain = await api('/api/explain', {
      method: 'POST',
      body: '{"from":"demo/client","to":"demo/db:5432"}',
    });
    expect(explain.status).toBe(400);
    expect(explain.body.error).toMatch(/start the dashboard with --config/);
    expect((await api('/api/explain', { method: 'POST', body: 'not json' })).body.error).toMatch(
      /must be JSON/,
    );
    expect((await api('/api/nope')).status).toBe(404);
    // A page elsewhere reaching the loopback port by DNS rebinding sends its own Host name.
    const rebinding = await new Promise<{ status: number }>((resolve, reject) => {
      const req = request(`${dash.url}api/graph`, { headers: { host: 'attacker.example' } }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0 });
      });
      req.on('error', reject);
      req.end();
    });
    expect(rebinding.status).toBe(403);
    expect((await api('/api/graph')).status).toBe(200);
  });

  it('Prometheus down: every answer says so, and the graph comes from the tap events', async () => {
    promUp = false;
    try {
      const { body } = await api('/api/graph');
      expect(body.prometheus).toMatchObject({
        ok: false,
        error: expect.stringMatching(/^Prometheus is unreachable \(http:\/\/127\.0\.0\.1:\d+\): /),
      });
      expect(body.from).toBe('tap');
      // The denied connection from the tap is an edge; it was denied by policy, not a failure.
      expect(body.edges).toEqual([
        expect.objectContaining({ source: 'demo/intruder', target: 'demo/db', protocol: 'tcp', mtls: true }),
      ]);
      const health = await api('/api/health');
      expect(health.body.prometheus).toMatchObject({ ok: false });
      expect(
        (health.body.nodes as { node: string; ready: boolean }[]).find((n) => n.node === 'node-a')?.ready,
      ).toBe(true);
    } finally {
      promUp = true;
    }
  });
});

describe('hypha dashboard flags', () => {
  it('bad flags exit 2 with a clear message', async () => {
    const port = await runHypha(['dashboard', '--port', 'eighty']);
    expect(port.code).toBe(2);
    expect(port.stderr).toContain('--port must be 0-65535, got "eighty"');
    const prom = await runHypha(['dashboard', '--prometheus', 'ftp://x']);
    expect(prom.code).toBe(2);
    expect(prom.stderr).toContain('--prometheus "ftp://x": only http:// is supported (or unix:/path)');
    const admin = await runHypha(['dashboard', '--admin', 'nowhere']);
    expect(admin.code).toBe(2);
    expect(admin.stderr).toContain('--admin "nowhere" must be host:port');
    const address = await runHypha(['dashboard', '--address', 'my-laptop']);
    expect(address.code).toBe(2);
  });
});
