// The peer's identity, taken strictly from its verified TLS certificate's single SPIFFE URI SAN.
// Chain verification already happened in TLS (rejectUnauthorized); this only reads the identity.
import type { TLSSocket } from 'node:tls';
import { identityFromCertificate, normalizeSerial } from '../identity/index.js';
import { HboneError } from './errors.js';
import type { PeerCertificateInfo } from './server.js';

export function peerFromSocket(socket: TLSSocket): PeerCertificateInfo {
  if (socket.getProtocol() !== 'TLSv1.3') {
    throw new HboneError('TLS_FAILURE', `peer negotiated ${socket.getProtocol()}; HBONE requires TLSv1.3`);
  }
  if (!socket.authorized) {
    throw new HboneError(
      'TLS_FAILURE',
      `peer certificate not trusted: ${String(socket.authorizationError ?? 'unknown')}`,
    );
  }
  const x509 = socket.getPeerX509Certificate();
  if (x509 === undefined) throw new HboneError('TLS_FAILURE', 'peer presented no certificate');
  try {
    return {
      id: identityFromCertificate(x509),
      serial: normalizeSerial(x509.serialNumber),
      notAfter: new Date(x509.validTo),
    };
  } catch (err) {
    throw new HboneError(
      'IDENTITY_ERROR',
      `peer certificate has no usable SPIFFE identity: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}
