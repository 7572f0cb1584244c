// ServiceEntry and MeshConfig: translation (Istio's shape, errors naming object and field) and the
// state's lookups by host and by address, with VIPs allocated to hosts that have none.
import {
  AUTO_VIP_CIDR,
  type ConfigObject,
  cidrContains,
  createConfigState,
  hashedVip,
  parseCidr,
  parseIp,
  translateObject,
} from '@hypha/shared/config';
import { describe, expect, it } from 'vitest';

const API = 'networking.hypha.dev/v1';

function entry(name: string, spec: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { apiVersion: API, kind: 'ServiceEntry', metadata: { name, namespace: 'shop', ...extra }, spec };
}

function ok(raw: unknown): ConfigObject {
  const r = translateObject(raw, { source: 'test.yaml' });
  if (r.status !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r.object;
}

function errorsOf(raw: unknown): string[] {
  const r = translateObject(raw, { source: 'test.yaml' });
  if (r.status !== 'invalid') throw new Error(`expected invalid, got ${r.status}`);
  return r.errors.map((e) => e.message);
}

const external = entry('external-api', {
  hosts: ['api.external.test'],
  ports: [{ number: 80, name: 'http', protocol: 'HTTP' }],
  resolution: 'DNS',
});

describe('ServiceEntry translation', () => {
  it('reads every field of the Istio shape, with defaults', () => {
    const o = ok(
      entry(
        'db',
        {
          hosts: ['DB.Example.Test.'.toLowerCase(), '*.db.example.test'],
          addresses: ['192.0.2.0/24', '198.51.100.7/32'],
          ports: [{ number: 5432, name: 'pg', protocol: 'TCP', targetPort: 15432 }, { number: 9000 }],
          resolution: 'STATIC',
          location: 'MESH_INTERNAL',
          endpoints: [{ address: '192.0.2.10', ports: { pg: 6432 }, labels: { zone: 'a' } }],
        },
        { labels: { 'hypha.dev/use-waypoint': 'egress' } },
      ),
    );
    expect(o).toEqual({
      kind: 'ServiceEntry',
      name: 'db',
      namespace: 'shop',
      labels: { 'hypha.dev/use-waypoint': 'egress' },
      hosts: ['db.example.test', '*.db.example.test'],
      addresses: ['192.0.2.0/24', '198.51.100.7'],
      ports: [
        { number: 5432, protocol: 'TCP', name: 'pg', targetPort: 15432 },
        { number: 9000, protocol: 'TCP', name: undefined, targetPort: undefined },
      ],
      resolution: 'STATIC',
      location: 'MESH_INTERNAL',
      endpoints: [{ address: '192.0.2.10', ports: { pg: 6432 }, labels: { zone: 'a' } }],
      waypoint: { namespace: 'shop', name: 'egress' },
    });
    const d = ok(external);
    expect(d).toMatchObject({ resolution: 'DNS', location: 'MESH_EXTERNAL', addresses: [], endpoints: [] });
    // Istio's default resolution is NONE.
    expect(ok(entry('n', { hosts: ['n.test'], ports: [{ number: 443 }] }))).toMatchObject({
      resolution: 'NONE',
    });
  });

  it('refuses what Istio refuses, naming the object and the field', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ports: [{ number: 80 }] }, /field spec\.hosts: missing/],
      [{ hosts: [], ports: [{ number: 80 }] }, /field spec\.hosts: must name at least one host/],
      [{ hosts: ['*'], ports: [{ number: 80 }] }, /field spec\.hosts\[0\]: "\*" would match every name/],
      [
        { hosts: ['Bad_Host'], ports: [{ number: 80 }] },
        /field spec\.hosts\[0\]: "Bad_Host" must be a lower-case DNS name/,
      ],
      [
        { hosts: ['10.0.0.1'], ports: [{ number: 80 }] },
        /is an IP address; put addresses in spec\.addresses/,
      ],
      [{ hosts: ['a.test'] }, /field spec\.ports: missing/],
      [
        { hosts: ['a.test'], ports: [{ number: 80 }, { number: 80 }] },
        /field spec\.ports\[1\]\.number: port 80 is listed twice/,
      ],
      [{ hosts: ['a.test'], ports: [{ number: 70000 }] }, /field spec\.ports\[0\]\.number/],
      [
        { hosts: ['a.test'], ports: [{ number: 80, protocol: 'http' }] },
        /field spec\.ports\[0\]\.protocol: must be one of "HTTP"/,
      ],
      [
        { hosts: ['a.test'], ports: [{ number: 80 }], resolution: 'dns' },
        /field spec\.resolution: must be one of "DNS", "STATIC", "NONE"/,
      ],
      [
        { hosts: ['a.test'], ports: [{ number: 80 }], addresses: ['10.0.0.300'] },
        /field spec\.addresses\[0\]: "10\.0\.0\.300" is neither an IP address nor a CIDR/,
      ],
      [
        { hosts: ['a.test'], ports: [{ number: 80 }], resolution: 'STATIC' },
        /field spec\.endpoints: missing: resolution STATIC/,
      ],
      [
        {
          hosts: ['a.test'],
          ports: [{ number: 80 }],
          resolution: 'STATIC',
          endpoints: [{ address: 'db.test' }],
        },
        /field spec\.endpoints\[0\]\.address: "db\.test" must be an IP address with resolution STATIC/,
      ],
      [
        { hosts: ['a.test'], ports: [{ number: 80 }], endpoints: [{ address: '10.0.0.1' }] },
        /field spec\.endpoints: must be empty with resolution NONE/,
      ],
      [
        {
          hosts: ['a.test'],
          ports: [{ number: 80, name: 'http' }],
          resolution: 'STATIC',
          endpoints: [{ address: '10.0.0.1', ports: { grpc: 9 } }],
        },
        /field spec\.endpoints\[0\]\.ports\["grpc"\]: names no port of spec\.ports \(http\)/,
      ],
      [
        { hosts: ['*.a.test'], ports: [{ number: 80 }], resolution: 'DNS' },
        /the wildcard "\*\.a\.test" cannot be resolved by DNS/,
      ],
      [{ hosts: ['a.test'], ports: [{ number: 80 }], resolutoin: 'DNS' }, /resolutoin/],
    ];
    for (const [spec, expected] of cases) {
      const messages = errorsOf(entry('bad', spec));
      expect(messages.join('\n'), JSON.stringify(spec)).toMatch(expected);
      expect(messages[0]).toMatch(/^test\.yaml: ServiceEntry shop\/bad: /);
    }
    expect(errorsOf({ ...external, apiVersion: 'networking.istio.io/v1' }).join()).toMatch(
      /ServiceEntry must use "networking\.hypha\.dev\/v1"/,
    );
    expect(
      errorsOf(
        entry('bad', { ...external.spec }, { labels: { 'hypha.dev/use-waypoint': 'Egress!' } }),
      ).join(),
    ).toMatch(/metadata\.labels\["hypha\.dev\/use-waypoint"\]/);
  });
});

