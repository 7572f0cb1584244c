// A self-signed serving certificate for the stand-in API server, made with the openssl CLI so the
// test package needs no certificate library. SANs cover 127.0.0.1, ::1 and localhost, as a
// kubeconfig pointing at https://127.0.0.1:<port> needs.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ServingCertificate {
  certPem: string;
  keyPem: string;
}

export async function createServingCertificate(dir: string): Promise<ServingCertificate> {
  const certPath = join(dir, 'apiserver.crt');
  const keyPath = join(dir, 'apiserver.key');
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=hypha-test-kube-apiserver',
      '-addext',
      'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes.default.svc',
      '-keyout',
      keyPath,
      '-out',
      certPath,
    ]);
  } catch (err) {
    throw new Error(
      `could not create the stand-in API server's certificate with openssl (is the openssl package installed?): ${(err as Error).message}`,
    );
  }
  return { certPem: await readFile(certPath, 'utf8'), keyPem: await readFile(keyPath, 'utf8') };
}
