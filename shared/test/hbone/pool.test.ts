// The pooled client: single flight, stream caps, status mapping, GOAWAY and idle release,
// the socket hook, and what the server handler sees.
import { connect as netConnect, type Socket } from 'node:net';
import { HboneError, type HboneRequest, type HboneResponse } from '@hypha/shared/hbone';
import { SpiffeId } from '@hypha/shared/identity';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  closeServer,
  createMesh,
  type Mesh,
  newPool,
  type RunningServer,
  readAll,
  sleep,
  startEcho,
  startHboneServer,
  startTcpServer,
  tcpHandler,
} from './fixtures.js';

let mesh: Mesh;
let echo: Awaited<ReturnType<typeof startEcho>>;

beforeAll(async () => {
  mesh = await createMesh();
  echo = await startEcho();
});
afterAll(async () => {
  await closeServer(echo.server);
});

function request(port: number, authority = `127.0.0.1:${echo.port}`) {
  return {
    source: mesh.client,
    destination: { ip: '127.0.0.1', port },
    expectedIdentities: [mesh.serverId],
    authority,
  };
}

describe('single flight and stream caps', () => {
  let hbone: RunningServer;
  beforeAll(async () => {
    hbone = await startHboneServer(mesh.server);
  });
  afterAll(() => hbone.close());

  test('100 simultaneous first requests share exactly one TLS handshake', async () => {
    const pool = newPool();
    try {
      const before = hbone.server.stats().handshakesCompleted;
      const tunnels = await Promise.all(Array.from({ length: 100 }, () => pool.connect(request(hbone.port))));
      expect(pool.stats().handshakes).toBe(1);
      expect(hbone.server.stats().handshakesCompleted - before).toBe(1);
      expect(new Set(tunnels.map((t) => t.connectionId)).size).toBe(1);
      expect(hbone.server.stats().streams).toBe(100);
      // The 101st stream does not fit: a second connection opens.
      const extra = await pool.connect(request(hbone.port));
      expect(extra.connectionId).not.toBe(tunnels[0]?.connectionId);
      expect(pool.stats()).toMatchObject({ handshakes: 2, connections: 2, streams: 101 });
      for (const t of [...tunnels, extra]) t.stream.end();
    } finally {
      pool.close();
    }
  });

  test('a freed slot is reused instead of opening a connection', async () => {
    const pool = newPool({ maxStreamsPerConnection: 2 });
    try {
      const a = await pool.connect(request(hbone.port));
      const b = await pool.connect(request(hbone.port));
      a.stream.end();
      await readAll(a.stream);
      await sleep(20);
      const c = await pool.connect(request(hbone.port));
      expect(c.connectionId).toBe(b.connectionId);
      expect(pool.stats().handshakes).toBe(1);
      b.stream.end();
      c.stream.end();
    } finally {
      pool.close();
    }
  });

  test('different expected identities or sources never share a connection', async () => {
    const pool = newPool();
    try {
      const other = await mesh.ca.issue(SpiffeId.of('cluster.local', 'shop', 'other'));
      const a = await pool.connect(request(hbone.port));
      const b = await pool.connect({ ...request(hbone.port), source: other });
      const c = await pool.connect({
        ...request(hbone.port),
        expectedIdentities: [mesh.serverId, SpiffeId.of('cluster.local', 'shop', 'waypoint')],
      });
      expect(new Set([a.connectionId, b.connectionId, c.connectionId]).size).toBe(3);
      for (const t of [a, b, c]) t.stream.end();
    } finally {
      pool.close();
    }
  });

  test('idle connections are released after the idle timeout', async () => {
    const pool = newPool({ idleTimeoutMs: 150 });
    try {
      const t = await pool.connect(request(hbone.port));
      t.stream.end();
      await readAll(t.stream);
      await sleep(50);
      expect(pool.stats().connections).toBe(1);
      await sleep(400);
      expect(pool.stats().connections).toBe(0);
      const again = await pool.connect(request(hbone.port));
      expect(again.connectionId).not.toBe(t.connectionId);
      again.stream.end();
    } finally {
      pool.close();
    }
  });

  test('the createConnection hook opens the TCP socket', async () => {
    const opened: Socket[] = [];
    const pool = newPool({
      createConnection: ({ host, port }) => {
        const s = netConnect({ host, port });
        opened.push(s);
        return s;
      },
    });
    try {
      const t = await pool.connect(request(hbone.port));
      expect(opened).toHaveLength(1);
      t.stream.end();
    } finally {
      pool.close();
    }
  });
});

