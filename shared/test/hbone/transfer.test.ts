// Bytes through real TLS on loopback: large transfers both ways, many concurrent streams,
// half-close in both directions, reset propagation, live byte counters.
import { constants as h2c } from 'node:http2';
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { copyBidirectional, type HboneRequest, resetStream } from '@hypha/shared/hbone';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  closeServer,
  createMesh,
  type Mesh,
  newPool,
  once,
  type RunningServer,
  readAll,
  sleep,
  startEcho,
  startHboneServer,
  startTcpServer,
  tcpHandler,
  writePattern,
} from './fixtures.js';

let mesh: Mesh;
let hbone: RunningServer;
let echo: Awaited<ReturnType<typeof startEcho>>;
const requests: HboneRequest[] = [];

beforeAll(async () => {
  mesh = await createMesh();
  hbone = await startHboneServer(mesh.server, {
    handler: (req) => {
      requests.push(req);
      return tcpHandler(req);
    },
  });
  echo = await startEcho();
});
afterAll(async () => {
  await hbone.close();
  await closeServer(echo.server);
});

function connect(pool: ReturnType<typeof newPool>, port: number) {
  return pool.connect({
    source: mesh.client,
    destination: { ip: '127.0.0.1', port: hbone.port },
    expectedIdentities: [mesh.serverId],
    authority: `127.0.0.1:${port}`,
  });
}

describe('transfer', () => {
  test('500 concurrent streams share 5 pooled connections and all echo exactly', async () => {
    const pool = newPool();
    try {
      const results = await Promise.all(
        Array.from({ length: 500 }, async (_, i) => {
          const t = await connect(pool, echo.port);
          const [sent, got] = await Promise.all([
            writePattern(t.stream, 32 * 1024 + i * 97),
            readAll(t.stream),
          ]);
          return { sent, got: got.sha256, connectionId: t.connectionId };
        }),
      );
      for (const r of results) expect(r.got).toBe(r.sent);
      expect(new Set(results.map((r) => r.connectionId)).size).toBe(5);
      expect(pool.stats().handshakes).toBe(5);
    } finally {
      pool.close();
    }
  });
});

describe('half-close', () => {
  test('client FIN reaches the app as end-of-stream while the app keeps sending', async () => {
    const appGotEnd = Promise.withResolvers<string>();
    const app = await startTcpServer((s) => {
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        text += d;
      });
      s.on('end', async () => {
        appGotEnd.resolve(text);
        // The app's write side is still open after the client's FIN.
        await sleep(20);
        s.write('reply-after-fin');
        s.end();
      });
    });
    const pool = newPool();
    try {
      const t = await connect(pool, app.port);
      t.stream.end('request');
      expect(await appGotEnd.promise).toBe('request');
      const reply = await readAll(t.stream);
      expect(reply.bytes).toBe('reply-after-fin'.length);
    } finally {
      pool.close();
      await closeServer(app.server);
    }
  });

  test('app FIN reaches the client as end-of-stream while the client keeps sending', async () => {
    const appReceived = Promise.withResolvers<string>();
    const app = await startTcpServer((s) => {
      s.end('bye');
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        text += d;
      });
      s.on('end', () => appReceived.resolve(text));
    });
    const pool = newPool();
    try {
      const t = await connect(pool, app.port);
      const got = await readAll(t.stream);
      expect(got.bytes).toBe(3);
      t.stream.write('still-');
      await sleep(20);
      t.stream.end('talking');
      expect(await appReceived.promise).toBe('still-talking');
    } finally {
      pool.close();
      await closeServer(app.server);
    }
  });
});

describe('reset propagation', () => {
  test('client reset becomes a TCP reset at the app', async () => {
    const appSocket = Promise.withResolvers<Socket>();
    const app = await startTcpServer((s) => appSocket.resolve(s));
    const pool = newPool();
    try {
      const t = await connect(pool, app.port);
      const s = await appSocket.promise;
      const errored = once<NodeJS.ErrnoException>(s, 'error');
      // resetStream sends RST_STREAM without a preceding END_STREAM (stream.close would send both).
      resetStream(t.stream);
      expect((await errored).code).toBe('ECONNRESET');
    } finally {
      pool.close();
      await closeServer(app.server);
    }
  });

  test('a tunnel whose HTTP/2 connection dies under it (PING timeout) resets the client, and the copy ends', async () => {
    // The agent's side of an outbound connection: a local client socket copied into a tunnel.
    const front = createServer();
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const accepted = once<Socket>(front, 'connection');
    const client = netConnect((front.address() as { port: number }).port, '127.0.0.1');
    const down = await accepted;
    const pool = newPool();
    try {
      const t = await connect(pool, echo.port);
      const copied = copyBidirectional(down, t.stream);
      client.write('ping');
      await once(client, 'data');
      let cleanEnd = false;
      client.on('end', () => {
        cleanEnd = true;
      });
      const errored = once<NodeJS.ErrnoException>(client, 'error');
      // What the pool does when PINGs go unanswered: the whole HTTP/2 session is destroyed.
      (t.stream as unknown as { session: { destroy(): void } }).session.destroy();
      expect((await errored).code).toBe('ECONNRESET');
      expect(cleanEnd).toBe(false);
      // The copy (and with it the agent's connection tracking) finishes instead of waiting forever.
      expect((await copied).outcome).toBe('upstream_reset');
    } finally {
      client.destroy();
      pool.close();
      await closeServer(front);
    }
  });

  test('app reset becomes RST_STREAM(CONNECT_ERROR) at the client', async () => {
    const app = await startTcpServer((s) => {
      s.write('partial');
      setTimeout(() => s.resetAndDestroy(), 20);
    });
    const pool = newPool();
    try {
      const t = await connect(pool, app.port);
      let sawCleanEnd = false;
      t.stream.on('data', () => {});
      t.stream.on('end', () => {
        sawCleanEnd = true;
      });
      t.stream.on('error', () => {});
      await once(t.stream, 'close');
      // A reset, never a clean END_STREAM (which the client side would turn into a FIN).
      expect(t.stream.rstCode).not.toBe(h2c.NGHTTP2_NO_ERROR);
      expect(t.stream.rstCode).toBeDefined();
      expect(sawCleanEnd).toBe(false);
    } finally {
      pool.close();
      await closeServer(app.server);
    }
  });
});

test('byte counters are readable while a tunnel runs', async () => {
  const app = await startTcpServer((s) => {
    s.resume();
  });
  const pool = newPool();
  try {
    const t = await connect(pool, app.port);
    t.stream.write(Buffer.alloc(100_000));
    await sleep(100);
    const req = requests.at(-1);
    expect(req?.counters.sent).toBe(100_000);
    expect(req?.counters.received).toBe(0);
    t.stream.end();
  } finally {
    pool.close();
    await closeServer(app.server);
  }
});
