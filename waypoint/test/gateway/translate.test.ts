// The ingress gateway's translation: Gateway (class hypha) listeners and TLS Secrets from the config
// model, routes attached per listener (sectionName, port, allowedRoutes, hostname intersection),
// what the L7 engine is given, and the Gateway status computed from it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConfigObject, createConfigState, translateObject } from '@hypha/shared/config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSnapshot } from '../../src/config.js';
import { buildGatewayPlan, LISTENER_VIP, listenerServiceName } from '../../src/gateway/input.js';
import { findListenerForSni } from '../../src/gateway/listeners.js';
import { findStreamRoute, intersectHostnames, pickStreamBackend } from '../../src/gateway/routes.js';
import { computeGatewayStatus } from '../../src/gateway/status.js';
import { findRoute } from '../../src/routing/match.js';

const dir = mkdtempSync(join(tmpdir(), 'hypha-gw-unit-'));
let pem: { cert: string; key: string; otherKey: string };

beforeAll(() => {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  execFileSync(
    'openssl',
    ['req', '-x509', ...ec, '-keyout', 'k.pem', '-out', 'c.pem', '-days', '1', '-subj', '/CN=a'],
    {
      cwd: dir,
      stdio: 'ignore',
    },
  );
  execFileSync(
    'openssl',
    ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', 'o.pem'],
    {
      cwd: dir,
      stdio: 'ignore',
    },
  );
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  pem = { cert: read('c.pem'), key: read('k.pem'), otherKey: read('o.pem') };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const b64 = (s: string) => Buffer.from(s).toString('base64');
const secret = (name: string, cert: string, key: string, namespace = 'shop', type = 'kubernetes.io/tls') => ({
  apiVersion: 'v1',
  kind: 'Secret',
  type,
  metadata: { name, namespace },
  data: { 'tls.crt': b64(cert), 'tls.key': b64(key) },
});

function stateOf(objects: Record<string, unknown>[]) {
  const state = createConfigState({});
  const translated: ConfigObject[] = [];
  for (const o of objects) {
    const r = translateObject(o, { source: 'test' });
    if (r.status === 'ok') translated.push(r.object);
    else if (r.status === 'invalid') throw new Error(r.errors.map((e) => e.message).join('; '));
  }
  state.applySnapshot(translated);
  return state;
}

const gateway = (listeners: Record<string, unknown>[]) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name: 'gw', namespace: 'shop' },
  spec: { gatewayClassName: 'hypha', listeners },
});
const https = (name: string, hostname: string | undefined, secretName: string, extra = {}) => ({
  name,
  port: 443,
  protocol: 'HTTPS',
  ...(hostname ? { hostname } : {}),
  tls: { certificateRefs: [{ name: secretName, ...extra }] },
});
const service = (name: string, vip: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop', labels },
  spec: { clusterIP: vip, selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
});
const pod = (name: string, ip: string, labels: Record<string, string>, sa = name) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels },
  spec: { nodeName: 'n1', serviceAccountName: sa, containers: [] },
  status: { podIP: ip },
});
const ns = {
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
};
const httpRoute = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'shop' },
  spec,
});
const REF = { name: 'gw', namespace: 'shop' };

describe('config model', () => {
  it('keeps kubernetes.io/tls Secrets (PEM decoded), ignores other Secrets, and names a bad one without its value', () => {
    const ok = translateObject(secret('a', pem.cert, pem.key), { source: 't' });
    expect(ok.status).toBe('ok');
    expect(ok.status === 'ok' && ok.object).toMatchObject({
      kind: 'Secret',
      certificate: pem.cert,
      privateKey: pem.key,
    });
    expect(translateObject(secret('b', pem.cert, pem.key, 'shop', 'Opaque'), { source: 't' }).status).toBe(
      'ignored',
    );
    const bad = translateObject(
      { ...secret('c', pem.cert, pem.key), data: { 'tls.crt': b64(pem.cert), 'tls.key': b64('not a key') } },
      { source: 't' },
    );
    expect(bad.status).toBe('invalid');
    const message = bad.status === 'invalid' ? bad.errors[0]!.message : '';
    expect(message).toContain('data["tls.key"]');
    expect(message).not.toContain('not a key');
  });

  it('reads Gateways of class hypha as ingress gateways that bind no traffic (no waypoint)', () => {
    const state = stateOf([ns, gateway([{ name: 'http', port: 80, protocol: 'HTTP' }])]);
    expect(state.findGateway('shop', 'gw')?.gatewayClassName).toBe('hypha');
    expect(state.findWaypoint('shop', 'gw')).toBeUndefined();
    expect(
      translateObject({ ...gateway([]), spec: { gatewayClassName: 'istio', listeners: [] } }, { source: 't' })
        .status,
    ).toBe('ignored');
  });
});

