// The waypoint engine alone on loopback, for profiling between full bench runs: no TLS, no HBONE,
// no agents. An echo server and the open-loop load client run in their own processes; this process
// runs either the waypoint engine (createWaypoint, TCP upstream) or the runtime's floor (node:http
// + undici Pool), and prints its own CPU per 1000 requests at a fixed rate and its saturated rate.
//   node bench/tools/waypoint-engine.mjs waypoint|floor [--rate 500] [--seconds 5] [--connections 4]
//   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/tools/waypoint-engine.mjs waypoint
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createWaypoint } from '@hypha/waypoint';
import { Pool } from 'undici';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rate: { type: 'string', default: '500' },
    seconds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '4' },
    saturate: { type: 'string', default: '3000' },
  },
});
const mode = positionals[0];
if (mode !== 'waypoint' && mode !== 'floor') {
  process.stderr.write('usage: waypoint-engine.mjs waypoint|floor [--rate R] [--seconds S]\n');
  process.exit(2);
}
const root = fileURLToPath(new URL('../../', import.meta.url));
const echoPort = 18000 + Math.floor(Math.random() * 1000);
const echo = spawn(
  process.execPath,
  [`${root}test/dist/apps/http-echo.js`, '--port', String(echoPort), '--host', '127.0.0.1'],
  { stdio: 'ignore' },
);
await new Promise((r) => setTimeout(r, 500));

let server;
if (mode === 'waypoint') {
  const wp = await createWaypoint({
    config: {
      gateway: { name: 'waypoint', namespace: 'bench' },
      services: [
        {
          name: 'echo',
          namespace: 'bench',
          vips: ['10.96.0.10'],
          ports: [{ port: 80, targetPort: echoPort, name: 'http' }],
          endpoints: [
            {
              ip: '127.0.0.1',
              workload: { name: 'echo', namespace: 'bench', serviceAccount: 'echo', app: 'echo' },
            },
          ],
        },
      ],
    },
    connectUpstream: (ep) =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host: ep.ip, port: ep.port, noDelay: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
  });
  server = net.createServer({ noDelay: true }, (sock) =>
    wp.handleStream(sock, {
      authority: { host: '10.96.0.10', port: 80 },
      source: { ip: sock.remoteAddress, port: sock.remotePort },
    }),
  );
} else {
  const pool = new Pool(`http://127.0.0.1:${echoPort}`, { connections: 64 });
  server = http.createServer((req, res) => {
    pool
      .request({ path: req.url, method: req.method, headers: req.headers, body: req })
      .then((r) => {
        res.writeHead(r.statusCode, r.headers);
        r.body.pipe(res);
      })
      .catch(() => res.destroy());
  });
}
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;

function load(rate, seconds) {
  return new Promise((resolve, reject) => {
    const c = spawn(
      process.execPath,
      [
        `${root}bench/dist/apps/open-loop.js`,
        'http',
        '--target',
        `127.0.0.1:${port}`,
        '--rate',
        String(rate),
        '--connections',
        values.connections,
        '--seconds',
        String(seconds),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').pop()))
        : reject(new Error(`load exited ${code}`)),
    );
  });
}
await load(200, 1); // warm up
const cpu0 = process.cpuUsage();
const fixed = await load(Number(values.rate), Number(values.seconds));
const cpu = process.cpuUsage(cpu0);
const sat = await load(Number(values.saturate), 3);
const perK = (cpu.user + cpu.system) / 1e6 / (fixed.ok / 1000);
process.stdout.write(
  `${JSON.stringify({ mode, cpuPer1000: +perK.toFixed(3), fixedOk: fixed.ok, failed: fixed.failed, p50: fixed.p50, p99: fixed.p99, saturatedRps: Math.round(sat.ok / sat.seconds), rssMb: Math.round(process.memoryUsage().rss / 1048576) })}\n`,
);
echo.kill();
process.exit(0);
