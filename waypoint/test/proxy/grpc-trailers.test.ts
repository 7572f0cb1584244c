// A gRPC answer that arrives whole (headers, message and grpc-status trailer in one burst) before
// the waypoint relays the response must keep its trailer: without grpc-status a client reads the
// call as failed. Found by the soak (issue 18): about 40 % of unary calls through the waypoint lost
// the trailer, because the trailer listener was attached only once the response was relayed.
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frame, grpcCall, unframe } from '../grpc.js';
import { loopbackIp, startWaypoint, type TestWaypoint } from '../helpers.js';

let upstream: http2.Http2Server;
let server: { ip: string; port: number };
let coalescer: net.Server;
let tw: TestWaypoint;
let session: http2.ClientHttp2Session;

beforeAll(async () => {
  // Answers in the same tick as it responds: HEADERS, DATA and the trailer HEADERS leave together.
  upstream = http2.createServer();
  upstream.on('stream', (stream) => {
    stream.on('error', () => {});
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const [req = Buffer.alloc(0)] = unframe(Buffer.concat(chunks));
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(frame(`said ${req.toString()}`));
    });
  });
  const ip = loopbackIp();
  await new Promise<void>((resolve) => upstream.listen(0, ip, resolve));
  const port = (upstream.address() as AddressInfo).port;
  // Between the waypoint and the app: the app's bytes are handed on in batches, every 10 ms, as a
  // tunnel over a busy network delivers them, so a whole answer arrives in one read.
  coalescer = net.createServer((down) => {
    const up = net.connect(port, ip);
    let held: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    up.on('data', (c: Buffer) => {
      held.push(c);
      timer ??= setTimeout(() => {
        timer = undefined;
        down.write(Buffer.concat(held));
        held = [];
      }, 10);
    });
    down.pipe(up);
    const close = () => {
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) {
      s.on('error', close);
      s.on('close', close);
    }
  });
  await new Promise<void>((resolve) => coalescer.listen(0, ip, resolve));
  server = { ip, port: (coalescer.address() as AddressInfo).port };
  tw = await startWaypoint(
    {
      services: [
        {
          name: 'echo',
          namespace: 'shop',
          vips: ['10.96.4.1'],
          ports: [{ port: 9000, name: 'grpc', appProtocol: 'grpc' }],
          endpoints: [
            {
              ip: server.ip,
              targetPorts: { '9000': server.port },
              workload: { name: 'echo', namespace: 'shop', serviceAccount: 'echo' },
            },
          ],
        },
      ],
    },
    { host: '10.96.4.1', port: 9000 },
    {
      // As in the mesh, the upstream connection is a tunnel (a JS stream, not a socket).
      connectUpstream: (ep) =>
        new Promise((resolve, reject) => {
          const s = net.connect({ host: ep.ip, port: ep.port, noDelay: true });
          s.once('error', reject);
          s.once('connect', () => {
            s.off('error', reject);
            const tunnel = new Duplex({
              read() {},
              write(chunk, _enc, cb) {
                s.write(chunk, cb);
              },
              final(cb) {
                s.end();
                cb();
              },
              destroy(err, cb) {
                s.destroy();
                cb(err);
              },
            });
            s.on('data', (c: Buffer) => tunnel.push(c));
            s.on('end', () => tunnel.push(null));
            s.on('error', (err) => tunnel.destroy(err));
            resolve(tunnel);
          });
        }),
    },
  );
  session = http2.connect(tw.origin);
  session.on('error', () => {});
});

afterAll(async () => {
  session.close();
  await tw.close();
  coalescer.close();
  await new Promise<void>((resolve) => upstream.close(() => resolve()));
});

describe('gRPC trailers through the waypoint', () => {
  it('keeps the grpc-status trailer of every quick unary answer', async () => {
    const results = [];
    for (let i = 0; i < 60; i++) results.push(await grpcCall(session, '/hypha.echo.Echo/Say', `m${i}`));
    const lost = results.filter((r) => r.status !== '0');
    expect(lost.length, JSON.stringify(lost.slice(0, 3))).toBe(0);
    expect(results.every((r, i) => r.messages[0] === `said m${i}`)).toBe(true);
  });
});
