// TCP echo server for pod namespaces: `node tcp-echo.js --port N [--host H]`.
// Prints one JSON line `{"event":"listening",...}` when ready, then one per connection.
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '0.0.0.0' } },
});

const server = createServer((socket) => {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  process.stdout.write(`${JSON.stringify({ event: 'connection', peer })}\n`);
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
});
server.listen({ port: Number(values.port), host: values.host }, () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
