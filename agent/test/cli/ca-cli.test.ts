// The built `hypha` CLI (agent/bin/hypha.js → dist), run as an operator would: exit codes and messages.
// Needs a build first (`npx turbo run build`; `npm test` does it).
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '@hypha/shared/identity';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HYPHA_BIN, type HyphaRun, runHypha } from '../run-hypha.js';

const hypha = (...args: string[]): Promise<HyphaRun> => runHypha(args);

/** Set-up CAs come from the library: the CLI's init is tested once, the rest need not pay a process each. */
async function newCa(dir: string): Promise<void> {
  await (await CertificateAuthority.init()).save(dir);
}

function openssl(...args: string[]): Promise<HyphaRun> {
  return new Promise((resolve) => {
    execFile('openssl', args, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('hypha ca / hypha cert (built CLI)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hypha-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('init creates a CA, and refuses to overwrite it without --force', async () => {
    const ca = join(dir, 'ca');
    const first = await hypha('ca', 'init', '--dir', ca, '--trust-domain', 'example.org');
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/Created a root CA for trust domain "example\.org"/);
    expect(first.stdout).toContain(join(ca, 'root-cert.pem'));
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem']) await stat(join(ca, f));
    expect((await stat(join(ca, 'ca-key.pem'))).mode & 0o777).toBe(0o600);
    const again = await hypha('ca', 'init', '--dir', ca);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^hypha: error: a CA already exists in .*--force/);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);
    const forced = await hypha('ca', 'init', '--dir', ca, '--trust-domain', 'example.org', '--force');
    expect(forced.code).toBe(0);
  });

  it('issue writes a chain, a private key and the root that openssl verifies; inspect shows them', async () => {
    const ca = join(dir, 'ca2');
    expect((await hypha('ca', 'init', '--dir', ca)).code).toBe(0);
    const out = join(dir, 'web');
    const res = await hypha(
      'ca',
      'issue',
      '--dir',
      ca,
      '--id',
      'spiffe://cluster.local/ns/shop/sa/web',
      '--out',
      out,
      '--ttl',
      '2h',
    );
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/Issued a certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web/);
    expect(res.stdout).toContain(join(out, 'cert-chain.pem'));
    expect((await stat(join(out, 'key.pem'))).mode & 0o777).toBe(0o600);
    const verify = await openssl(
      'verify',
      '-CAfile',
      join(out, 'root-cert.pem'),
      join(out, 'cert-chain.pem'),
    );
    expect(verify.stdout).toMatch(/: OK/);

    const inspect = await hypha('cert', 'inspect', join(out, 'cert-chain.pem'));
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).toMatch(/Identity: +spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web/);
    expect(inspect.stdout).toMatch(/Key: +EC P-256/);
    // A 2h certificate: 1h59m left, or 2h when inspect ran within the second it was issued in
    // (X.509 times have whole seconds).
    expect(inspect.stdout).toMatch(/expires in (1h59m|2h\b)/);
    expect(inspect.stdout).toMatch(/Chain status: valid against .*root-cert\.pem/);
    const json = await hypha('cert', 'inspect', join(out, 'cert-chain.pem'), '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({
      identity: 'spiffe://cluster.local/ns/shop/sa/web',
      expired: false,
    });
  });

  it('inspect fails with exit 1 under a different root, and for a missing or non-PEM file', async () => {
    const ca = join(dir, 'ca3');
    const other = join(dir, 'other');
    await newCa(ca);
    await newCa(other);
    const out = join(dir, 'api');
    await hypha('ca', 'issue', '--dir', ca, '--id', 'spiffe://cluster.local/ns/shop/sa/api', '--out', out);
    const wrong = await hypha(
      'cert',
      'inspect',
      join(out, 'cert-chain.pem'),
      '--root',
      join(other, 'root-cert.pem'),
    );
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(
      /Chain status: INVALID against .*other\/root-cert\.pem: .*does not chain to any root/,
    );
    expect(wrong.stderr).toMatch(/^hypha: error: certificate chain does not verify/);
    const missing = await hypha('cert', 'inspect', join(dir, 'nope.pem'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^hypha: error: cannot read certificate file .*nope\.pem: no such file/);
    await writeFile(join(dir, 'junk.pem'), 'hello\n');
    const junk = await hypha('cert', 'inspect', join(dir, 'junk.pem'));
    expect(junk.code).toBe(1);
    expect(junk.stderr).toMatch(/holds no PEM certificate/);
  });

  it.concurrent.each([
    [
      ['ca', 'issue', '--dir', 'x', '--id', 'spiffe://cluster.local/ns/a', '--out', 'y'],
      /--id: invalid SPIFFE ID .*path must be/,
    ],
    [
      ['ca', 'issue', '--dir', 'x', '--id', 'spiffe://cluster.local/ns/a/sa/b', '--out', 'y', '--ttl', '24'],
      /--ttl: invalid duration "24"/,
    ],
    [
      [
        'ca',
        'issue',
        '--dir',
        'x',
        '--id',
        'spiffe://cluster.local/ns/a/sa/b',
        '--out',
        'y',
        '--ttl',
        '1.5h',
      ],
      /--ttl: invalid duration/,
    ],
    [
      ['ca', 'issue', '--id', 'spiffe://cluster.local/ns/a/sa/b', '--out', 'y'],
      /required option '--dir <dir>'/,
    ],
    [['ca', 'init', '--dir', 'x', '--trust-domain', 'Bad Domain'], /--trust-domain "Bad Domain"/],
    [['ca', 'revoke', '--dir', 'x'], /exactly one of --serial <hex> or --id <spiffe-id>/],
    [
      ['ca', 'serve', '--dir', 'x', '--tokens', 't', '--pods', 'p', '--listen', 'nonsense'],
      /--listen must be host:port/,
    ],
    [['ca', 'frobnicate'], /unknown command 'frobnicate'/],
  ])('usage errors exit 2: hypha %j', async (args, message) => {
    const res = await hypha(...args);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
  });

  it('ca issue fails with exit 1 and a hint when the directory holds no CA', async () => {
    const res = await hypha(
      'ca',
      'issue',
      '--dir',
      join(dir, 'empty'),
      '--id',
      'spiffe://cluster.local/ns/a/sa/b',
      '--out',
      join(dir, 'o'),
    );
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(
      /^hypha: error: no CA in .*empty: ca-cert\.pem not found \(create one with `hypha ca init/,
    );
  });

  it('revoke records a serial and an identity', async () => {
    const ca = join(dir, 'ca4');
    await newCa(ca);
    const r1 = await hypha('ca', 'revoke', '--dir', ca, '--serial', '0A:BC');
    expect(r1.code).toBe(0);
    expect(r1.stdout).toMatch(/Revoked serial abc \(revocation list version 1\)/);
    const r2 = await hypha(
      'ca',
      'revoke',
      '--dir',
      ca,
      '--id',
      'spiffe://cluster.local/ns/shop/sa/web',
      '--reason',
      'test',
    );
    expect(r2.stdout).toMatch(/version 2/);
    const file = JSON.parse(await readFile(join(ca, 'revocations.json'), 'utf8')) as {
      version: number;
      entries: unknown[];
    };
    expect(file.version).toBe(2);
    expect(file.entries).toEqual([
      expect.objectContaining({ serial: 'abc' }),
      expect.objectContaining({ id: 'spiffe://cluster.local/ns/shop/sa/web', reason: 'test' }),
    ]);
  });

  it('--help on a verb shows examples and exits 0', async () => {
    const res = await hypha('ca', 'issue', '--help');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/Example:\n\s+hypha ca issue --dir/);
    expect(res.stdout).toMatch(/--ttl <duration>/);
  });

  it('serve answers over HTTPS and stops cleanly on SIGTERM', async () => {
    const ca = join(dir, 'ca5');
    await newCa(ca);
    await writeFile(
      join(dir, 'tokens.yaml'),
      'tokens:\n  - token: 0123456789abcdef0123456789abcdef\n    node: node-1\n',
    );
    await writeFile(
      join(dir, 'pods.yaml'),
      'kind: Pod\nmetadata: {name: a, namespace: shop}\nspec: {nodeName: node-1, serviceAccountName: web}\n',
    );
    const child = spawn(
      process.execPath,
      [
        HYPHA_BIN,
        'ca',
        'serve',
        '--dir',
        ca,
        '--tokens',
        join(dir, 'tokens.yaml'),
        '--pods',
        join(dir, 'pods.yaml'),
        '--listen',
        '127.0.0.1:0',
        '--metrics-address',
        'off',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let err = '';
        const timer = setTimeout(() => reject(new Error(`CA did not start: ${err}`)), 15_000);
        child.stderr.on('data', (d) => {
          err += d;
          const m = /"url":"https:\/\/127\.0\.0\.1:(\d+)"/.exec(err);
          if (m) {
            clearTimeout(timer);
            resolve(Number(m[1]));
          }
        });
        child.on('exit', (code) => reject(new Error(`CA exited with ${code}: ${err}`)));
      });
      const root = await readFile(join(ca, 'root-cert.pem'), 'utf8');
      const body = await new Promise<string>((resolve, reject) => {
        request(`https://localhost:${port}/v1/revocations`, { ca: root }, (res) => {
          let t = '';
          res.on('data', (c) => {
            t += c;
          });
          res.on('end', () => resolve(t));
        })
          .on('error', reject)
          .end();
      });
      expect(JSON.parse(body)).toEqual({ version: 0, serials: [], ids: [] });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      const t0 = Date.now();
      expect(await exited).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
