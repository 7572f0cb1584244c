// The daemon's view of egress: a ServiceEntry bound to the waypoint (hypha.dev/use-waypoint) becomes
// a service of its engine at the VIP the agents tunnel to, with the TrafficPolicy `tls` settings and
// the client certificate Secret they name; entries bound elsewhere are not served.
import { type ConfigState, createConfigState, translateObject } from '@hypha/shared/config';
import { beforeEach, describe, expect, it } from 'vitest';
import { buildWaypointInput } from '../src/daemon/input.js';
import { buildSnapshot, computeRouteStatus } from '../src/index.js';

const GATEWAY = { namespace: 'shop', name: 'egress' };
let state: ConfigState;

function put(raw: Record<string, unknown>): void {
  const r = translateObject(raw, { source: 'test' });
  if (r.status !== 'ok') throw new Error(`fixture rejected: ${JSON.stringify(r)}`);
  state.upsert(r.object);
}

const CA = `-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUJ1zGkqD3Yh4JcYbL3m1sq2m6ZlMwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----`;

// PEM-shaped, not usable: the config model takes them, TLS cannot.
const CERT = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n';

function entry(name: string, host: string, waypoint: string | undefined): Record<string, unknown> {
  return {
    apiVersion: 'networking.hypha.dev/v1',
    kind: 'ServiceEntry',
    metadata: {
      name,
      namespace: 'shop',
      ...(waypoint ? { labels: { 'hypha.dev/use-waypoint': waypoint } } : {}),
    },
    spec: {
      hosts: [host],
      location: 'MESH_EXTERNAL',
      ports: [{ number: 80, name: 'http', protocol: 'HTTP', targetPort: 443 }],
      resolution: 'DNS',
    },
  };
}

beforeEach(() => {
  state = createConfigState();
  put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  put({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: GATEWAY,
    spec: {
      gatewayClassName: 'hypha-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  });
  put(entry('external-api', 'api.external.test', 'egress'));
  put(entry('elsewhere', 'other.external.test', undefined));
  put({
    apiVersion: 'traffic.hypha.dev/v1alpha1',
    kind: 'TrafficPolicy',
    metadata: { name: 'external-api-tls', namespace: 'shop' },
    spec: {
      targetRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
      tls: { mode: 'MUTUAL', caCertificatesPem: CA, credentialName: 'api-client' },
    },
  });
});

describe('egress input', () => {
  it('serves the bound entry at its allocated VIP, by its host name, and not the unbound one', () => {
    const input = buildWaypointInput(state, GATEWAY);
    const vip = state.findServiceEntryByHost('api.external.test')!.addresses[0]!;
    expect(vip).toMatch(/^240\.240\./);
    const served = input.services.filter((s) => s.external !== undefined);
    expect(served.map((s) => s.name)).toEqual(['external-api']);
    expect(served[0]).toMatchObject({
      vips: [vip],
      ports: [{ port: 80, targetPort: 443, name: 'http', appProtocol: 'http' }],
      external: {
        hosts: ['api.external.test'],
        resolution: 'DNS',
        hostOfVip: { [vip]: 'api.external.test' },
      },
    });
    const { snapshot } = buildSnapshot(input);
    expect(snapshot.byAddress.get(`${vip}:80`)?.service.key).toBe('shop/external-api');
    expect(snapshot.byHostname.get('api.external.test')?.key).toBe('shop/external-api');
  });

  it('a MUTUAL policy whose Secret is missing is reported and fails closed; the Secret, once there, is handed over', () => {
    let r = buildSnapshot(buildWaypointInput(state, GATEWAY));
    expect(r.errors.map((e) => e.message).join('\n')).toMatch(
      /no kubernetes.io\/tls Secret shop\/api-client.*fails closed/,
    );
    expect(r.snapshot.egressTls('shop/external-api')?.error).toMatch(/api-client/);
    put({
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: { name: 'api-client', namespace: 'shop' },
      data: {
        'tls.crt': Buffer.from(CERT).toString('base64'),
        'tls.key': Buffer.from(KEY).toString('base64'),
      },
    });
    const input = buildWaypointInput(state, GATEWAY);
    expect(input.tlsSecrets).toEqual([
      { namespace: 'shop', name: 'api-client', certificate: CERT, privateKey: KEY },
    ]);
    // Not PEM: still refused with the reason, never plain text.
    r = buildSnapshot(input);
    expect(r.snapshot.egressTls('shop/external-api')?.error).toMatch(/not usable PEM/);
  });

  it('an HTTPRoute whose parentRef is the bound ServiceEntry is attached (status Accepted) and routes for it', () => {
    put({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'external-api', namespace: 'shop' },
      spec: {
        parentRefs: [{ group: 'networking.hypha.dev', kind: 'ServiceEntry', name: 'external-api' }],
        rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/v1' } }], timeouts: { request: '5s' } }],
      },
    });
    const [status] = computeRouteStatus(state, GATEWAY);
    expect(status?.name).toBe('external-api');
    expect(status?.parents[0]?.conditions.find((c) => c.type === 'Accepted')).toMatchObject({
      status: 'True',
      message: 'attached to waypoint shop/egress',
    });
    const { snapshot, errors } = buildSnapshot(buildWaypointInput(state, GATEWAY));
    expect(errors.filter((e) => e.kind === 'HTTPRoute')).toEqual([]);
    expect(snapshot.routes.byService.get('shop/external-api')?.length).toBe(1);
  });
});
