// Authorization on the verified token (RequestAuthentication at the waypoint): requestPrincipals,
// notRequestPrincipals and the request.auth.* `when` keys, with the one engine. At L4 they stay
// L7-only attributes and fail closed (evaluate.test.ts, "counts as L7").
import {
  compileWaypointPolicy,
  evaluateL7,
  explainL7,
  indexL7Policies,
  type L7Attributes,
  type L7PolicySet,
  type RequestAuth,
} from '@hypha/shared/policy';
import { describe, expect, it } from 'vitest';

const gateway = { name: 'waypoint', namespace: 'shop' };
const toApi = { targetRefs: [{ kind: 'Service', name: 'api' }] };

function raw(name: string, spec: Record<string, unknown>) {
  return { metadata: { name, namespace: 'shop' }, spec };
}

function setOf(policies: ReturnType<typeof raw>[]): L7PolicySet {
  const bound = policies.map((p) => compileWaypointPolicy(p, gateway)!);
  return indexL7Policies(bound, ['shop/api']).get('shop/api')!;
}

const alice: RequestAuth = {
  principal: 'https://issuer.example/alice',
  audiences: ['shop-api', 'other'],
  presenter: 'web-client',
  claims: {
    iss: 'https://issuer.example',
    sub: 'alice',
    groups: ['admins', 'dev'],
    tier: 'gold',
    level: 3,
    org: { team: { name: 'payments' } },
  },
};
const bob: RequestAuth = {
  principal: 'https://issuer.example/bob',
  audiences: ['shop-api'],
  presenter: 'cli',
  claims: { iss: 'https://issuer.example', sub: 'bob', groups: ['dev'], org: { team: { name: 'search' } } },
};

function attrs(auth: RequestAuth | undefined, request = true): L7Attributes {
  return {
    principal: 'cluster.local/ns/shop/sa/web',
    sourceNamespace: 'shop',
    sourceIp: '10.1.2.3',
    port: 80,
    request: request ? { method: 'GET', path: '/items', host: 'api', headers: {} } : undefined,
    auth,
  };
}

describe('requestPrincipals and notRequestPrincipals read the verified token', () => {
  const allowAlice = raw('allow-alice', {
    ...toApi,
    rules: [{ from: [{ source: { requestPrincipals: ['https://issuer.example/alice'] } }] }],
  });

  it('an ALLOW on requestPrincipals admits that subject and no other, and no request without a token', () => {
    const set = setOf([allowAlice]);
    expect(evaluateL7(set, attrs(alice))).toMatchObject({
      allowed: true,
      policy: 'shop/allow-alice',
      rule: 0,
    });
    expect(evaluateL7(set, attrs(bob)).allowed).toBe(false);
    expect(evaluateL7(set, attrs(undefined)).allowed).toBe(false);
  });

  it('"*" matches any verified token, never a request without one', () => {
    const set = setOf([
      raw('any', { ...toApi, rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] }),
    ]);
    expect(evaluateL7(set, attrs(bob)).allowed).toBe(true);
    expect(evaluateL7(set, attrs(undefined)).allowed).toBe(false);
  });

  it('a DENY on notRequestPrincipals ["*"] refuses requests without a token only', () => {
    const set = setOf([
      raw('need-jwt', {
        ...toApi,
        action: 'DENY',
        rules: [{ from: [{ source: { notRequestPrincipals: ['*'] } }] }],
      }),
    ]);
    expect(evaluateL7(set, attrs(undefined))).toMatchObject({ allowed: false, policy: 'shop/need-jwt' });
    expect(evaluateL7(set, attrs(alice)).allowed).toBe(true);
  });

  it('prefix matching on principals (an issuer and any subject)', () => {
    const set = setOf([
      raw('issuer', {
        ...toApi,
        rules: [{ from: [{ source: { requestPrincipals: ['https://issuer.example/*'] } }] }],
      }),
    ]);
    expect(evaluateL7(set, attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(set, attrs({ ...alice, principal: 'https://evil.example/alice' })).allowed).toBe(false);
  });
});

