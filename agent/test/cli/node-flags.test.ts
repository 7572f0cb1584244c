// The mesh's processes run with MESH_NODE_FLAGS (V8 GC settings for Buffer-heavy proxies). Two
// copies live outside TypeScript, the launcher's shebang and the image's ENTRYPOINT; these tests
// hold them to the list and check that the flags reach V8 when a user runs `hypha` directly.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MESH_NODE_FLAGS } from '@hypha/shared/hbone';
import { describe, expect, it } from 'vitest';
import { HYPHA_BIN } from '../run-hypha.js';

const DOCKERFILE = fileURLToPath(new URL('../../../Dockerfile', import.meta.url));

describe('MESH_NODE_FLAGS', () => {
  it('the launcher shebang passes exactly the list to node', async () => {
    const first = (await readFile(HYPHA_BIN, 'utf8')).split('\n')[0];
    expect(first).toBe(`#!/usr/bin/env -S node ${MESH_NODE_FLAGS.join(' ')}`);
  });

  it("the image's ENTRYPOINT passes exactly the list to node", async () => {
    const line = (await readFile(DOCKERFILE, 'utf8')).split('\n').find((l) => l.startsWith('ENTRYPOINT '));
    expect(JSON.parse(line!.slice('ENTRYPOINT '.length))).toEqual([
      'node',
      ...MESH_NODE_FLAGS,
      'agent/bin/hypha.js',
    ]);
  });

  it('running the launcher as an executable (as npx does) gives node the flags, and node accepts them', async () => {
    // A preload (NODE_OPTIONS allows --require) reports the execArgv the process really got.
    const dir = await mkdtemp(join(tmpdir(), 'hypha-flags-'));
    try {
      const out = join(dir, 'execArgv.json');
      const preload = join(dir, 'report.cjs');
      await writeFile(
        preload,
        `require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.execArgv));\n`,
      );
      const env = {
        ...process.env,
        // The project's Node 24 first, as `npx` arranges it.
        PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`,
        NODE_OPTIONS: `--require ${preload}`,
      };
      const { code, stdout } = await new Promise<{ code: number; stdout: string }>((resolve) => {
        execFile(HYPHA_BIN, ['--version'], { env, timeout: 30_000 }, (err, stdout) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout }),
        );
      });
      expect(code).toBe(0);
      expect(stdout).toMatch(/\d+\.\d+\.\d+/);
      const execArgv = JSON.parse(await readFile(out, 'utf8')) as string[];
      expect(execArgv).toEqual(expect.arrayContaining([...MESH_NODE_FLAGS]));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
