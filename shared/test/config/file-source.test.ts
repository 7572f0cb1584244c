import { mkdir, mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileSource, demoConfigYaml, type FileSource } from '@hypha/shared/config';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

interface Line {
  level: number;
  msg: string;
  [k: string]: unknown;
}

let dir: string;
let lines: Line[];
let sources: FileSource[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-config-'));
  lines = [];
  sources = [];
});

afterEach(async () => {
  for (const s of sources) await s.close();
  await rm(dir, { recursive: true, force: true });
});

function open(path: string, extra: { pollIntervalMs?: number; watch?: boolean } = {}): FileSource {
  const logger = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s) as Line) });
  const s = createFileSource({ path, trustDomain: 'cluster.local', logger, debounceMs: 30, ...extra });
  sources.push(s);
  return s;
}

const errorLines = () => lines.filter((l) => l.level >= 50).map((l) => l.msg);

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const NAMESPACES = `
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    hypha.dev/dataplane-mode: ambient
`;

const podYaml = (name: string, ip: string, extra = '') => `
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: demo
  labels:
    app: echo
spec:
  nodeName: node-a
status:
  podIP: ${ip}${extra}
`;

describe('file source', () => {
  it('loads a directory of multi-document YAML and JSON, applying good objects and naming each bad one', async () => {
    await writeFile(join(dir, '00-ns.yaml'), NAMESPACES);
    await writeFile(
      join(dir, 'pods.yml'),
      [podYaml('a', '10.1.0.1'), podYaml('b', '10.1.0.500'), podYaml('c', '10.1.0.3')].join('---\n'),
    );
    await writeFile(
      join(dir, 'svc.json'),
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'echo', namespace: 'demo' },
            spec: {
              clusterIP: '10.96.0.10',
              selector: { app: 'echo' },
              ports: [{ port: 80, targetPort: 8080 }],
            },
          },
        ],
      }),
    );
    await writeFile(join(dir, 'notes.txt'), 'not config');
    const s = open(dir);
    await s.start();
    await s.ready;
    expect(s.state.findWorkloadByIp('10.1.0.1')).toMatchObject({ name: 'a', inMesh: true });
    expect(s.state.findWorkloadByIp('10.1.0.3')?.name).toBe('c');
    expect(s.state.findWorkloadByName('demo', 'b')).toBeUndefined();
    expect(s.state.findServiceByVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip)).toEqual([
      '10.1.0.1',
      '10.1.0.3',
    ]);
    expect(errorLines()).toEqual([
      `${join(dir, 'pods.yml')}: Pod demo/b (document 2): field status.podIP: is not an IP address (got "10.1.0.500") (object skipped)`,
    ]);
    const logged = lines.find((l) => l.level === 50)!;
    expect(logged).toMatchObject({
      code: 'INVALID_OBJECT',
      kind: 'Pod',
      namespace: 'demo',
      objectName: 'b',
      field: 'status.podIP',
    });
    expect(s.errors).toHaveLength(1);
  });

  it('reacts to edits in place, to rename-over saves, and to deleted files', async () => {
    await writeFile(join(dir, 'ns.yaml'), NAMESPACES);
    await writeFile(join(dir, 'pods.yaml'), podYaml('a', '10.1.0.1'));
    const s = open(dir);
    await s.start();
    expect(s.state.findWorkloadByIp('10.1.0.1')?.name).toBe('a');

    await writeFile(
      join(dir, 'pods.yaml'),
      [podYaml('a', '10.1.0.1'), podYaml('b', '10.1.0.2')].join('---\n'),
    );
    await waitFor('pod b', () => s.state.findWorkloadByIp('10.1.0.2') !== undefined);

    // An editor that writes a temporary file and renames it over the original.
    await writeFile(join(dir, '.pods.yaml.swp'), podYaml('a', '10.1.0.9'));
    await rename(join(dir, '.pods.yaml.swp'), join(dir, 'pods.yaml'));
    await waitFor('pod a moved', () => s.state.findWorkloadByIp('10.1.0.9')?.name === 'a');
    expect(s.state.findWorkloadByIp('10.1.0.2')).toBeUndefined();

    // A new file in a new subdirectory.
    await mkdir(join(dir, 'team'));
    await writeFile(join(dir, 'team', 'more.yaml'), podYaml('c', '10.1.0.3'));
    await waitFor('pod c', () => s.state.findWorkloadByIp('10.1.0.3') !== undefined);

    await unlink(join(dir, 'team', 'more.yaml'));
    await waitFor('pod c withdrawn', () => s.state.findWorkloadByIp('10.1.0.3') === undefined);
    expect(s.state.findWorkloadByIp('10.1.0.9')?.name).toBe('a');
    expect(errorLines()).toEqual([]);
  });

  it('keeps the last good state of a file whose YAML breaks, and applies the fix', async () => {
    await writeFile(join(dir, 'ns.yaml'), NAMESPACES);
    await writeFile(join(dir, 'pods.yaml'), podYaml('a', '10.1.0.1'));
    const s = open(dir);
    await s.start();
    const version = s.state.version;

    // Half-written file: the YAML no longer parses.
    await writeFile(join(dir, 'pods.yaml'), `${podYaml('a', '10.1.0.1')}\n  bad: [unclosed\n`);
    await waitFor('parse error logged', () => errorLines().length > 0);
    const msg = errorLines()[0]!;
    expect(msg).toContain(`${join(dir, 'pods.yaml')}: `);
    expect(msg).toMatch(/line \d+, column \d+/);
    expect(msg).toContain('(keeping the 1 objects last loaded from this file)');
    expect(lines.find((l) => l.level === 50)).toMatchObject({ code: 'PARSE_ERROR' });
    expect(s.state.findWorkloadByIp('10.1.0.1')?.name).toBe('a');
    expect(s.state.version).toBe(version);

    await writeFile(join(dir, 'pods.yaml'), podYaml('a', '10.1.0.7'));
    await waitFor('fix applied', () => s.state.findWorkloadByIp('10.1.0.7') !== undefined);
    expect(s.errors).toEqual([]);
  });

  it('keeps the previous version of an object whose edit is invalid (a typo never deletes a policy)', async () => {
    const policy = (action: string) => `
apiVersion: security.hypha.dev/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: demo
spec:
  action: ${action}
  rules: [{}]
`;
    await writeFile(join(dir, 'policy.yaml'), policy('DENY'));
    const s = open(dir);
    await s.start();
    expect([...s.state.authorizationPolicies()].map((p) => p.action)).toEqual(['DENY']);
    await writeFile(join(dir, 'policy.yaml'), policy('DENNY'));
    await waitFor('error', () => errorLines().length > 0);
    expect(errorLines()[0]).toBe(
      `${join(dir, 'policy.yaml')}: AuthorizationPolicy demo/deny-all: field spec.action: must be one of "ALLOW", "DENY", "AUDIT", "CUSTOM" (got "DENNY") (the previous version stays in force)`,
    );
    expect([...s.state.authorizationPolicies()].map((p) => p.action)).toEqual(['DENY']);
  });

  it('treats an alias bomb as a parse error and reads top-level JSON arrays', async () => {
    await writeFile(
      join(dir, 'pods.json'),
      JSON.stringify([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } }]),
    );
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (const [n, prev] of [
      ['b', 'a'],
      ['c', 'b'],
      ['d', 'c'],
      ['e', 'd'],
    ]) {
      bomb.push(`${n}: &${n} [${Array(10).fill(`*${prev}`).join(', ')}]`);
    }
    await writeFile(join(dir, 'bomb.yaml'), bomb.join('\n'));
    const s = open(dir);
    await s.start();
    expect(s.state.findNamespace('demo')?.name).toBe('demo');
    expect(errorLines()).toHaveLength(1);
    expect(errorLines()[0]).toContain(`${join(dir, 'bomb.yaml')}: object: `);
    expect(lines.find((l) => l.level === 50)).toMatchObject({ code: 'PARSE_ERROR' });
  });

  it('keeps the state when the whole directory disappears, says so once, and resumes when it returns', async () => {
    const cfg = join(dir, 'cfg');
    await mkdir(cfg);
    await writeFile(join(cfg, 'p.yaml'), podYaml('a', '10.1.0.1'));
    const s = open(cfg, { pollIntervalMs: 40 });
    await s.start();
    await rm(cfg, { recursive: true });
    await waitFor('missing path reported', () => errorLines().length > 0);
    await new Promise((r) => setTimeout(r, 200)); // several polls
    expect(errorLines()).toEqual([
      `${cfg}: config path disappeared; keeping the last loaded state until it returns`,
    ]);
    expect(s.state.findWorkloadByIp('10.1.0.1')?.name).toBe('a');
    await mkdir(cfg);
    await writeFile(join(cfg, 'p.yaml'), podYaml('a', '10.1.0.2'));
    await waitFor('new content', () => s.state.findWorkloadByIp('10.1.0.2')?.name === 'a');
    // Watching works again after the path came back.
    await writeFile(join(cfg, 'q.yaml'), podYaml('q', '10.1.0.3'));
    await waitFor('edit after return', () => s.state.findWorkloadByIp('10.1.0.3') !== undefined);
  });

  it('does not withdraw objects when a file is truncated for a moment, but does once it stays empty', async () => {
    await writeFile(join(dir, 'p.yaml'), podYaml('a', '10.1.0.1'));
    const s = open(dir);
    await s.start();
    await writeFile(join(dir, 'p.yaml'), '');
    await new Promise((r) => setTimeout(r, 500));
    expect(s.state.findWorkloadByIp('10.1.0.1')?.name).toBe('a');
    await waitFor('empty file accepted', () => s.state.findWorkloadByIp('10.1.0.1') === undefined, 8000);
  });

  it('watches a single file (also across rename-over saves)', async () => {
    const file = join(dir, 'cluster.yaml');
    await writeFile(file, [NAMESPACES, podYaml('a', '10.1.0.1')].join('---\n'));
    await writeFile(join(dir, 'other.yaml'), podYaml('zzz', '10.1.9.9'));
    const s = open(file);
    await s.start();
    expect(s.state.findWorkloadByIp('10.1.0.1')?.name).toBe('a');
    expect(s.state.findWorkloadByIp('10.1.9.9')).toBeUndefined();
    await writeFile(`${file}.tmp`, [NAMESPACES, podYaml('a', '10.1.0.2')].join('---\n'));
    await rename(`${file}.tmp`, file);
    await waitFor('rename seen', () => s.state.findWorkloadByIp('10.1.0.2') !== undefined);
    await writeFile(file, [NAMESPACES, podYaml('a', '10.1.0.3')].join('---\n'));
    await waitFor('edit after rename seen', () => s.state.findWorkloadByIp('10.1.0.3') !== undefined);
  });

  it('becomes ready only once every file parses; the good files apply meanwhile', async () => {
    await writeFile(join(dir, 'good.yaml'), podYaml('a', '10.1.0.1'));
    await writeFile(join(dir, 'broken.yaml'), 'kind: [');
    const s = open(dir);
    let ready = false;
    void s.ready.then(() => {
      ready = true;
    });
    await s.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(ready).toBe(false);
    expect(s.state.findWorkloadByIp('10.1.0.1')?.name).toBe('a');
    await writeFile(join(dir, 'broken.yaml'), podYaml('b', '10.1.0.2'));
    await s.ready;
    expect(s.state.findWorkloadByIp('10.1.0.2')?.name).toBe('b');
  });

  it('reports duplicates across files (first file wins) and a missing path', async () => {
    await writeFile(join(dir, 'a.yaml'), podYaml('dup', '10.1.0.1'));
    await writeFile(join(dir, 'b.yaml'), podYaml('dup', '10.1.0.2'));
    const s = open(dir);
    await s.start();
    expect(s.state.findWorkloadByName('demo', 'dup')?.ips).toEqual(['10.1.0.1']);
    expect(errorLines()).toEqual([
      `${join(dir, 'b.yaml')}: Pod demo/dup: also defined in ${join(dir, 'a.yaml')}; the first definition wins`,
    ]);
    await expect(open(join(dir, 'nope')).start()).rejects.toMatchObject({
      code: 'PATH_NOT_FOUND',
      message: expect.stringContaining('config path does not exist'),
    });
  });

  it('picks changes up by polling when no watch event arrives', async () => {
    await writeFile(join(dir, 'p.yaml'), podYaml('a', '10.1.0.1'));
    const s = open(dir, { pollIntervalMs: 50, watch: false });
    await s.start();
    await writeFile(join(dir, 'p.yaml'), podYaml('a', '10.1.0.5'));
    await waitFor('poll to see the edit', () => s.state.findWorkloadByIp('10.1.0.5')?.name === 'a');
    // reload() (what the watcher and the poll call) can also be forced.
    await writeFile(join(dir, 'p.yaml'), podYaml('a', '10.1.0.6'));
    await s.reload();
    expect(s.state.findWorkloadByIp('10.1.0.6')?.name).toBe('a');
  });

  it('loads the embedded demo configuration with the addresses the demo chose', async () => {
    await writeFile(
      join(dir, 'demo.yaml'),
      demoConfigYaml({
        nodes: { a: 'n1', b: 'n2' },
        ips: { client: '10.50.1.2', echoV1: '10.50.1.3', echoV2: '10.50.2.2', plain: '10.50.2.3' },
        echoVip: '10.50.200.1',
      }),
    );
    const s = open(dir);
    await s.start();
    await s.ready;
    expect(errorLines()).toEqual([]);
    const st = s.state;
    expect(st.findWorkloadByIp('10.50.1.2')).toMatchObject({ name: 'client', node: 'n1', inMesh: true });
    expect(st.findWorkloadByIp('10.50.2.3')).toMatchObject({
      name: 'plain',
      namespace: 'outside',
      node: 'n2',
      inMesh: false,
    });
    const echo = st.findServiceByVip('10.50.200.1', 80)!;
    expect(echo.endpoints.map((e) => [e.ip, e.node, e.targetPorts.get(80)])).toEqual([
      ['10.50.1.3', 'n1', 8080],
      ['10.50.2.2', 'n2', 8080],
    ]);
    expect(st.findWorkloadByIp('10.50.1.3')!.identity.toString()).toBe(
      'spiffe://cluster.local/ns/demo/sa/echo',
    );
  });
});
