// Egress through the waypoint (issue 16 part 3): ServiceEntries bound to the waypoint are served
// with routes, authorization and traffic policies like Services, and their endpoints (outside the
// mesh) are dialed directly: plain TCP, or TLS origination verified against the policy's CA bundle,
// with a client certificate for MUTUAL. Real TLS servers on loopback with their own CAs (openssl).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { parseSpiffeId } from '@hypha/shared';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { HostResolver } from '../src/egress/resolve.js';
import { createHostResolver } from '../src/egress/resolve.js';
import type { ServiceInput } from '../src/index.js';
import { captureLog, loopbackIp, send, startWaypoint, type TestWaypoint } from './helpers.js';

const HOST = 'api.external.test';
const VIP = '240.240.7.9';
const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const batch = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/batch');

let dir: string;
const pem: Record<string, string> = {};

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

/** A CA (`name`-ca.pem/-ca.key) and a leaf it signs (`leaf`.pem/.key) for `san`. */
function issue(ca: string, leaf: string, subject: string, ext: string): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', ...ec, '-keyout', `${leaf}.key`, '-out', `${leaf}.csr`, '-subj', subject]);
  writeFileSync(join(dir, `${leaf}.ext`), ext);
  openssl([
    'x509',
    '-req',
    '-in',
    `${leaf}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-days',
    '1',
    '-out',
    `${leaf}.pem`,
    '-extfile',
    `${leaf}.ext`,
  ]);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hypha-egress-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  for (const ca of ['ca', 'other-ca'])
    openssl([
      'req',
      '-x509',
      ...ec,
      '-keyout',
      `${ca}.key`,
      '-out',
      `${ca}.pem`,
      '-days',
      '1',
      '-subj',
      `/CN=${ca}`,
    ]);
  issue('ca', 'server', `/CN=${HOST}`, `subjectAltName=DNS:${HOST}\nextendedKeyUsage=serverAuth\n`);
  issue('other-ca', 'impostor', `/CN=${HOST}`, `subjectAltName=DNS:${HOST}\nextendedKeyUsage=serverAuth\n`);
  issue('ca', 'client', '/CN=shop-egress', 'extendedKeyUsage=clientAuth\n');
  for (const f of ['ca', 'other-ca', 'server', 'impostor', 'client']) {
    pem[`${f}.pem`] = readFileSync(join(dir, `${f}.pem`), 'utf8');
    pem[`${f}.key`] = readFileSync(join(dir, `${f}.key`), 'utf8');
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Seen {
  method: string;
  url: string;
  encrypted: boolean;
  servername: string | undefined;
  clientCert: string | undefined;
  host: string | undefined;
}

interface External {
  ip: string;
  port: number;
  seen: Seen[];
  close(): Promise<void>;
}

async function startExternal(
  opts: {
    tls?: { cert: string; key: string; requireClientCa?: string };
    status?: (n: number) => number;
  } = {},
): Promise<External> {
  const ip = loopbackIp();
  const seen: Seen[] = [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const sock = req.socket as TLSSocket;
    const peer = sock.encrypted ? sock.getPeerCertificate() : undefined;
    seen.push({
      method: req.method ?? '',
      url: req.url ?? '',
      encrypted: sock.encrypted === true,
      servername: sock.encrypted ? (sock as TLSSocket & { servername?: string }).servername : undefined,
      clientCert: peer && Object.keys(peer).length > 0 ? String(peer.subject?.CN) : undefined,
      host: req.headers.host,
    });
    req.resume();
    req.on('end', () => {
      res.statusCode = opts.status?.(seen.length) ?? 200;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ tls: sock.encrypted === true, url: req.url }));
    });
  };
  const server = opts.tls
    ? https.createServer(
        {
          cert: opts.tls.cert,
          key: opts.tls.key,
          ...(opts.tls.requireClientCa
            ? { ca: opts.tls.requireClientCa, requestCert: true, rejectUnauthorized: true }
            : {}),
        },
        handler,
      )
    : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, ip, resolve));
  return {
    ip,
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A ServiceEntry bound to the waypoint, as daemon/input.ts hands it over. */
function entry(
  ext: External | undefined,
  opts: { resolution?: 'DNS' | 'STATIC'; name?: string } = {},
): ServiceInput {
  const resolution = opts.resolution ?? 'STATIC';
  return {
    name: opts.name ?? 'external-api',
    namespace: 'shop',
    vips: [VIP],
    ports: [{ port: 80, name: 'http', appProtocol: 'http', ...(ext ? { targetPort: ext.port } : {}) }],
    endpoints: [],
    external: {
      hosts: [HOST],
      resolution,
      hostOfVip: { [VIP]: HOST },
      endpoints: resolution === 'STATIC' && ext ? [{ address: ext.ip }] : [],
    },
  };
}

function tlsPolicy(tls: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return {
    metadata: { name: 'external-api-tls', namespace: 'shop' },
    spec: {
      targetRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
      tls,
      ...extra,
    },
  };
}

/** Connections to mesh endpoints would go here (HBONE): egress must never use it. */
const noHbone = () => Promise.reject(new Error('egress endpoints must not be dialed over HBONE'));

const open: (TestWaypoint | External)[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()));
});

async function setup(
  ext: External,
  config: {
    trafficPolicies?: unknown[];
    authorizationPolicies?: unknown[];
    httpRoutes?: unknown[];
    tlsSecrets?: never[];
  } & Record<string, unknown>,
  opts: {
    peer?: ReturnType<typeof parseSpiffeId>;
    resolver?: HostResolver;
    resolution?: 'DNS' | 'STATIC';
  } = {},
) {
  const access = captureLog();
  const tw = await startWaypoint(
    { services: [entry(ext, { resolution: opts.resolution ?? 'STATIC' })], ...config },
    { host: VIP, port: 80 },
    {
      connectUpstream: noHbone,
      accessLog: access.logger,
      ...(opts.peer ? { peer: opts.peer } : {}),
      ...(opts.resolver ? { egress: { resolver: opts.resolver } } : {}),
    },
  );
  open.push(tw, ext);
  return { tw, access };
}

const get = (tw: TestWaypoint, path = '/v1/items', init: { method?: string } = {}) =>
  send(tw.pool, path, { ...init, headers: { host: HOST } });

describe('egress: a ServiceEntry served by the waypoint', () => {
  it('sends plain HTTP to a STATIC entry in plain TCP, not over HBONE, with the host the app asked for', async () => {
    const ext = await startExternal();
    const { tw, access } = await setup(ext, {});
    const r = await get(tw);
    expect(r.status).toBe(200);
    expect(ext.seen).toEqual([expect.objectContaining({ url: '/v1/items', encrypted: false, host: HOST })]);
    expect(access.lines.at(-1)).toMatchObject({ upstream_cluster: 'shop/external-api', response_code: 200 });
  });

  it('originates TLS (SIMPLE): the app speaks HTTP, the server gets HTTPS with SNI = the host, verified against the CA', async () => {
    const ext = await startExternal({ tls: { cert: pem['server.pem']!, key: pem['server.key']! } });
    const { tw } = await setup(ext, {
      trafficPolicies: [tlsPolicy({ mode: 'SIMPLE', caCertificatesPem: pem['ca.pem'] })],
    });
    const r = await get(tw);
    expect(r.status).toBe(200);
    expect(r.json<{ tls: boolean }>().tls).toBe(true);
    expect(ext.seen[0]).toMatchObject({ encrypted: true, servername: HOST, host: HOST, url: '/v1/items' });
  });

  it('reads the CA bundle from a file (caCertificates)', async () => {
    const ext = await startExternal({ tls: { cert: pem['server.pem']!, key: pem['server.key']! } });
    const { tw } = await setup(ext, {
      trafficPolicies: [tlsPolicy({ mode: 'SIMPLE', caCertificates: join(dir, 'ca.pem') })],
    });
    expect((await get(tw)).status).toBe(200);
    expect(ext.seen[0]?.encrypted).toBe(true);
  });

  it('a server certificate from the wrong CA: 503 UF with the reason in the access log, nothing sent in plain text', async () => {
    const ext = await startExternal({ tls: { cert: pem['impostor.pem']!, key: pem['impostor.key']! } });
    const { tw, access } = await setup(ext, {
      trafficPolicies: [tlsPolicy({ mode: 'SIMPLE', caCertificatesPem: pem['ca.pem'] })],
    });
    const r = await get(tw);
    expect(r.status).toBe(503);
    expect(ext.seen).toEqual([]);
    const line = access.lines.at(-1)!;
    expect(line.response_flags).toBe('UF');
    expect(String(line.upstream_transport_failure_reason)).toMatch(
      new RegExp(
        `^upstream TLS to ${ext.ip.replaceAll('.', '\\.')}:${ext.port} \\(SNI ${HOST}\\): certificate verify failed.*unable to (verify|get)`,
      ),
    );
  });

  it('a certificate for another name fails verification (the SNI is the name checked)', async () => {
    const ext = await startExternal({ tls: { cert: pem['server.pem']!, key: pem['server.key']! } });
    const { tw, access } = await setup(ext, {
      trafficPolicies: [
        tlsPolicy({ mode: 'SIMPLE', caCertificatesPem: pem['ca.pem'], sni: 'other.external.test' }),
      ],
    });
    expect((await get(tw)).status).toBe(503);
    expect(String(access.lines.at(-1)!.upstream_transport_failure_reason)).toMatch(/other\.external\.test/);
  });

  it('MUTUAL: presents the client certificate of the kubernetes.io/tls Secret; without the Secret it fails closed', async () => {
    const ext = await startExternal({
      tls: { cert: pem['server.pem']!, key: pem['server.key']!, requireClientCa: pem['ca.pem']! },
    });
    const policy = tlsPolicy({
      mode: 'MUTUAL',
      caCertificatesPem: pem['ca.pem'],
      credentialName: 'api-client',
    });
    const { tw, access } = await setup(ext, { trafficPolicies: [policy] });
    // No Secret yet: the reason names it, and nothing reaches the server.
    expect((await get(tw)).status).toBe(503);
    expect(access.lines.at(-1)!.upstream_transport_failure_reason).toMatch(
      /no kubernetes.io\/tls Secret shop\/api-client/,
    );
    expect(ext.seen).toEqual([]);
    const errors = tw.wp.updateConfig({
      gateway: { name: 'waypoint', namespace: 'shop' },
      services: [entry(ext)],
      trafficPolicies: [policy],
      tlsSecrets: [
        {
          namespace: 'shop',
          name: 'api-client',
          certificate: pem['client.pem']!,
          privateKey: pem['client.key']!,
        },
      ],
    });
    expect(errors).toEqual([]);
    expect((await get(tw)).status).toBe(200);
    expect(ext.seen[0]).toMatchObject({ encrypted: true, clientCert: 'shop-egress' });
  });

  it('DNS: resolves the host the VIP stands for and connects there', async () => {
    const ext = await startExternal({ tls: { cert: pem['server.pem']!, key: pem['server.key']! } });
    const asked: string[] = [];
    const resolver: HostResolver = {
      fetchAddress: async (h) => {
        asked.push(h);
        if (h !== HOST) throw new Error(`cannot resolve ${h}`);
        return ext.ip;
      },
    };
    const { tw } = await setup(
      ext,
      { trafficPolicies: [tlsPolicy({ mode: 'SIMPLE', caCertificatesPem: pem['ca.pem'] })] },
      { resolver, resolution: 'DNS' },
    );
    expect((await get(tw)).status).toBe(200);
    expect(asked).toContain(HOST);
    expect(ext.seen[0]).toMatchObject({ encrypted: true, servername: HOST });
  });

  it('DNS: a host that does not resolve is 503 UF with the resolver error in the access log', async () => {
    const ext = await startExternal();
    const resolver: HostResolver = {
      fetchAddress: () => Promise.reject(new Error(`cannot resolve ${HOST}: ENOTFOUND`)),
    };
    const { tw, access } = await setup(ext, {}, { resolver, resolution: 'DNS' });
    expect((await get(tw)).status).toBe(503);
    expect(access.lines.at(-1)).toMatchObject({
      response_flags: 'UF',
      upstream_transport_failure_reason: `DNS: cannot resolve ${HOST}: ENOTFOUND`,
    });
  });

  it('L7 authorization on egress: only GET /v1/* from one service account (targetRefs: the ServiceEntry)', async () => {
    const ext = await startExternal();
    const policy = {
      metadata: { name: 'egress-v1-only', namespace: 'shop' },
      spec: {
        targetRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
        action: 'ALLOW',
        rules: [
          {
            from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }],
            to: [{ operation: { methods: ['GET'], paths: ['/v1/*'] } }],
          },
        ],
      },
    };
    const { tw } = await setup(ext, { authorizationPolicies: [policy] }, { peer: web });
    expect((await get(tw, '/v1/items')).status).toBe(200);
    expect((await get(tw, '/v2/items')).status).toBe(403);
    expect((await get(tw, '/v1/items', { method: 'DELETE' })).status).toBe(403);
    const other = await tw.listen({ host: VIP, port: 80 }, batch);
    const r = await send(other.pool, '/v1/items', { headers: { host: HOST } });
    expect(r.status).toBe(403);
    expect(ext.seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /v1/items']);
  });

  it('HTTPRoute with a ServiceEntry parentRef: retries a 503 from the external server, and a timeout answers 504', async () => {
    const ext = await startExternal({ status: (n) => (n === 1 ? 503 : 200) });
    const route = {
      metadata: { name: 'external-api', namespace: 'shop' },
      spec: {
        parentRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
        rules: [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/v1' } }],
            retry: { attempts: 2, codes: [503], backoff: '1ms' },
          },
        ],
      },
    };
    const { tw } = await setup(ext, { httpRoutes: [route] });
    expect((await get(tw, '/v1/items')).status).toBe(200);
    expect(ext.seen.length).toBe(2);
  });

  it('a timeout from the TrafficPolicy route settings: 504 UT when the external server is slow', async () => {
    const slow = await startExternal();
    const route = {
      metadata: { name: 'external-api', namespace: 'shop' },
      spec: {
        hostnames: [HOST],
        parentRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
        rules: [{ timeouts: { request: '200ms' } }],
      },
    };
    // A server that never answers: accepts and holds.
    const hold = http.createServer(() => {});
    const ip = loopbackIp();
    await new Promise<void>((resolve) => hold.listen(0, ip, resolve));
    const holdPort = (hold.address() as AddressInfo).port;
    const { tw, access } = await setup({ ...slow, ip, port: holdPort }, { httpRoutes: [route] });
    const r = await get(tw);
    expect(r.status).toBe(504);
    expect(access.lines.at(-1)!.response_flags).toBe('UT');
    hold.closeAllConnections();
    hold.close();
  });

  it('a TrafficPolicy tls without a CA bundle is refused (verification cannot be turned off)', async () => {
    const ext = await startExternal();
    const { tw } = await setup(ext, {});
    const errors = tw.wp.updateConfig({
      gateway: { name: 'waypoint', namespace: 'shop' },
      services: [entry(ext)],
      trafficPolicies: [tlsPolicy({ mode: 'SIMPLE' })],
    });
    expect(errors.map((e) => e.message).join('\n')).toMatch(/spec\.tls.*caCertificates/);
  });
});

describe('egress: TLS origination on an HTTP2 port', () => {
  const h2Entry = (ip: string, port: number): ServiceInput => ({
    ...entry(undefined),
    ports: [{ port: 80, name: 'http2', appProtocol: 'http2', targetPort: port }],
    external: {
      hosts: [HOST],
      resolution: 'STATIC',
      hostOfVip: { [VIP]: HOST },
      endpoints: [{ address: ip }],
    },
  });

  it('negotiates h2 (ALPN) with the server, verified', async () => {
    const ip = loopbackIp();
    const seen: string[] = [];
    const server = http2.createSecureServer(
      { cert: pem['server.pem'], key: pem['server.key'] },
      (req, res) => {
        seen.push(`${req.httpVersion} ${(req.socket as TLSSocket).alpnProtocol} ${req.url}`);
        res.end('ok');
      },
    );
    await new Promise<void>((resolve) => server.listen(0, ip, resolve));
    const port = (server.address() as AddressInfo).port;
    const tw = await startWaypoint(
      {
        services: [h2Entry(ip, port)],
        trafficPolicies: [tlsPolicy({ mode: 'SIMPLE', caCertificatesPem: pem['ca.pem'] })],
      },
      { host: VIP, port: 80 },
      { connectUpstream: noHbone },
    );
    try {
      const r = await get(tw, '/v1/h2');
      expect(r.status).toBe(200);
      expect(seen).toEqual(['2.0 h2 /v1/h2']);
    } finally {
      await tw.close();
      server.close();
    }
  });

  it('a server that speaks only HTTP/1.1 over TLS: 503 with the reason, not garbage on the wire', async () => {
    const ext = await startExternal({ tls: { cert: pem['server.pem']!, key: pem['server.key']! } });
    const access = captureLog();
    const tw = await startWaypoint(
      {
        services: [h2Entry(ext.ip, ext.port)],
        trafficPolicies: [tlsPolicy({ mode: 'SIMPLE', caCertificatesPem: pem['ca.pem'] })],
      },
      { host: VIP, port: 80 },
      { connectUpstream: noHbone, accessLog: access.logger },
    );
    open.push(tw, ext);
    expect((await get(tw)).status).toBe(503);
    expect(ext.seen).toEqual([]);
    expect(access.lines.at(-1)!.upstream_transport_failure_reason).toMatch(
      /did not accept HTTP\/2 \(ALPN h2\)/,
    );
  });
});

describe('egress host resolver', () => {
  it('returns IP literals as they are and reports a name the system cannot resolve', async () => {
    const r = createHostResolver();
    expect(await r.fetchAddress('192.0.2.7')).toBe('192.0.2.7');
    await expect(r.fetchAddress('no-such-host.invalid')).rejects.toThrow(
      /cannot resolve no-such-host\.invalid/,
    );
  });
});
