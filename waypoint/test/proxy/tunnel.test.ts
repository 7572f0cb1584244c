// The waypoint inside HTTP/2 CONNECT tunnels (HBONE's stream type), on both sides: clients reach it
// through CONNECT streams, and it reaches endpoints through CONNECT streams to a node-agent stand-in.
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWaypoint, type Waypoint } from '../../src/index.js';
import { type GrpcServer, grpcCall, startGrpcServer } from '../grpc.js';
import { type Backend, loopbackIp, startBackend } from '../helpers.js';

let web: Backend;
let grpc: GrpcServer;
let waypoint: Waypoint;
let ingress: http2.Http2Server;
let agent: http2.Http2Server;
let agentSession: http2.ClientHttp2Session;
let client: http2.ClientHttp2Session;
let agentConnects = 0;

const listen = (s: net.Server) =>
  new Promise<number>((resolve) =>
    s.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port)),
  );

function connectStream(
  session: http2.ClientHttp2Session,
  authority: string,
): Promise<http2.ClientHttp2Stream> {
  return new Promise((resolve, reject) => {
    const st = session.request({ ':method': 'CONNECT', ':authority': authority });
    st.once('response', (h) =>
      h[':status'] === 200 ? resolve(st) : reject(new Error(`CONNECT ${authority}: ${h[':status']}`)),
    );
    st.once('error', reject);
  });
}

beforeAll(async () => {
  web = await startBackend('web');
  grpc = await startGrpcServer(loopbackIp(), {
    '/echo.Echo/Say': async (req, send) => {
      send(`echo ${req.toString()}`);
      return { status: 0 };
    },
  });
  // Node agent stand-in: CONNECT ip:port → TCP to the endpoint.
  agent = http2.createServer();
  agent.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const [host = '', port = '0'] = String(headers[':authority']).split(':');
    const sock = net.connect(Number(port), host, () => {
      agentConnects++;
      if (stream.destroyed) return void sock.destroy();
      stream.respond({ ':status': 200 });
      sock.pipe(stream).pipe(sock);
    });
    sock.on('error', () => {
      if (!stream.destroyed && !stream.headersSent) stream.respond({ ':status': 503 }, { endStream: true });
    });
  });
  const agentPort = await listen(agent);
  agentSession = http2.connect(`http://127.0.0.1:${agentPort}`);
  agentSession.on('error', () => {});

  waypoint = await createWaypoint({
    config: {
      gateway: { name: 'waypoint', namespace: 'shop' },
      services: [
        {
          name: 'web',
          namespace: 'shop',
          vips: ['10.96.7.1'],
          ports: [{ port: 80, name: 'http' }],
          endpoints: [{ ip: web.ip, targetPorts: { '80': web.port } }],
        },
        {
          name: 'echo',
          namespace: 'shop',
          vips: ['10.96.7.2'],
          ports: [{ port: 50051, name: 'grpc', appProtocol: 'grpc' }],
          endpoints: [{ ip: grpc.ip, targetPorts: { '50051': grpc.port } }],
        },
      ],
    },
    connectUpstream: (ep): Promise<Duplex> => connectStream(agentSession, `${ep.ip}:${ep.port}`),
  });

  // Waypoint ingress stand-in: each CONNECT stream is handed to the waypoint with its authority.
  ingress = http2.createServer();
  ingress.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const [host = '', port = '0'] = String(headers[':authority']).split(':');
    stream.respond({ ':status': 200 });
    waypoint.handleStream(stream, {
      authority: { host, port: Number(port) },
      source: { ip: '127.0.0.1', port: 0 },
    });
  });
  const ingressPort = await listen(ingress);
  client = http2.connect(`http://127.0.0.1:${ingressPort}`);
  client.on('error', () => {});
});

afterAll(async () => {
  client.close();
  agentSession.close();
  await waypoint.close();
  ingress.close();
  agent.close();
  await web.close();
  await grpc.close();
});

describe('waypoint over CONNECT streams', () => {
  it('serves keep-alive HTTP/1.1 from a tunnel and pools upstream tunnels', async () => {
    // As undici wants it: the CONNECT stream is opened inside connect() and handed over later.
    const c = new Client('http://web.shop.svc.cluster.local', {
      connect: (_opts, cb) => {
        connectStream(client, '10.96.7.1:80').then(
          (tunnel) => cb(null, tunnel as unknown as net.Socket),
          (err: Error) => cb(err, null),
        );
      },
    });
    const before = agentConnects;
    for (let i = 0; i < 5; i++) {
      const r = await c.request({ path: `/page/${i}`, method: 'POST', body: `body-${i}` });
      const json = (await r.body.json()) as { instance: string; url: string; body: string };
      expect(json).toMatchObject({ instance: 'web', url: `/page/${i}`, body: `body-${i}` });
    }
    // Five sequential requests reuse one upstream tunnel.
    expect(agentConnects - before).toBe(1);
    await c.close();
  });

  it('serves gRPC (HTTP/2 inside the tunnel) and reaches the endpoint over HTTP/2 in a tunnel', async () => {
    const tunnel = await connectStream(client, '10.96.7.2:50051');
    const inner = http2.connect('http://echo.shop.svc.cluster.local', { createConnection: () => tunnel });
    inner.on('error', () => {});
    const results = await Promise.all([
      grpcCall(inner, '/echo.Echo/Say', 'one'),
      grpcCall(inner, '/echo.Echo/Say', 'two'),
    ]);
    expect(results.map((r) => [r.messages[0], r.status])).toEqual([
      ['echo one', '0'],
      ['echo two', '0'],
    ]);
    inner.close();
  });
});
