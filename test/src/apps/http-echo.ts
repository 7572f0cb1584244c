// HTTP echo server for pod namespaces: `node http-echo.js --port N --pod NAME [--namespace NS]`.
// Every response is JSON naming the pod that answered and the peer address it saw, so tests can
// tell which endpoint served a request and whether the client's source IP was preserved.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string' },
    pod: { type: 'string', default: 'unknown' },
    namespace: { type: 'string', default: 'default' },
  },
});

const server = createServer((req, res) => {
  let bodyBytes = 0;
  req.on('data', (chunk: Buffer) => {
    bodyBytes += chunk.length;
  });
  req.on('end', () => {
    const body = JSON.stringify({
      pod: values.pod,
      namespace: values.namespace,
      peer: peerOf(req.socket),
      method: req.method,
      path: req.url,
      headers: req.headers,
      bodyBytes,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 30_000;
server.listen({ port: Number(values.port), ...(values.host ? { host: values.host } : {}) }, () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ event: 'listening', port, pod: values.pod })}\n`);
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
