// Workload-addressed traffic: a pod bound to the waypoint itself is dialed as podIP:port. The
// waypoint applies the Gateway's policies, records the pod as destination and forwards to exactly
// that pod (its identity), never through routes or Service policies; non-HTTP bytes go at L4.
import net, { type AddressInfo } from 'node:net';
import { parseSpiffeId } from '@hypha/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hboneIngressHandler } from '../../src/index.js';
import type { UpstreamEndpoint } from '../../src/upstream.js';
import {
  type Backend,
  captureLog,
  send,
  service,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

const policy = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'shop' },
  spec,
});

const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const access = captureLog();
const dialed: UpstreamEndpoint[] = [];
let pod: Backend;
let other: Backend;
let svcBackend: Backend;
let echo: net.Server;
let echoPort = 0;
let tw: TestWaypoint;

beforeAll(async () => {
  pod = await startBackend('ratings-pod');
  // Another endpoint of a Service on the same waypoint: workload traffic must never land here.
  svcBackend = await startBackend('reviews-v1');
  other = await startBackend('not-bound');
  // A TCP echo on the pod's address, another port.
  echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(0, pod.ip, resolve));
  echoPort = (echo.address() as AddressInfo).port;
  tw = await startWaypoint(
    {
      services: [service('reviews', '10.96.5.1', [svcBackend])],
      boundWorkloads: [
        {
          ip: pod.ip,
          workload: { name: 'ratings-7c4', namespace: 'shop', serviceAccount: 'ratings', app: 'ratings' },
        },
      ],
      workloads: [{ ip: '127.0.0.1', workload: { name: 'web-1', namespace: 'shop', app: 'web' } }],
      httpRoutes: [
        {
          apiVersion: 'gateway.networking.k8s.io/v1',
          kind: 'HTTPRoute',
          metadata: { name: 'reviews-rewrite', namespace: 'shop' },
          spec: {
            parentRefs: [{ kind: 'Service', group: '', name: 'reviews' }],
            rules: [
              {
                filters: [
                  {
                    type: 'URLRewrite',
                    urlRewrite: { path: { type: 'ReplaceFullPath', replaceFullPath: '/rewritten' } },
                  },
                ],
              },
            ],
          },
        },
      ],
      authorizationPolicies: [
        policy('deny-admin', {
          targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }],
          action: 'DENY',
          rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
        }),
        // Targets the Service only: a pod dialed by IP is not that Service.
        policy('deny-reviews', {
          targetRefs: [{ kind: 'Service', name: 'reviews' }],
          action: 'DENY',
          rules: [{ to: [{ operation: { paths: ['/reviews-only'] } }] }],
        }),
      ],
    },
    { host: pod.ip, port: pod.port },
    {
      peer: web,
      accessLog: access.logger,
      sniffTimeoutMs: 200,
      connectUpstream: (ep) =>
        new Promise((resolve, reject) => {
          dialed.push(ep);
          const s = net.connect({ host: ep.ip, port: ep.port, noDelay: true });
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        }),
    },
  );
});

afterAll(async () => {
  await tw.close();
  echo.close();
  await Promise.all([pod.close(), svcBackend.close(), other.close()]);
});