describe('MeshConfig translation', () => {
  const mesh = (spec: unknown, name = 'default') => ({
    apiVersion: API,
    kind: 'MeshConfig',
    metadata: { name, namespace: 'hypha-system' },
    spec,
  });

  it('reads outboundTrafficPolicy.mode as Istio spells it', () => {
    expect(ok(mesh({ outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } }))).toMatchObject({
      outboundTrafficPolicy: 'REGISTRY_ONLY',
      problems: [],
    });
    expect(ok(mesh({ outboundTrafficPolicy: { mode: 'ALLOW_ANY' } }))).toMatchObject({
      outboundTrafficPolicy: 'ALLOW_ANY',
    });
    expect(ok(mesh({}))).toMatchObject({ outboundTrafficPolicy: undefined, problems: [] });
  });

  it('fails closed: a spec it cannot read counts as REGISTRY_ONLY and says why', () => {
    const bad = ok(mesh({ outboundTrafficPolicy: { mode: 'allow_any' } }));
    expect(bad).toMatchObject({ outboundTrafficPolicy: 'REGISTRY_ONLY' });
    expect((bad as { problems: readonly string[] }).problems).toEqual([
      'field spec.outboundTrafficPolicy.mode: must be one of "ALLOW_ANY", "REGISTRY_ONLY" (got "allow_any")',
    ]);
    expect(ok(mesh({ outboundTrafficPolicy: 'ALLOW_ANY' }))).toMatchObject({
      outboundTrafficPolicy: 'REGISTRY_ONLY',
    });
    expect(ok(mesh({ outboundTraficPolicy: { mode: 'ALLOW_ANY' } }))).toMatchObject({
      outboundTrafficPolicy: 'REGISTRY_ONLY',
      problems: ['field spec.outboundTraficPolicy: unknown (Hypha reads outboundTrafficPolicy)'],
    });
  });

  it('is read only as "default"', () => {
    expect(errorsOf(mesh({}, 'mesh')).join()).toMatch(
      /MeshConfig hypha-system\/mesh: field metadata\.name: "mesh": the mesh reads one MeshConfig, named "default"/,
    );
  });
});

