// L7 AuthorizationPolicy enforced by the waypoint, seen from clients with different identities.

import net, { type AddressInfo } from 'node:net';
import { parseSpiffeId } from '@hypha/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  captureLog,
  loopbackIp,
  send,
  service,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

const policy = (name: string, spec: Record<string, unknown>, annotations?: Record<string, string>) => ({
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'shop', ...(annotations ? { annotations } : {}) },
  spec,
});

let backend: Backend;
let admin: Backend;
let tw: TestWaypoint;
const log = captureLog();
const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const batch = parseSpiffeId('spiffe://cluster.local/ns/jobs/sa/batch');

beforeAll(async () => {
  backend = await startBackend('reviews');
  admin = await startBackend('admin');
  tw = await startWaypoint(
    {
      services: [service('reviews', '10.96.2.1', [backend]), service('admin', '10.96.2.2', [admin])],
      authorizationPolicies: [
        // Gateway-wide: nobody reaches /internal/*, on any service.
        policy('deny-internal', {
          targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }],
          action: 'DENY',
          rules: [{ to: [{ operation: { paths: ['/internal/*'] } }] }],
        }),
        // DELETE needs the x-confirm header.
        policy('deny-unconfirmed-delete', {
          targetRefs: [{ kind: 'Service', name: 'reviews' }],
          action: 'DENY',
          rules: [
            {
              to: [{ operation: { methods: ['DELETE'] } }],
              when: [{ key: 'request.headers[x-confirm]', notValues: ['yes'] }],
            },
          ],
        }),
        // Dry-run: would deny /admin/* on reviews; evaluated, logged and counted, never enforced.
        policy(
          'deny-admin',
          {
            targetRefs: [{ kind: 'Service', name: 'reviews' }],
            action: 'DENY',
            rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
          },
          { 'istio.io/dry-run': 'true' },
        ),
        policy('audit-writes', {
          targetRefs: [{ kind: 'Service', name: 'reviews' }],
          action: 'AUDIT',
          rules: [{ to: [{ operation: { methods: ['POST'] } }] }],
        }),
        // admin: only the web service account, and only GETs of paths ending in .json.
        policy('allow-web', {
          targetRefs: [{ kind: 'Service', name: 'admin' }],
          action: 'ALLOW',
          rules: [
            {
              from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }],
              to: [{ operation: { methods: ['GET'], paths: ['*.json'] } }],
            },
          ],
        }),
      ],
    },
    { host: '10.96.2.1', port: 80 },
    { peer: web, logger: log.logger },
  );
});

afterAll(async () => {
  await tw.close();
  await backend.close();
  await admin.close();
});

describe('DENY', () => {
  it('refuses a denied path with 403 "RBAC: access denied" while other paths pass', async () => {
    const before = backend.requests.length;
    const denied = await send(tw.pool, '/internal/metrics');
    expect(denied.status).toBe(403);
    expect(denied.body).toBe('RBAC: access denied');
    expect(backend.requests.length).toBe(before);
    expect((await send(tw.pool, '/public/page')).status).toBe(200);
    expect((await send(tw.pool, '/internal')).status).toBe(200);
  });

  it('applies gateway-wide policies to every service', async () => {
    const a = await tw.listen({ host: '10.96.2.2', port: 80 }, web);
    expect((await send(a.pool, '/internal/x.json')).status).toBe(403);
  });

  it('uses when conditions on request headers', async () => {
    expect((await send(tw.pool, '/item/1', { method: 'DELETE' })).status).toBe(403);
    expect(
      (await send(tw.pool, '/item/1', { method: 'DELETE', headers: { 'x-confirm': 'no' } })).status,
    ).toBe(403);
    expect(
      (await send(tw.pool, '/item/1', { method: 'DELETE', headers: { 'x-confirm': 'yes' } })).status,
    ).toBe(200);
  });
});

describe('ALLOW', () => {
  it('lets the allowed principal in and keeps everyone else out', async () => {
    const asWeb = await tw.listen({ host: '10.96.2.2', port: 80 }, web);
    const asBatch = await tw.listen({ host: '10.96.2.2', port: 80 }, batch);
    const plaintext = await tw.listen({ host: '10.96.2.2', port: 80 });
    expect((await send(asWeb.pool, '/report.json')).status).toBe(200);
    expect((await send(asWeb.pool, '/report.html')).status).toBe(403);
    expect((await send(asWeb.pool, '/report.json', { method: 'POST', body: '{}' })).status).toBe(403);
    expect((await send(asBatch.pool, '/report.json')).status).toBe(403);
    expect((await send(plaintext.pool, '/report.json')).status).toBe(403);
  });
});

