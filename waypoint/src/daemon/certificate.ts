// The one workload certificate an L7 daemon (waypoint or ingress gateway) serves with: its root
// read, a CA client, the certificate requested at start (renewed by CertManager), and a lookup
// that fails with a clear error until it is held.
import { readFile } from 'node:fs/promises';
import type { Logger, SpiffeId } from '@hypha/shared';
import { CaClient, CertManager, type WorkloadCertificate } from '@hypha/shared/identity';
import { WaypointDaemonError } from './config.js';

export interface DaemonCertificate {
  readonly certs: CertManager;
  readonly caClient: CaClient;
  /** The held certificate; throws (WAYPOINT_START) while none is held yet. */
  certificate(): WorkloadCertificate;
}

export async function startDaemonCertificate(
  ca: { address: string; tokenFile: string; rootFile: string },
  identity: SpiffeId,
  log: Logger,
): Promise<DaemonCertificate> {
  const caRoot = await readFile(ca.rootFile, 'utf8').catch((err: Error) => {
    throw new WaypointDaemonError(
      'WAYPOINT_START',
      `cannot read the CA root certificate ${ca.rootFile}: ${err.message}`,
    );
  });
  const caClient = new CaClient({
    url: ca.address,
    token: async () => (await readFile(ca.tokenFile, 'utf8')).trim(),
    caTrustBundlePem: caRoot,
  });
  const certs = new CertManager({ provider: caClient });
  certs.fetchCertificate(identity).then(
    (c) =>
      log.info(
        { identity: identity.toString(), serial: c.serial, notAfter: c.notAfter },
        'certificate ready',
      ),
    (err: Error) =>
      log.warn(
        { identity: identity.toString(), err: err.message },
        'certificate request failed; retrying with backoff (check that this pod is known to the CA with serviceAccountName equal to the Gateway name)',
      ),
  );
  return {
    certs,
    caClient,
    certificate: () => {
      const c = certs.findCertificate(identity);
      if (c === undefined)
        throw new WaypointDaemonError('WAYPOINT_START', `no certificate yet for ${identity.toString()}`);
      return c;
    },
  };
}
