// The waypoint's (L7) decision with the shared engine: the same compiled policy and matcher as the
// agent's L4 decision, plus HTTP attributes, targetRefs binding and the plain-TCP rules.
import { parseSpiffeId } from '@hypha/shared';
import { ConfigError, translateObject } from '@hypha/shared/config';
import {
  compileWaypointPolicy,
  dependsOnRequest,
  evaluateL4,
  evaluateL7,
  explainL7,
  indexL7Policies,
  type L7Attributes,
  type L7PolicySet,
} from '@hypha/shared/policy';
import { describe, expect, it } from 'vitest';
import { compiledPolicy, workload } from './fixtures.js';

const gateway = { name: 'waypoint', namespace: 'shop' };
const toApi = { targetRefs: [{ kind: 'Service', name: 'api' }] };

function raw(name: string, spec: Record<string, unknown>) {
  return { metadata: { name, namespace: 'shop' }, spec };
}

/** The policy set the waypoint would use for `service` (default shop/api). */
function setOf(policies: ReturnType<typeof raw>[], service = 'shop/api'): L7PolicySet {
  const bound = policies.map((p) => compileWaypointPolicy(p, gateway)!);
  return indexL7Policies(bound, [service]).get(service)!;
}

const GET_ITEMS = {
  method: 'GET',
  path: '/api/items',
  host: 'api.shop.svc.cluster.local:80',
  headers: {},
} as const;

/** A request from shop/web; `request` fields override the GET of /api/items. */
function attrs(
  over: Partial<L7Attributes> = {},
  request: Partial<NonNullable<L7Attributes['request']>> = {},
): L7Attributes {
  const source = { principal: 'cluster.local/ns/shop/sa/web', sourceNamespace: 'shop', sourceIp: '10.1.2.3' };
  return { ...source, port: 80, request: { ...GET_ITEMS, ...request }, ...over };
}

const tcp = (over: Partial<L7Attributes> = {}) => attrs({ request: undefined, ...over });

describe('evaluateL7: decision order, and which policy and rule decided', () => {
  const denyAdmin = raw('deny-admin', {
    ...toApi,
    action: 'DENY',
    rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
  });
  const allowReads = raw('allow-reads', {
    ...toApi,
    rules: [
      { to: [{ operation: { methods: ['POST'] } }], from: [{ source: { namespaces: ['ops'] } }] },
      { to: [{ operation: { methods: ['GET', 'HEAD'] } }] },
    ],
  });

  it('a DENY match wins over an ALLOW match, and names its policy and rule', () => {
    const d = evaluateL7(setOf([allowReads, denyAdmin]), attrs({}, { path: '/admin/users' }));
    expect(d).toMatchObject({ allowed: false, policy: 'shop/deny-admin', rule: 0 });
  });

  it('an ALLOW match names the rule that matched (not the first rule)', () => {
    const d = evaluateL7(setOf([allowReads, denyAdmin]), attrs());
    expect(d).toMatchObject({ allowed: true, policy: 'shop/allow-reads', rule: 1 });
  });

  it('ALLOW policies that apply but do not match deny; with no ALLOW policy, allow', () => {
    expect(evaluateL7(setOf([allowReads]), attrs({}, { method: 'PUT' }))).toMatchObject({
      allowed: false,
      policy: undefined,
    });
    expect(evaluateL7(setOf([denyAdmin]), attrs({}, { method: 'PUT' }))).toMatchObject({
      allowed: true,
      policy: undefined,
    });
  });

  it('AUDIT matches are reported and never change the answer', () => {
    const audit = raw('audit-writes', {
      ...toApi,
      action: 'AUDIT',
      rules: [{ to: [{ operation: { methods: ['POST'] } }] }],
    });
    const set = setOf([audit, allowReads]);
    expect(evaluateL7(set, attrs({}, { method: 'POST' }))).toEqual({
      allowed: false,
      policy: undefined,
      rule: undefined,
      audited: ['shop/audit-writes'],
    });
    expect(evaluateL7(set, attrs()).audited).toEqual([]);
  });

  it('returns the same shared decision object for the same outcome (no allocation per request)', () => {
    const set = setOf([allowReads, denyAdmin]);
    const a = attrs();
    expect(evaluateL7(set, a)).toBe(evaluateL7(set, attrs({ sourceIp: '10.9.9.9' })));
    expect(Object.isFrozen(evaluateL7(set, a))).toBe(true);
  });
});

