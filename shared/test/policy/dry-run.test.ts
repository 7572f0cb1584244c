// Dry-run AuthorizationPolicies (annotation `istio.io/dry-run: "true"` or `hypha.dev/dry-run`):
// evaluated and reported, never enforced, at L4 (evaluateL4) and L7 (evaluateL7). The examples are
// the ones docs/authorization.md shows.
import { parseSpiffeId } from '@hypha/shared';
import { translateObject } from '@hypha/shared/config';
import { stripObject } from '@hypha/shared/kube';
import {
  compileWaypointPolicy,
  evaluateL4,
  evaluateL7,
  explainL4,
  explainL7,
  indexL7Policies,
  type L4Request,
  type L7Attributes,
  type L7PolicySet,
} from '@hypha/shared/policy';
import { describe, expect, it } from 'vitest';
import { compiledPolicy, workload } from './fixtures.js';

const DRY_RUN = { 'istio.io/dry-run': 'true' };
const echo = workload('shop', 'echo', { app: 'echo' });
const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const ops = parseSpiffeId('spiffe://cluster.local/ns/ops/sa/admin');
const fromWeb = { from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] };
const onEcho = { selector: { matchLabels: { app: 'echo' } } };

const req = (identity = web): L4Request => ({
  source: { identity, ip: '10.244.2.5' },
  destination: { workload: echo, port: 8080 },
});

const denyWeb = (annotations?: Record<string, string>) =>
  compiledPolicy('shop', 'deny-web', { ...onEcho, action: 'DENY', rules: [fromWeb] }, annotations);
const allowWeb = (annotations?: Record<string, string>) =>
  compiledPolicy('shop', 'allow-web', { ...onEcho, rules: [fromWeb] }, annotations);

