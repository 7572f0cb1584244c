// TCP echo server for pod namespaces: `node tcp-echo.js --port N [--host H]`.
// Prints one JSON line `{"event":"listening",...}` when ready, then one per connection.
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '0' }, host: { type: 'string' } },
});

const server = createServer((socket) => {
  const peer = peerOf(socket);
  process.stdout.write(`${JSON.stringify({ event: 'connection', peer })}\n`);
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
});
server.listen({ port: Number(values.port), ...(values.host ? { host: values.host } : {}) }, () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));

/**
 * `ip:port` of the client as the pod sees it. Without --host the server listens on both families
 * (`::`), where IPv4 clients show up v4-mapped (`::ffff:10.0.0.1`): reported as plain IPv4.
 */
function peerOf(s: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  const ip = s.remoteAddress ?? '';
  return `${ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip}:${s.remotePort}`;
}
