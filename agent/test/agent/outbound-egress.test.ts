// Egress decisions of the outbound path: ServiceEntry destinations (allocated VIP, STATIC endpoints,
// DNS resolution, NONE, a waypoint binding) and the mesh-wide outboundTrafficPolicy, REGISTRY_ONLY
// refusing what is in no registry with a logged reason and a counted metric, ALLOW_ANY passing it.
// The connection tests use real loopback sockets: a "pod" at 127.0.0.1 connects, the original
// destination is given, and bytes must reach (or not reach) a real server.
import net from 'node:net';
import type { Logger } from '@hypha/shared';
import { type ConfigObject, createConfigState, hashedVip, translateObject } from '@hypha/shared/config';
import { L4Metrics } from '@hypha/shared/telemetry';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConnectionTracker } from '../../src/agent/connections.js';
import { Outbound, type OutboundOptions } from '../../src/agent/outbound.js';

const API = 'networking.hypha.dev/v1';
const t = (raw: unknown): ConfigObject => {
  const r = translateObject(raw, { source: 'test' });
  if (r.status !== 'ok') throw new Error(JSON.stringify(r));
  return r.object;
};
const ns = t({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name: 'shop', labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
});
const client = t({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'client', namespace: 'shop', labels: { app: 'client' } },
  spec: { nodeName: 'n1', serviceAccountName: 'client' },
  status: { podIP: '127.0.0.1' },
});
const entry = (name: string, spec: Record<string, unknown>, labels: Record<string, string> = {}) =>
  t({ apiVersion: API, kind: 'ServiceEntry', metadata: { name, namespace: 'shop', labels }, spec });
const meshConfig = (spec: unknown) =>
  t({ apiVersion: API, kind: 'MeshConfig', metadata: { name: 'default', namespace: 'hypha-system' }, spec });

interface LogLine {
  level: string;
  fields: Record<string, unknown>;
  msg: string;
}
function captureLogger(lines: LogLine[]): Logger {
  const make = (bound: Record<string, unknown>): unknown => {
    const at =
      (level: string) =>
      (fields: Record<string, unknown> | string, msg?: string): void => {
        if (typeof fields === 'string') lines.push({ level, fields: bound, msg: fields });
        else lines.push({ level, fields: { ...bound, ...fields }, msg: msg ?? '' });
      };
    return {
      child: (more: Record<string, unknown>) => make({ ...bound, ...more }),
      trace: at('trace'),
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      fatal: at('fatal'),
    };
  };
  return make({}) as Logger;
}

function setup(objects: ConfigObject[], opts: Partial<OutboundOptions> = {}) {
  const state = createConfigState();
  state.applySnapshot([ns, client, ...objects]);
  const lines: LogLine[] = [];
  const logger = captureLogger(lines);
  const registry = new Registry();
  const tracker = new ConnectionTracker({ metrics: new L4Metrics(registry), accessLog: logger, node: 'n1' });
  let dst = { ip: '0.0.0.0', port: 0 };
  const outbound = new Outbound({
    state,
    nodeName: 'n1',
    pool: undefined as never,
    certs: undefined as never,
    inbound: undefined as never,
    tracker,
    logger,
    outboundPolicy: 'passthrough',
    findOriginalDestination: () => dst,
    ...opts,
  });
  /** Connects as the pod to `to` (the agent sees it as the original destination); resolves with what came back. */
  const connect = async (to: { ip: string; port: number }): Promise<string> => {
    dst = to;
    const listener = net.createServer((s) => outbound.handleSocket(s));
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    const port = (listener.address() as net.AddressInfo).port;
    try {
      return await new Promise<string>((resolve) => {
        const c = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' });
        let got = '';
        c.on('connect', () => c.write('ping\n'));
        c.on('data', (d) => {
          got += d.toString();
        });
        c.on('error', () => {});
        c.on('close', () => resolve(got));
      });
    } finally {
      listener.close();
    }
  };
  /** A connection that stays open: `exchange` sends and waits for the echo; `closed` when the mesh cuts it. */
  const hold = async (to: { ip: string; port: number }) => {
    dst = to;
    const listener = net.createServer((s) => outbound.handleSocket(s));
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    const port = (listener.address() as net.AddressInfo).port;
    const c = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' });
    c.on('error', () => {});
    await new Promise<void>((r) => c.once('connect', () => r()));
    const closed = new Promise<void>((r) =>
      c.once('close', () => {
        listener.close();
        r();
      }),
    );
    const exchange = (text: string) =>
      new Promise<string>((r) => {
        c.once('data', (d) => r(d.toString()));
        c.write(text);
      });
    return { exchange, closed };
  };
  return { state, outbound, lines, registry, connect, hold };
}

/** An echo server that keeps the connection open. */
async function startEcho(host: string): Promise<number> {
  const s = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.pipe(sock);
  });
  await new Promise<void>((r) => s.listen(0, host, r));
  servers.push(s);
  return (s.address() as net.AddressInfo).port;
}