describe('listeners', () => {
  it('serves HTTPS hostnames by SNI; a missing, foreign or broken certificate keeps only its listener out', () => {
    const state = stateOf([
      ns,
      secret('a-cert', pem.cert, pem.key),
      secret('broken', pem.cert, pem.otherKey),
      secret('elsewhere', pem.cert, pem.key, 'other'),
      gateway([
        https('a', 'a.example', 'a-cert'),
        https('wild', '*.example', 'a-cert'),
        https('missing', 'm.other', 'nope'),
        https('foreign', 'f.example', 'elsewhere', { namespace: 'other' }),
        https('broken', 'b.example', 'broken'),
        {
          name: 'dup',
          port: 443,
          protocol: 'HTTPS',
          hostname: 'a.example',
          tls: { certificateRefs: [{ name: 'a-cert' }] },
        },
        { name: 'clash', port: 443, protocol: 'HTTP' },
        { name: 'udp', port: 53, protocol: 'UDP' },
      ]),
    ]);
    const plan = buildGatewayPlan(state, REF)!;
    const byName = Object.fromEntries(plan.compiled.listeners.map((l) => [l.name, l]));
    const cond = (l: string, t: string) => byName[l]!.conditions.find((c) => c.type === t);
    expect(byName.a!.serving && byName.wild!.serving).toBe(true);
    expect(cond('missing', 'ResolvedRefs')).toMatchObject({
      status: 'False',
      reason: 'InvalidCertificateRef',
    });
    expect(cond('missing', 'ResolvedRefs')?.message).toContain('Secret shop/nope not found');
    expect(cond('foreign', 'ResolvedRefs')).toMatchObject({ status: 'False', reason: 'RefNotPermitted' });
    expect(cond('broken', 'ResolvedRefs')?.message).toMatch(/certificate and key do not load/);
    expect(cond('broken', 'ResolvedRefs')?.message).not.toContain('PRIVATE KEY');
    expect(cond('dup', 'Conflicted')).toMatchObject({ status: 'True', reason: 'HostnameConflict' });
    expect(cond('clash', 'Conflicted')).toMatchObject({ status: 'True', reason: 'ProtocolConflict' });
    expect(cond('udp', 'Accepted')).toMatchObject({ status: 'False', reason: 'UnsupportedProtocol' });

    const port = plan.compiled.ports.get(443)!;
    expect(findListenerForSni(port, 'a.example')?.name).toBe('a');
    expect(findListenerForSni(port, 'x.example')?.name).toBe('wild');
    expect(findListenerForSni(port, 'm.other')).toBeUndefined();
    expect(findListenerForSni(port, undefined)).toBeUndefined();
  });

  it('picks up a changed Secret: the next plan carries the new certificate', () => {
    const objects = [ns, gateway([https('a', 'a.example', 'a-cert')])];
    const before = buildGatewayPlan(stateOf(objects), REF)!;
    expect(before.compiled.listeners[0]!.serving).toBe(false);
    const after = buildGatewayPlan(stateOf([...objects, secret('a-cert', pem.cert, pem.key)]), REF)!;
    expect(after.compiled.listeners[0]!.certificate?.secret).toBe('shop/a-cert');
  });
});

