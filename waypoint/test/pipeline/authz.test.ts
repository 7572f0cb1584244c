// Filter 2 alone: AuthorizationPolicies decide before anything else is spent on a request.
import { parseSpiffeId } from '@hypha/shared';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { authzFilter } from '../../src/pipeline/authz.js';
import { routeFilter } from '../../src/pipeline/route.js';
import { RequestMetrics } from '../../src/telemetry.js';
import { captureLog } from '../helpers.js';
import {
  answerWith,
  authzPolicy,
  type RequestInit,
  recordingNext,
  requestOf,
  snapshotOf,
  svc,
} from './fixtures.js';

const snap = snapshotOf({
  services: [
    svc('reviews', '10.96.2.1', [{ name: 'r', ip: '10.0.2.1', port: 8080 }]),
    svc('admin', '10.96.2.2', [{ name: 'a', ip: '10.0.2.2', port: 8080 }]),
  ],
  authorizationPolicies: [
    authzPolicy('deny-internal', {
      targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }],
      action: 'DENY',
      rules: [{ to: [{ operation: { paths: ['/internal/*'] } }] }],
    }),
    authzPolicy('audit-writes', {
      targetRefs: [{ kind: 'Service', name: 'reviews' }],
      action: 'AUDIT',
      rules: [{ to: [{ operation: { methods: ['POST'] } }] }],
    }),
    authzPolicy('allow-web', {
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
});
const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const batch = parseSpiffeId('spiffe://cluster.local/ns/jobs/sa/batch');
const ok = answerWith({ kind: 'local', status: 200, body: 'upstream' });

function setup(init: RequestInit) {
  const registry = new Registry();
  const log = captureLog();
  const filter = authzFilter({ metrics: new RequestMetrics(registry), log: log.logger });
  const { rc } = requestOf(snap, init);
  const next = recordingNext(ok);
  return { filter, rc, next, registry, log };
}

describe('authz filter', () => {
  it('answers 403 locally for a DENY match, names the policy, and never calls next', async () => {
    const { filter, rc, next } = setup({
      url: '/internal/metrics',
      authority: { host: '10.96.2.1', port: 80 },
    });
    const o = await filter.run(rc, next);
    expect(o).toEqual({ kind: 'local', status: 403, body: 'RBAC: access denied' });
    expect(next.calls).toHaveLength(0);
    expect(rc.authzPolicy).toBe('shop/deny-internal');
  });

  it('lets a request no DENY matches through to next', async () => {
    const { filter, rc, next } = setup({ url: '/internal', authority: { host: '10.96.2.1', port: 80 } });
    expect(await filter.run(rc, next)).toEqual({ kind: 'local', status: 200, body: 'upstream' });
    expect(next.calls).toHaveLength(1);
  });

  it('admits the ALLOWed principal and refuses another one, and a plaintext client', async () => {
    const admin = { host: '10.96.2.2', port: 80 };
    const asWeb = setup({ url: '/report.json', authority: admin, peer: web });
    expect(await asWeb.filter.run(asWeb.rc, asWeb.next)).toMatchObject({ status: 200 });
    expect(asWeb.rc.authzPolicy).toBe('shop/allow-web');

    const asBatch = setup({ url: '/report.json', authority: admin, peer: batch });
    expect(await asBatch.filter.run(asBatch.rc, asBatch.next)).toMatchObject({ status: 403 });
    expect(asBatch.next.calls).toHaveLength(0);

    const plain = setup({ url: '/report.json', authority: admin });
    expect(await plain.filter.run(plain.rc, plain.next)).toMatchObject({ status: 403 });
  });

  it('counts and logs an AUDIT match without changing the answer', async () => {
    const { filter, rc, next, registry, log } = setup({
      method: 'POST',
      url: '/item',
      authority: { host: '10.96.2.1', port: 80 },
    });
    expect(await filter.run(rc, next)).toMatchObject({ status: 200 });
    expect(next.calls).toHaveLength(1);
    const audit = await registry.getSingleMetricAsString('hypha_waypoint_authz_audit_total');
    expect(audit).toContain('hypha_waypoint_authz_audit_total{policy="shop/audit-writes"} 1');
    expect(log.lines).toContainEqual(
      expect.objectContaining({ msg: 'AUDIT policy matched', policy: 'shop/audit-writes', method: 'POST' }),
    );
  });

  it('runs after route in the pipeline: a route that matched does not bypass a DENY', async () => {
    const { filter, rc, next } = setup({ url: '/internal/x', authority: { host: '10.96.2.1', port: 80 } });
    const o = await routeFilter.run(rc, (r) => filter.run(r, next));
    expect(o).toMatchObject({ status: 403 });
    expect(next.calls).toHaveLength(0);
  });
});
