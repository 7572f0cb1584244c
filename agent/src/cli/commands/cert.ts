// `hypha cert inspect FILE`: identity, validity and chain status of a certificate file.
import { X509Certificate } from 'node:crypto';
import { access, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { formatDurationSeconds } from '../../ca/duration.js';

export function register(program: Command): void {
  const cert = program.command('cert').description('inspect workload certificates');
  cert
    .command('inspect')
    .description('show the identity, validity and chain status of a PEM certificate (chain) file')
    .argument('<file>', 'PEM file: a certificate, or a chain with the leaf first')
    .option(
      '--root <file>',
      'trust bundle to verify against (default: root-cert.pem beside the file, if any)',
    )
    .option('--json', 'print JSON instead of text', false)
    .addHelpText(
      'after',
      `
Exit code 1 when the chain does not verify against the root (or the file holds no certificate).

Examples:
  hypha cert inspect ./web/cert-chain.pem
  hypha cert inspect ./web/cert-chain.pem --root ./ca/root-cert.pem`,
    )
    .action(async (file: string, opts: { root?: string; json: boolean }) => {
      const { identityFromCertificate, normalizeSerial, splitPemCertificates, verifyChain } = await import(
        '@hypha/shared/identity'
      );
      const pem = await readText(file, 'certificate file');
      const ders = splitPemCertificates(pem);
      if (ders.length === 0)
        throw new Error(`${file} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`);
      const chain = ders.map((d) => new X509Certificate(d));
      const leaf = chain[0]!;
      let rootFile = opts.root;
      if (rootFile === undefined) {
        const beside = join(dirname(file), 'root-cert.pem');
        if (beside !== file && (await exists(beside))) rootFile = beside;
      }
      let identity: string;
      let identityError: string | undefined;
      try {
        identity = identityFromCertificate(leaf).toString();
      } catch (err) {
        identity = '';
        identityError = (err as Error).message;
      }
      const now = new Date();
      const expiresIn = (leaf.validToDate.getTime() - now.getTime()) / 1000;
      let chainStatus: { checked: boolean; ok: boolean; reason?: string; root?: string } = {
        checked: false,
        ok: true,
      };
      if (rootFile !== undefined) {
        const r = verifyChain(pem, await readText(rootFile, 'root file'), now);
        chainStatus = r.ok
          ? { checked: true, ok: true, root: rootFile }
          : { checked: true, ok: false, reason: r.reason, root: rootFile };
      }
      const info = {
        file,
        identity: identity || null,
        identityError: identityError ?? null,
        serial: normalizeSerial(leaf.serialNumber),
        notBefore: leaf.validFromDate.toISOString(),
        notAfter: leaf.validToDate.toISOString(),
        expired: expiresIn <= 0,
        issuer: oneLine(leaf.issuer),
        key: describeKey(leaf),
        sans: leaf.subjectAltName ?? '',
        chain: chain.slice(1).map((c) => oneLine(c.subject)),
        chainStatus,
      };
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      } else {
        const lines = [
          `Identity:     ${identity || `none (${identityError})`}`,
          `Serial:       ${info.serial}`,
          `Valid from:   ${info.notBefore}`,
          `Valid until:  ${info.notAfter} (${expiresIn > 0 ? `expires in ${formatDurationSeconds(expiresIn)}` : 'EXPIRED'})`,
          `Issuer:       ${info.issuer}`,
          `Key:          ${info.key}`,
          `SANs:         ${info.sans}`,
          `Chain:        leaf${info.chain.map((s) => ` -> ${s}`).join('')} (${chain.length} certificate${chain.length === 1 ? '' : 's'})`,
          `Chain status: ${
            !chainStatus.checked
              ? 'not checked (give --root FILE, or keep root-cert.pem beside the file)'
              : chainStatus.ok
                ? `valid against ${chainStatus.root}`
                : `INVALID against ${chainStatus.root}: ${chainStatus.reason}`
          }`,
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }
      if (!chainStatus.ok) {
        process.stderr.write(`hypha: error: certificate chain does not verify: ${chainStatus.reason}\n`);
        process.exitCode = 1;
      }
    });
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
    );
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

function describeKey(cert: X509Certificate): string {
  const k = cert.publicKey;
  const d = k.asymmetricKeyDetails ?? {};
  if (k.asymmetricKeyType === 'ec')
    return `EC ${d.namedCurve === 'prime256v1' ? 'P-256 (prime256v1)' : (d.namedCurve ?? '?')}`;
  if (k.asymmetricKeyType === 'rsa') return `RSA ${d.modulusLength ?? '?'} bits`;
  return String(k.asymmetricKeyType);
}

function oneLine(name: string | undefined): string {
  return (name ?? '').split('\n').filter(Boolean).join(', ') || '(empty)';
}
