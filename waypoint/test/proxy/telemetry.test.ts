// Request metrics, access log and traces, as an operator's Prometheus, log pipeline and OTLP
// collector would see them.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseSpiffeId } from '@hypha/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  captureLog,
  send,
  service,
  startBackend,
  startWaypoint,
  type TestWaypoint,
} from '../helpers.js';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: { key: string; value: Record<string, unknown> }[];
}

let backend: Backend;
let tw: TestWaypoint;
let receiver: http.Server;
const spans: OtlpSpan[] = [];
const contentTypes: string[] = [];
const access = captureLog();
const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        contentTypes.push(String(req.headers['content-type']));
        const body = JSON.parse(Buffer.concat(chunks).toString()) as {
          resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[];
        };
        for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  backend = await startBackend('reviews-v1', (req, res) => {
    res.statusCode = req.url?.startsWith('/missing') ? 404 : 200;
    res.setHeader('x-traceparent-seen', String(req.headers.traceparent ?? ''));
    res.end('0123456789');
  });
  tw = await startWaypoint(
    {
      services: [service('reviews', '10.96.5.1', [backend])],
      authorizationPolicies: [
        {
          kind: 'AuthorizationPolicy',
          metadata: { name: 'deny-admin', namespace: 'shop' },
          spec: {
            targetRefs: [{ kind: 'Service', name: 'reviews' }],
            action: 'DENY',
            rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }],
          },
        },
      ],
      workloads: [
        { ip: '127.0.0.1', workload: { name: 'web-7d9f', namespace: 'shop', app: 'web', version: 'v3' } },
      ],
    },
    { host: '10.96.5.1', port: 80 },
    {
      peer: web,
      accessLog: access.logger,
      tracing: { otlpEndpoint: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}` },
    },
  );
});

afterAll(async () => {
  await tw.close();
  await backend.close();
  receiver.close();
});

async function counts(): Promise<Map<string, number>> {
  const metrics = await tw.wp.registry.getMetricsAsJSON();
  const out = new Map<string, number>();
  const total = metrics.find((m) => m.name === 'istio_requests_total')!;
  for (const v of total.values) out.set(String(v.labels.response_code), v.value);
  return out;
}

describe('request metrics', () => {
  it('count every request once with its response code and Istio labels', async () => {
    for (let i = 0; i < 7; i++) expect((await send(tw.pool, `/ok/${i}`)).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await send(tw.pool, `/missing/${i}`)).status).toBe(404);
    for (let i = 0; i < 2; i++) expect((await send(tw.pool, '/admin/x')).status).toBe(403);
    const c = await counts();
    expect(Object.fromEntries(c)).toEqual({ '200': 7, '404': 3, '403': 2 });

    const metrics = await tw.wp.registry.getMetricsAsJSON();
    const ok = metrics
      .find((m) => m.name === 'istio_requests_total')!
      .values.find((v) => v.labels.response_code === 200 || v.labels.response_code === '200')!;
    expect(ok.labels).toMatchObject({
      reporter: 'waypoint',
      source_principal: 'spiffe://cluster.local/ns/shop/sa/web',
      source_workload: 'web-7d9f',
      source_workload_namespace: 'shop',
      source_app: 'web',
      destination_workload: 'reviews-v1',
      destination_service: 'reviews.shop.svc.cluster.local',
      destination_service_name: 'reviews',
      destination_principal: 'spiffe://cluster.local/ns/shop/sa/reviews',
      request_protocol: 'http',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
    });
    const text = await tw.wp.registry.metrics();
    expect(text).toMatch(/istio_request_duration_milliseconds_count\{[^}]*response_code="200"[^}]*\} 7/);
    expect(text).toMatch(/istio_response_bytes_sum\{[^}]*response_code="200"[^}]*\} 70/);
    expect(text).toMatch(/istio_request_bytes_count\{[^}]*response_code="404"[^}]*\} 3/);
  });

  it('writes one JSON access log line per request', async () => {
    await send(tw.pool, '/logged?x=1', { headers: { 'x-request-id': 'req-abc' } });
    const line = access.lines.find((l) => l.x_request_id === 'req-abc');
    expect(line).toMatchObject({
      method: 'GET',
      path: '/logged',
      response_code: 200,
      response_flags: '-',
      upstream_cluster: 'shop/reviews',
      upstream_host: backend.ip,
      bytes_sent: 10,
    });
  });
});

describe('tracing', () => {
  it('continues the client trace, propagates it upstream and exports spans over OTLP/HTTP JSON', async () => {
    const traceId = randomBytes(16).toString('hex');
    const parentId = randomBytes(8).toString('hex');
    const r = await send(tw.pool, '/traced', { headers: { traceparent: `00-${traceId}-${parentId}-01` } });
    const seen = String(r.headers['x-traceparent-seen']);
    const [, seenTrace, waypointSpan] = seen.split('-');
    expect(seenTrace).toBe(traceId);
    expect(waypointSpan).not.toBe(parentId);

    await tw.wp.flushTraces();
    await expect.poll(() => spans.find((s) => s.traceId === traceId), { timeout: 5000 }).toBeDefined();
    const span = spans.find((s) => s.traceId === traceId)!;
    expect(span.parentSpanId).toBe(parentId);
    expect(span.spanId).toBe(waypointSpan);
    expect(span.name).toBe('reviews.shop.svc.cluster.local:80/*');
    expect(contentTypes[0]).toContain('application/json');
  });
});
