// The file source applies a reload as a diff of the changed files (not a snapshot of everything):
// after each edit, its state must equal that of a fresh source loading the same directory.
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConfigState, createFileSource, type FileSource } from '@hypha/shared/config';
import { afterEach, beforeEach, expect, it } from 'vitest';

let dir: string;
const opened: FileSource[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-config-inc-'));
});

afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
  await rm(dir, { recursive: true, force: true });
});

function open(): FileSource {
  const s = createFileSource({ path: dir, watch: false, debounceMs: 20, pollIntervalMs: 3_600_000 });
  opened.push(s);
  return s;
}

const ns =
  'apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {hypha.dev/dataplane-mode: ambient}}\n';
const pod = (name: string, ip: string, app = 'web') =>
  `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: demo, labels: {app: ${app}}}\nspec: {nodeName: n1}\nstatus: {podIP: ${ip}}\n`;
const svc =
  'apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n';
const policy = (name: string) =>
  `apiVersion: security.hypha.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: ${name}, namespace: demo}\nspec: {selector: {matchLabels: {app: web}}, action: DENY, rules: [{from: [{source: {namespaces: [other]}}]}]}\n`;

function view(state: ConfigState) {
  const workloads = [...state.workloads()]
    .map((w) => `${w.namespace}/${w.name} ${w.ips.join(',')} ${w.ready} ${JSON.stringify(w.labels)}`)
    .sort();
  const services = [...state.services()]
    .map((s) => `${s.namespace}/${s.name} ${s.endpoints.map((e) => e.ip).join(',')}`)
    .sort();
  const policies = [...state.authorizationPolicies()].map((p) => `${p.namespace}/${p.name}`).sort();
  return { workloads, services, policies };
}

async function expectSameAsFresh(live: FileSource): Promise<void> {
  await live.reload();
  const fresh = open();
  await fresh.start();
  expect(view(live.state)).toEqual(view(fresh.state));
  expect(live.errors.map((e) => e.message).sort()).toEqual(fresh.errors.map((e) => e.message).sort());
  await fresh.close();
}

it('keeps the same state as a fresh load across edits, new, moved, duplicated and deleted objects', async () => {
  await writeFile(join(dir, 'a.yaml'), [ns, pod('p1', '10.0.0.1'), pod('p2', '10.0.0.2'), svc].join('---\n'));
  await writeFile(join(dir, 'b.yaml'), [pod('p3', '10.0.0.3'), policy('deny-other')].join('---\n'));
  const live = open();
  await live.start();
  expect(view(live.state).services).toEqual(['demo/web 10.0.0.1,10.0.0.2,10.0.0.3']);

  // Edit one pod in place (new IP, other app: leaves the service).
  await writeFile(join(dir, 'b.yaml'), [pod('p3', '10.0.0.33', 'other'), policy('deny-other')].join('---\n'));
  await expectSameAsFresh(live);
  expect(view(live.state).services).toEqual(['demo/web 10.0.0.1,10.0.0.2']);

  // A new file, and an object moved from one file to another in the same scan.
  await writeFile(join(dir, 'a.yaml'), [ns, pod('p1', '10.0.0.1'), svc].join('---\n'));
  await writeFile(join(dir, 'c.yaml'), [pod('p2', '10.0.0.2'), pod('p4', '10.0.0.4')].join('---\n'));
  await expectSameAsFresh(live);

  // A duplicate (the first file wins), then the duplicate goes away again.
  await writeFile(join(dir, 'c.yaml'), [pod('p2', '10.0.0.2'), pod('p1', '10.0.0.99')].join('---\n'));
  await expectSameAsFresh(live);
  expect(live.errors.map((e) => e.code)).toEqual(['DUPLICATE_OBJECT']);
  await writeFile(join(dir, 'a.yaml'), [ns, svc].join('---\n'));
  await expectSameAsFresh(live);
  expect(view(live.state).workloads).toContain('demo/p1 10.0.0.99 true {"app":"web"}');

  // A deleted file is withdrawn once it stays missing (two scans a debounce period apart).
  await unlink(join(dir, 'b.yaml'));
  await live.reload();
  await new Promise((r) => setTimeout(r, 30));
  await expectSameAsFresh(live);
  expect(view(live.state).policies).toEqual([]);
  expect(view(live.state).workloads.some((w) => w.startsWith('demo/p3 '))).toBe(false);
});
