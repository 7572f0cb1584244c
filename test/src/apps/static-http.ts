// A static HTTP server for pod namespaces: `node static-http.js --port N --file PATH`.
// Answers every GET with the file's current contents (read per request, so a test rewrites the
// file to change what is served, e.g. a JWKS key set being rotated) as application/json, and 503
// while the file is missing. Prints `{"event":"listening",...}`, then one line per request.
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string' },
    file: { type: 'string' },
  },
});
if (values.file === undefined) {
  process.stderr.write('static-http: --file PATH is required\n');
  process.exit(2);
}
const file = values.file;

const server = createServer((req, res) => {
  readFile(file).then(
    (body) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
      process.stdout.write(`${JSON.stringify({ event: 'request', path: req.url, status: 200 })}\n`);
    },
    () => {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('not serving\n');
      process.stdout.write(`${JSON.stringify({ event: 'request', path: req.url, status: 503 })}\n`);
    },
  );
});
server.listen({ port: Number(values.port), ...(values.host ? { host: values.host } : {}) }, () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
