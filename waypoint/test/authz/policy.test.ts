import { describe, expect, it } from 'vitest';
import {
  type AuthzAttributes,
  compileAuthorizationPolicy,
  evaluateAuthz,
  indexPolicies,
  WaypointConfigError,
} from '../../src/index.js';

const gw = { name: 'waypoint', namespace: 'shop' };
const policy = (name: string, spec: Record<string, unknown>) =>
  compileAuthorizationPolicy(
    {
      metadata: { name, namespace: 'shop' },
      spec: { targetRefs: [{ kind: 'Service', name: 'api' }], ...spec },
    },
    gw,
  )!;

const attrs = (
  over: Partial<AuthzAttributes> = {},
  req: Partial<NonNullable<AuthzAttributes['request']>> = {},
): AuthzAttributes => ({
  principal: 'cluster.local/ns/shop/sa/web',
  sourceNamespace: 'shop',
  sourceIp: '10.1.2.3',
  port: 80,
  request: {
    method: 'GET',
    path: '/api/v1/items',
    host: 'api.shop.svc.cluster.local:80',
    headers: {},
    ...req,
  },
  ...over,
});

function decide(policies: ReturnType<typeof policy>[], a: AuthzAttributes) {
  return evaluateAuthz(indexPolicies(policies, ['shop/api']).get('shop/api')!, a);
}

describe('AuthorizationPolicy evaluation', () => {
  it('allows everything without policies', () => {
    expect(decide([], attrs()).allowed).toBe(true);
  });

  it('matches paths exactly, by prefix and by suffix', () => {
    const deny = (paths: string[]) =>
      policy('d', { action: 'DENY', rules: [{ to: [{ operation: { paths } }] }] });
    expect(decide([deny(['/api/v1/items'])], attrs()).allowed).toBe(false);
    expect(decide([deny(['/api/v1/item'])], attrs()).allowed).toBe(true);
    expect(decide([deny(['/api/*'])], attrs()).allowed).toBe(false);
    expect(decide([deny(['*/items'])], attrs()).allowed).toBe(false);
    expect(decide([deny(['*/users'])], attrs()).allowed).toBe(true);
  });

  it('orders DENY before ALLOW and denies when ALLOW policies exist but none match', () => {
    const allowGet = policy('a', { action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
    const denyWeb = policy('d', {
      action: 'DENY',
      rules: [{ from: [{ source: { principals: ['*/sa/web'] } }] }],
    });
    expect(decide([allowGet], attrs()).allowed).toBe(true);
    expect(decide([allowGet], attrs({}, { method: 'PUT' })).allowed).toBe(false);
    expect(decide([allowGet, denyWeb], attrs())).toMatchObject({ allowed: false, policy: 'shop/d' });
  });

  it('reads requestPrincipals as for a request without a token when none was verified', () => {
    // An ALLOW that requires a token must not turn into allow-all by dropping the field.
    const requireJwt = policy('jwt', {
      action: 'ALLOW',
      rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }],
    });
    expect(decide([requireJwt], attrs()).allowed).toBe(false);
    const denyNoJwt = policy('nojwt', {
      action: 'DENY',
      rules: [{ from: [{ source: { notRequestPrincipals: ['*'] } }] }],
    });
    expect(decide([denyNoJwt], attrs())).toMatchObject({ allowed: false, policy: 'shop/nojwt' });
    const denyJwt = policy('withjwt', {
      action: 'DENY',
      rules: [{ from: [{ source: { requestPrincipals: ['issuer/subject'] } }] }],
    });
    expect(decide([denyJwt], attrs()).allowed).toBe(true);
  });

  it('treats an ALLOW policy without rules as allow-nothing and a rule {} as allow-all', () => {
    expect(decide([policy('a', { action: 'ALLOW' })], attrs()).allowed).toBe(false);
    expect(decide([policy('a', { action: 'ALLOW', rules: [{}] })], attrs()).allowed).toBe(true);
  });

  it('supports not* fields, namespaces, ipBlocks, ports and hosts', () => {
    const allow = policy('a', {
      action: 'ALLOW',
      rules: [
        {
          from: [
            { source: { namespaces: ['shop'], ipBlocks: ['10.1.0.0/16'], notIpBlocks: ['10.1.9.0/24'] } },
          ],
          to: [
            {
              operation: {
                ports: ['80'],
                hosts: ['API.shop.svc.cluster.local'],
                notMethods: ['DELETE'],
                notPaths: ['/admin*'],
              },
            },
          ],
        },
      ],
    });
    expect(decide([allow], attrs()).allowed).toBe(true);
    expect(decide([allow], attrs({ sourceIp: '10.1.9.9' })).allowed).toBe(false);
    expect(decide([allow], attrs({ sourceIp: '::ffff:10.1.2.3' })).allowed).toBe(true);
    expect(decide([allow], attrs({ sourceNamespace: 'other' })).allowed).toBe(false);
    expect(decide([allow], attrs({ port: 8080 })).allowed).toBe(false);
    expect(decide([allow], attrs({}, { method: 'DELETE' })).allowed).toBe(false);
    expect(decide([allow], attrs({}, { path: '/admin/x' })).allowed).toBe(false);
    expect(decide([allow], attrs({}, { host: 'other:80' })).allowed).toBe(false);
  });

  it('never widens access for plain TCP: L7-only ALLOW rules do not match, DENY rules do', () => {
    const allowGet = policy('a', { action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
    const denyPath = policy('d', { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/x'] } }] }] });
    expect(decide([allowGet], attrs({ request: undefined })).allowed).toBe(false);
    expect(decide([denyPath], attrs({ request: undefined })).allowed).toBe(false);
  });

  it('reports AUDIT matches without deciding', () => {
    const audit = policy('au', { action: 'AUDIT', rules: [{}] });
    expect(decide([audit], attrs())).toEqual({ allowed: true, policy: undefined, audited: ['shop/au'] });
  });

  it('ignores selector policies (the agents enforce them) and rejects bad fields by name', () => {
    expect(
      compileAuthorizationPolicy(
        { metadata: { name: 'l4', namespace: 'shop' }, spec: { selector: { matchLabels: { app: 'x' } } } },
        gw,
      ),
    ).toBeUndefined();
    const bad = () =>
      policy('bad', { action: 'ALLOW', rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/99'] } }] }] });
    expect(bad).toThrow(WaypointConfigError);
    expect(bad).toThrow(
      /AuthorizationPolicy shop\/bad: field spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]/,
    );
    expect(() => policy('k', { rules: [{ when: [{ key: 'connection.sni', values: ['x'] }] }] })).toThrow(
      /spec\.rules\[0\]\.when\[0\]\.key/,
    );
  });
});
