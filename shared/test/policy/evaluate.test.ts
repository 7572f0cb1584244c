import { parseSpiffeId, type SpiffeId } from '@hypha/shared';
import { translateObject, type Workload } from '@hypha/shared/config';
import {
  type CompiledAuthorizationPolicy,
  evaluateL4,
  explainL4,
  type L4Request,
} from '@hypha/shared/policy';
import { describe, expect, it } from 'vitest';
import { compiledPolicy, workload } from './fixtures.js';

const policy = compiledPolicy;

const echo = workload('shop', 'echo', { app: 'echo', version: 'v1' });
const other = workload('shop', 'cart', { app: 'cart' });
const elsewhere = workload('billing', 'ledger', { app: 'echo' });
const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const admin = parseSpiffeId('spiffe://cluster.local/ns/ops/sa/admin');

interface From {
  identity?: SpiffeId;
  ip?: string;
  namespace?: string;
}
function req(from: From, to: Workload = echo, port = 8080): L4Request {
  return {
    source: { identity: from.identity, ip: from.ip ?? '10.244.2.5', namespace: from.namespace },
    destination: { workload: to, port },
  };
}

const allowFrom = (source: Record<string, unknown>) =>
  policy('shop', 'p', { selector: { matchLabels: { app: 'echo' } }, rules: [{ from: [{ source }] }] });
const allowTo = (operation: Record<string, unknown>) =>
  policy('shop', 'p', { selector: { matchLabels: { app: 'echo' } }, rules: [{ to: [{ operation }] }] });
const allowWhen = (when: Record<string, unknown>[]) =>
  policy('shop', 'p', { selector: { matchLabels: { app: 'echo' } }, rules: [{ when }] });

type Case = [string, CompiledAuthorizationPolicy[], L4Request, 'allow' | 'deny'];

