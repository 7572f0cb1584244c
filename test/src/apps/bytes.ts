// Byte source/sink for sha256-checked transfers in both directions.
//   node bytes.js serve --port N [--send BYTES]
//     per connection: sends BYTES of random data, reads until the peer ends, prints
//     {"event":"transfer", peer, sent, sentSha256, received, receivedSha256}
//   node bytes.js send --target HOST:PORT --bytes BYTES
//     sends BYTES, half-closes, reads until the server ends, prints the same fields and exits.
import { createHash, randomFillSync } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string' },
    send: { type: 'string', default: '0' },
    bytes: { type: 'string', default: '0' },
    target: { type: 'string' },
  },
});

const CHUNK = 64 * 1024;

interface Transfer {
  sent: number;
  sentSha256: string;
  received: number;
  receivedSha256: string;
}

/** Writes `total` random bytes with backpressure, then ends the write side. */
function pump(socket: Socket, total: number): Promise<{ sent: number; sha256: string }> {
  const hash = createHash('sha256');
  let sent = 0;
  return new Promise((resolve) => {
    const write = (): void => {
      while (sent < total) {
        const chunk = randomFillSync(Buffer.allocUnsafe(Math.min(CHUNK, total - sent)));
        hash.update(chunk);
        sent += chunk.length;
        if (!socket.write(chunk)) {
          socket.once('drain', write);
          return;
        }
      }
      socket.end();
      resolve({ sent, sha256: hash.digest('hex') });
    };
    write();
  });
}

function drain(socket: Socket): Promise<{ received: number; sha256: string }> {
  const hash = createHash('sha256');
  let received = 0;
  return new Promise((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      received += chunk.length;
    });
    socket.on('end', () => resolve({ received, sha256: hash.digest('hex') }));
    socket.on('error', reject);
  });
}

async function transfer(socket: Socket, total: number): Promise<Transfer> {
  const [out, inn] = await Promise.all([pump(socket, total), drain(socket)]);
  return { sent: out.sent, sentSha256: out.sha256, received: inn.received, receivedSha256: inn.sha256 };
}

if (positionals[0] === 'serve') {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const peer = peerOf(socket);
    transfer(socket, Number(values.send)).then(
      (t) => process.stdout.write(`${JSON.stringify({ event: 'transfer', peer, ...t })}\n`),
      (err: Error) =>
        process.stdout.write(`${JSON.stringify({ event: 'error', peer, error: err.message })}\n`),
    );
  });
  server.listen({ port: Number(values.port), ...(values.host ? { host: values.host } : {}) }, () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
} else if (positionals[0] === 'send') {
  // HOST:PORT, IPv6 as [addr]:port.
  const [bracketed, portText] = (values.target ?? '').split(/:(?=\d+$)/);
  const host = bracketed?.replace(/^\[(.*)\]$/, '$1');
  const socket = connect({ host: host ?? '', port: Number(portText), allowHalfOpen: true });
  socket.once('connect', () => {
    transfer(socket, Number(values.bytes)).then(
      (t) => {
        process.stdout.write(`${JSON.stringify({ event: 'transfer', ...t })}\n`);
        socket.destroy();
      },
      (err: Error) => {
        process.stderr.write(`bytes: ${err.message}\n`);
        process.exit(1);
      },
    );
  });
  socket.once('error', (err) => {
    process.stderr.write(`bytes: ${err.message}\n`);
    process.exit(1);
  });
} else {
  process.stderr.write(
    'usage: bytes.js serve --port N [--send BYTES] | send --target HOST:PORT --bytes BYTES\n',
  );
  process.exit(2);
}

/**
 * `ip:port` of the client as the pod sees it. Without --host the server listens on both families
 * (`::`), where IPv4 clients show up v4-mapped (`::ffff:10.0.0.1`): reported as plain IPv4.
 */
function peerOf(s: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  const ip = s.remoteAddress ?? '';
  return `${ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip}:${s.remotePort}`;
}