describe('what the handler sees and answers', () => {
  let hbone: RunningServer;
  let last: HboneRequest | undefined;
  let answer: (req: HboneRequest) => Promise<HboneResponse> = tcpHandler as never;
  beforeAll(async () => {
    hbone = await startHboneServer(mesh.server, {
      handler: (req) => {
        last = req;
        return answer(req);
      },
    });
  });
  afterAll(() => hbone.close());

  test('peer identity, authority and metadata headers arrive parsed', async () => {
    answer = tcpHandler as never;
    const pool = newPool();
    try {
      const t = await pool.connect({
        ...request(hbone.port),
        forwardedFor: { ip: '10.0.0.9', port: 40000 },
        baggage: { 'k8s.namespace.name': 'shop', 'service.name': 'web' },
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        headers: { 'x-extra': 'yes' },
      });
      t.stream.end();
      expect(String(last?.peer)).toBe(String(mesh.clientId));
      expect(last?.authority).toEqual({ host: '127.0.0.1', port: echo.port });
      expect(last?.forwardedFor).toEqual({ ip: '10.0.0.9', port: 40000 });
      expect(last?.baggage).toEqual({ 'k8s.namespace.name': 'shop', 'service.name': 'web' });
      expect(last?.traceparent?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
      expect(last?.headers['x-extra']).toBe('yes');
      expect(last?.peerCertificate.serial).toBe(mesh.client.serial);
    } finally {
      pool.close();
    }
  });

  test.each([
    [{ status: 401 as const }, 'DENY', 'authorization policy'],
    [{ status: 400 as const }, 'BAD_REQUEST', 'malformed'],
    [{ status: 503 as const }, 'NO_HEALTHY_UPSTREAM', 'knows no workload'],
    [{ status: 503 as const, reason: 'upstream_connect_failure' }, 'UPSTREAM_CONNECT_FAILURE', 'listening'],
  ])('handler answer %j becomes %s', async (response, code, text) => {
    answer = async () => response;
    const pool = newPool();
    try {
      const err = await pool.connect(request(hbone.port)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HboneError);
      expect((err as HboneError).code).toBe(code);
      expect((err as HboneError).status).toBe(response.status);
      expect((err as HboneError).responseFlag).toBe(code);
      expect((err as Error).message).toContain(text);
      // The connection stays usable after a refused stream.
      answer = tcpHandler as never;
      const t = await pool.connect(request(hbone.port));
      t.stream.end();
      expect(pool.stats().handshakes).toBe(1);
    } finally {
      pool.close();
    }
  });

  test('a handler that throws answers 503, the server survives', async () => {
    answer = async () => {
      throw new Error('boom');
    };
    const pool = newPool();
    try {
      const err = await pool.connect(request(hbone.port)).catch((e: unknown) => e);
      expect((err as HboneError).code).toBe('NO_HEALTHY_UPSTREAM');
    } finally {
      pool.close();
    }
  });

  test('a stream cancelled while the handler waits does not crash the server', async () => {
    const gate = Promise.withResolvers<void>();
    const called = Promise.withResolvers<void>();
    answer = async (req) => {
      called.resolve();
      await gate.promise;
      return tcpHandler(req) as Promise<HboneResponse>;
    };
    const pool = newPool();
    try {
      const ac = new AbortController();
      const pending = pool.connect({ ...request(hbone.port), signal: ac.signal }).catch((e: unknown) => e);
      await called.promise;
      ac.abort();
      expect(((await pending) as HboneError).code).toBe('STREAM_RESET');
      await sleep(20);
      expect(last?.signal.aborted).toBe(true);
      gate.resolve();
      await sleep(50);
      answer = tcpHandler as never;
      const t = await pool.connect(request(hbone.port));
      t.stream.end();
    } finally {
      pool.close();
    }
  });
});

test('an unreachable destination fails with CONNECT and says what to check', async () => {
  const pool = newPool();
  try {
    const err = (await pool.connect(request(1)).catch((e: unknown) => e)) as HboneError;
    expect(err.code).toBe('CONNECT');
    expect(err.responseFlag).toBe('CONNECT');
    expect(err.message).toContain('ECONNREFUSED');
  } finally {
    pool.close();
  }
});

test('invalid arguments are refused before any connection', async () => {
  const pool = newPool();
  try {
    await expect(pool.connect({ ...request(15008), destination: { ip: 'nope' } })).rejects.toThrow(
      /not an IP/,
    );
    await expect(pool.connect({ ...request(15008), expectedIdentities: [] })).rejects.toThrow(
      /no expected identities/,
    );
    await expect(pool.connect({ ...request(15008), authority: 'example.com:80' })).rejects.toThrow(
      /not an IP/,
    );
    expect(pool.stats().handshakes).toBe(0);
  } finally {
    pool.close();
  }
});

test('a connection whose PINGs go unanswered is closed and not reused', async () => {
  const hbone = await startHboneServer(mesh.server);
  // A relay we can freeze: it stops forwarding in both directions, like a dead path.
  let frozen = false;
  const relay = await startTcpServer((client) => {
    const server = netConnect({ host: '127.0.0.1', port: hbone.port });
    server.on('error', () => {});
    client.on('data', (d: Buffer) => {
      if (!frozen) server.write(d);
    });
    server.on('data', (d: Buffer) => {
      if (!frozen) client.write(d);
    });
    client.on('close', () => server.destroy());
  });
  const pool = newPool({ pingIntervalMs: 100, pingTimeoutMs: 300 });
  try {
    const t = await pool.connect(request(relay.port));
    t.stream.on('error', () => {});
    const closed = new Promise((r) => t.stream.once('close', r));
    await sleep(350);
    expect(pool.stats().connections).toBe(1);
    frozen = true;
    const started = Date.now();
    await closed;
    expect(Date.now() - started).toBeLessThan(1500);
    expect(pool.stats().connections).toBe(0);
    frozen = false;
    const again = await pool.connect(request(relay.port));
    expect(again.connectionId).not.toBe(t.connectionId);
    again.stream.end();
  } finally {
    pool.close();
    await closeServer(relay.server);
    await hbone.close();
  }
});

test('a tunnel asked for just as its pooled connection dies opens on a new connection', async () => {
  const hbone = await startHboneServer(mesh.server);
  const pool = newPool();
  try {
    const first = await pool.connect(request(hbone.port));
    first.stream.on('error', () => {});
    // The HTTP/2 session fails (as with ERR_HTTP2_TOO_MANY_INVALID_FRAMES); its 'close' event has
    // not run yet when the next connect picks a connection.
    (first.stream as unknown as { session: { destroy(): void } }).session.destroy();
    const next = await pool.connect(request(hbone.port));
    expect(next.connectionId).not.toBe(first.connectionId);
    next.stream.end();
  } finally {
    pool.close();
    await hbone.close();
  }
});
