import { flattenLists, translateObject } from '@hypha/shared/config';
import { describe, expect, it } from 'vitest';
import { pod } from './objects.js';

const src = { source: 'cluster/demo.yaml' };

function ok(raw: unknown, opts: Parameters<typeof translateObject>[1] = src) {
  const r = translateObject(raw, opts);
  if (r.status !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r.object;
}

function errors(raw: unknown, opts: Parameters<typeof translateObject>[1] = src): string[] {
  const r = translateObject(raw, opts);
  if (r.status !== 'invalid') throw new Error(`expected invalid, got ${r.status}`);
  return r.errors.map((e) => e.message);
}

describe('Pod translation', () => {
  it('reads node, service account, IPs, named ports and applies the file-source defaults', () => {
    const p = ok({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web' } },
      spec: {
        nodeName: 'node-b',
        containers: [{ ports: [{ name: 'http', containerPort: 8080 }, { containerPort: 9 }] }],
      },
      status: { podIP: '10.1.0.7', podIPs: [{ ip: '10.1.0.7' }, { ip: 'FD00::0:7' }] },
    });
    expect(p).toMatchObject({
      kind: 'Pod',
      uid: 'shop/web-1',
      namespace: 'shop',
      node: 'node-b',
      serviceAccount: 'default',
      ips: ['10.1.0.7', 'fd00::7'],
      ready: true,
      hostNetwork: false,
      namedPorts: { http: 8080 },
    });
  });

  it('defaults the namespace to "default" like kubectl', () => {
    expect(ok({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } })).toMatchObject({
      namespace: 'default',
    });
  });

  it('takes readiness from the Ready condition, phase and deletion', () => {
    expect(ok(pod('a', { ready: false }))).toMatchObject({ ready: false });
    expect(ok(pod('a', { ready: true }))).toMatchObject({ ready: true });
    const done = pod('a');
    (done.status as Record<string, unknown>).phase = 'Succeeded';
    expect(ok(done)).toMatchObject({ ready: false });
    const deleting = pod('a');
    (deleting.metadata as Record<string, unknown>).deletionTimestamp = '2026-01-01T00:00:00Z';
    expect(ok(deleting)).toMatchObject({ ready: false });
  });

  it('lets the Kubernetes source treat a missing Ready condition as not ready', () => {
    expect(ok(pod('a'), { source: 'kubernetes', readyWhenConditionAbsent: false })).toMatchObject({
      ready: false,
    });
  });

  it('names file, object and field for each problem', () => {
    const bad = pod('web', { namespace: 'shop', ip: '10.0.0.999', sa: 'Web_SA' });
    expect(errors(bad, { source: 'cluster/demo.yaml', document: 3 })).toEqual([
      'cluster/demo.yaml: Pod shop/web (document 3): field spec.serviceAccountName: must be a DNS-1123 subdomain (lowercase letters, digits, "-" and ".") (got "Web_SA")',
      'cluster/demo.yaml: Pod shop/web (document 3): field status.podIP: is not an IP address (got "10.0.0.999")',
    ]);
  });

  it('rejects label values that are not strings (YAML numbers) and bad mesh labels', () => {
    expect(errors(pod('web', { labels: { version: 2 as unknown as string } }))[0]).toContain(
      'Pod demo/web: field metadata.labels.version: Invalid input: expected string, received number',
    );
    expect(errors(pod('web', { labels: { 'hypha.dev/dataplane-mode': 'on' } }))).toEqual([
      'cluster/demo.yaml: Pod demo/web: field metadata.labels["hypha.dev/dataplane-mode"]: "on" must be "ambient" or "none"',
    ]);
  });

  it('reads the pod-level mesh and waypoint labels', () => {
    expect(
      ok(pod('w', { labels: { 'hypha.dev/dataplane-mode': 'none', 'hypha.dev/use-waypoint': 'wp' } })),
    ).toMatchObject({ dataplaneMode: 'none', waypoint: { namespace: 'demo', name: 'wp' } });
    expect(
      ok(
        pod('w', {
          labels: { 'hypha.dev/use-waypoint': 'wp', 'hypha.dev/use-waypoint-namespace': 'infra' },
        }),
      ),
    ).toMatchObject({ waypoint: { namespace: 'infra', name: 'wp' } });
  });
});

