// The service graph as Kiali draws ambient traffic: the waypoint's request metrics become
// client → Service → pod edges with the waypoint named on them, the L4 hops to and from the
// waypoint are folded into those edges, and p99 joins its edge; without Prometheus, tap events.
import { describe, expect, it } from 'vitest';
import type { AdminTargetState } from '../../src/dashboard/admin.js';
import { buildGraph, meshObjects } from '../../src/dashboard/model.js';

const id = (sa: string) => `spiffe://cluster.local/ns/demo/sa/${sa}`;
const agent: AdminTargetState = {
  label: 'unix:/a.sock',
  ok: true,
  error: undefined,
  lastSeen: 0,
  kind: 'agent',
  name: 'node-a',
  certs: [],
  connections: 0,
  tapConnected: true,
  configDump: {
    node: 'node-a',
    version: 3,
    workloads: [],
    services: [{ name: 'echo', namespace: 'demo', waypoint: { namespace: 'demo', name: 'waypoint' } }],
    waypoints: [{ namespace: 'demo', name: 'waypoint', identity: id('waypoint') }],
    policies: [],
  },
};

const http = (code: string, value: number, dst = 'echo-v1') => ({
  metric: {
    source_workload: 'client',
    source_workload_namespace: 'demo',
    source_principal: id('client'),
    destination_workload: code === '403' ? 'unknown' : dst,
    destination_workload_namespace: 'demo',
    destination_principal: id('echo'),
    destination_service_name: 'echo',
    destination_service_namespace: 'demo',
    connection_security_policy: 'mutual_tls',
    response_code: code,
  },
  value,
});

describe('buildGraph', () => {
  it('waypoint traffic: client → Service → pod via the waypoint, 4xx beside a success rate that counts 5xx, p99 on its edge', () => {
    const g = buildGraph(
      meshObjects([agent]),
      {
        http: [http('200', 3), http('403', 1), http('503', 1)],
        httpP99: [
          {
            metric: {
              source_workload: 'client',
              source_workload_namespace: 'demo',
              destination_service_name: 'echo',
              destination_service_namespace: 'demo',
            },
            value: 42,
          },
        ],
        // The waypoint's upstream hop, reported by echo-v1's agent: folded, not drawn again.
        tcpOpened: [
          {
            metric: {
              source_workload: 'waypoint-7d',
              source_workload_namespace: 'demo',
              source_principal: id('waypoint'),
              destination_workload: 'echo-v1',
              destination_workload_namespace: 'demo',
              destination_principal: id('echo'),
              connection_security_policy: 'mutual_tls',
            },
            value: 9,
          },
        ],
        tcpFailed: [],
        tcpBytes: [],
      },
      [],
      Date.now(),
    );
    expect(g.edges.map((e) => `${e.source} -> ${e.target} ${e.protocol} ${e.via}`).sort()).toEqual([
      'demo/client -> svc:demo/echo http demo/waypoint',
      'svc:demo/echo -> demo/echo-v1 http demo/waypoint',
    ]);
    const first = g.edges.find((e) => e.source === 'demo/client')!;
    expect(first).toMatchObject({ rate: 5, rate4xx: 1, successRate: 0.8, p99Ms: 42, mtls: true });
    expect(first.sourcePrincipals).toEqual(['cluster.local/ns/demo/sa/client']);
    expect(g.bindings).toEqual([{ waypoint: 'waypoint:demo/waypoint', service: 'svc:demo/echo' }]);
    expect(g.nodes.find((n) => n.id === 'svc:demo/echo')).toMatchObject({
      kind: 'service',
      waypoint: 'demo/waypoint',
    });
  });

  it('plaintext marks the edge not mTLS; without Prometheus the last minute of tap events draws it', () => {
    const now = Date.now();
    const event = (ms: number, mtls: boolean, durationMs: number) => ({
      kind: 'connection' as const,
      time: new Date(now - ms).toISOString(),
      reporter: 'agent node-b',
      direction: 'inbound_plaintext',
      source: { ip: '10.0.0.9', workload: 'legacy', namespace: 'old' },
      destination: { ip: '10.0.0.3', port: 80, workload: 'db', namespace: 'demo', identity: id('db') },
      mtls,
      flags: '-',
      durationMs,
      bytesSent: 60,
      bytesReceived: 60,
    });
    const g = buildGraph(
      meshObjects([agent]),
      undefined,
      [event(120_000, true, 1), event(1000, false, 5), event(2000, false, 7)],
      now,
    );
    expect(g.from).toBe('tap');
    // The event older than a minute is not counted.
    expect(g.edges).toEqual([
      expect.objectContaining({
        source: 'old/legacy',
        target: 'demo/db',
        protocol: 'tcp',
        mtls: false,
        rate: 2 / 60,
        bytesRate: 240 / 60,
      }),
    ]);
  });
});