describe('when on request.auth.*', () => {
  const rule = (key: string, values: string[]) =>
    setOf([raw('w', { ...toApi, rules: [{ when: [{ key, values }] }] })]);

  it('request.auth.claims[<name>] matches a string claim or any entry of a list claim', () => {
    const groups = rule('request.auth.claims[groups]', ['admins']);
    expect(evaluateL7(groups, attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(groups, attrs(bob)).allowed).toBe(false);
    expect(evaluateL7(groups, attrs(undefined)).allowed).toBe(false);
    expect(evaluateL7(rule('request.auth.claims[tier]', ['gold']), attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(rule('request.auth.claims[level]', ['3']), attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(rule('request.auth.claims[tier]', ['gold']), attrs(bob)).allowed).toBe(false);
  });

  it('nested claims: request.auth.claims[a][b][c]', () => {
    const set = rule('request.auth.claims[org][team][name]', ['payments']);
    expect(evaluateL7(set, attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(set, attrs(bob)).allowed).toBe(false);
    // A path through a non-object is absent, not an error.
    expect(evaluateL7(rule('request.auth.claims[tier][x]', ['gold']), attrs(alice)).allowed).toBe(false);
  });

  it('request.auth.audiences, request.auth.presenter and request.auth.principal', () => {
    expect(evaluateL7(rule('request.auth.audiences', ['other']), attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(rule('request.auth.audiences', ['other']), attrs(bob)).allowed).toBe(false);
    expect(evaluateL7(rule('request.auth.presenter', ['web-*']), attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(rule('request.auth.presenter', ['web-*']), attrs(bob)).allowed).toBe(false);
    expect(evaluateL7(rule('request.auth.principal', ['*/bob']), attrs(bob)).allowed).toBe(true);
    expect(evaluateL7(rule('request.auth.principal', ['*/bob']), attrs(alice)).allowed).toBe(false);
  });

  it('notValues on a claim: a DENY for one group', () => {
    const set = setOf([
      raw('deny-dev-only', {
        ...toApi,
        action: 'DENY',
        rules: [{ when: [{ key: 'request.auth.claims[groups]', notValues: ['admins'] }] }],
      }),
    ]);
    expect(evaluateL7(set, attrs(alice)).allowed).toBe(true);
    expect(evaluateL7(set, attrs(bob)).allowed).toBe(false);
  });

  it('plain TCP: an ALLOW on a claim does not match, a DENY on a claim does (missing L7 data never widens access)', () => {
    const allow = rule('request.auth.claims[groups]', ['admins']);
    expect(evaluateL7(allow, attrs(undefined, false)).allowed).toBe(false);
    const deny = setOf([
      raw('d', {
        ...toApi,
        action: 'DENY',
        rules: [{ when: [{ key: 'request.auth.claims[groups]', values: ['x'] }] }],
      }),
    ]);
    expect(evaluateL7(deny, attrs(undefined, false)).allowed).toBe(false);
  });

  it('explainL7 names the token values that did not match', () => {
    const set = setOf([
      raw('admins', {
        ...toApi,
        rules: [
          { from: [{ source: { requestPrincipals: ['https://issuer.example/alice'] } }] },
          { when: [{ key: 'request.auth.claims[groups]', values: ['admins'] }] },
        ],
      }),
    ]);
    const bobEx = explainL7(set, attrs(bob));
    expect(bobEx.decision.allowed).toBe(false);
    expect(bobEx.lines.join('\n')).toContain(
      'rules[0] from[0].source.requestPrincipals [https://issuer.example/alice]: "https://issuer.example/bob"',
    );
    expect(bobEx.lines.join('\n')).toContain(
      'rules[1] when[0] request.auth.claims[groups] not in values ("dev")',
    );
    const none = explainL7(set, attrs(undefined));
    expect(none.lines.join('\n')).toContain('no request principal (no verified token)');
    expect(none.lines.join('\n')).toContain('(no verified token)');
    expect(explainL7(set, attrs(alice)).lines).toContain('  ALLOW shop/admins: rules[0] matches');
  });
});