const cases: Case[] = [
  // no policy at all
  ['no policy → allow', [], req({ identity: web }), 'allow'],
  // principals: exact, prefix, suffix, presence
  [
    'principals exact match',
    [allowFrom({ principals: ['cluster.local/ns/shop/sa/web'] })],
    req({ identity: web }),
    'allow',
  ],
  [
    'principals exact miss',
    [allowFrom({ principals: ['cluster.local/ns/shop/sa/web'] })],
    req({ identity: admin }),
    'deny',
  ],
  [
    'principals prefix *',
    [allowFrom({ principals: ['cluster.local/ns/shop/*'] })],
    req({ identity: web }),
    'allow',
  ],
  [
    'principals prefix * miss',
    [allowFrom({ principals: ['cluster.local/ns/shop/*'] })],
    req({ identity: admin }),
    'deny',
  ],
  ['principals suffix *', [allowFrom({ principals: ['*/sa/admin'] })], req({ identity: admin }), 'allow'],
  ['principals suffix * miss', [allowFrom({ principals: ['*/sa/admin'] })], req({ identity: web }), 'deny'],
  [
    'principals presence * with identity',
    [allowFrom({ principals: ['*'] })],
    req({ identity: web }),
    'allow',
  ],
  ['principals presence * without identity', [allowFrom({ principals: ['*'] })], req({}), 'deny'],
  [
    'principals values ORed',
    [allowFrom({ principals: ['x/ns/a/sa/b', 'cluster.local/ns/ops/sa/admin'] })],
    req({ identity: admin }),
    'allow',
  ],
  [
    'notPrincipals excludes',
    [allowFrom({ notPrincipals: ['cluster.local/ns/shop/sa/web'] })],
    req({ identity: web }),
    'deny',
  ],
  [
    'notPrincipals admits others',
    [allowFrom({ notPrincipals: ['cluster.local/ns/shop/sa/web'] })],
    req({ identity: admin }),
    'allow',
  ],
  ['notPrincipals * admits plaintext only', [allowFrom({ notPrincipals: ['*'] })], req({}), 'allow'],
  [
    'notPrincipals * refuses mTLS peers',
    [allowFrom({ notPrincipals: ['*'] })],
    req({ identity: web }),
    'deny',
  ],
  // namespaces
  [
    'namespaces match (from the certificate)',
    [allowFrom({ namespaces: ['ops'] })],
    req({ identity: admin }),
    'allow',
  ],
  ['namespaces miss', [allowFrom({ namespaces: ['ops'] })], req({ identity: web }), 'deny'],
  [
    'namespaces: identity wins over a claimed namespace',
    [allowFrom({ namespaces: ['ops'] })],
    req({ identity: web, namespace: 'ops' }),
    'deny',
  ],
  [
    'namespaces without identity use the given namespace',
    [allowFrom({ namespaces: ['ops'] })],
    req({ namespace: 'ops' }),
    'allow',
  ],
  ['namespaces without identity or namespace', [allowFrom({ namespaces: ['ops'] })], req({}), 'deny'],
  ['namespaces prefix wildcard', [allowFrom({ namespaces: ['sh*'] })], req({ identity: web }), 'allow'],
  ['notNamespaces excludes', [allowFrom({ notNamespaces: ['shop'] })], req({ identity: web }), 'deny'],
  [
    'notNamespaces admits others',
    [allowFrom({ notNamespaces: ['shop'] })],
    req({ identity: admin }),
    'allow',
  ],
  // ipBlocks
  [
    'ipBlocks v4 CIDR match',
    [allowFrom({ ipBlocks: ['10.244.0.0/16'] })],
    req({ ip: '10.244.9.9' }),
    'allow',
  ],
  ['ipBlocks v4 CIDR miss', [allowFrom({ ipBlocks: ['10.244.0.0/16'] })], req({ ip: '10.245.0.1' }), 'deny'],
  ['ipBlocks bare address', [allowFrom({ ipBlocks: ['192.168.7.7'] })], req({ ip: '192.168.7.7' }), 'allow'],
  ['ipBlocks /0 matches any v4', [allowFrom({ ipBlocks: ['0.0.0.0/0'] })], req({ ip: '1.2.3.4' }), 'allow'],
  [
    'ipBlocks v4-mapped source matches a v4 block',
    [allowFrom({ ipBlocks: ['10.0.0.0/8'] })],
    req({ ip: '::ffff:10.1.2.3' }),
    'allow',
  ],
  ['ipBlocks v6 match', [allowFrom({ ipBlocks: ['fd00:10::/32'] })], req({ ip: 'fd00:10:ffff::1' }), 'allow'],
  ['ipBlocks v6 miss', [allowFrom({ ipBlocks: ['fd00:10::/32'] })], req({ ip: 'fd00:11::1' }), 'deny'],
  [
    'ipBlocks v6 block never matches v4',
    [allowFrom({ ipBlocks: ['::/0'] })],
    req({ ip: '10.0.0.1' }),
    'deny',
  ],
  [
    'notIpBlocks excludes',
    [allowFrom({ notIpBlocks: ['10.244.2.0/24'] })],
    req({ ip: '10.244.2.5' }),
    'deny',
  ],
  [
    'notIpBlocks admits others',
    [allowFrom({ notIpBlocks: ['10.244.2.0/24'] })],
    req({ ip: '10.244.3.5' }),
    'allow',
  ],
  // ports
  ['ports match (target port)', [allowTo({ ports: ['8080'] })], req({}, echo, 8080), 'allow'],
  ['ports as numbers', [allowTo({ ports: [9090, 8080] })], req({}, echo, 8080), 'allow'],
  ['ports miss', [allowTo({ ports: ['9090'] })], req({}, echo, 8080), 'deny'],
  ['notPorts excludes', [allowTo({ notPorts: ['8080'] })], req({}, echo, 8080), 'deny'],
  ['notPorts admits others', [allowTo({ notPorts: ['8080'] })], req({}, echo, 9000), 'allow'],
  // fields ANDed, entries and rules ORed
  [
    'fields ANDed: principal ok, port wrong',
    [
      policy('shop', 'p', {
        rules: [{ from: [{ source: { principals: ['*'] } }], to: [{ operation: { ports: ['9'] } }] }],
      }),
    ],
    req({ identity: web }),
    'deny',
  ],
  [
    'fields ANDed within a source: principal ok, ipBlock wrong',
    [allowFrom({ principals: ['*'], ipBlocks: ['192.168.0.0/16'] })],
    req({ identity: web }),
    'deny',
  ],
  [
    'from entries ORed',
    [
      policy('shop', 'p', {
        rules: [{ from: [{ source: { namespaces: ['x'] } }, { source: { namespaces: ['shop'] } }] }],
      }),
    ],
    req({ identity: web }),
    'allow',
  ],
  [
    'rules ORed',
    [
      policy('shop', 'p', {
        rules: [{ to: [{ operation: { ports: ['1'] } }] }, { from: [{ source: { principals: ['*'] } }] }],
      }),
    ],
    req({ identity: web }),
    'allow',
  ],
  // rule-less policies (Istio semantics)
  [
    'ALLOW without rules matches nothing → deny (allow-nothing)',
    [policy('shop', 'p', {})],
    req({ identity: web }),
    'deny',
  ],
  ['ALLOW with rules: [] also denies', [policy('shop', 'p', { rules: [] })], req({ identity: web }), 'deny'],
  ['ALLOW rules: [{}] matches everything', [policy('shop', 'p', { rules: [{}] })], req({}), 'allow'],
  [
    'DENY without rules matches nothing → allow',
    [policy('shop', 'p', { action: 'DENY' })],
    req({ identity: web }),
    'allow',
  ],
  [
    'DENY rules: [{}] denies everything',
    [policy('shop', 'p', { action: 'DENY', rules: [{}] })],
    req({ identity: web }),
    'deny',
  ],
  // precedence
  [
    'DENY beats a matching ALLOW',
    [
      policy('shop', 'allow-all', { rules: [{}] }),
      policy('shop', 'deny-web', {
        action: 'DENY',
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }],
      }),
    ],
    req({ identity: web }),
    'deny',
  ],
  [
    'non-matching DENY falls through to ALLOW',
    [
      policy('shop', 'allow-all', { rules: [{}] }),
      policy('shop', 'deny-web', {
        action: 'DENY',
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }],
      }),
    ],
    req({ identity: admin }),
    'allow',
  ],
  [
    'any matching ALLOW among several',
    [
      allowFrom({ principals: ['nobody/ns/a/sa/b'] }),
      policy('shop', 'q', { rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] }),
    ],
    req({ identity: admin }),
    'allow',
  ],
  // selectors and scopes
  [
    'selector not matching the workload → policy ignored',
    [allowFrom({ principals: ['nobody/ns/a/sa/b'] })],
    req({ identity: web }, other),
    'allow',
  ],
  [
    'policy of another namespace ignored',
    [allowFrom({ principals: ['nobody/ns/a/sa/b'] })],
    req({ identity: web }, elsewhere),
    'allow',
  ],
  [
    'namespace-wide policy (no selector)',
    [policy('shop', 'ns-wide', {})],
    req({ identity: web }, other),
    'deny',
  ],
  [
    'root namespace policy applies mesh-wide',
    [
      policy('hypha-system', 'mesh', {
        action: 'DENY',
        rules: [{ from: [{ source: { notPrincipals: ['*'] } }] }],
      }),
    ],
    req({}, elsewhere),
    'deny',
  ],
  [
    'root namespace policy with a selector applies in every namespace',
    [
      policy('hypha-system', 'mesh', {
        selector: { matchLabels: { app: 'echo' } },
        action: 'DENY',
        rules: [{}],
      }),
    ],
    req({ identity: web }, elsewhere),
    'deny',
  ],
  [
    'root namespace selector not matching',
    [
      policy('hypha-system', 'mesh', {
        selector: { matchLabels: { app: 'echo' } },
        action: 'DENY',
        rules: [{}],
      }),
    ],
    req({ identity: web }, other),
    'allow',
  ],
  [
    'targetRefs (waypoint) policies are not enforced by the agent',
    [
      policy('shop', 'l7', {
        targetRefs: [{ kind: 'Service', group: '', name: 'echo' }],
        action: 'DENY',
        rules: [{}],
      }),
    ],
    req({ identity: web }),
    'allow',
  ],
  // when conditions the agent can check
  [
    'when source.ip',
    [allowWhen([{ key: 'source.ip', values: ['10.244.2.0/24'] }])],
    req({ ip: '10.244.2.5' }),
    'allow',
  ],
  [
    'when source.ip notValues',
    [allowWhen([{ key: 'source.ip', notValues: ['10.244.2.0/24'] }])],
    req({ ip: '10.244.2.5' }),
    'deny',
  ],
  [
    'when source.namespace',
    [allowWhen([{ key: 'source.namespace', values: ['ops'] }])],
    req({ identity: admin }),
    'allow',
  ],
  [
    'when source.principal',
    [allowWhen([{ key: 'source.principal', values: ['*/sa/web'] }])],
    req({ identity: admin }),
    'deny',
  ],
  [
    'when destination.port',
    [allowWhen([{ key: 'destination.port', values: ['8080'] }])],
    req({}, echo, 8080),
    'allow',
  ],
  [
    'when conditions ANDed',
    [
      allowWhen([
        { key: 'destination.port', values: ['8080'] },
        { key: 'source.namespace', values: ['ops'] },
      ]),
    ],
    req({ identity: web }, echo, 8080),
    'deny',
  ],
];

