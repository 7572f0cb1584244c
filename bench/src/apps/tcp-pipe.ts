// The runtime's floor for the L4 path, the l4 bench's second peer: a plain TCP proxy that copies
// bytes between each accepted connection and a fixed upstream with the agent's own copy loop
// (copyBidirectional: backpressure, half-close, reset propagation, byte counters) and nothing else
// (no TLS, no HTTP/2, no policy, no metrics, no logs). Two in a row stand where the two agents
// stand; whatever the agents spend beyond them is the mesh's own work.
//   node tcp-pipe.js --route LISTEN_HOST:PORT=UPSTREAM_HOST:PORT [--route ...]
// Prints {"event":"listening","ports":[P...]} once every route accepts connections; runs until killed.
import { connect, createServer, type Server } from 'node:net';
import { parseArgs } from 'node:util';
import { copyBidirectional } from '@hypha/shared/hbone';

const { values } = parseArgs({ options: { route: { type: 'string', multiple: true, default: [] } } });
const split = (v: string): [string, number] => {
  const [host, port] = v.split(/:(?=\d+$)/);
  return [(host ?? '').replace(/^\[(.*)\]$/, '$1'), Number(port)];
};
const routes = values.route.map((r) => {
  const [listen = '', upstream = ''] = r.split('=');
  const [lh, lp] = split(listen);
  const [uh, up] = split(upstream);
  if (!lh || !(lp >= 0) || !uh || !(up > 0)) {
    process.stderr.write(`tcp-pipe: --route "${r}" is not LISTEN_HOST:PORT=UPSTREAM_HOST:PORT\n`);
    process.exit(2);
  }
  return { listen: { host: lh, port: lp }, upstream: { host: uh, port: up } };
});
if (routes.length === 0) {
  process.stderr.write('tcp-pipe: at least one --route LISTEN_HOST:PORT=UPSTREAM_HOST:PORT is required\n');
  process.exit(2);
}

const listening = routes.map(
  (r) =>
    new Promise<number>((resolve, reject) => {
      const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
        socket.on('error', () => {});
        const upstream = connect({ ...r.upstream, noDelay: true, allowHalfOpen: true });
        upstream.on('error', () => socket.destroy());
        void copyBidirectional(socket, upstream);
      });
      server.once('error', reject);
      server.listen(r.listen.port, r.listen.host, () => {
        const addr = server.address();
        resolve(typeof addr === 'object' && addr !== null ? addr.port : r.listen.port);
      });
    }),
);
Promise.all(listening).then(
  (ports) => process.stdout.write(`${JSON.stringify({ event: 'listening', ports })}\n`),
  (err: Error) => {
    process.stderr.write(`tcp-pipe: ${err.message}\n`);
    process.exit(1);
  },
);
process.once('SIGTERM', () => process.exit(0));
process.once('SIGINT', () => process.exit(0));
