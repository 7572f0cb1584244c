import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSpiffeId } from '@hypha/shared/identity';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AuthConfigError,
  PodFileNodeAuthorizer,
  parseTokenFile,
  podPlacementsFromYaml,
  StaticTokenAuthenticator,
} from '../../src/ca/auth.js';

const LONG = 'x'.repeat(32);

describe('static token file', () => {
  it('maps tokens to nodes, as a list or a mapping', () => {
    const a = new StaticTokenAuthenticator(parseTokenFile(`tokens:\n  - token: ${LONG}\n    node: node-1\n`));
    expect(a.authenticate(LONG)).toEqual({ node: 'node-1' });
    expect(a.authenticate(`${LONG}y`)).toBeUndefined();
    expect(a.authenticate('')).toBeUndefined();
    expect(parseTokenFile(`tokens:\n  ${LONG}: node-2\n`)).toEqual([{ token: LONG, node: 'node-2' }]);
  });

  it.each([
    ['not YAML', 'tokens: [', /invalid YAML/],
    ['no tokens key', 'nodes: []', /"tokens:" list/],
    ['an empty list', 'tokens: []', /is empty/],
    ['a short token', 'tokens:\n  - {token: short, node: n}', /shorter than 16 characters/],
    ['a missing node', `tokens:\n  - {token: ${LONG}}`, /"token" and "node"/],
    ['a repeated token', `tokens:\n  - {token: ${LONG}, node: a}\n  - {token: ${LONG}, node: b}`, /repeats/],
  ])('refuses %s with a precise message', (_n, text, reason) => {
    expect(() => parseTokenFile(text, 'tokens.yaml')).toThrow(AuthConfigError);
    expect(() => parseTokenFile(text, 'tokens.yaml')).toThrow(reason);
  });
});

describe('pods file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hypha-pods-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads Pods from documents, Lists and arrays, with Kubernetes defaults, skipping other kinds', () => {
    const text = `
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: n1, serviceAccountName: web}
---
kind: List
items:
  - kind: Pod
    metadata: {name: b}
    spec: {nodeName: n2}
  - kind: Service
    metadata: {name: svc}
---
- kind: Pod
  metadata: {name: pending, namespace: shop}
  spec: {serviceAccountName: api}
`;
    expect(podPlacementsFromYaml(text)).toEqual([
      { namespace: 'shop', serviceAccount: 'web', node: 'n1' },
      { namespace: 'default', serviceAccount: 'default', node: 'n2' },
    ]);
  });

  it('authorizes only identities of pods on the asking node, from a file or a directory', async () => {
    const file = join(dir, 'pods.yaml');
    await writeFile(
      file,
      'kind: Pod\nmetadata: {name: a, namespace: shop}\nspec: {nodeName: n1, serviceAccountName: web}\n',
    );
    const fromFile = await PodFileNodeAuthorizer.fromPath(file);
    const web = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
    expect(await fromFile.authorize('n1', web)).toBe(true);
    expect(await fromFile.authorize('n2', web)).toBe(false);
    expect(await fromFile.authorize('n1', parseSpiffeId('spiffe://cluster.local/ns/shop/sa/api'))).toBe(
      false,
    );
    const sub = join(dir, 'many');
    await rm(sub, { recursive: true, force: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(sub));
    await writeFile(
      join(sub, 'a.yaml'),
      'kind: Pod\nmetadata: {name: a, namespace: shop}\nspec: {nodeName: n2, serviceAccountName: web}\n',
    );
    await writeFile(join(sub, 'notes.txt'), 'kind: Pod\nspec: {nodeName: n3}\n');
    const fromDir = await PodFileNodeAuthorizer.fromPath(sub);
    expect(await fromDir.authorize('n2', web)).toBe(true);
    expect(await fromDir.authorize('n3', parseSpiffeId('spiffe://cluster.local/ns/default/sa/default'))).toBe(
      false,
    );
    await expect(PodFileNodeAuthorizer.fromPath(join(dir, 'missing.yaml'))).rejects.toThrow(
      /cannot read pods from/,
    );
  });
});