describe('evaluateL4 decision table', () => {
  it.each(cases)('%s', (_name, policies, request, expected) => {
    expect(evaluateL4(policies, request).decision).toBe(expected);
  });
});

describe('evaluateL4 reports what decided', () => {
  it('names the DENY policy and rule index', () => {
    const d = evaluateL4(
      [
        policy('shop', 'deny-admin', {
          action: 'DENY',
          rules: [{ to: [{ operation: { ports: ['1'] } }] }, { from: [{ source: { namespaces: ['ops'] } }] }],
        }),
      ],
      req({ identity: admin }),
    );
    expect(d).toMatchObject({ decision: 'deny', policy: { namespace: 'shop', name: 'deny-admin' }, rule: 1 });
    expect(d.reason).toContain('shop/deny-admin');
  });

  it('says when no ALLOW policy applies, and when none matched', () => {
    expect(evaluateL4([], req({})).reason).toMatch(/no ALLOW policy applies to shop\/echo/);
    const d = evaluateL4([allowFrom({ principals: ['nobody/ns/a/sa/b'] })], req({ identity: web }));
    expect(d.policy).toBeUndefined();
    expect(d.reason).toMatch(/ALLOW policies apply to shop\/echo \(shop\/p\) but none matched/);
  });

  it('lists matching AUDIT policies without changing the decision', () => {
    const audit = policy('shop', 'audit-ops', {
      action: 'AUDIT',
      rules: [{ from: [{ source: { namespaces: ['ops'] } }] }],
    });
    const quiet = policy('shop', 'audit-none', {
      action: 'AUDIT',
      rules: [{ from: [{ source: { namespaces: ['x'] } }] }],
    });
    const allowed = evaluateL4([audit, quiet], req({ identity: admin }));
    expect(allowed.decision).toBe('allow');
    expect(allowed.audit).toEqual([{ namespace: 'shop', name: 'audit-ops', rule: 0 }]);
    const denied = evaluateL4(
      [audit, policy('shop', 'deny', { action: 'DENY', rules: [{}] })],
      req({ identity: admin }),
    );
    expect(denied.decision).toBe('deny');
    expect(denied.audit).toEqual([{ namespace: 'shop', name: 'audit-ops', rule: 0 }]);
    expect(evaluateL4([audit], req({ identity: web })).audit).toEqual([]);
  });
});

