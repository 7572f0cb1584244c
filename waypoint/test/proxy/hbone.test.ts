// The waypoint on real mTLS HBONE (the shared pool and server), both ways: clients arrive over
// HBONE with their identity; the waypoint reaches endpoints over HBONE with its own certificate and
// verifies the endpoint's identity.

import http2 from 'node:http2';
import net from 'node:net';
import { createHbonePool, createHboneServer, type HbonePool, type HboneServer } from '@hypha/shared/hbone';
import { CertificateAuthority, SpiffeId } from '@hypha/shared/identity';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hboneConnectUpstream, hboneIngressHandler } from '../../src/index.js';
import { type GrpcServer, grpcCall, startGrpcServer } from '../grpc.js';
import {
  type Backend,
  captureLog,
  send,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

let backend: Backend;
let hbone: HboneServer;
let grpc: GrpcServer;
let ingress: HboneServer;
let ingressPort = 0;
let webCert: Awaited<ReturnType<CertificateAuthority['issue']>>;
let waypointId: SpiffeId;
let pool: HbonePool;
let tw: TestWaypoint;
const access = captureLog();
const peers: string[] = [];

beforeAll(async () => {
  backend = await startBackend('db');
  // A gRPC server on the same pod address (another port), behind the same node agent.
  grpc = await startGrpcServer(backend.ip, {
    '/echo.Echo/Say': async (req, send) => {
      send(`echo ${req.toString()}`);
      return { status: 0 };
    },
  });
  const ca = await CertificateAuthority.init({ trustDomain: 'cluster.local' });
  waypointId = SpiffeId.of('cluster.local', 'shop', 'waypoint');
  const [waypointCert, dbCert, web] = await Promise.all([
    ca.issue(waypointId),
    ca.issue(SpiffeId.of('cluster.local', 'shop', 'db')),
    ca.issue(SpiffeId.of('cluster.local', 'shop', 'web')),
  ]);
  webCert = web;
  hbone = createHboneServer({
    findCertificate: () => dbCert,
    handler: (req) =>
      new Promise((resolve) => {
        peers.push(String(req.peer));
        const upstream = net.connect({ host: req.authority.host, port: req.authority.port, noDelay: true });
        upstream.once('connect', () => resolve({ status: 200, upstream }));
        upstream.once('error', () => resolve({ status: 503, reason: 'upstream_connect_failure' }));
      }),
  });
  // The node agent listens on the endpoint's address (HBONE goes to podIP:15008).
  const addr = await hbone.listen(0, backend.ip);
  pool = createHbonePool();
  const endpoint = (ip: string, sa: string) => ({
    ip,
    targetPorts: { '80': backend.port },
    workload: { name: sa, namespace: 'shop', serviceAccount: sa },
  });
  tw = await startWaypoint(
    {
      services: [
        {
          name: 'db',
          namespace: 'shop',
          // Dual-stack: an IPv4 and an IPv6 ClusterIP.
          vips: ['10.96.8.1', 'fd00:96::8:1'],
          ports: [{ port: 80, name: 'http' }],
          endpoints: [endpoint(backend.ip, 'db')],
        },
        {
          name: 'echo',
          namespace: 'shop',
          vips: ['10.96.8.3'],
          ports: [{ port: 50051, name: 'grpc', appProtocol: 'grpc' }],
          endpoints: [{ ...endpoint(backend.ip, 'db'), targetPorts: { '50051': grpc.port } }],
        },
        // Same endpoint, but the config claims another identity: the waypoint must refuse it.
        {
          name: 'impostor',
          namespace: 'shop',
          vips: ['10.96.8.2'],
          ports: [{ port: 80, name: 'http' }],
          endpoints: [endpoint(backend.ip, 'payments')],
        },
      ],
    },
    { host: '10.96.8.1', port: 80 },
    {
      connectUpstream: hboneConnectUpstream({ pool, certificate: () => waypointCert, hbonePort: addr.port }),
      accessLog: access.logger,
    },
  );
  ingress = createHboneServer({ findCertificate: () => waypointCert, handler: hboneIngressHandler(tw.wp) });
  ingressPort = (await ingress.listen(0, '127.0.0.1')).port;
});

afterAll(async () => {
  await ingress.close();
  await tw.close();
  await pool.close();
  await hbone.close();
  await backend.close();
  await grpc.close();
});

describe('upstream over HBONE', () => {
  it('reaches the endpoint with the waypoint identity', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await send(tw.pool, `/q/${i}`, { method: 'POST', body: `row ${i}` });
      expect(r.json()).toMatchObject({ instance: 'db', url: `/q/${i}`, body: `row ${i}` });
    }
    expect(peers.length).toBeGreaterThan(0);
    expect(new Set(peers)).toEqual(new Set(['spiffe://cluster.local/ns/shop/sa/waypoint']));
  });

  it('refuses an endpoint that proves a different identity (503 UF)', async () => {
    const c = await tw.listen({ host: '10.96.8.2', port: 80 });
    const r = await send(c.pool, '/', { headers: { 'x-request-id': 'impostor' } });
    expect(r.status).toBe(503);
    expect(access.lines.find((l) => l.x_request_id === 'impostor')?.response_flags).toBe('UF');
  });

  it('serves clients that arrive over HBONE, with their identity', async () => {
    const client = new Client('http://db.shop.svc.cluster.local', {
      connect: (_opts, cb) => {
        pool
          .connect({
            source: webCert,
            destination: { ip: '127.0.0.1', port: ingressPort },
            expectedIdentities: [waypointId],
            authority: '10.96.8.1:80',
          })
          .then(
            (t) => cb(null, t.stream as unknown as net.Socket),
            (err: Error) => cb(err, null),
          );
      },
    });
    for (let i = 0; i < 3; i++) {
      const r = await client.request({
        path: `/via-hbone/${i}`,
        method: 'GET',
        headers: { 'x-request-id': `hb-${i}` },
      });
      expect(((await r.body.json()) as { instance: string }).instance).toBe('db');
    }
    await client.close();
    expect(access.lines.find((l) => l.x_request_id === 'hb-2')?.downstream_peer).toBe(
      'spiffe://cluster.local/ns/shop/sa/web',
    );
  });

  it('serves a dual-stack service at its IPv6 VIP, however the client spells the address', async () => {
    const tunnel = await pool.connect({
      source: webCert,
      destination: { ip: '127.0.0.1', port: ingressPort },
      expectedIdentities: [waypointId],
      authority: '[FD00:96:0:0::8:1]:80',
    });
    tunnel.stream.write(
      'GET /v6 HTTP/1.1\r\nhost: [fd00:96::8:1]\r\nconnection: close\r\nx-request-id: v6-vip\r\n\r\n',
    );
    const chunks: Buffer[] = [];
    for await (const c of tunnel.stream) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString();
    expect(text).toMatch(/^HTTP\/1\.1 200/);
    expect(text).toContain('"instance":"db"');
    expect(access.lines.find((l) => l.x_request_id === 'v6-vip')?.downstream_peer).toBe(
      'spiffe://cluster.local/ns/shop/sa/web',
    );
  });

  it('refuses a CONNECT to an address the waypoint does not serve', async () => {
    await expect(
      pool.connect({
        source: webCert,
        destination: { ip: '127.0.0.1', port: ingressPort },
        expectedIdentities: [waypointId],
        authority: '10.99.9.9:80',
      }),
    ).rejects.toThrow(/400/);
  });

  it('serves gRPC arriving over HBONE and sends it on over HBONE', async () => {
    const tunnel = await pool.connect({
      source: webCert,
      destination: { ip: '127.0.0.1', port: ingressPort },
      expectedIdentities: [waypointId],
      authority: '10.96.8.3:50051',
    });
    const session = http2.connect('http://echo.shop.svc.cluster.local', {
      createConnection: () => tunnel.stream,
    });
    session.on('error', () => {});
    const results = await Promise.all([
      grpcCall(session, '/echo.Echo/Say', 'a'),
      grpcCall(session, '/echo.Echo/Say', 'b'),
    ]);
    expect(results.map((r) => [r.messages[0], r.status])).toEqual([
      ['echo a', '0'],
      ['echo b', '0'],
    ]);
    session.close();
  });
});