describe('AUDIT', () => {
  it('logs and counts matches without changing the answer', async () => {
    const r = await send(tw.pool, '/reviews', { method: 'POST', body: 'x' });
    expect(r.status).toBe(200);
    expect(log.lines.some((l) => l.msg === 'AUDIT policy matched' && l.policy === 'shop/audit-writes')).toBe(
      true,
    );
    const metrics = await tw.wp.registry.getSingleMetricAsString('hypha_waypoint_authz_audit_total');
    expect(metrics).toContain('hypha_waypoint_authz_audit_total{policy="shop/audit-writes"} 1');
  });
});

describe('dry-run', () => {
  const dryRunLines = () => log.lines.filter((l) => l.msg === 'dry-run policy shop/deny-admin would deny');

  it('a dry-run DENY lets the request through, and counts and logs it as "would deny"', async () => {
    const before = backend.requests.length;
    const r = await send(tw.pool, '/admin/users');
    expect(r.status).toBe(200);
    expect(backend.requests.length).toBe(before + 1);
    expect(dryRunLines()).toEqual([
      expect.objectContaining({
        policy: 'shop/deny-admin',
        would: 'deny',
        rule: 0,
        enforced: 'allow',
        principal: 'cluster.local/ns/shop/sa/web',
        service: 'shop/reviews',
        method: 'GET',
        path: '/admin/users',
      }),
    ]);
    expect(dryRunLines()[0]!.source).toEqual(expect.any(String));
    const metrics = await tw.wp.registry.getSingleMetricAsString('hypha_authz_dry_run_total');
    expect(metrics).toContain(
      'hypha_authz_dry_run_total{policy="shop/deny-admin",would="deny",layer="L7"} 1',
    );
  });

  it('requests the dry-run policy would not deny are neither logged nor counted', async () => {
    const logged = dryRunLines().length;
    expect((await send(tw.pool, '/public/admin')).status).toBe(200);
    expect(dryRunLines().length).toBe(logged);
    const metrics = await tw.wp.registry.getSingleMetricAsString('hypha_authz_dry_run_total');
    expect(metrics).toContain(
      'hypha_authz_dry_run_total{policy="shop/deny-admin",would="deny",layer="L7"} 1',
    );
  });
});

describe('dry-run on plain TCP through the waypoint', () => {
  const tcpLog = captureLog();
  let echo: net.Server;
  let tcp: TestWaypoint;

  beforeAll(async () => {
    const ip = loopbackIp();
    echo = net.createServer((s) => s.pipe(s));
    const port = await new Promise<number>((resolve) =>
      echo.listen(0, ip, () => resolve((echo.address() as AddressInfo).port)),
    );
    tcp = await startWaypoint(
      {
        services: [
          {
            name: 'ledger',
            namespace: 'shop',
            vips: ['10.96.2.9'],
            ports: [{ port: 80, name: 'tcp-ledger' }],
            endpoints: [{ ip, targetPorts: { '80': port } }],
          },
        ],
        authorizationPolicies: [
          policy(
            'deny-web-ledger',
            {
              targetRefs: [{ kind: 'Service', name: 'ledger' }],
              action: 'DENY',
              rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }],
            },
            { 'hypha.dev/dry-run': 'true' },
          ),
        ],
      },
      { host: '10.96.2.9', port: 80 },
      { logger: tcpLog.logger },
    );
  });

  afterAll(async () => {
    await tcp.close();
    echo.close();
  });

  it('forwards the connection, and counts and logs "would deny" without method or path', async () => {
    const l = await tcp.listen({ host: '10.96.2.9', port: 80 }, web);
    const s = net.connect(l.port, '127.0.0.1');
    const got = new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString())));
    s.write('ping');
    expect(await got).toBe('ping');
    s.destroy();
    const lines = tcpLog.lines.filter((x) => x.msg === 'dry-run policy shop/deny-web-ledger would deny');
    expect(lines).toEqual([
      expect.objectContaining({ would: 'deny', enforced: 'allow', service: 'shop/ledger', port: 80 }),
    ]);
    expect(lines[0]!.method).toBeUndefined();
    const metrics = await tcp.wp.registry.getSingleMetricAsString('hypha_authz_dry_run_total');
    expect(metrics).toContain(
      'hypha_authz_dry_run_total{policy="shop/deny-web-ledger",would="deny",layer="L7"} 1',
    );
  });
});
