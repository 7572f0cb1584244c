// The agent runs with AGENT_NODE_FLAGS (V8 GC settings for a Buffer-heavy proxy). The DaemonSet's
// container command is a copy outside TypeScript; these tests hold it to the list, check that the
// pinned Node accepts the flags, and that an agent started without them says so.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import {
  AGENT_NODE_FLAGS,
  CA_NODE_FLAGS,
  MESH_PROCESS_ENV,
  missingAgentNodeFlags,
  WAYPOINT_NODE_FLAGS,
} from '@hypha/shared/hbone';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { HYPHA_BIN, runHypha } from '../run-hypha.js';

const AGENT_YAML = fileURLToPath(new URL('../../../manifests/base/agent.yaml', import.meta.url));
const WAYPOINT_YAML = fileURLToPath(new URL('../../../manifests/waypoint/waypoint.yaml', import.meta.url));
const CA_YAML = fileURLToPath(new URL('../../../manifests/base/ca.yaml', import.meta.url));

/** Exit code of `node FLAGS hypha.js --version` with the pinned Node (a misspelt V8 flag is not 0). */
async function versionExitCode(flags: readonly string[]): Promise<number> {
  const { execFile } = await import('node:child_process');
  return new Promise<number>((resolve) => {
    execFile(process.execPath, [...flags, HYPHA_BIN, '--version'], { timeout: 30_000 }, (err) =>
      resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
    );
  });
}

describe('AGENT_NODE_FLAGS', () => {
  it("the DaemonSet's agent container runs node with exactly the list", async () => {
    const docs = parseAllDocuments(await readFile(AGENT_YAML, 'utf8')).map((d) => d.toJS());
    const ds = docs.find((d) => d?.kind === 'DaemonSet');
    const container = ds.spec.template.spec.containers.find((c: { name: string }) => c.name === 'agent');
    expect(container.command).toEqual(['node', ...AGENT_NODE_FLAGS, 'agent/bin/hypha.js']);
    expect(container.args[0]).toBe('agent');
  });

  it('the pinned Node accepts the flags (a misspelt V8 flag stops node before our code runs)', async () => {
    expect(await versionExitCode(AGENT_NODE_FLAGS)).toBe(0);
  });

  it('missingAgentNodeFlags names what a process lacks', () => {
    expect(missingAgentNodeFlags([...AGENT_NODE_FLAGS, '--enable-source-maps'])).toEqual([]);
    expect(missingAgentNodeFlags(['--initial-heap-size=64'])).toEqual([
      '--external-memory-accounted-in-global-limit',
      '--max-semi-space-size=2',
    ]);
    expect(missingAgentNodeFlags([])).toEqual([...AGENT_NODE_FLAGS]);
  });

  it('an agent started without the flags logs which are missing and how to start it', async () => {
    // A file source that does not exist: the agent gets past the flag check, then fails to load.
    const r = await runHypha(['agent', '--node', 'n1', '--config', 'file:/nonexistent/hypha-config.yaml'], {
      timeoutMs: 30_000,
    });
    expect(r.code).not.toBe(0);
    const warn = r.stderr
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        try {
          return JSON.parse(l) as { level?: string; msg?: string; missing?: string[] };
        } catch {
          return {};
        }
      })
      .find((l) => l.msg?.startsWith("started without the agent's V8 flags"));
    expect(warn?.missing).toEqual([...AGENT_NODE_FLAGS]);
    expect(warn?.msg).toContain(`node ${AGENT_NODE_FLAGS.join(' ')}`);
  });
});

describe('WAYPOINT_NODE_FLAGS', () => {
  it("the waypoint Deployment's container runs node with exactly the list", async () => {
    const docs = parseAllDocuments(await readFile(WAYPOINT_YAML, 'utf8')).map((d) => d.toJS());
    const deploy = docs.find((d) => d?.kind === 'Deployment');
    const container = deploy.spec.template.spec.containers.find(
      (c: { name: string }) => c.name === 'waypoint',
    );
    expect(container.command).toEqual(['node', ...WAYPOINT_NODE_FLAGS, 'agent/bin/hypha.js']);
    expect(container.args[0]).toBe('waypoint');
  });

  it('the pinned Node accepts them', async () => {
    expect(await versionExitCode(WAYPOINT_NODE_FLAGS)).toBe(0);
  });
});

describe('CA_NODE_FLAGS', () => {
  it("the CA Deployment's container runs node with exactly the list, and the pinned Node accepts it", async () => {
    const docs = parseAllDocuments(await readFile(CA_YAML, 'utf8')).map((d) => d.toJS());
    const deploy = docs.find((d) => d?.kind === 'Deployment');
    const container = deploy.spec.template.spec.containers[0];
    expect(container.command).toEqual(['node', ...CA_NODE_FLAGS, 'agent/bin/hypha.js']);
    expect(container.args.slice(0, 2)).toEqual(['ca', 'serve']);
    expect(await versionExitCode(CA_NODE_FLAGS)).toBe(0);
  });
});

describe('MESH_PROCESS_ENV', () => {
  const GATEWAY_YAML = fileURLToPath(new URL('../../../manifests/gateway/gateway.yaml', import.meta.url));
  it.each([
    ['agent DaemonSet', AGENT_YAML, 'DaemonSet'],
    ['waypoint Deployment', WAYPOINT_YAML, 'Deployment'],
    ['gateway Deployment', GATEWAY_YAML, 'Deployment'],
    ['CA Deployment', CA_YAML, 'Deployment'],
  ])("the %s's Hypha container sets every variable of the list", async (_what, file, kind) => {
    const docs = parseAllDocuments(await readFile(file, 'utf8')).map((d) => d.toJS());
    const workload = docs.find((d) => d?.kind === kind);
    const container = workload.spec.template.spec.containers.find((c: { command?: string[] }) =>
      c.command?.includes('agent/bin/hypha.js'),
    );
    const env = new Map(
      (container.env as { name: string; value?: string }[]).map((e) => [e.name, e.value] as const),
    );
    for (const [name, value] of Object.entries(MESH_PROCESS_ENV)) expect(env.get(name)).toBe(value);
  });
});