describe('Namespace, Service, EndpointSlice, Gateway translation', () => {
  it('reads namespace mesh labels', () => {
    expect(
      ok({
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: {
          name: 'shop',
          labels: {
            'hypha.dev/dataplane-mode': 'ambient',
            'hypha.dev/mtls-mode': 'strict',
            'hypha.dev/use-waypoint': 'wp',
          },
        },
      }),
    ).toMatchObject({
      dataplaneMode: 'ambient',
      mtlsMode: 'strict',
      waypoint: { namespace: 'shop', name: 'wp' },
    });
    expect(
      errors({
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'shop', labels: { 'hypha.dev/mtls-mode': 'STRICT' } },
      }),
    ).toEqual([
      'cluster/demo.yaml: Namespace shop: field metadata.labels["hypha.dev/mtls-mode"]: "STRICT" must be "strict" or "permissive"',
    ]);
  });

  it('reads service VIPs, ports, target ports and appProtocol', () => {
    const s = ok({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'echo', namespace: 'demo' },
      spec: {
        clusterIP: '10.96.0.10',
        clusterIPs: ['10.96.0.10', 'fd00:96::0a'],
        selector: { app: 'echo' },
        ports: [
          { name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' },
          { name: 'grpc', port: 90, targetPort: 'grpc' },
          { name: 'raw', port: 7000 },
          { name: 'quoted', port: 7001, targetPort: '7002' },
        ],
      },
    });
    expect(s).toMatchObject({
      vips: ['10.96.0.10', 'fd00:96::a'],
      selector: { app: 'echo' },
      ports: [
        { port: 80, targetPort: 8080, name: 'http', protocol: 'TCP', appProtocol: 'http' },
        { port: 90, targetPort: 'grpc' },
        { port: 7000, targetPort: 7000 },
        { port: 7001, targetPort: 7002 },
      ],
    });
    expect(
      ok({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'h' }, spec: { clusterIP: 'None' } }),
    ).toMatchObject({
      vips: [],
      selector: undefined,
    });
  });

  it('names the service field that is wrong', () => {
    expect(
      errors({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'echo', namespace: 'demo' },
        spec: { ports: [{ port: 80 }, { port: 80 }] },
      }),
    ).toEqual([
      'cluster/demo.yaml: Service demo/echo: field spec.ports[1].port: port 80/TCP is listed twice',
    ]);
    expect(
      errors({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'echo' },
        spec: { ports: [{ port: 80, targetPort: 'Not A Name' }] },
      }),
    ).toEqual([
      'cluster/demo.yaml: Service default/echo: field spec.ports[0].targetPort: "Not A Name" is neither a port number nor a port name',
    ]);
  });

  it('reads EndpointSlices and requires their service-name label', () => {
    const slice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'echo-abc', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'echo' } },
      addressType: 'IPv4',
      endpoints: [
        { addresses: ['10.1.0.1'], nodeName: 'n1', targetRef: { kind: 'Pod', name: 'echo-1' } },
        { addresses: ['10.1.0.2'], conditions: { ready: false } },
      ],
      ports: [{ name: 'http', port: 8080 }],
    };
    expect(ok(slice)).toMatchObject({
      serviceName: 'echo',
      endpoints: [
        { addresses: ['10.1.0.1'], ready: true, node: 'n1', podName: 'echo-1' },
        { addresses: ['10.1.0.2'], ready: false },
      ],
      ports: [{ name: 'http', port: 8080 }],
    });
    expect(errors({ ...slice, metadata: { name: 'echo-abc', namespace: 'demo' } })[0]).toContain(
      'EndpointSlice demo/echo-abc: field metadata.labels["kubernetes.io/service-name"]: missing',
    );
  });

  it('reads hypha-waypoint Gateways and ignores other classes', () => {
    const gw = {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'demo', labels: { 'hypha.dev/waypoint-for': 'all' } },
      spec: {
        gatewayClassName: 'hypha-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
      status: {
        addresses: [
          { type: 'IPAddress', value: '10.96.5.5' },
          { type: 'Hostname', value: 'x.example' },
        ],
      },
    };
    expect(ok(gw)).toMatchObject({ waypointFor: 'all', addresses: ['10.96.5.5'] });
    const istio = { ...gw, spec: { ...gw.spec, gatewayClassName: 'istio' } };
    expect(translateObject(istio, src)).toMatchObject({ status: 'ignored' });
    const badFor = { ...gw, metadata: { ...gw.metadata, labels: { 'hypha.dev/waypoint-for': 'pods' } } };
    expect(errors(badFor)[0]).toContain(
      'field metadata.labels["hypha.dev/waypoint-for"]: "pods" must be one of',
    );
  });

  it('keeps TrafficPolicy and routes as validated raw specs with their references', () => {
    const route = ok({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'r', namespace: 'demo' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'echo' }],
        rules: [{ backendRefs: [{ name: 'echo-v1', port: 80 }] }],
      },
    });
    expect(route).toMatchObject({
      kind: 'HTTPRoute',
      refs: [{ kind: 'Service', name: 'echo' }],
      spec: { rules: [{}] },
    });
    expect(
      errors({
        apiVersion: 'traffic.hypha.dev/v1alpha1',
        kind: 'TrafficPolicy',
        metadata: { name: 't' },
        spec: { targetRefs: [{ name: 'x' }] },
      }),
    ).toEqual([
      'cluster/demo.yaml: TrafficPolicy default/t: field spec.targetRefs[0].kind: missing: expected string',
    ]);
  });
});