describe('routes', () => {
  it('intersects route and listener hostnames as Gateway API says', () => {
    expect(intersectHostnames(undefined, [])).toBeUndefined();
    expect(intersectHostnames('a.example', [])).toEqual(['a.example']);
    expect(intersectHostnames('*.example', ['a.example', 'b.other'])).toEqual(['a.example']);
    expect(intersectHostnames('a.example', ['*.example'])).toEqual(['a.example']);
    expect(intersectHostnames('a.example', ['b.example'])).toEqual([]);
  });

  it('gives the engine each attached route once per listener port, narrowed to its hostnames; the engine routes it with its matches and split', () => {
    const state = stateOf([
      ns,
      secret('a-cert', pem.cert, pem.key),
      gateway([
        { name: 'http', port: 80, protocol: 'HTTP' },
        https('a', 'a.example', 'a-cert'),
        https('b', 'b.example', 'a-cert'),
      ]),
      service('web-v1', '10.0.0.1'),
      service('web-v2', '10.0.0.2'),
      pod('web-v1-x', '10.1.0.1', { app: 'web-v1' }),
      httpRoute('split', {
        parentRefs: [{ name: 'gw', sectionName: 'a' }],
        rules: [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/api' } }],
            backendRefs: [
              { name: 'web-v1', port: 80, weight: 90 },
              { name: 'web-v2', port: 80, weight: 10 },
            ],
          },
        ],
      }),
      httpRoute('everywhere', {
        parentRefs: [{ name: 'gw' }],
        rules: [{ backendRefs: [{ name: 'web-v1', port: 80 }] }],
      }),
      httpRoute('other-gateway', {
        parentRefs: [{ name: 'not-us' }],
        rules: [{ backendRefs: [{ name: 'web-v2', port: 80 }] }],
      }),
      httpRoute('no-listener', {
        parentRefs: [{ name: 'gw', sectionName: 'b' }],
        hostnames: ['c.example'],
        rules: [{}],
      }),
    ]);
    const plan = buildGatewayPlan(state, REF)!;
    expect(plan.attachedRoutes.get('a')).toBe(2);
    expect(plan.attachedRoutes.get('b')).toBe(1);
    expect(plan.attachedRoutes.get('http')).toBe(1);
    const { snapshot, errors } = buildSnapshot(plan.input);
    expect(errors).toEqual([]);
    const listener443 = `shop/${listenerServiceName(REF, 443)}`;
    const req = (host: string, path: string, port = 443) => ({
      method: 'GET',
      path,
      query: '',
      host,
      headers: {},
      port,
    });
    const api = findRoute(snapshot.routes, listener443, req('a.example', '/api/x'));
    expect(api?.routeName).toBe('split');
    expect(api?.action.backends.map((b) => [b.service, b.weight])).toEqual([
      ['shop/web-v1', 90],
      ['shop/web-v2', 10],
    ]);
    // Attached to listener a only: b.example does not get it.
    expect(findRoute(snapshot.routes, listener443, req('b.example', '/api/x'))?.routeName).toBe('everywhere');
    expect(findRoute(snapshot.routes, listener443, req('c.example', '/'))).toBeUndefined();
    expect(
      findRoute(snapshot.routes, `shop/${listenerServiceName(REF, 80)}`, req('any.host', '/', 80))?.routeName,
    ).toBe('everywhere');
    expect(snapshot.byAddress.get(`${LISTENER_VIP}:443`)?.service.listener).toBe(true);
    expect([...snapshot.services.keys()]).not.toContain('shop/not-us');
  });

  it('attaches GRPCRoutes the same way: the engine matches their methods on the listener', () => {
    const state = stateOf([
      ns,
      gateway([{ name: 'grpc', port: 9090, protocol: 'HTTP', hostname: 'api.example' }]),
      service('greeter', '10.0.0.7'),
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'GRPCRoute',
        metadata: { name: 'greeter', namespace: 'shop' },
        spec: {
          parentRefs: [{ name: 'gw' }],
          rules: [
            {
              matches: [{ method: { service: 'helloworld.Greeter', method: 'SayHello' } }],
              backendRefs: [{ name: 'greeter', port: 80 }],
            },
          ],
        },
      },
    ]);
    const plan = buildGatewayPlan(state, REF)!;
    expect(plan.attachedRoutes.get('grpc')).toBe(1);
    const { snapshot, errors } = buildSnapshot(plan.input);
    expect(errors).toEqual([]);
    const key = `shop/${listenerServiceName(REF, 9090)}`;
    const req = (host: string, path: string) => ({
      method: 'POST',
      path,
      query: '',
      host,
      headers: {},
      port: 9090,
    });
    expect(findRoute(snapshot.routes, key, req('api.example', '/helloworld.Greeter/SayHello'))?.kind).toBe(
      'GRPCRoute',
    );
    expect(findRoute(snapshot.routes, key, req('api.example', '/helloworld.Greeter/Other'))).toBeUndefined();
    expect(
      findRoute(snapshot.routes, key, req('other.example', '/helloworld.Greeter/SayHello')),
    ).toBeUndefined();
  });

  it('reaches a waypoint-bound Service through its waypoint pods, tunnelled to the Service VIP', () => {
    const state = stateOf([
      ns,
      gateway([{ name: 'http', port: 80, protocol: 'HTTP' }]),
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'Gateway',
        metadata: { name: 'waypoint', namespace: 'shop' },
        spec: {
          gatewayClassName: 'hypha-waypoint',
          listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
        },
      },
      pod('waypoint-x', '10.1.0.9', { 'gateway.networking.k8s.io/gateway-name': 'waypoint' }, 'waypoint'),
      service('reviews', '10.0.0.5', { 'hypha.dev/use-waypoint': 'waypoint' }),
      pod('reviews-x', '10.1.0.5', { app: 'reviews' }),
      httpRoute('r', {
        parentRefs: [{ name: 'gw' }],
        rules: [{ backendRefs: [{ name: 'reviews', port: 80 }] }],
      }),
    ]);
    const plan = buildGatewayPlan(state, REF)!;
    const reviews = plan.input.services.find((s) => s.name === 'reviews')!;
    expect(reviews.endpoints).toEqual([
      expect.objectContaining({ ip: '10.1.0.9', authorityHost: '10.0.0.5', targetPorts: { '80': 80 } }),
    ]);
    expect(reviews.endpoints[0]!.workload?.serviceAccount).toBe('waypoint');
  });

  it('TLSRoutes by SNI (exact over wildcard over none) and TCPRoutes by port, weighted', () => {
    const state = stateOf([
      ns,
      gateway([
        { name: 'tls', port: 8443, protocol: 'TLS', tls: { mode: 'Passthrough' } },
        { name: 'tcp', port: 5432, protocol: 'TCP' },
      ]),
      ...['db', 'exact', 'wild', 'any'].map((n, i) => service(n, `10.0.0.${20 + i}`)),
      ...[
        ['exact', ['p.example']],
        ['wild', ['*.example']],
        ['any', undefined],
      ].map(([name, hostnames]) => ({
        apiVersion: 'gateway.networking.k8s.io/v1alpha2',
        kind: 'TLSRoute',
        metadata: { name, namespace: 'shop' },
        spec: {
          parentRefs: [{ name: 'gw' }],
          ...(hostnames ? { hostnames } : {}),
          rules: [{ backendRefs: [{ name, port: 80 }] }],
        },
      })),
      {
        apiVersion: 'gateway.networking.k8s.io/v1alpha2',
        kind: 'TCPRoute',
        metadata: { name: 'db', namespace: 'shop' },
        spec: {
          parentRefs: [{ name: 'gw', sectionName: 'tcp' }],
          rules: [{ backendRefs: [{ name: 'db', port: 80, weight: 3 }] }],
        },
      },
    ]);
    const plan = buildGatewayPlan(state, REF)!;
    expect(findStreamRoute(plan.tlsRoutes, 8443, 'p.example')?.name).toBe('shop/exact');
    expect(findStreamRoute(plan.tlsRoutes, 8443, 'q.example')?.name).toBe('shop/wild');
    expect(findStreamRoute(plan.tlsRoutes, 8443, 'other.test')?.name).toBe('shop/any');
    const tcp = findStreamRoute(plan.tcpRoutes, 5432, undefined)!;
    expect(pickStreamBackend(tcp, () => 0.99)).toEqual({ service: 'shop/db', port: 80, weight: 3 });
    expect(plan.input.services.map((s) => s.name)).toEqual(
      expect.arrayContaining(['db', 'exact', 'wild', 'any']),
    );
  });
});