describe('pod bound to the waypoint (authority podIP:port)', () => {
  it('is served: the HBONE authority check accepts the pod IP on any port, nothing else', () => {
    expect(tw.wp.servesAddress(pod.ip, pod.port)).toBe(true);
    expect(tw.wp.servesAddress(pod.ip, echoPort)).toBe(true);
    expect(tw.wp.servesAddress(other.ip, other.port)).toBe(false);
    const handler = hboneIngressHandler(tw.wp);
    const refused = handler({
      authority: { host: other.ip, port: other.port },
      peer: web,
      connection: { remoteAddress: '127.0.0.1', remotePort: 1 },
    } as unknown as Parameters<typeof handler>[0]);
    expect(refused).toMatchObject({ status: 400 });
    expect((refused as { reason: string }).reason).toContain(`${other.ip}:${other.port}`);
  });

  it('forwards to exactly that pod and port with its identity, ignoring Service routes and Host', async () => {
    const before = dialed.length;
    // The Host names the Service (whose route rewrites paths): the pod was dialed, the pod answers.
    const r = await send(tw.pool, '/ratings/1?x=1', { method: 'POST', body: 'five stars' });
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({ instance: 'ratings-pod', url: '/ratings/1?x=1', body: 'five stars' });
    expect(svcBackend.requests).toHaveLength(0);
    const ep = dialed.slice(before).find((d) => d.ip === pod.ip);
    expect(ep).toMatchObject({
      ip: pod.ip,
      port: pod.port,
      workload: { name: 'ratings-7c4', namespace: 'shop', serviceAccount: 'ratings' },
    });
  });

  it('applies Gateway-targeted policies (403) but not policies of a Service', async () => {
    const denied = await send(tw.pool, '/admin/keys', { headers: { 'x-request-id': 'wl-denied' } });
    expect(denied.status).toBe(403);
    expect(denied.body).toBe('RBAC: access denied');
    expect(pod.requests.some((q) => q.url === '/admin/keys')).toBe(false);
    expect(access.lines.find((l) => l.x_request_id === 'wl-denied')).toMatchObject({
      response_code: 403,
      authz_policy: 'shop/deny-admin',
    });
    expect((await send(tw.pool, '/reviews-only')).status).toBe(200);
  });

  it('records the pod as destination workload, with no destination service', async () => {
    await send(tw.pool, '/metrics-probe');
    const metrics = await tw.wp.registry.getMetricsAsJSON();
    const values = metrics.find((m) => m.name === 'istio_requests_total')!.values;
    const ok = values.find((v) => String(v.labels.response_code) === '200')!;
    expect(ok.labels).toMatchObject({
      reporter: 'waypoint',
      source_workload: 'web-1',
      destination_workload: 'ratings-7c4',
      destination_workload_namespace: 'shop',
      destination_principal: 'spiffe://cluster.local/ns/shop/sa/ratings',
      destination_app: 'ratings',
    });
    expect(ok.labels.destination_service).not.toContain('reviews');
    const forbidden = values.find((v) => String(v.labels.response_code) === '403')!;
    expect(forbidden.labels.destination_workload).toBe('ratings-7c4');
  });

  it('forwards non-HTTP bytes at L4 to the same pod; an HTTP-only DENY refuses them', async () => {
    const payload = Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x42]);
    const exchange = async (): Promise<Buffer | 'closed'> => {
      const c = await tw.listen({ host: pod.ip, port: echoPort }, web);
      const sock = net.connect({ host: '127.0.0.1', port: c.port });
      try {
        return await new Promise<Buffer | 'closed'>((resolve, reject) => {
          const chunks: Buffer[] = [];
          sock.on('data', (d: Buffer) => {
            chunks.push(d);
            if (Buffer.concat(chunks).length >= payload.length) resolve(Buffer.concat(chunks));
          });
          sock.once('close', () => resolve('closed'));
          sock.once('error', reject);
          sock.write(payload);
        });
      } finally {
        sock.destroy();
      }
    };
    // The Gateway's DENY on paths cannot be checked on TCP, so it denies the whole connection
    // (Istio: HTTP-only fields are dropped from a DENY rule applied to TCP).
    expect(await exchange()).toBe('closed');
    tw.wp.updateConfig({
      gateway: { name: 'waypoint', namespace: 'shop' },
      services: [service('reviews', '10.96.5.1', [svcBackend])],
      boundWorkloads: [
        { ip: pod.ip, workload: { name: 'ratings-7c4', namespace: 'shop', serviceAccount: 'ratings' } },
      ],
    });
    const got = await exchange();
    expect(Buffer.isBuffer(got) && got.equals(payload)).toBe(true);
    expect(dialed.some((d) => d.ip === pod.ip && d.port === echoPort)).toBe(true);
  });

  it('stops serving the pod once it is unbound', async () => {
    const c = await tw.listen({ host: pod.ip, port: pod.port }, web);
    tw.wp.updateConfig({
      gateway: { name: 'waypoint', namespace: 'shop' },
      services: [service('reviews', '10.96.5.1', [svcBackend])],
    });
    expect(tw.wp.servesAddress(pod.ip, pod.port)).toBe(false);
    // Host names no known service either: nothing to route to.
    const r = await send(c.pool, '/after', { headers: { host: 'ratings.example' } });
    expect(r.status).toBe(404);
    expect(pod.requests.some((q) => q.url === '/after')).toBe(false);
  });
});