describe('evaluateL7: request attributes', () => {
  it('matches hosts case-insensitively, with or without the port', () => {
    const set = setOf([
      raw('h', { ...toApi, rules: [{ to: [{ operation: { hosts: ['API.shop.svc.cluster.local'] } }] }] }),
    ]);
    expect(evaluateL7(set, attrs()).allowed).toBe(true);
    expect(evaluateL7(set, attrs({}, { host: 'api.SHOP.svc.cluster.local' })).allowed).toBe(true);
    expect(evaluateL7(set, attrs({}, { host: 'api.shop:80' })).allowed).toBe(false);
  });

  it('reads request.headers[...] case-insensitively by name; repeated headers join with ","', () => {
    const set = setOf([
      raw('hdr', {
        ...toApi,
        rules: [{ when: [{ key: 'request.headers[X-User]', values: ['alice', 'bob,carol'] }] }],
      }),
    ]);
    expect(evaluateL7(set, attrs({}, { headers: { 'x-user': 'alice' } })).allowed).toBe(true);
    expect(evaluateL7(set, attrs({}, { headers: { 'x-user': ['bob', 'carol'] } })).allowed).toBe(true);
    expect(evaluateL7(set, attrs({}, { headers: { 'x-user': 'mallory' } })).allowed).toBe(false);
    expect(evaluateL7(set, attrs()).allowed).toBe(false);
  });

  it('an absent header is not in notValues: a DENY on "x-confirm not yes" catches requests without it', () => {
    const set = setOf([
      raw('confirm', {
        ...toApi,
        action: 'DENY',
        rules: [
          {
            to: [{ operation: { methods: ['DELETE'] } }],
            when: [{ key: 'request.headers[x-confirm]', notValues: ['yes'] }],
          },
        ],
      }),
    ]);
    expect(evaluateL7(set, attrs({}, { method: 'DELETE' })).allowed).toBe(false);
    expect(evaluateL7(set, attrs({}, { method: 'DELETE', headers: { 'x-confirm': 'no' } })).allowed).toBe(
      false,
    );
    expect(evaluateL7(set, attrs({}, { method: 'DELETE', headers: { 'x-confirm': 'yes' } })).allowed).toBe(
      true,
    );
    expect(evaluateL7(set, attrs()).allowed).toBe(true);
  });

  it('remoteIpBlocks and remote.ip read the source address', () => {
    const set = setOf([
      raw('r', {
        ...toApi,
        rules: [
          {
            from: [{ source: { remoteIpBlocks: ['10.1.0.0/16'] } }],
            when: [{ key: 'remote.ip', notValues: ['10.1.9.0/24'] }],
          },
        ],
      }),
    ]);
    expect(evaluateL7(set, attrs()).allowed).toBe(true);
    expect(evaluateL7(set, attrs({ sourceIp: '10.1.9.1' })).allowed).toBe(false);
    expect(evaluateL7(set, attrs({ sourceIp: '10.2.0.1' })).allowed).toBe(false);
    expect(evaluateL7(set, attrs({ sourceIp: '::ffff:10.1.2.3' })).allowed).toBe(true);
  });
});

