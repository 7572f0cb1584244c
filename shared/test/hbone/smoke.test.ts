import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  createMesh,
  type Mesh,
  newPool,
  type RunningServer,
  readAll,
  startEcho,
  startHboneServer,
  writePattern,
} from './fixtures.js';

let mesh: Mesh;
let hbone: RunningServer;
let echo: Awaited<ReturnType<typeof startEcho>>;

beforeAll(async () => {
  mesh = await createMesh();
  hbone = await startHboneServer(mesh.server);
  echo = await startEcho();
});
afterAll(async () => {
  await hbone.close();
  echo.server.close();
});

test('smoke: echo through one tunnel', async () => {
  const pool = newPool();
  const t = await pool.connect({
    source: mesh.client,
    destination: { ip: '127.0.0.1', port: hbone.port },
    expectedIdentities: [mesh.serverId],
    authority: `127.0.0.1:${echo.port}`,
  });
  expect(String(t.peer)).toBe(String(mesh.serverId));
  const [sent, got] = await Promise.all([writePattern(t.stream, 10 * 1024 * 1024), readAll(t.stream)]);
  expect(got.sha256).toBe(sent);
  pool.close();
});
