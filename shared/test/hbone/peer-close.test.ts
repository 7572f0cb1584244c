// A client may close a tunnel while the server is still sending to it. node's stream.destroy()
// does that with RST_STREAM(NO_ERROR), which node treats as a graceful close and waits for our
// writes to finish: they never do (no window update comes for a closed stream), so the server
// kept the stream, its upstream connection and its concurrency slot until the HBONE connection
// ended. What the app behind the server and the next tunnels notice is checked here.
import { createHbonePool } from '@hypha/shared/hbone';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  closeServer,
  createMesh,
  type Mesh,
  type RunningServer,
  sleep,
  startHboneServer,
  startTcpServer,
} from './fixtures.js';

let mesh: Mesh;
let hbone: RunningServer;
let talker: Awaited<ReturnType<typeof startTcpServer>>;
let upstreamOpen = 0;

beforeAll(async () => {
  mesh = await createMesh();
  // An app that sends as fast as it may, until its connection closes (a download, a stream).
  talker = await startTcpServer((s) => {
    upstreamOpen += 1;
    s.on('close', () => {
      upstreamOpen -= 1;
    });
    const chunk = Buffer.alloc(16 * 1024);
    const pump = (): void => {
      while (!s.destroyed && s.write(chunk));
      if (!s.destroyed) s.once('drain', pump);
    };
    pump();
  });
  hbone = await startHboneServer(mesh.server);
});
afterAll(async () => {
  await hbone.close();
  await closeServer(talker.server);
});

test('a client that closes its tunnel while the server still sends releases the stream and the upstream connection', async () => {
  const pool = createHbonePool();
  try {
    for (let i = 0; i < 20; i++) {
      const t = await pool.connect({
        source: mesh.client,
        destination: { ip: '127.0.0.1', port: hbone.port },
        expectedIdentities: [mesh.serverId],
        authority: `127.0.0.1:${talker.port}`,
      });
      await new Promise((resolve) => t.stream.once('data', resolve));
      t.stream.destroy(); // RST_STREAM(NO_ERROR)
    }
    for (let i = 0; i < 250 && (upstreamOpen > 0 || hbone.server.stats().streams > 0); i++) await sleep(20);
    expect(upstreamOpen).toBe(0);
    expect(hbone.server.stats()).toMatchObject({ connections: 1, streams: 0 });
  } finally {
    pool.close();
  }
});
