// Writing the pipeline's outcome downstream: local answers, failures with their flags, and the
// upstream response head.
import { describe, expect, it } from 'vitest';
import { FAILURES } from '../../src/errors.js';
import { failure } from '../../src/pipeline/context.js';
import { answer, responseHead } from '../../src/pipeline/respond.js';
import { clustersOf, httpRoute, prepare, requestOf, snapshotOf, svc, upstreamAnswer } from './fixtures.js';

const snap = snapshotOf({
  services: [
    svc('reviews', '10.96.0.10', [{ name: 'r', ip: '10.0.0.1', port: 8080 }]),
    svc('reviews-v1', '10.96.0.11', [{ name: 'v1', ip: '10.0.0.2', port: 8080 }]),
  ],
  httpRoutes: [
    httpRoute('reviews', 'reviews', [
      {
        filters: [
          {
            type: 'ResponseHeaderModifier',
            responseHeaderModifier: { set: [{ name: 'x-route', value: 'r' }], remove: ['x-internal'] },
          },
        ],
        backendRefs: [
          {
            name: 'reviews-v1',
            port: 80,
            filters: [
              {
                type: 'ResponseHeaderModifier',
                responseHeaderModifier: { add: [{ name: 'x-backend', value: 'v1' }] },
              },
            ],
          },
        ],
      },
    ]),
  ],
});

describe('answer: local answers', () => {
  it('writes status, headers and body, and records the flag and the byte count', async () => {
    const { rc, res } = requestOf(snap);
    answer(rc, {
      kind: 'local',
      status: 418,
      body: 'fault filter abort',
      flag: 'FI',
      headers: { 'x-extra': '1' },
    });
    await res.settled();
    expect(res.head).toEqual({
      status: 418,
      headers: { 'content-type': 'text/plain', 'content-length': 18, 'x-extra': '1' },
    });
    expect(res.body).toBe('fault filter abort');
    expect(rc.flags).toEqual(['FI']);
    expect(rc.responseBytes).toBe(18);
    expect(res.destroyCalls).toBe(0);
  });

  it('lets a local answer set content-type (a gRPC fault abort)', () => {
    const { rc, res } = requestOf(snap);
    answer(rc, {
      kind: 'local',
      status: 200,
      body: '',
      headers: { 'content-type': 'application/grpc', 'grpc-status': '14' },
    });
    expect(res.head?.headers).toMatchObject({ 'content-type': 'application/grpc', 'grpc-status': '14' });
  });

  it("records no flag for '-' or none", () => {
    const none = requestOf(snap).rc;
    answer(none, { kind: 'local', status: 403, body: 'RBAC: access denied' });
    expect(none.flags).toEqual([]);
    const dash = requestOf(snap).rc;
    answer(dash, { kind: 'local', status: 200, body: '', flag: '-' });
    expect(dash.flags).toEqual([]);
  });

  it('destroys the response instead when the head was already sent', () => {
    const { rc, res } = requestOf(snap);
    res.writeHead(200, {});
    answer(rc, failure('UPSTREAM_RESET'));
    expect(res.destroyCalls).toBe(1);
    expect(res.head?.status).toBe(200);
  });
});

describe('answer: failures', () => {
  it('answers each failure with its status, body and flag', async () => {
    for (const code of ['OVERFLOW', 'CONNECT_FAILED', 'TIMEOUT', 'NO_ROUTE', 'NO_CLUSTER'] as const) {
      const { rc, res } = requestOf(snap);
      answer(rc, failure(code));
      await res.settled();
      expect(res.head?.status).toBe(FAILURES[code].status);
      expect(res.body).toBe(FAILURES[code].body);
      expect(rc.flags).toEqual([FAILURES[code].flag]);
    }
  });

  it('adds the pending URX flag after the failure that ended the retries', () => {
    const { rc, res } = requestOf(snap);
    rc.pendingFlag = 'URX';
    answer(rc, failure('CONNECT_FAILED'));
    expect(res.head?.status).toBe(503);
    expect(rc.flags).toEqual(['UF', 'URX']);
  });

  it('destroys the response for DOWNSTREAM_CLOSED (flag DC) and writes nothing', () => {
    const { rc, res } = requestOf(snap);
    answer(rc, failure('DOWNSTREAM_CLOSED'));
    expect(res.destroyCalls).toBe(1);
    expect(res.head).toBeUndefined();
    expect(rc.flags).toEqual(['DC']);
  });
});

describe('answer: upstream responses', () => {
  it('has the upstream answer write itself', () => {
    const { rc, res } = requestOf(snap);
    const a = upstreamAnswer(204);
    answer(rc, a);
    expect(a.responded).toBe(1);
    expect(res.head?.status).toBe(204);
  });
});

describe('responseHead', () => {
  it("drops pseudo and hop-by-hop headers and applies the route's then the backend's modifiers", async () => {
    const { rc } = requestOf(snap);
    await prepare(rc, clustersOf(snap));
    const head = responseHead(rc, {
      ':status': '200',
      connection: 'keep-alive',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      'x-internal': 'secret',
      'x-backend': 'origin',
      'content-type': 'text/html',
    } as Record<string, string>);
    expect(head).toEqual({ 'content-type': 'text/html', 'x-route': 'r', 'x-backend': 'origin,v1' });
  });
});