describe('ServiceEntries in the state', () => {
  const ns = (name: string, labels: Record<string, string> = {}) =>
    ok({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });

  it('finds an entry by host and by its allocated VIP and port, the VIP derived from the host', () => {
    const state = createConfigState();
    state.applySnapshot([ns('shop'), ok(external)]);
    const byHost = state.findServiceEntryByHost('api.external.test');
    expect(byHost?.entry.name).toBe('external-api');
    const vip = hashedVip('api.external.test');
    expect(byHost?.addresses).toEqual([vip]);
    expect(cidrContains(parseCidr(AUTO_VIP_CIDR)!, parseIp(vip)!)).toBe(true);
    expect(state.findServiceEntryByAddress(vip, 80)).toMatchObject({
      entry: { name: 'external-api' },
      host: 'api.external.test',
      port: { number: 80 },
    });
    expect(state.findServiceEntryByAddress(`::ffff:${vip}`, 80)?.host).toBe('api.external.test');
    expect(state.findServiceEntryByAddress(vip, 81)).toBeUndefined();
    expect(state.findServiceEntryByHost('other.test')).toBeUndefined();
    // Another state (another agent, or this one restarted) allocates the same VIP.
    const again = createConfigState();
    again.applySnapshot([ok(external)]);
    expect(again.findServiceEntryByHost('api.external.test')?.addresses).toEqual([vip]);
    expect(state.stats().serviceEntries).toBe(1);
  });

  it('answers spec.addresses instead, and matches CIDRs by address', () => {
    const state = createConfigState();
    state.applySnapshot([
      ok(
        entry('range', {
          hosts: ['db.example.test'],
          addresses: ['192.0.2.0/24', '198.51.100.7'],
          ports: [{ number: 5432 }],
          resolution: 'NONE',
        }),
      ),
    ]);
    expect(state.findServiceEntryByHost('db.example.test')?.addresses).toEqual(['198.51.100.7']);
    expect(state.findServiceEntryByAddress('198.51.100.7', 5432)?.entry.name).toBe('range');
    expect(state.findServiceEntryByAddress('192.0.2.99', 5432)?.host).toBe('db.example.test');
    expect(state.findServiceEntryByAddress('192.0.3.1', 5432)).toBeUndefined();
    expect(state.findServiceEntryByAddress(hashedVip('db.example.test'), 5432)).toBeUndefined();
  });

  it('matches wildcard hosts per Istio: the nearest "*." suffix, not the bare parent', () => {
    const state = createConfigState();
    state.applySnapshot([
      ok(entry('wide', { hosts: ['*.example.test'], addresses: ['192.0.2.1'], ports: [{ number: 443 }] })),
      ok(
        entry('narrow', { hosts: ['*.eu.example.test'], addresses: ['192.0.2.2'], ports: [{ number: 443 }] }),
      ),
    ]);
    expect(state.findServiceEntryByHost('a.example.test')?.entry.name).toBe('wide');
    expect(state.findServiceEntryByHost('x.y.example.test')?.entry.name).toBe('wide');
    expect(state.findServiceEntryByHost('a.eu.example.test')?.entry.name).toBe('narrow');
    expect(state.findServiceEntryByHost('example.test')).toBeUndefined();
    // A wildcard gets no VIP: with no address of its own it has nothing to answer (DNS forwards).
    state.upsert(ok(entry('dyn', { hosts: ['*.cdn.test'], ports: [{ number: 443 }] })));
    expect(state.findServiceEntryByHost('img.cdn.test')?.addresses).toEqual([]);
  });

  it('gives colliding hosts distinct VIPs and never moves an allocated one', () => {
    const seen = new Map<string, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; pair === undefined; i++) {
      const host = `h${i}.test`;
      const vip = hashedVip(host);
      const other = seen.get(vip);
      if (other !== undefined) pair = [other, host];
      seen.set(vip, host);
    }
    const [first, second] = pair;
    const state = createConfigState();
    const e = (name: string, host: string) =>
      ok(entry(name, { hosts: [host], ports: [{ number: 80 }], resolution: 'DNS' }));
    state.upsert(e('first', first));
    state.upsert(e('second', second));
    const v1 = state.findServiceEntryByHost(first)!.addresses[0]!;
    const v2 = state.findServiceEntryByHost(second)!.addresses[0]!;
    expect(v1).toBe(hashedVip(first));
    expect(v2).not.toBe(v1);
    expect(state.findServiceEntryByAddress(v1, 80)?.host).toBe(first);
    expect(state.findServiceEntryByAddress(v2, 80)?.host).toBe(second);
    // An update of the moved host's entry (a label) keeps its VIP, though its hashed one is taken.
    state.upsert(
      ok(
        entry(
          'second',
          { hosts: [second], ports: [{ number: 80 }], resolution: 'DNS' },
          { labels: { v: '2' } },
        ),
      ),
    );
    expect(state.findServiceEntryByHost(second)!.addresses).toEqual([v2]);
    // Removing the first frees its VIP; the second keeps the one it had.
    state.remove({ kind: 'ServiceEntry', namespace: 'shop', name: 'first' });
    expect(state.findServiceEntryByAddress(v1, 80)).toBeUndefined();
    expect(state.findServiceEntryByHost(second)!.addresses).toEqual([v2]);
  });

  it('gives 20 000 hosts 20 000 distinct VIPs, the same in another state fed the same snapshot', () => {
    const n = 20_000;
    const objects = Array.from({ length: n }, (_, i) =>
      ok(entry(`e${i}`, { hosts: [`h${i}.example.test`], ports: [{ number: 443 }], resolution: 'DNS' })),
    );
    const a = createConfigState();
    a.applySnapshot(objects);
    const b = createConfigState();
    b.applySnapshot(objects);
    const vips = objects.map((_, i) => a.findServiceEntryByHost(`h${i}.example.test`)!.addresses[0]!);
    expect(new Set(vips).size).toBe(n);
    expect(
      objects.every((_, i) => b.findServiceEntryByHost(`h${i}.example.test`)!.addresses[0] === vips[i]),
    ).toBe(true);
    // At this load (30% of the block) most hosts sit at their hashed VIP; the rest moved on a collision.
    const home = vips.filter((v, i) => v === hashedVip(`h${i}.example.test`)).length;
    expect(home).toBeGreaterThan(n * 0.8);
    expect(home).toBeLessThan(n);
  });

  it('hands out VIPs in creation order, so a restart (one snapshot, listed by name) allocates as history did', () => {
    const seen = new Map<string, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; pair === undefined; i++) {
      const host = `c${i}.test`;
      const other = seen.get(hashedVip(host));
      if (other !== undefined) pair = [other, host];
      seen.set(hashedVip(host), host);
    }
    // "z-old" was created first, "a-new" later: history gives z-old the hashed VIP.
    const e = (name: string, host: string, created: string) =>
      ok(
        entry(
          name,
          { hosts: [host], ports: [{ number: 80 }], resolution: 'DNS' },
          { creationTimestamp: created },
        ),
      );
    const old = e('z-old', pair[0], '2026-01-01T00:00:00Z');
    const young = e('a-new', pair[1], '2026-02-01T00:00:00Z');
    const live = createConfigState();
    live.upsert(old);
    live.upsert(young);
    const restarted = createConfigState();
    restarted.applySnapshot([young, old]); // the API lists by name
    for (const host of pair) {
      expect(restarted.findServiceEntryByHost(host)!.addresses).toEqual(
        live.findServiceEntryByHost(host)!.addresses,
      );
    }
    expect(live.findServiceEntryByHost(pair[0])!.addresses).toEqual([hashedVip(pair[0])]);
  });

  it('shares a host between entries: the first by namespace/name answers, the VIP lives while any names it', () => {
    const state = createConfigState();
    const b = ok(entry('b', { hosts: ['x.test'], ports: [{ number: 80 }], resolution: 'DNS' }));
    const a = ok(entry('a', { hosts: ['x.test'], ports: [{ number: 443 }], resolution: 'DNS' }));
    state.applySnapshot([b, a]);
    const vip = hashedVip('x.test');
    expect(state.findServiceEntryByHost('x.test')?.entry.name).toBe('a');
    expect(state.findServiceEntryByAddress(vip, 80)?.entry.name).toBe('b');
    expect(state.findServiceEntryByAddress(vip, 443)?.entry.name).toBe('a');
    state.remove({ kind: 'ServiceEntry', namespace: 'shop', name: 'a' });
    expect(state.findServiceEntryByHost('x.test')?.addresses).toEqual([vip]);
  });

  it("binds to a waypoint by its own label, else its namespace's; reports changes", () => {
    const state = createConfigState();
    const changes: string[] = [];
    state.onChange((c) => {
      for (const e of c.serviceEntries.added) changes.push(`added ${e.name}`);
      for (const u of c.serviceEntries.updated)
        changes.push(`updated ${u.current.name} ${u.current.waypoint?.name}`);
      for (const e of c.serviceEntries.removed) changes.push(`removed ${e.name}`);
    });
    state.applySnapshot([ns('shop'), ok(external)]);
    expect(state.findServiceEntry('shop', 'external-api')?.waypoint).toBeUndefined();
    state.upsert(ns('shop', { 'hypha.dev/use-waypoint': 'egress' }));
    expect(state.findServiceEntry('shop', 'external-api')?.waypoint).toEqual({
      namespace: 'shop',
      name: 'egress',
    });
    state.upsert(ok(entry('external-api', external.spec, { labels: { 'hypha.dev/use-waypoint': 'none' } })));
    expect(state.findServiceEntry('shop', 'external-api')?.waypoint).toBeUndefined();
    state.remove({ kind: 'ServiceEntry', namespace: 'shop', name: 'external-api' });
    expect(state.findServiceEntryByHost('api.external.test')).toBeUndefined();
    expect(changes).toEqual([
      'added external-api',
      'updated external-api egress',
      'updated external-api undefined',
      'removed external-api',
    ]);
  });

  it('reads the MeshConfig of the root namespace only, and reports its changes', () => {
    const state = createConfigState();
    const seen: (string | undefined)[] = [];
    state.onChange((c) => {
      if (c.meshConfig) seen.push(c.meshConfig.current?.outboundTrafficPolicy ?? 'removed');
    });
    const mesh = (namespace: string, mode: string) =>
      ok({
        apiVersion: API,
        kind: 'MeshConfig',
        metadata: { name: 'default', namespace },
        spec: { outboundTrafficPolicy: { mode } },
      });
    state.upsert(mesh('shop', 'REGISTRY_ONLY'));
    expect(state.findMeshConfig()).toBeUndefined();
    state.upsert(mesh('hypha-system', 'REGISTRY_ONLY'));
    expect(state.findMeshConfig()?.outboundTrafficPolicy).toBe('REGISTRY_ONLY');
    state.upsert(mesh('hypha-system', 'ALLOW_ANY'));
    state.remove({ kind: 'MeshConfig', namespace: 'hypha-system', name: 'default' });
    expect(seen).toEqual(['REGISTRY_ONLY', 'ALLOW_ANY', 'removed']);
  });
});
