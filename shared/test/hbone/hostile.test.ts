// Hostile peers against one server while a well-behaved client keeps transferring correctly:
// rapid reset, slowloris handshakes, SETTINGS and PING floods, handshake backlog.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { HboneTunnel } from '@hypha/shared/hbone';
import { afterAll, beforeAll, expect, test } from 'vitest';
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
  writePattern,
} from './fixtures.js';

const MiB = 1024 * 1024;
const ENHANCE_YOUR_CALM = 0xb;
let mesh: Mesh;
let echo: Awaited<ReturnType<typeof startEcho>>;
let hbone: RunningServer;
let streamsSeen = 0;
const pool = newPool();

beforeAll(async () => {
  mesh = await createMesh();
  echo = await startEcho();
  hbone = await startHboneServer(mesh.server, {
    limits: { handshakeTimeoutMs: 500, maxPendingHandshakes: 64 },
    handler: async (req) => {
      streamsSeen++;
      const { tcpHandler } = await import('./fixtures.js');
      return tcpHandler(req);
    },
  });
});
afterAll(async () => {
  pool.close();
  await hbone.close();
  await closeServer(echo.server);
});

function tunnel(): Promise<HboneTunnel> {
  return pool.connect({
    source: mesh.client,
    destination: { ip: '127.0.0.1', port: hbone.port },
    expectedIdentities: [mesh.serverId],
    authority: `127.0.0.1:${echo.port}`,
  });
}

/** A well-behaved transfer that runs while the attack happens. */
async function goodTransfer(bytes: number): Promise<void> {
  const t = await tunnel();
  const [sent, got] = await Promise.all([writePattern(t.stream, bytes), readAll(t.stream)]);
  expect(got.sha256).toBe(sent);
}

function frame(type: number, flags: number, streamId: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}

/** Opens mTLS + h2 by hand, writes `frames` after the preface, resolves with the GOAWAY code seen. */
function rawFlood(frames: Buffer): Promise<number | undefined> {
  return new Promise((resolve) => {
    const s = tlsConnect({
      host: '127.0.0.1',
      port: hbone.port,
      key: mesh.client.keyPem,
      cert: mesh.client.certChainPem,
      ca: mesh.client.trustBundlePem,
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3',
      checkServerIdentity: () => undefined,
    });
    let buf = Buffer.alloc(0);
    let goaway: number | undefined;
    s.on('secureConnect', () => {
      s.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
      s.write(frame(0x4, 0, 0));
      s.write(frames);
    });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        if (buf[3] === 0x7) {
          goaway ??= buf.readUInt32BE(9 + 4);
        }
        buf = buf.subarray(9 + len);
      }
    });
    s.on('error', () => {});
    s.on('close', () => resolve(goaway));
    setTimeout(() => s.destroy(), 5000).unref();
  });
}

/** HPACK for CONNECT :authority, literal without indexing, names from the static table. */
function connectHeaderBlock(authority: string): Buffer {
  const lit = (nameIndex: number, value: string): Buffer =>
    Buffer.concat([Buffer.from([nameIndex, value.length]), Buffer.from(value)]);
  return Buffer.concat([lit(2, 'CONNECT'), lit(1, authority)]);
}

test('a rapid-reset flood gets GOAWAY while another client keeps transferring', async () => {
  const good = goodTransfer(32 * MiB);
  const block = connectHeaderBlock(`127.0.0.1:${echo.port}`);
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(0x8);
  // 1000 streams, each HEADERS immediately followed by RST_STREAM(CANCEL): CVE-2023-44487.
  const frames: Buffer[] = [];
  for (let i = 0; i < 1000; i++) {
    const id = 1 + 2 * i;
    frames.push(frame(0x1, 0x4, id, block), frame(0x3, 0, id, cancel));
  }
  const seenBefore = streamsSeen;
  expect(await rawFlood(Buffer.concat(frames))).toBe(ENHANCE_YOUR_CALM);
  await good;
  expect(hbone.server.stats().goawaysForAbuse).toBeGreaterThan(0);
  // Far fewer than 1000 handler runs: the flood was cut short.
  expect(streamsSeen - seenBefore).toBeLessThan(1000);
  // The server is still serving new tunnels.
  await goodTransfer(MiB);
});

test('slowloris handshakes are cut at the handshake timeout; good clients are served meanwhile', async () => {
  const slow: Socket[] = [];
  const closedAt: number[] = [];
  const start = Date.now();
  for (let i = 0; i < 30; i++) {
    const s = netConnect({ host: '127.0.0.1', port: hbone.port });
    s.on('error', () => {});
    s.on('close', () => closedAt.push(Date.now() - start));
    slow.push(s);
  }
  // Dribble a TLS record header one byte at a time, never completing a ClientHello.
  const hello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
  for (let i = 0; i < hello.length; i++) {
    for (const s of slow) if (!s.destroyed) s.write(hello.subarray(i, i + 1));
    await sleep(100);
  }
  await goodTransfer(8 * MiB);
  await sleep(Math.max(0, 1200 - (Date.now() - start)));
  expect(closedAt).toHaveLength(30);
  for (const t of closedAt) expect(t).toBeLessThan(1500);
});

test('sockets beyond the pending-handshake limit are closed at once', async () => {
  const guarded = await startHboneServer(mesh.server, {
    limits: { handshakeTimeoutMs: 10_000, maxPendingHandshakes: 8 },
  });
  const idle: Socket[] = [];
  let closedEarly = 0;
  try {
    for (let i = 0; i < 20; i++) {
      const s = netConnect({ host: '127.0.0.1', port: guarded.port });
      s.on('error', () => {});
      s.on('close', () => {
        closedEarly += 1;
      });
      idle.push(s);
    }
    // 8 wait in the handshake (until its 10 s timeout), the other 12 are refused at once.
    for (let i = 0; i < 100 && closedEarly < 12; i++) await sleep(20);
    await sleep(200);
    expect(closedEarly).toBe(12);
  } finally {
    for (const s of idle) s.destroy();
    await guarded.close();
  }
});

test('a PING flood gets GOAWAY(ENHANCE_YOUR_CALM)', async () => {
  const pings = Buffer.concat(Array.from({ length: 500 }, () => frame(0x6, 0, 0, Buffer.alloc(8))));
  const good = goodTransfer(4 * MiB);
  expect(await rawFlood(pings)).toBe(ENHANCE_YOUR_CALM);
  await good;
});

test('a SETTINGS flood gets GOAWAY(ENHANCE_YOUR_CALM)', async () => {
  const settings = Buffer.concat(Array.from({ length: 500 }, () => frame(0x4, 0, 0)));
  const good = goodTransfer(4 * MiB);
  expect(await rawFlood(settings)).toBe(ENHANCE_YOUR_CALM);
  await good;
});