describe('status', () => {
  it('says which listeners serve, why the others do not, the addresses and the attached routes', () => {
    const state = stateOf([
      ns,
      secret('a-cert', pem.cert, pem.key),
      gateway([https('a', 'a.example', 'a-cert'), https('c', 'c.example', 'c-cert')]),
      httpRoute('r', { parentRefs: [{ name: 'gw' }], rules: [{}] }),
    ]);
    const plan = buildGatewayPlan(state, REF)!;
    const now = new Date('2026-01-01T10:00:00Z');
    const status = computeGatewayStatus(plan, {
      addresses: ['203.0.113.7'],
      findPortError: () => undefined,
      generation: 4,
      now,
    });
    expect(status.addresses).toEqual([{ type: 'IPAddress', value: '203.0.113.7' }]);
    expect(status.conditions.map((c) => [c.type, c.status, c.reason])).toEqual([
      ['Accepted', 'True', 'ListenersNotValid'],
      ['Programmed', 'True', 'Programmed'],
    ]);
    const [a, c] = status.listeners;
    expect(a).toMatchObject({ name: 'a', attachedRoutes: 1 });
    expect(a!.conditions.find((x) => x.type === 'Programmed')).toMatchObject({
      status: 'True',
      observedGeneration: 4,
    });
    expect(c!.conditions.find((x) => x.type === 'ResolvedRefs')).toMatchObject({
      status: 'False',
      reason: 'InvalidCertificateRef',
      lastTransitionTime: '2026-01-01T10:00:00Z',
    });
    expect(c!.conditions.find((x) => x.type === 'Programmed')).toMatchObject({
      status: 'False',
      reason: 'Invalid',
    });

    // Unchanged statuses keep their transition time; a port that cannot listen is Pending.
    const later = computeGatewayStatus(plan, {
      addresses: [],
      findPortError: () => 'cannot listen on port 443: EADDRINUSE',
      previous: status,
      now: new Date('2026-01-01T11:00:00Z'),
    });
    expect(later.listeners[1]!.conditions.find((x) => x.type === 'ResolvedRefs')?.lastTransitionTime).toBe(
      '2026-01-01T10:00:00Z',
    );
    expect(later.listeners[0]!.conditions.find((x) => x.type === 'Programmed')).toMatchObject({
      status: 'False',
      reason: 'Pending',
      message: 'cannot listen on port 443: EADDRINUSE',
    });
    expect(later.conditions[1]).toMatchObject({ status: 'False', reason: 'AddressNotAssigned' });
  });
});
