// Listening on both address families: `::` with ipv6Only off accepts IPv4 (as v4-mapped addresses,
// which stripV4Mapped turns back) and IPv6 on one socket. A node without IPv6 cannot bind `::`;
// then 0.0.0.0 is used, so an IPv4-only node keeps working. `fd`: listen on a socket handed over
// by the agent this one replaces (upgrade hand-off).
import type { Server } from 'node:net';

const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT']);

export function listenBothFamilies(server: Server, port: number, fd?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const attempt = (target: { fd: number } | { port: number; host: string; ipv6Only?: boolean }) => {
      const onError = (err: NodeJS.ErrnoException) => {
        if ('host' in target && target.host === '::' && NO_IPV6.has(err.code ?? '')) {
          attempt({ port, host: '0.0.0.0' });
          return;
        }
        reject(err);
      };
      server.once('error', onError);
      server.listen(target, () => {
        server.off('error', onError);
        resolve();
      });
    };
    attempt(fd !== undefined ? { fd } : { port, host: '::', ipv6Only: false });
  });
}