describe('evaluateL7: plain TCP (no request) never widens access', () => {
  const allowGet = raw('a', { ...toApi, rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
  const denyAdminOn8080 = raw('d', {
    ...toApi,
    action: 'DENY',
    rules: [{ to: [{ operation: { ports: ['8080'], paths: ['/admin*'] } }] }],
  });

  it('an ALLOW rule that needs the request does not match', () => {
    expect(evaluateL7(setOf([allowGet]), tcp()).allowed).toBe(false);
  });

  it('a DENY rule matches on its L4 part alone (here: the port)', () => {
    expect(evaluateL7(setOf([denyAdminOn8080]), tcp({ port: 8080 }))).toMatchObject({
      allowed: false,
      policy: 'shop/d',
    });
    expect(evaluateL7(setOf([denyAdminOn8080]), tcp({ port: 80 })).allowed).toBe(true);
  });

  it('a header condition: no match for ALLOW, match for DENY', () => {
    const when = [{ key: 'request.headers[x-user]', values: ['alice'] }];
    expect(evaluateL7(setOf([raw('a', { ...toApi, rules: [{ when }] })]), tcp()).allowed).toBe(false);
    expect(
      evaluateL7(setOf([raw('d', { ...toApi, action: 'DENY', rules: [{ when }] })]), tcp()).allowed,
    ).toBe(false);
  });

  it('dependsOnRequest says whether any rule reads the HTTP request', () => {
    expect(dependsOnRequest(setOf([allowGet]))).toBe(true);
    expect(
      dependsOnRequest(
        setOf([raw('p', { ...toApi, rules: [{ from: [{ source: { principals: ['*'] } }] }] })]),
      ),
    ).toBe(false);
    expect(dependsOnRequest(setOf([]))).toBe(false);
  });
});

describe('binding policies to a waypoint (targetRefs)', () => {
  const onGateway = raw('gw', {
    targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }],
    action: 'DENY',
    rules: [{}],
  });
  const onOtherGateway = raw('other', {
    targetRefs: [{ kind: 'Gateway', name: 'elsewhere' }],
    action: 'DENY',
    rules: [{}],
  });
  const onApi = raw('api', { ...toApi, action: 'DENY', rules: [{}] });

  it('a Gateway policy applies to every service, a Service policy to that service only', () => {
    const bound = [onGateway, onOtherGateway, onApi].map((p) => compileWaypointPolicy(p, gateway)!);
    const sets = indexL7Policies(bound, ['shop/api', 'shop/web']);
    expect(sets.get('shop/api')!.deny.map((p) => p.key)).toEqual(['shop/gw', 'shop/api']);
    expect(sets.get('shop/web')!.deny.map((p) => p.key)).toEqual(['shop/gw']);
  });

  it('selector policies are the agents: not bound to the waypoint', () => {
    expect(
      compileWaypointPolicy(raw('l4', { selector: { matchLabels: { app: 'x' } } }), gateway),
    ).toBeUndefined();
  });

  it('accepts the config model record as well as the Kubernetes object, with the same result', () => {
    const r = translateObject(
      { apiVersion: 'security.hypha.dev/v1', kind: 'AuthorizationPolicy', ...onApi },
      { source: 'test' },
    );
    if (r.status !== 'ok') throw new Error('bad test policy');
    const fromRecord = compileWaypointPolicy(r.object, gateway)!;
    expect(fromRecord).toMatchObject({
      key: 'shop/api',
      action: 'DENY',
      gateway: false,
      services: ['shop/api'],
    });
  });

  it.each([
    [
      'another namespace',
      raw('x', { targetRefs: [{ kind: 'Service', name: 'api', namespace: 'other' }] }),
      'spec.targetRefs[0].namespace',
    ],
    [
      'an unsupported kind',
      raw('x', { targetRefs: [{ kind: 'Deployment', name: 'api' }] }),
      'spec.targetRefs[0].kind',
    ],
    [
      'a when key the waypoint cannot read',
      raw('x', { ...toApi, rules: [{}, { when: [{ key: 'connection.sni', values: ['x'] }] }] }),
      'spec.rules[1].when[0].key',
    ],
    [
      'a bad CIDR (the shared schema)',
      raw('x', { ...toApi, rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/99'] } }] }] }),
      'spec.rules[0].from[0].source.ipBlocks[0]',
    ],
  ])('rejects %s by policy and field', (_what, policy, field) => {
    let caught: unknown;
    try {
      compileWaypointPolicy(policy, gateway);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect(caught).toMatchObject({ code: 'INVALID_OBJECT', namespace: 'shop', objectName: 'x', field });
  });
});

describe('one engine: L4 and L7 agree on the attributes both can check', () => {
  const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
  const api = workload('shop', 'api-0', { app: 'api' });
  const rules = [
    {
      from: [{ source: { principals: ['*/sa/web'], ipBlocks: ['10.1.0.0/16', 'fd00:1::/64'] } }],
      to: [{ operation: { notPorts: ['9090'] } }],
      when: [{ key: 'source.namespace', values: ['shop'] }],
    },
  ];
  const l4 = compiledPolicy('shop', 'p', { selector: { matchLabels: { app: 'api' } }, rules });
  const l7 = setOf([raw('p', { ...toApi, rules })]);

  it.each([
    ['10.1.2.3', 80, true],
    ['fd00:1::7', 80, true],
    ['::ffff:10.1.2.3', 80, true],
    ['10.2.0.1', 80, false],
    ['10.1.2.3', 9090, false],
  ])('from %s to port %d', (ip, port, allowed) => {
    const atL4 = evaluateL4([l4], { source: { identity: web, ip }, destination: { workload: api, port } });
    const atL7 = evaluateL7(l7, attrs({ sourceIp: ip, port }));
    expect(atL4.decision === 'allow').toBe(allowed);
    expect(atL7.allowed).toBe(allowed);
    expect(evaluateL7(l7, tcp({ sourceIp: ip, port })).allowed).toBe(allowed);
  });

  it('a plaintext peer matches neither principals nor namespaces at either layer', () => {
    const atL4 = evaluateL4([l4], {
      source: { identity: undefined, ip: '10.1.2.3' },
      destination: { workload: api, port: 80 },
    });
    expect(atL4.decision).toBe('deny');
    expect(evaluateL7(l7, attrs({ principal: undefined, sourceNamespace: undefined })).allowed).toBe(false);
  });
});

describe('explainL7', () => {
  it('says per policy which rule matched or why none did, then the decision', () => {
    const set = setOf([
      raw('deny-admin', {
        ...toApi,
        action: 'DENY',
        rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
      }),
      raw('allow-ops', { ...toApi, rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] }),
    ]);
    const e = explainL7(set, attrs({}, { method: 'POST', path: '/admin/x' }));
    expect(e.lines).toEqual([
      '  DENY shop/deny-admin: rules[0] matches',
      '  ALLOW shop/allow-ops: no rule matches (rules[0] from[0].source.namespaces [ops]: "shop")',
      'decision: DENY: denied by DENY policy shop/deny-admin rules[0]',
    ]);
    const ok = explainL7(set, attrs({}, { path: '/public' }));
    expect(ok.reason).toBe('denied: ALLOW policies apply (shop/allow-ops) but none matched');
    expect(ok.lines[0]).toBe(
      '  DENY shop/deny-admin: no rule matches (rules[0] to[0].operation.paths [/admin/*]: "/public")',
    );
  });

  it('names the missing request for plain TCP', () => {
    const set = setOf([raw('a', { ...toApi, rules: [{ to: [{ operation: { methods: ['GET'] } }] }] })]);
    expect(explainL7(set, tcp()).lines[0]).toBe(
      '  ALLOW shop/a: no rule matches (rules[0] to[0].operation.methods: no HTTP request (plain TCP))',
    );
  });
});
