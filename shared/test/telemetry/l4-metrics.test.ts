import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { type ConnectionMeta, L4Metrics } from '../../src/telemetry/index.js';

const meta: ConnectionMeta = {
  reporter: 'destination',
  source: {
    workload: 'client',
    namespace: 'demo',
    principal: 'spiffe://cluster.local/ns/demo/sa/client',
    app: 'client',
  },
  destination: {
    workload: 'echo-v2',
    namespace: 'demo',
    principal: 'spiffe://cluster.local/ns/demo/sa/echo',
    app: 'echo',
    version: 'v2',
    service: 'echo.demo.svc.cluster.local',
    serviceName: 'echo',
    serviceNamespace: 'demo',
  },
  mutualTls: true,
};

function sample(text: string, name: string, match: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(match).every(([k, v]) => line.includes(`${k}="${v}"`)))
      total += Number(line.split(' ').at(-1));
  }
  return total;
}

describe('L4Metrics', () => {
  it('counts bytes of a live connection on every scrape, not only at close', async () => {
    const registry = new Registry();
    const metrics = new L4Metrics(registry);
    const conn = metrics.open(meta);
    // The client sent a 10-byte request and got 1000 bytes back so far.
    conn.bytes.sent += 10;
    conn.bytes.received += 1000;
    let text = await registry.metrics();
    expect(sample(text, 'istio_tcp_connections_opened_total', { reporter: 'destination' })).toBe(1);
    expect(sample(text, 'istio_tcp_sent_bytes_total')).toBe(1000);
    expect(sample(text, 'istio_tcp_received_bytes_total')).toBe(10);
    conn.bytes.received += 500;
    text = await registry.metrics();
    expect(sample(text, 'istio_tcp_sent_bytes_total')).toBe(1500);
    conn.bytes.sent += 5;
    conn.close();
    text = await registry.metrics();
    expect(sample(text, 'istio_tcp_received_bytes_total')).toBe(15);
    expect(sample(text, 'istio_tcp_connections_closed_total', { response_flags: '-' })).toBe(1);
    expect(sample(text, 'istio_tcp_connections_failed_total')).toBe(0);
    expect(metrics.liveConnections).toBe(0);
  });

  it('labels carry identities and security policy, and a denied connection counts as failed', async () => {
    const registry = new Registry();
    const metrics = new L4Metrics(registry);
    metrics.open(meta).close('DENY');
    metrics.recordFailed({ ...meta, mutualTls: false, source: {} }, 'CONNECT');
    const text = await registry.metrics();
    expect(
      sample(text, 'istio_tcp_connections_closed_total', {
        source_principal: 'spiffe://cluster.local/ns/demo/sa/client',
        destination_workload: 'echo-v2',
        destination_version: 'v2',
        connection_security_policy: 'mutual_tls',
        request_protocol: 'tcp',
        response_flags: 'DENY',
      }),
    ).toBe(1);
    expect(sample(text, 'istio_tcp_connections_failed_total', { response_flags: 'DENY' })).toBe(1);
    expect(
      sample(text, 'istio_tcp_connections_failed_total', {
        response_flags: 'CONNECT',
        source_workload: 'unknown',
        connection_security_policy: 'unknown',
      }),
    ).toBe(1);
  });

  it('closing twice counts once', async () => {
    const registry = new Registry();
    const metrics = new L4Metrics(registry);
    const c = metrics.open(meta);
    c.close();
    c.close('DENY');
    const text = await registry.metrics();
    expect(sample(text, 'istio_tcp_connections_closed_total')).toBe(1);
  });
});