describe('kinds and documents', () => {
  it('skips kinds the mesh does not read, and flags unknown kinds', () => {
    expect(
      translateObject({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'x' } }, src),
    ).toMatchObject({
      status: 'ignored',
    });
    expect(errors({ apiVersion: 'v1', kind: 'Podd', metadata: { name: 'x' } })[0]).toMatch(
      /^cluster\/demo.yaml: Podd x: field kind: unknown kind "Podd"; Hypha reads Namespace, Pod, /,
    );
  });

  it('reports documents that are not objects, with their position', () => {
    expect(errors('just a string', { source: 'f.yaml', document: 2 })).toEqual([
      'f.yaml: object (document 2): expected a mapping with apiVersion and kind',
    ]);
    expect(errors({ apiVersion: 'v1', metadata: { name: 'x' } })).toEqual([
      'cluster/demo.yaml: object x: field kind: missing: every object needs a kind',
    ]);
  });

  it('returns the key of an invalid object so a source can keep its previous version', () => {
    const r = translateObject(pod('web', { namespace: 'shop', ip: 'nope' }), src);
    expect(r).toMatchObject({ status: 'invalid', key: { kind: 'Pod', namespace: 'shop', name: 'web' } });
  });

  it('refuses a value nested too deeply to print, naming its field, instead of throwing', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const raw = pod('web', { namespace: 'shop', ip: '10.1.0.1' });
    (raw.spec as Record<string, unknown>).nodeName = deep;
    expect(errors(raw)).toEqual([
      'cluster/demo.yaml: Pod shop/web: field spec.nodeName: Invalid input: expected string, received array (got a list nested too deeply to show)',
    ]);
  });

  it('expands kubectl List objects', () => {
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: [pod('a'), { kind: 'PodList', items: [pod('b')] }],
    };
    expect(flattenLists(list).map((o) => (o as { metadata: { name: string } }).metadata.name)).toEqual([
      'a',
      'b',
    ]);
  });
});
