// Load client for pod namespaces. Prints one JSON result line and exits 0 (even when requests
// failed: the result says how many and why), or 2 on bad flags.
//   node load-client.js --target HOST:PORT [--mode http|tcp] [--connections C] [--requests R]
//                       [--path /p] [--bytes N] [--timeout-ms T]
// http: C keep-alive connections, R requests each, counts responses by the `pod` they name.
// tcp:  C connections, R round trips each of N bytes against an echo server, checking the bytes.
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    mode: { type: 'string', default: 'http' },
    connections: { type: 'string', default: '1' },
    requests: { type: 'string', default: '1' },
    path: { type: 'string', default: '/' },
    bytes: { type: 'string', default: '64' },
    'timeout-ms': { type: 'string', default: '10000' },
  },
});

// HOST:PORT, IPv6 as [addr]:port.
const [bracketed, portText] = (values.target ?? '').split(/:(?=\d+$)/);
const host = bracketed?.replace(/^\[(.*)\]$/, '$1');
const port = Number(portText);
if (!host || !Number.isInteger(port) || port <= 0) {
  process.stderr.write('load-client: --target HOST:PORT is required\n');
  process.exit(2);
}
const connections = Number(values.connections);
const requests = Number(values.requests);
const timeoutMs = Number(values['timeout-ms']);
const payloadBytes = Number(values.bytes);

const latencies: number[] = [];
const errors: Record<string, number> = {};
const byPod: Record<string, number> = {};
const peers: Record<string, number> = {};
let ok = 0;
let failed = 0;

function fail(err: unknown): void {
  failed++;
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message ?? String(err);
  errors[code] = (errors[code] ?? 0) + 1;
}

function httpOnce(agent: Agent): Promise<void> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = request({ host, port, path: values.path, agent, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        latencies.push(performance.now() - started);
        if (res.statusCode !== 200) {
          fail(new Error(`HTTP_${res.statusCode}`));
          return resolve();
        }
        ok++;
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString()) as { pod?: string; peer?: string };
          if (body.pod) byPod[body.pod] = (byPod[body.pod] ?? 0) + 1;
          if (body.peer) {
            const ip = body.peer.replace(/:\d+$/, '');
            peers[ip] = (peers[ip] ?? 0) + 1;
          }
        } catch {
          // not an echo server: counting the response is enough
        }
        resolve();
      });
      res.on('error', (err) => {
        fail(err);
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (err) => {
      fail(err);
      resolve();
    });
    req.end();
  });
}

async function httpWorker(): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < requests; i++) await httpOnce(agent);
  agent.destroy();
}

function tcpWorker(): Promise<void> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host, port });
    socket.setNoDelay(true);
    socket.setTimeout(timeoutMs, () =>
      socket.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })),
    );
    let done = 0;
    let pending = Buffer.alloc(0);
    let expected = Buffer.alloc(0);
    let started = 0;
    const sendNext = (): void => {
      expected = Buffer.alloc(payloadBytes, (done % 250) + 1);
      pending = Buffer.alloc(0);
      started = performance.now();
      socket.write(expected);
    };
    socket.once('connect', sendNext);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (pending.length < expected.length) return;
      latencies.push(performance.now() - started);
      if (pending.equals(expected)) ok++;
      else fail(new Error('MISMATCH'));
      done++;
      if (done < requests) sendNext();
      else socket.end();
    });
    socket.on('error', (err) => {
      for (let i = done; i < requests; i++) fail(err);
      done = requests;
    });
    socket.on('close', () => resolve());
  });
}

const started = performance.now();
const worker = values.mode === 'tcp' ? tcpWorker : httpWorker;
await Promise.all(Array.from({ length: connections }, () => worker()));
latencies.sort((a, b) => a - b);
const pct = (p: number): number =>
  latencies.length === 0
    ? 0
    : (latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0);
process.stdout.write(
  `${JSON.stringify({
    event: 'result',
    ok,
    failed,
    errors,
    byPod,
    peers,
    elapsedMs: Math.round(performance.now() - started),
    latencyMs: { p50: pct(0.5), p99: pct(0.99), max: latencies.at(-1) ?? 0 },
  })}\n`,
);
