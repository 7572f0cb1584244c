// A running CA server on 127.0.0.1:<random port> with a token file and a pods file, for tests.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaClient, CertificateAuthority } from '@hypha/shared/identity';
import { PodFileNodeAuthorizer, StaticTokenAuthenticator } from '../../src/ca/auth.js';
import { RevocationList } from '../../src/ca/revocations.js';
import { CaServer } from '../../src/ca/server.js';

export const TOKEN_NODE1 = 'token-node-1-aaaaaaaaaaaaaaaaaaaaaaaa';
export const TOKEN_NODE2 = 'token-node-2-bbbbbbbbbbbbbbbbbbbbbbbb';

export function podYaml(name: string, ns: string, sa: string, node: string): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${ns}
spec:
  nodeName: ${node}
  serviceAccountName: ${sa}
  containers: [{name: app, image: app}]
`;
}

export interface CaFixture {
  dir: string;
  ca: CertificateAuthority;
  server: CaServer;
  url: string;
  podsFile: string;
  client(token?: string): CaClient;
  close(): Promise<void>;
}

export async function startCaFixture(
  opts: { maxTtlSeconds?: number; requestTimeoutMs?: number } = {},
): Promise<CaFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'hypha-ca-server-'));
  const caOpts = opts.maxTtlSeconds === undefined ? {} : { maxTtlSeconds: opts.maxTtlSeconds };
  const ca = await CertificateAuthority.init(caOpts);
  await ca.save(join(dir, 'ca'));
  const tokensFile = join(dir, 'tokens.yaml');
  await writeFile(
    tokensFile,
    `tokens:\n  - token: ${TOKEN_NODE1}\n    node: node-1\n  - token: ${TOKEN_NODE2}\n    node: node-2\n`,
  );
  const podsFile = join(dir, 'pods.yaml');
  await writeFile(
    podsFile,
    [podYaml('web-1', 'shop', 'web', 'node-1'), podYaml('api-1', 'shop', 'api', 'node-2')].join('---\n'),
  );
  const server = await CaServer.create({
    ca,
    authenticator: await StaticTokenAuthenticator.fromFile(tokensFile),
    authorizer: await PodFileNodeAuthorizer.fromPath(podsFile, { recheckMs: 0 }),
    revocations: new RevocationList(join(dir, 'ca'), { recheckMs: 0 }),
    host: '127.0.0.1',
    port: 0,
    ...(opts.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: opts.requestTimeoutMs }),
  });
  const addr = await server.start();
  const url = `https://127.0.0.1:${addr.port}`;
  const clients: CaClient[] = [];
  return {
    dir,
    ca,
    server,
    url,
    podsFile,
    client(token = TOKEN_NODE1) {
      const c = new CaClient({ url, token, caTrustBundlePem: ca.trustBundlePem, timeoutMs: 5000 });
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.close();
      await server.close(1000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
