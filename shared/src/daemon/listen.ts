// Listening sockets of the agent and the waypoint, in one place.
//
// Both families: one `::` socket with IPV6_V6ONLY off accepts IPv4 (v4-mapped addresses, which
// stripV4Mapped turns back) and IPv6, so pods, Prometheus and kubelet probes reach us over either.
// A node or pod without IPv6 cannot bind `::` (EAFNOSUPPORT, or EADDRNOTAVAIL with IPv6 disabled):
// then 0.0.0.0. With `fd`, the server listens on a socket handed over by the agent this one
// replaces (upgrade hand-off) and binds nothing.
import type { AddressInfo, Server } from 'node:net';

const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT']);

function listenOnce(server: Server, target: Parameters<Server['listen']>[0]): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(target, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function listenAllFamilies(server: Server, port: number, fd?: number): Promise<AddressInfo> {
  if (fd !== undefined) {
    await listenOnce(server, { fd });
  } else {
    try {
      await listenOnce(server, { port, host: '::', ipv6Only: false });
    } catch (err) {
      if (!NO_IPV6.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
      await listenOnce(server, { port, host: '0.0.0.0' });
    }
  }
  return server.address() as AddressInfo;
}
