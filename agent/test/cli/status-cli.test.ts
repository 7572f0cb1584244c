import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HyphaRun, runHypha } from '../run-hypha.js';

const hypha = (...args: string[]): Promise<HyphaRun> => runHypha(args);

const CLIENT = 'spiffe://cluster.local/ns/demo/sa/client';
const ECHO = 'spiffe://cluster.local/ns/demo/sa/echo';
const inHours = (h: number) => new Date(Date.now() + h * 3600_000).toISOString();

const configDump = {
  node: 'node-a',
  version: 7,
  stats: { version: 7, namespaces: 2, workloads: 3, services: 1, authorizationPolicies: 2, waypoints: 0 },
  workloads: [
    {
      name: 'client',
      namespace: 'demo',
      node: 'node-a',
      ips: ['10.1.0.2'],
      identity: CLIENT,
      inMesh: true,
      mtlsMode: 'strict',
    },
    {
      name: 'echo-v1',
      namespace: 'demo',
      node: 'node-a',
      ips: ['10.1.0.3'],
      identity: ECHO,
      inMesh: true,
      mtlsMode: 'strict',
    },
    { name: 'echo-v2', namespace: 'demo', node: 'node-b', ips: ['10.2.0.2'], identity: ECHO, inMesh: true },
  ],
  certificates: [
    { identity: CLIENT, state: 'ready', serial: '01', notAfter: inHours(23.5) },
    { identity: ECHO, state: 'backoff', failures: 3, lastError: 'CA unreachable' },
  ],
  capture: { started: true, table: 'hypha', meshPods: ['10.1.0.2', '10.1.0.3'] },
};
const connections = [
  {
    id: 4,
    direction: 'inbound',
    source: { address: '10.2.0.9:40000', workload: 'demo/client', identity: CLIENT },
    destination: { address: '10.1.0.3:8080', workload: 'demo/echo-v1', identity: ECHO },
    mutualTls: true,
    bytesSent: 1536,
    bytesReceived: 3 * 1024 * 1024,
    durationMs: 125_000,
  },
];

let admin: Server;
let address: string;
let notJson: Server;
let notJsonAddress: string;
let freeAddress: string;

const listen = (s: Server) =>
  new Promise<string>((r) =>
    s.listen(0, '127.0.0.1', () => r(`127.0.0.1:${(s.address() as AddressInfo).port}`)),
  );

beforeAll(async () => {
  admin = createServer((req, res) => {
    const body =
      req.url === '/config_dump' ? configDump : req.url === '/connections' ? connections : undefined;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body ?? { error: 'no' }));
  });
  address = await listen(admin);
  notJson = createServer((_req, res) => res.end('<html>hello</html>'));
  notJsonAddress = await listen(notJson);
  const probe = createServer();
  freeAddress = await listen(probe);
  await new Promise((r) => probe.close(r));
});

afterAll(async () => {
  admin?.close();
  notJson?.close();
});

describe('hypha status', () => {
  it.each([
    [['--admin', 'localhost'], /--admin "localhost" must be host:port/],
    [['--admin', '127.0.0.1:99999'], /--admin "127\.0\.0\.1:99999" must be host:port/],
    [['--timeout', 'soon'], /--timeout must be a positive number of milliseconds/],
    [['--bogus'], /unknown option '--bogus'/],
  ])('usage error %j exits 2', async (args, message) => {
    const r = await hypha('status', ...args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')[0]).toMatch(message);
  });

  it('says what to check when no agent answers (exit 1)', async () => {
    const r = await hypha('status', '--admin', freeAddress);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `hypha: error: cannot reach the agent admin endpoint http://${freeAddress} (ECONNREFUSED): is the agent running on this node? admin listens on ${freeAddress}\n`,
    );
  });

  it('refuses an endpoint that is not an agent (exit 1)', async () => {
    const r = await hypha('status', '--admin', notJsonAddress);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/did not answer JSON \(is .* a Hypha agent's admin port\?\)/);
  });

  it('prints node, config, capture, local pods with certificates, and live connections', async () => {
    const r = await hypha('status', '--admin', address);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = r.stdout;
    expect(out).toMatch(/^Node: +node-a$/m);
    expect(out).toMatch(
      /^Config: +version 7: 2 namespaces, 3 workloads, 1 services, 2 authorization policies/m,
    );
    expect(out).toMatch(/^Capture: +installed \(nftables table inet hypha\), 2 pod address\(es\) captured$/m);
    expect(out).toMatch(
      /^UDP: +not captured \(passes through without mTLS or policy; DNS capture not enabled\)$/m,
    );
    expect(out).toMatch(/^Local mesh pods \(2\)$/m); // echo-v2 runs on node-b
    expect(out).toMatch(
      /demo\/client +10\.1\.0\.2 +spiffe:\/\/cluster\.local\/ns\/demo\/sa\/client +strict +ready +in 2[23]h\d+m/,
    );
    expect(out).toMatch(/demo\/echo-v1 .* backoff \(3 failures: CA unreachable\) +-$/m);
    expect(out).not.toMatch(/echo-v2/);
    expect(out).toMatch(/^Live connections \(1\)$/m);
    expect(out).toMatch(
      /inbound +demo\/client \(10\.2\.0\.9:40000\) +→ +demo\/echo-v1 \(10\.1\.0\.3:8080\) .* yes +1\.5 KiB +3\.0 MiB +2m5s$/m,
    );
  });

  it('says UDP is not captured even when capture is off', async () => {
    const off = createServer((req, res) => {
      const body = req.url === '/connections' ? [] : { ...configDump, capture: null };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
    try {
      const r = await hypha('status', '--admin', await listen(off));
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Capture: +off \(--capture none\)$/m);
      expect(r.stdout).toMatch(/^UDP: +not captured \(passes through without mTLS or policy/m);
    } finally {
      off.close();
    }
  });

  it('--json gives the admin data unchanged, plus how UDP is handled', async () => {
    const r = await hypha('status', '--admin', address, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { configDump: unknown; connections: unknown; udp: unknown };
    expect(j.configDump).toEqual(configDump);
    expect(j.connections).toEqual(connections);
    expect(j.udp).toEqual({
      captured: false,
      mutualTls: false,
      policy: false,
      dnsCapture: false,
      summary: 'not captured (passes through without mTLS or policy; DNS capture not enabled)',
    });
  });
});