describe('dry-run annotation', () => {
  it('accepts istio.io/dry-run and hypha.dev/dry-run; "false" or absent enforces', () => {
    expect(denyWeb(DRY_RUN).dryRun).toBe(true);
    expect(denyWeb({ 'hypha.dev/dry-run': 'true' }).dryRun).toBe(true);
    expect(denyWeb({ 'istio.io/dry-run': 'false' }).dryRun).toBe(false);
    expect(denyWeb().dryRun).toBe(false);
  });

  it("survives the Kubernetes informers' trimming (other annotations are dropped)", () => {
    const listed = {
      metadata: {
        name: 'deny-web',
        namespace: 'shop',
        annotations: { 'istio.io/dry-run': 'true', 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
      },
      spec: { ...onEcho, action: 'DENY', rules: [fromWeb] },
    };
    const stripped = stripObject(listed, 'security.hypha.dev/v1', 'AuthorizationPolicy');
    expect(stripped.metadata).toMatchObject({ annotations: { 'istio.io/dry-run': 'true' } });
    const r = translateObject(stripped, { source: 'kubernetes' });
    expect(r.status === 'ok' && r.object.kind === 'AuthorizationPolicy' && r.object.dryRun).toBe(true);
  });

  it('rejects a value other than "true" or "false", naming the annotation', () => {
    const r = translateObject(
      {
        apiVersion: 'security.hypha.dev/v1',
        kind: 'AuthorizationPolicy',
        metadata: { namespace: 'shop', name: 'p', annotations: { 'istio.io/dry-run': 'yes' } },
        spec: {},
      },
      { source: 'test' },
    );
    expect(r.status).toBe('invalid');
    if (r.status === 'invalid')
      expect(r.errors[0]!.message).toContain('metadata.annotations["istio.io/dry-run"]');
  });
});

describe('evaluateL4 with dry-run policies', () => {
  it('a dry-run DENY does not deny, and reports "would deny" with its policy and rule', () => {
    const d = evaluateL4([denyWeb(DRY_RUN)], req());
    expect(d.decision).toBe('allow');
    expect(d.dryRun).toMatchObject({
      would: 'deny',
      policy: { namespace: 'shop', name: 'deny-web' },
      rule: 0,
    });
  });

  it('a dry-run DENY that does not match reports nothing', () => {
    const d = evaluateL4([denyWeb(DRY_RUN)], req(ops));
    expect(d.decision).toBe('allow');
    expect(d.dryRun).toBeUndefined();
  });

  it('a dry-run ALLOW does not change an enforced DENY', () => {
    const d = evaluateL4([denyWeb(), allowWeb(DRY_RUN)], req());
    expect(d).toMatchObject({ decision: 'deny', policy: { name: 'deny-web' }, rule: 0 });
    expect(d.dryRun).toBeUndefined();
  });

  it('a dry-run ALLOW that would allow-list reports "would deny" for the peers it leaves out', () => {
    const d = evaluateL4([allowWeb(DRY_RUN)], req(ops));
    expect(d.decision).toBe('allow');
    expect(d.dryRun).toMatchObject({ would: 'deny', policy: { name: 'allow-web' } });
    expect(d.dryRun?.rule).toBeUndefined();
    expect(evaluateL4([allowWeb(DRY_RUN)], req()).dryRun).toBeUndefined();
  });

  it('mixing: an enforced ALLOW denies what it misses; a dry-run ALLOW that matches reports "would allow"', () => {
    const allowOps = compiledPolicy('shop', 'allow-ops', {
      ...onEcho,
      rules: [{ from: [{ source: { namespaces: ['ops'] } }] }],
    });
    const d = evaluateL4([allowOps, allowWeb(DRY_RUN)], req());
    expect(d.decision).toBe('deny');
    expect(d.reason).toContain('(shop/allow-ops)');
    expect(d.dryRun).toMatchObject({ would: 'allow', policy: { name: 'allow-web' }, rule: 0 });
    expect(evaluateL4([allowOps, allowWeb(DRY_RUN)], req(ops))).toMatchObject({ decision: 'allow' });
  });

  it('mixing: an enforced DENY and a dry-run DENY on the same peer: denied, nothing to report', () => {
    const d = evaluateL4(
      [denyWeb(DRY_RUN), compiledPolicy('shop', 'deny-all', { ...onEcho, action: 'DENY', rules: [{}] })],
      req(),
    );
    expect(d).toMatchObject({ decision: 'deny', policy: { name: 'deny-all' } });
    expect(d.dryRun).toBeUndefined();
  });

  it('without a dry-run policy the decision is the shared frozen one (no allocation)', () => {
    const policies = [allowWeb()];
    expect(evaluateL4(policies, req())).toBe(evaluateL4(policies, req()));
    expect(Object.isFrozen(evaluateL4(policies, req()))).toBe(true);
  });

  it('explainL4 tags dry-run policies and prints the dry-run result after the enforced decision', () => {
    const { lines } = explainL4([denyWeb(DRY_RUN)], req());
    expect(lines).toEqual([
      'connection from cluster.local/ns/shop/sa/web to shop/echo port 8080',
      '  DENY shop/deny-web (dry-run): rules[0] matches',
      'decision: ALLOW: allowed: no ALLOW policy applies to shop/echo',
      'dry-run: policy shop/deny-web would deny (rules[0]): denied by DENY policy shop/deny-web rules[0]',
    ]);
    expect(explainL4([denyWeb(DRY_RUN)], req(ops)).lines.at(-1)).toBe(
      'dry-run: no change (with the dry-run policies enforced, still ALLOW)',
    );
  });
});

describe('evaluateL7 with dry-run policies', () => {
  const gateway = { name: 'waypoint', namespace: 'shop' };
  const toApi = { targetRefs: [{ kind: 'Service', name: 'api' }] };
  const raw = (name: string, spec: Record<string, unknown>, annotations?: Record<string, string>) => ({
    metadata: { name, namespace: 'shop', ...(annotations ? { annotations } : {}) },
    spec,
  });
  const denyAdmin = (a?: Record<string, string>) =>
    raw(
      'deny-admin',
      { ...toApi, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }] },
      a,
    );
  const allowGet = (a?: Record<string, string>) =>
    raw('allow-get', { ...toApi, rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }, a);
  const setOf = (policies: ReturnType<typeof raw>[]): L7PolicySet =>
    indexL7Policies(
      policies.map((p) => compileWaypointPolicy(p, gateway)!),
      ['shop/api'],
    ).get('shop/api')!;
  const attrs = (method: string, path: string, principal = 'cluster.local/ns/shop/sa/web'): L7Attributes => ({
    principal,
    sourceNamespace: 'shop',
    sourceIp: '10.1.2.3',
    port: 80,
    request: { method, path, host: 'api.shop.svc.cluster.local', headers: {} },
  });

  it('a dry-run DENY does not deny, and reports "would deny" with its policy and rule', () => {
    const d = evaluateL7(setOf([denyAdmin(DRY_RUN)]), attrs('GET', '/admin/users'));
    expect(d).toMatchObject({ allowed: true, policy: undefined });
    expect(d.dryRun).toEqual({ would: 'deny', policy: 'shop/deny-admin', rule: 0 });
  });

  it('a dry-run ALLOW does not change an enforced DENY', () => {
    const d = evaluateL7(setOf([denyAdmin(), allowGet(DRY_RUN)]), attrs('GET', '/admin/users'));
    expect(d).toMatchObject({ allowed: false, policy: 'shop/deny-admin', rule: 0 });
    expect(d.dryRun).toBeUndefined();
  });

  it('mixing: enforced ALLOW and dry-run DENY: the ALLOW decides, the DENY reports', () => {
    const set = setOf([allowGet(), denyAdmin(DRY_RUN)]);
    const d = evaluateL7(set, attrs('GET', '/admin/users'));
    expect(d).toMatchObject({ allowed: true, policy: 'shop/allow-get', rule: 0 });
    expect(d.dryRun).toEqual({ would: 'deny', policy: 'shop/deny-admin', rule: 0 });
    expect(evaluateL7(set, attrs('POST', '/admin/users'))).toMatchObject({ allowed: false });
    expect(evaluateL7(set, attrs('POST', '/admin/users')).dryRun).toBeUndefined();
    expect(evaluateL7(set, attrs('GET', '/items')).dryRun).toBeUndefined();
  });

  it('a dry-run ALLOW reports "would deny" for requests it misses, "would allow" beside an enforced ALLOW', () => {
    const d = evaluateL7(setOf([allowGet(DRY_RUN)]), attrs('POST', '/items'));
    expect(d.allowed).toBe(true);
    expect(d.dryRun).toEqual({ would: 'deny', policy: 'shop/allow-get', rule: undefined });
    const allowOps = raw('allow-ops', { ...toApi, rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] });
    const mixed = evaluateL7(setOf([allowOps, allowGet(DRY_RUN)]), attrs('GET', '/items'));
    expect(mixed.allowed).toBe(false);
    expect(mixed.dryRun).toEqual({ would: 'allow', policy: 'shop/allow-get', rule: 0 });
  });

  it('without a dry-run policy the set has no shadow and decisions stay shared and frozen', () => {
    const set = setOf([denyAdmin(), allowGet()]);
    expect(set.shadow).toBeUndefined();
    expect(evaluateL7(set, attrs('GET', '/items'))).toBe(evaluateL7(set, attrs('GET', '/other')));
    expect(Object.isFrozen(evaluateL7(set, attrs('GET', '/items')))).toBe(true);
  });

  it('explainL7 tags dry-run policies and prints the dry-run result', () => {
    const ex = explainL7(setOf([denyAdmin(DRY_RUN)]), attrs('GET', '/admin/users'));
    expect(ex.lines).toEqual([
      '  DENY shop/deny-admin (dry-run): rules[0] matches',
      'decision: ALLOW: allowed: no ALLOW policy applies',
      'dry-run: policy shop/deny-admin would deny (rules[0]): denied by DENY policy shop/deny-admin rules[0]',
    ]);
  });
});
