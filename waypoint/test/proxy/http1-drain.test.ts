// HTTP/1.1 through the waypoint while the node agent carrying its tunnels drains (an upgrade): the
// agent's HBONE connection sends GOAWAY and is cut at the drain deadline. Keep-alive connections to
// the endpoint ride tunnels on that connection; a request made after the GOAWAY must go over a new
// tunnel, not reuse a kept-alive connection the cut will fail. Found by the soak (issue 18): a GET
// failed 503 UC as the old agent exited at the end of its drain.
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loopbackIp, service, startCarrier, startWaypoint, type TestWaypoint } from '../helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let app: http.Server;
let carrier: Awaited<ReturnType<typeof startCarrier>>;
let tw: TestWaypoint;

beforeAll(async () => {
  const ip = loopbackIp();
  // The app: answers /slow after 400 ms, anything else at once; keep-alive.
  app = http.createServer((req, res) => {
    const answer = () => res.end(`said ${req.url}`);
    if (req.url === '/slow') setTimeout(answer, 400);
    else answer();
  });
  await new Promise<void>((resolve) => app.listen(0, ip, resolve));
  const appPort = (app.address() as AddressInfo).port;
  // The node agent's side (CONNECT streams piped to the app) and the waypoint's HBONE pool.
  carrier = await startCarrier(ip, appPort);
  tw = await startWaypoint(
    { services: [service('web', '10.96.5.2', [{ name: 'web', ip, port: appPort }])] },
    { host: '10.96.5.2', port: 80 },
    { connectUpstream: carrier.connectUpstream },
  );
});

afterAll(async () => {
  await tw.close();
  await carrier.close();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

async function get(path: string): Promise<{ status: number; body: string }> {
  const r = await tw.pool.request({ method: 'GET', path, headers: { host: 'web.shop' } });
  return { status: r.statusCode, body: await r.body.text() };
}

describe('HTTP/1.1 through the waypoint while the carrying agent drains', () => {
  it('a request made after the HBONE connection got GOAWAY survives the drain deadline cutting that connection', async () => {
    expect(await get('/before')).toEqual({ status: 200, body: 'said /before' });
    const draining = [...carrier.carried];
    expect(draining.length).toBe(1);
    // Drain: GOAWAY now (streams already open may finish), the connection cut 150 ms later.
    for (const s of draining) s.goaway(http2.constants.NGHTTP2_NO_ERROR);
    await sleep(50);
    const slow = get('/slow');
    await sleep(150);
    for (const s of draining) s.destroy();
    expect(await slow).toEqual({ status: 200, body: 'said /slow' });
    expect(carrier.carried.length).toBe(2);
    expect(await get('/after')).toEqual({ status: 200, body: 'said /after' });
  });
});
