// Graceful drain: in-flight streams finish before the deadline, new streams go to a fresh
// connection (the successor server), stragglers are cut at the deadline.
import { type AddressInfo, createServer, type Server } from 'node:net';
import { createHboneServer, type HboneServer } from '@hypha/shared/hbone';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  closeServer,
  createMesh,
  type Mesh,
  newPool,
  once,
  readAll,
  sleep,
  startEcho,
  tcpHandler,
  writePattern,
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

/** One port whose accepted sockets go to whichever HBONE server is current (as during an agent restart). */
async function front(): Promise<{ port: number; server: Server; current: { hbone: HboneServer } }> {
  const current = { hbone: createHboneServer({ findCertificate: () => mesh.server, handler: tcpHandler }) };
  const server = createServer((s) => current.hbone.handleSocket(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server, current };
}

test('in-flight streams complete during drain; new streams go to the successor', async () => {
  const f = await front();
  const old = f.current.hbone;
  const pool = newPool();
  const req = {
    source: mesh.client,
    destination: { ip: '127.0.0.1', port: f.port },
    expectedIdentities: [mesh.serverId],
    authority: `127.0.0.1:${echo.port}`,
  };
  try {
    const inflight = await pool.connect(req);
    const echoed = readAll(inflight.stream);
    inflight.stream.write(Buffer.alloc(1024, 1));

    const successor = createHboneServer({ findCertificate: () => mesh.server, handler: tcpHandler });
    f.current.hbone = successor;
    const started = Date.now();
    const drained = old.drain(5000);
    await sleep(100);
    expect(old.stats().streams).toBe(1);

    // The pool saw GOAWAY: a new stream opens a new connection, which lands on the successor.
    const fresh = await pool.connect(req);
    expect(fresh.connectionId).not.toBe(inflight.connectionId);
    expect(successor.stats().handshakesCompleted).toBe(1);
    const [sentFresh, gotFresh] = await Promise.all([
      writePattern(fresh.stream, 1024 * 1024),
      readAll(fresh.stream),
    ]);
    expect(gotFresh.sha256).toBe(sentFresh);

    // The in-flight stream is still alive and finishes cleanly.
    inflight.stream.end(Buffer.alloc(1024, 2));
    expect((await echoed).bytes).toBe(2048);
    await drained;
    expect(Date.now() - started).toBeLessThan(5000);
    expect(old.stats().connections).toBe(0);
    await successor.close();
  } finally {
    pool.close();
    await closeServer(f.server);
  }
});

test('streams still open at the deadline are closed and the drain returns on time', async () => {
  const f = await front();
  const pool = newPool();
  try {
    const t = await pool.connect({
      source: mesh.client,
      destination: { ip: '127.0.0.1', port: f.port },
      expectedIdentities: [mesh.serverId],
      authority: `127.0.0.1:${echo.port}`,
    });
    t.stream.on('error', () => {});
    t.stream.resume();
    const closed = once(t.stream, 'close', 5000);
    const started = Date.now();
    await f.current.hbone.drain(300);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(1500);
    await closed;
    // A drained server refuses new sockets.
    expect(f.current.hbone.draining).toBe(true);
  } finally {
    pool.close();
    await closeServer(f.server);
  }
});