describe('L7 attributes at the L4 agent fail closed', () => {
  const l7Allow = policy('shop', 'allow-get', {
    rules: [{ from: [{ source: { principals: ['*'] } }] }, { to: [{ operation: { methods: ['GET'] } }] }],
  });
  const l7Deny = policy('shop', 'deny-admin-path', {
    action: 'DENY',
    rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }],
  });

  it('an ALLOW policy with an L7 rule denies everything to the workload, flagged', () => {
    expect(l7Allow.failClosed).toBe(true);
    expect(l7Allow.l7Fields).toEqual(['spec.rules[1].to[0].operation.methods']);
    const d = evaluateL4([l7Allow], req({ identity: web }));
    expect(d).toMatchObject({ decision: 'deny', failClosed: true, policy: { name: 'allow-get' } });
    expect(d.reason).toMatch(/L7 attributes.*operation\.methods.*fails closed/);
  });

  it('a DENY policy with an L7 rule denies everything, even alongside a matching ALLOW', () => {
    const d = evaluateL4([policy('shop', 'allow-all', { rules: [{}] }), l7Deny], req({ identity: web }));
    expect(d).toMatchObject({ decision: 'deny', failClosed: true, policy: { name: 'deny-admin-path' } });
  });

  it.each([
    ['requestPrincipals', { rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] }],
    ['notRequestPrincipals', { rules: [{ from: [{ source: { notRequestPrincipals: ['*'] } }] }] }],
    [
      'request.auth.claims condition',
      { rules: [{ when: [{ key: 'request.auth.claims[groups]', values: ['a'] }] }] },
    ],
    ['remoteIpBlocks', { rules: [{ from: [{ source: { remoteIpBlocks: ['10.0.0.0/8'] } }] }] }],
    ['hosts', { rules: [{ to: [{ operation: { hosts: ['echo.shop'] } }] }] }],
    ['notPaths', { rules: [{ to: [{ operation: { notPaths: ['/x'] } }] }] }],
    ['request headers condition', { rules: [{ when: [{ key: 'request.headers[x-user]', values: ['a'] }] }] }],
    ['remote.ip condition', { rules: [{ when: [{ key: 'remote.ip', values: ['10.0.0.1'] }] }] }],
  ])('%s counts as L7', (_name, spec) => {
    const p = policy('shop', 'p', spec);
    expect(p.failClosed).toBe(true);
    expect(evaluateL4([p], req({ identity: web })).decision).toBe('deny');
  });

  it('an AUDIT policy with L7 rules never blocks; its L4 rules still audit', () => {
    const p = policy('shop', 'audit', {
      action: 'AUDIT',
      rules: [{ to: [{ operation: { methods: ['GET'] } }] }, { from: [{ source: { namespaces: ['ops'] } }] }],
    });
    expect(p.failClosed).toBe(false);
    expect(p.l7Fields).toHaveLength(1);
    const d = evaluateL4([p], req({ identity: admin }));
    expect(d.decision).toBe('allow');
    expect(d.audit).toEqual([{ namespace: 'shop', name: 'audit', rule: 1 }]);
  });

  it('an L7 policy that does not select the workload does not affect it', () => {
    expect(evaluateL4([l7Allow], req({ identity: web }, elsewhere)).decision).toBe('allow');
  });
});

