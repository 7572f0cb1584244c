// The runtime's floor for an HTTP proxy, the waypoint bench's second peer: a plain node:http server
// that forwards every request through one undici Pool to a fixed upstream, and nothing else (no
// TLS, no HBONE, no routing, no metrics, no logs). Whatever the waypoint spends beyond this is the
// mesh's own work; what this spends is the cost of Node's HTTP/1 server and undici's client.
//   node node-proxy.js --port P --upstream H:P [--connections N]
// Prints {"event":"listening","port":P} once it accepts connections; runs until killed.
//
// Self-contained (node: imports and undici, erasable TypeScript) so Node runs the source directly.
import { createServer, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { isIPv6 } from 'node:net';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8082' },
    upstream: { type: 'string' },
    // As nginx's `keepalive 32` in the bench: idle upstream connections kept open.
    connections: { type: 'string', default: '32' },
  },
});
const port = Number(values.port);
const [upHost, upPort] = (values.upstream ?? '').split(/:(?=\d+$)/);
const connections = Number(values.connections);
if (!upHost || !(Number(upPort) > 0) || !(port >= 0) || !(connections > 0)) {
  process.stderr.write(
    'node-proxy: --upstream HOST:PORT is required; --port and --connections must be numbers\n',
  );
  process.exit(2);
}

const pool = new Pool(`http://${isIPv6(upHost) ? `[${upHost}]` : upHost}:${upPort}`, { connections });

// Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection; undici refuses most of them anyway.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
function endToEnd<T extends IncomingHttpHeaders | Record<string, string | string[] | undefined>>(
  headers: T,
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  pool.stream(
    {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: endToEnd(req.headers) as Record<string, string | string[]>,
      body: req.method === 'GET' || req.method === 'HEAD' ? null : req,
    },
    ({ statusCode, headers }) => {
      res.writeHead(statusCode, endToEnd(headers));
      return res;
    },
    (err) => {
      if (err === null) return;
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy(err);
    },
  );
});
server.listen(port, () => {
  const addr = server.address();
  const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: bound })}\n`);
});
process.once('SIGTERM', () => process.exit(0));
process.once('SIGINT', () => process.exit(0));