/** A server that answers "pong from NAME" and closes. */
let servers: net.Server[] = [];
async function startServer(name: string, host: string): Promise<number> {
  const s = net.createServer((sock) => {
    sock.once('data', () => sock.end(`pong from ${name}\n`));
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => s.listen(0, host, r));
  servers.push(s);
  return (s.address() as net.AddressInfo).port;
}

// The pod is 127.0.0.1; the servers live on other loopback addresses (Linux routes 127/8 to lo).
const EXTERNAL = '127.0.0.3';
const UNLISTED = '127.0.0.2';
let externalPort: number;
let unlistedPort: number;
beforeAll(async () => {
  externalPort = await startServer('external', EXTERNAL);
  unlistedPort = await startServer('unlisted', UNLISTED);
});
afterAll(() => {
  for (const s of servers) s.close();
  servers = [];
});

describe('outbound: ServiceEntry destinations', () => {
  it('routes the allocated VIP of a DNS entry to the host resolved upstream, on the target port', async () => {
    const asked: string[] = [];
    const { connect, outbound } = setup(
      [
        entry('external-api', {
          hosts: ['api.external.test'],
          ports: [{ number: 80, name: 'http', targetPort: externalPort }],
          resolution: 'DNS',
        }),
      ],
      {
        fetchHostAddress: async (host, family) => {
          asked.push(`${host}/${family}`);
          return EXTERNAL;
        },
      },
    );
    const vip = hashedVip('api.external.test');
    expect(outbound.findTarget(vip, 80)).toMatchObject({
      kind: 'resolve',
      host: 'api.external.test',
      port: externalPort,
      service: { name: 'external-api', namespace: 'shop', host: 'api.external.test' },
    });
    expect(await connect({ ip: vip, port: 80 })).toBe('pong from external\n');
    expect(asked).toEqual(['api.external.test/4']);
    // Another port of the VIP is not the entry's: not registered.
    expect(outbound.findTarget(vip, 81)).toMatchObject({ kind: 'plain' });
  });

  it('sends a STATIC entry to its endpoints in turn, each on its own port', async () => {
    const { outbound, connect } = setup([
      entry('db', {
        hosts: ['db.example.test'],
        addresses: ['192.0.2.40'],
        ports: [{ number: 5432, name: 'pg' }],
        resolution: 'STATIC',
        endpoints: [
          { address: EXTERNAL, ports: { pg: externalPort } },
          { address: '192.0.2.42', ports: { pg: 6432 } },
        ],
      }),
    ]);
    expect(outbound.findTarget('192.0.2.40', 5432)).toMatchObject({
      kind: 'plain',
      ip: EXTERNAL,
      port: externalPort,
    });
    expect(outbound.findTarget('192.0.2.40', 5432)).toMatchObject({
      kind: 'plain',
      ip: '192.0.2.42',
      port: 6432,
    });
    expect(await connect({ ip: '192.0.2.40', port: 5432 })).toBe('pong from external\n');
  });

  it('passes a NONE entry to where the pod sent it, and refuses a DNS host that does not resolve', async () => {
    const { outbound, connect, lines } = setup(
      [
        entry('range', {
          hosts: ['lan.example.test'],
          addresses: ['127.0.0.2/31'],
          ports: [{ number: unlistedPort }],
        }),
        entry('gone', { hosts: ['gone.example.test'], ports: [{ number: 80 }], resolution: 'DNS' }),
      ],
      {
        outboundPolicy: 'registry-only',
        fetchHostAddress: async (host) => {
          throw new Error(`${host} has no address (A or AAAA) at the upstream resolvers`);
        },
      },
    );
    expect(outbound.findTarget(UNLISTED, unlistedPort)).toMatchObject({
      kind: 'plain',
      ip: UNLISTED,
      service: { name: 'range', host: 'lan.example.test' },
    });
    expect(await connect({ ip: UNLISTED, port: unlistedPort })).toBe('pong from unlisted\n');
    expect(await connect({ ip: hashedVip('gone.example.test'), port: 80 })).toBe('');
    const failed = lines.find((l) => l.fields.response_flags === 'DNS_RESOLUTION_FAILED');
    expect(failed?.fields.error).toBe(
      'ServiceEntry shop/gone: gone.example.test has no address (A or AAAA) at the upstream resolvers',
    );
  });

  it("sends an entry bound to a waypoint through the waypoint, and fails closed when it doesn't exist", () => {
    const { outbound } = setup([
      entry(
        'external-api',
        { hosts: ['api.external.test'], ports: [{ number: 80 }], resolution: 'DNS' },
        { 'hypha.dev/use-waypoint': 'egress' },
      ),
    ]);
    expect(outbound.findTarget(hashedVip('api.external.test'), 80)).toMatchObject({
      kind: 'refuse',
      flag: 'NO_HEALTHY_UPSTREAM',
      reason: 'waypoint shop/egress does not exist; failing closed',
    });
  });
});

describe('outbound: outboundTrafficPolicy', () => {
  const registered = () =>
    entry('external-api', {
      hosts: ['api.external.test'],
      ports: [{ number: 80, targetPort: externalPort }],
      resolution: 'DNS',
    });

  it('REGISTRY_ONLY (MeshConfig) refuses an unlisted destination: logged with the reason, counted', async () => {
    const { connect, lines, registry } = setup(
      [registered(), meshConfig({ outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } })],
      { fetchHostAddress: async () => EXTERNAL },
    );
    expect(await connect({ ip: UNLISTED, port: unlistedPort })).toBe('');
    const warn = lines.find((l) => l.level === 'warn' && l.fields.reason === 'REGISTRY_ONLY');
    expect(warn?.fields).toMatchObject({ dst: `${UNLISTED}:${unlistedPort}`, src_workload: 'shop/client' });
    expect(warn?.msg).toContain('neither a known Service, pod nor ServiceEntry');
    const access = lines.find((l) => l.fields.type === 'access');
    expect(access?.fields).toMatchObject({ response_flags: 'REGISTRY_ONLY', src_workload: 'client' });
    const metrics = await registry.metrics();
    expect(metrics).toMatch(
      /istio_tcp_connections_failed_total\{[^}]*source_workload="client"[^}]*destination_service="BlackHoleCluster"[^}]*response_flags="REGISTRY_ONLY"[^}]*\} 1/,
    );
    // The registered host still works.
    expect(await connect({ ip: hashedVip('api.external.test'), port: 80 })).toBe('pong from external\n');
  });

  it('ALLOW_ANY passes the same destination through; the MeshConfig wins over the flag, and follows changes', async () => {
    const { connect, state, outbound, lines } = setup(
      [meshConfig({ outboundTrafficPolicy: { mode: 'ALLOW_ANY' } })],
      { outboundPolicy: 'registry-only' },
    );
    expect(outbound.findOutboundTrafficPolicy()).toBe('ALLOW_ANY');
    expect(await connect({ ip: UNLISTED, port: unlistedPort })).toBe('pong from unlisted\n');
    state.upsert(meshConfig({ outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } }));
    expect(await connect({ ip: UNLISTED, port: unlistedPort })).toBe('');
    state.remove({ kind: 'MeshConfig', namespace: 'hypha-system', name: 'default' });
    // Back to the flag.
    expect(outbound.findOutboundTrafficPolicy()).toBe('REGISTRY_ONLY');
    expect(lines.filter((l) => /^outbound traffic policy/.test(l.msg)).map((l) => l.msg)).toEqual([
      'outbound traffic policy ALLOW_ANY',
      'outbound traffic policy REGISTRY_ONLY',
      'outbound traffic policy REGISTRY_ONLY',
    ]);
  });

  it('turning REGISTRY_ONLY on cuts live connections outside the registry', async () => {
    const echoPort = await startEcho(UNLISTED);
    const { state, lines, hold } = setup([]);
    const held = await hold({ ip: UNLISTED, port: echoPort });
    expect(await held.exchange('hello')).toBe('hello');
    state.upsert(meshConfig({ outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } }));
    await held.closed;
    expect(lines.some((l) => l.msg === 'closed 1 live connection(s) outside the registry')).toBe(true);
    // The access line is written once the copy loop has ended on the agent's side.
    let access: LogLine | undefined;
    while (access === undefined) {
      await new Promise((r) => setTimeout(r, 10));
      access = lines.find((l) => l.fields.type === 'access');
    }
    expect(access.fields.response_flags).toBe('REGISTRY_ONLY');
    expect(access.fields.error).toBe(
      `REGISTRY_ONLY: ${UNLISTED}:${echoPort} is neither a known Service, pod nor ServiceEntry`,
    );
  });

  it('fails closed on a MeshConfig it cannot read, and says why', async () => {
    const { connect, outbound, lines } = setup([
      meshConfig({ outboundTrafficPolicy: { mode: 'ALLOW-ANY' } }),
    ]);
    expect(outbound.findOutboundTrafficPolicy()).toBe('REGISTRY_ONLY');
    expect(await connect({ ip: UNLISTED, port: unlistedPort })).toBe('');
    const err = lines.find((l) => l.level === 'error');
    expect(err?.msg).toBe(
      'MeshConfig hypha-system/default is invalid (field spec.outboundTrafficPolicy.mode: must be one of "ALLOW_ANY", "REGISTRY_ONLY" (got "ALLOW-ANY")); outbound traffic policy REGISTRY_ONLY until it is fixed',
    );
  });

  it('without a MeshConfig, --outbound-policy decides (passthrough = ALLOW_ANY)', async () => {
    const { connect, outbound } = setup([]);
    expect(outbound.findOutboundTrafficPolicy()).toBe('ALLOW_ANY');
    expect(await connect({ ip: UNLISTED, port: unlistedPort })).toBe('pong from unlisted\n');
  });
});
