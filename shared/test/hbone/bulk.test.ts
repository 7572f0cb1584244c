// The bulk transfer on its own file so it runs in parallel with the other tunnel tests.

import type { HboneRequest } from '@hypha/shared/hbone';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  closeServer,
  createMesh,
  type Mesh,
  newPool,
  type RunningServer,
  readAll,
  sleep,
  startHboneServer,
  startTcpServer,
  tcpHandler,
  writePattern,
} from './fixtures.js';

const MiB = 1024 * 1024;
let mesh: Mesh;
let hbone: RunningServer;
const requests: HboneRequest[] = [];

beforeAll(async () => {
  mesh = await createMesh();
  hbone = await startHboneServer(mesh.server, {
    handler: (req) => {
      requests.push(req);
      return tcpHandler(req);
    },
  });
});
afterAll(async () => {
  await hbone.close();
});

function connect(pool: ReturnType<typeof newPool>, port: number) {
  return pool.connect({
    source: mesh.client,
    destination: { ip: '127.0.0.1', port: hbone.port },
    expectedIdentities: [mesh.serverId],
    authority: `127.0.0.1:${port}`,
  });
}

test('256 MiB each way at once through one tunnel arrive sha256-exact', async () => {
  const size = 256 * MiB;
  let upstreamResult: Promise<{ sent: string; got: { bytes: number; sha256: string } }> | undefined;
  const app = await startTcpServer((s) => {
    upstreamResult = Promise.all([writePattern(s, size), readAll(s)]).then(([sent, got]) => ({
      sent,
      got,
    }));
  });
  const pool = newPool();
  try {
    const t = await connect(pool, app.port);
    const [clientSent, clientGot] = await Promise.all([writePattern(t.stream, size), readAll(t.stream)]);
    const up = await upstreamResult;
    expect(up?.got.bytes).toBe(size);
    expect(up?.got.sha256).toBe(clientSent);
    expect(clientGot.bytes).toBe(size);
    expect(clientGot.sha256).toBe(up?.sent);
    await sleep(50);
    const req = requests.at(-1);
    expect(req?.counters).toEqual({ sent: size, received: size });
  } finally {
    pool.close();
    await closeServer(app.server);
  }
});
