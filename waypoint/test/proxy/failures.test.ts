// How upstream failures look to clients and in the access log: flags UF, UH, URX, NC, DC, UT.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  captureLog,
  loopbackIp,
  send,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

let live: Backend;
let hang: Backend;
let tw: TestWaypoint;
const access = captureLog();
const deadIp = loopbackIp();
let deadPort = 0;

const route = (name: string, svc: string, rule: Record<string, unknown>) => ({
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'shop' },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: svc }], rules: [rule] },
});

function svc(name: string, vip: string, endpoints: { ip: string; port: number }[]) {
  return {
    name,
    namespace: 'shop',
    vips: [vip],
    ports: [{ port: 80, name: 'http' }],
    endpoints: endpoints.map((e) => ({ ip: e.ip, targetPorts: { '80': e.port } })),
  };
}

const lineFor = (id: string) => access.lines.find((l) => l.x_request_id === id);

beforeAll(async () => {
  live = await startBackend('live');
  hang = await startBackend('hang', () => {
    // never answers
  });
  // A port with nobody listening: bind, note the port, close.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, deadIp, resolve));
  deadPort = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  tw = await startWaypoint(
    {
      services: [
        svc('half-dead', '10.96.6.1', [
          { ip: deadIp, port: deadPort },
          { ip: live.ip, port: live.port },
        ]),
        svc('half-dead-retry', '10.96.6.2', [
          { ip: deadIp, port: deadPort },
          { ip: live.ip, port: live.port },
        ]),
        svc('empty', '10.96.6.3', []),
        svc('dead', '10.96.6.4', [{ ip: deadIp, port: deadPort }]),
        svc('hang', '10.96.6.5', [{ ip: hang.ip, port: hang.port }]),
        svc('typo', '10.96.6.6', [{ ip: live.ip, port: live.port }]),
      ],
      httpRoutes: [
        route('retry', 'half-dead-retry', { retry: { attempts: 1 } }),
        route('dead', 'dead', { retry: { attempts: 2, backoff: '1ms' } }),
        route('hang', 'hang', {
          timeouts: { request: '600ms', backendRequest: '150ms' },
          retry: { attempts: 2, codes: [504], backoff: '1ms' },
        }),
        route('typo', 'typo', { backendRefs: [{ name: 'no-such-service', port: 80 }] }),
      ],
    },
    { host: '10.96.6.1', port: 80 },
    { accessLog: access.logger },
  );
});

afterAll(async () => {
  await tw.close();
  await live.close();
  await hang.close();
});

describe('upstream failures', () => {
  it('answers 503 UF when the chosen endpoint refuses the connection', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 4; i++)
      codes.push((await send(tw.pool, '/', { headers: { 'x-request-id': `uf-${i}` } })).status);
    expect(codes.sort()).toEqual([200, 200, 503, 503]);
    const flags = [0, 1, 2, 3].map((i) => lineFor(`uf-${i}`)?.response_flags).sort();
    expect(flags).toEqual(['-', '-', 'UF', 'UF']);
  });

  it('retries a refused connection on another endpoint', async () => {
    const c = await tw.listen({ host: '10.96.6.2', port: 80 });
    for (let i = 0; i < 6; i++) expect((await send(c.pool, '/')).status).toBe(200);
  });

  it('flags UF,URX when every try failed', async () => {
    const c = await tw.listen({ host: '10.96.6.4', port: 80 });
    const r = await send(c.pool, '/', { headers: { 'x-request-id': 'urx' } });
    expect(r.status).toBe(503);
    expect(lineFor('urx')?.response_flags).toBe('UF,URX');
  });

  it('answers 503 UH "no healthy upstream" for a service without endpoints', async () => {
    const c = await tw.listen({ host: '10.96.6.3', port: 80 });
    const r = await send(c.pool, '/', { headers: { 'x-request-id': 'uh' } });
    expect(r.status).toBe(503);
    expect(r.body).toBe('no healthy upstream');
    expect(lineFor('uh')?.response_flags).toBe('UH');
  });

  it('retries per-try timeouts until the route timeout, then answers 504', async () => {
    const c = await tw.listen({ host: '10.96.6.5', port: 80 });
    const before = hang.requests.length;
    const t0 = performance.now();
    const r = await send(c.pool, '/', { headers: { 'x-request-id': 'ut' } });
    const took = performance.now() - t0;
    expect(r.status).toBe(504);
    expect(took).toBeGreaterThanOrEqual(440);
    expect(took).toBeLessThan(1500);
    // Three tries (first + 2 retries) of 150 ms each, all inside the 600 ms route timeout.
    await expect.poll(() => hang.requests.length - before).toBe(3);
    expect(lineFor('ut')?.response_flags).toBe('UT,URX');
  });

  it('answers 500 NC when a backendRef names an unknown service', async () => {
    const c = await tw.listen({ host: '10.96.6.6', port: 80 });
    const r = await send(c.pool, '/', { headers: { 'x-request-id': 'nc' } });
    expect(r.status).toBe(500);
    expect(lineFor('nc')?.response_flags).toBe('NC');
  });

  it('flags DC and cancels upstream work when the client goes away', async () => {
    const c = await tw.listen({ host: '10.96.6.5', port: 80 });
    const sock = net.connect(c.port, '127.0.0.1');
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.write('GET /gone HTTP/1.1\r\nhost: hang\r\nx-request-id: dc\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    sock.destroy();
    await expect.poll(() => lineFor('dc')?.response_flags, { timeout: 3000 }).toBe('DC');
    expect(lineFor('dc')?.response_code).toBe(0);
    // Nothing leaks: no request counted as in flight, no circuit-breaker slot held.
    const cluster = tw.wp.findCluster('shop/hang')!;
    expect(cluster.activeRequests).toBe(0);
    expect(cluster.endpoints.map((e) => e.active)).toEqual([0]);
  });

  it('answers Expect: 100-continue itself and forwards the body', async () => {
    const l = await tw.listen({ host: '10.96.6.2', port: 80 });
    const sock = net.connect(l.port, '127.0.0.1');
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    let got = '';
    sock.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.startsWith('HTTP/1.1 100')) {
        got = '';
        sock.write('hello');
      }
    });
    sock.write('POST /upload HTTP/1.1\r\nhost: live\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n');
    await expect.poll(() => got, { timeout: 3000 }).toMatch(/^HTTP\/1\.1 200/);
    sock.destroy();
    expect(live.requests.find((r) => r.url === '/upload')?.body).toBe('hello');
  });
});