describe('explainL4', () => {
  it('agrees with evaluateL4 and says which policy and rule decided, and why others did not match', () => {
    const policies = [
      policy('shop', 'only-ops', {
        selector: { matchLabels: { app: 'echo' } },
        rules: [{ from: [{ source: { namespaces: ['ops'] } }] }],
      }),
      policy('shop', 'ports', { rules: [{ to: [{ operation: { ports: ['9090'] } }] }] }),
      policy('billing', 'unrelated', { rules: [{}] }),
    ];
    const e = explainL4(policies, req({ identity: web }));
    expect(e.decision).toEqual(evaluateL4(policies, req({ identity: web })));
    const text = e.lines.join('\n');
    expect(text).toContain('connection from cluster.local/ns/shop/sa/web to shop/echo port 8080');
    expect(text).toContain(
      'ALLOW shop/only-ops: no rule matches (rules[0] from[0].source.namespaces [ops]: "shop")',
    );
    expect(text).toContain(
      'ALLOW shop/ports: no rule matches (rules[0] to[0].operation.ports [9090]: port 8080)',
    );
    expect(text).not.toContain('billing/unrelated');
    expect(text).toMatch(/decision: DENY: .*but none matched/);

    const ok = explainL4(policies, req({ identity: admin }));
    expect(ok.lines.join('\n')).toContain('ALLOW shop/only-ops: rules[0] matches');
    expect(ok.decision.decision).toBe('allow');
  });

  it('explains a fail-closed policy and the case where no policy applies', () => {
    const l7 = policy('shop', 'l7', { rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
    expect(explainL4([l7], req({})).lines.join('\n')).toContain(
      'ALLOW shop/l7: fails closed, L7 attributes at L4',
    );
    expect(explainL4([], req({ identity: web })).lines).toContain('  no policy applies');
  });
});

describe('AuthorizationPolicy validation', () => {
  const bad = (spec: Record<string, unknown>) => {
    const r = translateObject(
      {
        apiVersion: 'security.hypha.dev/v1',
        kind: 'AuthorizationPolicy',
        metadata: { namespace: 'shop', name: 'bad' },
        spec,
      },
      { source: 'policies.yaml' },
    );
    expect(r.status).toBe('invalid');
    return r.status === 'invalid' ? r.errors.map((e) => e.message) : [];
  };

  it.each([
    [{ rules: [{ to: [{ operation: { ports: ['70000'] } }] }] }, 'spec.rules[0].to[0].operation.ports[0]'],
    [
      { rules: [{ from: [{ source: { principals: ['cluster.local/*/sa/web'] } }] }] },
      'spec.rules[0].from[0].source.principals[0]',
    ],
    [
      { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }] }] },
      'spec.rules[0].from[0].source.ipBlocks[0]',
    ],
    [{ rules: [{ from: [{ source: {} }] }] }, 'spec.rules[0].from[0].source'],
    [{ action: 'ALLOWED' }, 'spec.action'],
    [{ action: 'CUSTOM' }, 'spec.action'],
    [
      { selector: { matchLabels: { app: 'x' } }, targetRefs: [{ kind: 'Service', name: 'x' }] },
      'spec.targetRefs',
    ],
    [{ rules: [{ when: [{ key: 'source.ip', values: ['nope'] }] }] }, 'spec.rules[0].when[0].values[0]'],
    [{ rules: [{ when: [{ key: 'request.bogus', values: ['x'] }] }] }, 'spec.rules[0].when[0].key'],
  ])('%j is rejected at %s', (spec, field) => {
    const messages = bad(spec);
    expect(
      messages.some((m) => m.includes(`policies.yaml: AuthorizationPolicy shop/bad: field ${field}:`)),
    ).toBe(true);
  });

  it('rejects an Istio apiVersion with a message naming the right one', () => {
    const r = translateObject(
      { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'x' }, spec: {} },
      { source: 'f.yaml' },
    );
    expect(r.status === 'invalid' && r.errors[0]!.message).toBe(
      'f.yaml: AuthorizationPolicy default/x: field apiVersion: "security.istio.io/v1"; AuthorizationPolicy must use "security.hypha.dev/v1"',
    );
  });
});
