// HTTP/1.1 clients at the edges of the protocol, on a raw stream into the waypoint: what the client
// reads back when it half-closes early or sends what node:http cannot parse.
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Backend, startBackend, startWaypoint, type TestWaypoint } from '../helpers.js';

const HOST = 'reviews.shop.svc.cluster.local';
let backend: Backend;
let tw: TestWaypoint;
let server: net.Server;
let port = 0;

beforeAll(async () => {
  backend = await startBackend('reviews');
  tw = await startWaypoint(
    {
      services: [
        {
          name: 'reviews',
          namespace: 'shop',
          vips: ['10.96.9.2'],
          ports: [{ port: 80, name: 'http' }],
          endpoints: [
            {
              ip: backend.ip,
              targetPorts: { '80': backend.port },
              workload: { name: 'reviews-1', namespace: 'shop', serviceAccount: 'reviews' },
            },
          ],
        },
      ],
    },
    { host: '10.96.9.2', port: 80 },
  );
  // Half-open like the agent's captured sockets and HBONE streams: the client's FIN does not end
  // our side by itself.
  server = net.createServer({ allowHalfOpen: true }, (sock) =>
    tw.wp.handleStream(sock, {
      authority: { host: '10.96.9.2', port: 80 },
      source: { ip: '127.0.0.1', port: sock.remotePort ?? 0 },
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.close();
  await tw.close();
  await backend.close();
});

/** Writes `request`, half-closes at once, and reads until the waypoint ends the stream. */
function sendAndHalfClose(request: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
    });
    s.on('error', () => {});
    s.on('close', () => resolve(got));
    s.end(request);
  });
}

it('answers a client that sends its request and half-closes at once', async () => {
  const reply = await sendAndHalfClose(`GET /early-fin HTTP/1.1\r\nhost: ${HOST}\r\n\r\n`);
  expect(reply).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
  expect(reply).toContain('"url":"/early-fin"');
});

it('answers a request it cannot parse with 400 and oversized headers with 431, then closes', async () => {
  expect(await sendAndHalfClose('GET /\u0001 HTTP/1.1\r\nhost: x\r\n\r\n')).toMatch(
    /^HTTP\/1\.1 400 Bad Request\r\n/,
  );
  expect(
    await sendAndHalfClose(`GET / HTTP/1.1\r\nhost: ${HOST}\r\nx-big: ${'v'.repeat(40_000)}\r\n\r\n`),
  ).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  // The waypoint still serves the next client.
  expect(await sendAndHalfClose(`GET /after HTTP/1.1\r\nhost: ${HOST}\r\n\r\n`)).toMatch(
    /^HTTP\/1\.1 200 OK/,
  );
});
