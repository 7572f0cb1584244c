// Load client for the mesh benches, run inside a pod's network namespace with the project's Node:
//   node open-loop.js tcp     --target H:P --rate R --connections C --seconds S [--bytes N] [--warmup-ms W]
//   node open-loop.js http    --target H:P --rate R --connections C --seconds S [--bytes N] [--warmup-ms W]
//   node open-loop.js http-hbone --target H:P --via H:15008 --cert F --key F --ca F [--server-id ID] ...
//   node open-loop.js https   --target H:P --ca F --server-name NAME ... (the http load over TLS, SNI NAME)
//   node open-loop.js connect --target H:P --concurrency C --seconds S
// Prints one JSON line with the figures, exits 0 (failures are counted in the line), 2 on bad flags.
//
// tcp/http are open loop: request i is due at start + i/rate whatever happened to earlier ones, and
// its latency counts from that due time, not from when it was actually written. A stalled path
// therefore shows up in the tail instead of silently lowering the offered rate (coordinated
// omission). tcp: N-byte round trips against an echo server, FIFO per connection. http: N-byte
// POSTs over C keep-alive connections (queued in the agent while every connection is busy).
// http-hbone: the same POSTs, but each of the C "connections" is an HBONE tunnel this client opens
// itself, as an agent would: one mTLS HTTP/2 connection to --via (TLS 1.3, ALPN h2, client
// certificate --cert/--key, server verified against --ca and, given --server-id, its URI SAN),
// one CONNECT stream with :authority --target per connection, HTTP/1.1 keep-alive inside it.
// connect: C loops of connect, 1 byte each way, close.
//
// Self-contained (only node: imports, erasable TypeScript) so Node runs the source directly too.
import { readFileSync } from 'node:fs';
import { Agent, type ClientRequestArgs, request } from 'node:http';
import { type ClientHttp2Session, connect as h2connect } from 'node:http2';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIPv6, connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type PeerCertificate, connect as tlsConnect } from 'node:tls';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    target: { type: 'string' },
    rate: { type: 'string', default: '1000' },
    connections: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '5' },
    bytes: { type: 'string', default: '1024' },
    'warmup-ms': { type: 'string', default: '500' },
    via: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    ca: { type: 'string' },
    'server-id': { type: 'string' },
    'server-name': { type: 'string' },
  },
});

const mode = positionals[0] ?? '';
const [host, portText] = (values.target ?? '').split(/:(?=\d+$)/);
const port = Number(portText);
const rate = Number(values.rate);
const conns = Number(values.connections);
const concurrency = Number(values.concurrency);
const seconds = Number(values.seconds);
const size = Number(values.bytes);
const warmupMs = Number(values['warmup-ms']);
const [viaHost, viaPortText] = (values.via ?? '').split(/:(?=\d+$)/);
const viaPort = Number(viaPortText);
const hbone = mode === 'http-hbone';
const bad = [
  !['tcp', 'http', 'http-hbone', 'https', 'connect'].includes(mode) &&
    'mode must be tcp, http, http-hbone, https or connect',
  mode === 'https' && (!values.ca || !values['server-name']) && 'https needs --ca and --server-name',
  hbone && (!viaHost || !Number.isInteger(viaPort) || viaPort <= 0) && '--via HOST:PORT is required',
  hbone && !(values.cert && values.key && values.ca) && '--cert, --key and --ca are required',
  (!host || !Number.isInteger(port) || port <= 0) && '--target HOST:PORT is required',
  !(rate > 0) && '--rate must be > 0',
  !(conns > 0) && '--connections must be > 0',
  !(concurrency > 0) && '--concurrency must be > 0',
  !(seconds > 0) && '--seconds must be > 0',
  !(size > 0) && '--bytes must be > 0',
].filter(Boolean);
if (bad.length > 0) {
  process.stderr.write(`open-loop: ${bad.join('; ')}\n`);
  process.exit(2);
}

const errors: Record<string, number> = {};
const countError = (err: unknown): void => {
  const code = (err as { code?: string }).code ?? (err instanceof Error ? err.message : String(err));
  errors[code] = (errors[code] ?? 0) + 1;
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function quantiles(samples: number[]): { p50: number; p90: number; p99: number; max: number } {
  samples.sort((a, b) => a - b);
  const q = (p: number): number =>
    samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? -1;
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: samples[samples.length - 1] ?? -1 };
}

/** Calls `send(due)` for every request due by now, every millisecond, until `seconds` are over. */
async function schedule(send: (due: number) => void): Promise<{ start: number; sent: number }> {
  const interval = 1000 / rate;
  const start = performance.now() + 20;
  const end = start + seconds * 1000;
  let next = start;
  let sent = 0;
  while (next < end) {
    const now = performance.now();
    while (next <= now && next < end) {
      send(next);
      sent += 1;
      next += interval;
    }
    await sleep(1);
  }
  return { start, sent };
}

async function runTcp(): Promise<Record<string, unknown>> {
  const payload = Buffer.alloc(size, 0x61);
  const sockets = await Promise.all(
    Array.from(
      { length: conns },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = netConnect({ host, port, noDelay: true });
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
    ),
  );
  const samples: number[] = [];
  let completed = 0;
  let warmupEnd = Number.POSITIVE_INFINITY;
  const state = sockets.map((s) => {
    const st = { pending: [] as number[], got: 0 };
    s.on('error', countError);
    s.on('data', (d: Buffer) => {
      st.got += d.length;
      const now = performance.now();
      while (st.got >= size) {
        st.got -= size;
        completed += 1;
        const due = st.pending.shift();
        if (due !== undefined && due >= warmupEnd) samples.push(now - due);
      }
    });
    return st;
  });
  let i = 0;
  const sched = schedule((due) => {
    if (warmupEnd === Number.POSITIVE_INFINITY) warmupEnd = due + warmupMs;
    const k = i++ % conns;
    state[k]!.pending.push(due);
    sockets[k]!.write(payload);
  });
  const { sent } = await sched;
  const drainEnd = performance.now() + 5000;
  while (completed < sent && performance.now() < drainEnd) await sleep(5);
  for (const s of sockets) s.destroy();
  return { mode, sent, completed, samples: samples.length, ...quantiles(samples), errors };
}

/**
 * An http.Agent whose "sockets" are HBONE CONNECT streams on one mTLS HTTP/2 connection, kept for
 * the next request like keep-alive connections. The C streams are opened (and answered 200) before
 * the load starts and handed out synchronously: http.Agent counts a socket only once it exists, so
 * an asynchronous createConnection would let every request queued meanwhile open one more.
 */
class HboneAgent extends Agent {
  readonly #session: ClientHttp2Session;
  readonly #authority: string;
  readonly #ready: Duplex[] = [];
  constructor(session: ClientHttp2Session, authority: string) {
    super({ keepAlive: true, maxSockets: conns, maxFreeSockets: conns });
    this.#session = session;
    this.#authority = authority;
  }
  async open(n: number): Promise<void> {
    this.#ready.push(...(await Promise.all(Array.from({ length: n }, () => this.#connect()))));
  }
  #connect(): Promise<Duplex> {
    const stream = this.#session.request({ ':method': 'CONNECT', ':authority': this.#authority });
    return new Promise((resolve, reject) => {
      stream.once('error', reject);
      stream.once('response', (headers) => {
        stream.off('error', reject);
        const status = headers[':status'];
        if (status === 200) return resolve(stream);
        stream.destroy();
        reject(new Error(`HBONE CONNECT ${status}: ${headers['hbone-reason'] ?? ''}`));
      });
    });
  }
  override createConnection(
    _opts: ClientRequestArgs,
    cb?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | undefined {
    const ready = this.#ready.pop();
    if (ready !== undefined) return ready;
    // A stream that died is replaced (asynchronously; rare).
    this.#connect().then(
      (s) => cb?.(null, s),
      (err: Error) => cb?.(err, undefined as never),
    );
    return undefined;
  }
  // A CONNECT stream has no TCP keep-alive and no ref/unref: keep it as it is.
  override keepSocketAlive(_socket: Duplex): boolean {
    return true;
  }
  override reuseSocket(_socket: Duplex): void {}
}

/** The mTLS HTTP/2 connection to --via, with the flow-control windows the agents use. */
function openHboneSession(): Promise<ClientHttp2Session> {
  const serverId = values['server-id'];
  const host = viaHost!;
  const session = h2connect(`https://${isIPv6(host) ? `[${host}]` : host}:${viaPort}`, {
    settings: { enablePush: false, initialWindowSize: 4 * 1024 * 1024, maxFrameSize: 64 * 1024 },
    createConnection: () =>
      tlsConnect({
        host,
        port: viaPort,
        cert: readFileSync(values.cert!),
        key: readFileSync(values.key!),
        ca: readFileSync(values.ca!),
        ALPNProtocols: ['h2'],
        minVersion: 'TLSv1.3',
        // No SNI and no DNS/IP SANs in mesh certificates: the identity is the URI SAN.
        checkServerIdentity: (_host: string, cert: PeerCertificate) =>
          serverId === undefined || (cert.subjectaltname ?? '').split(', ').includes(`URI:${serverId}`)
            ? undefined
            : new Error(`server is not ${serverId} (SAN ${cert.subjectaltname})`),
      }),
  });
  return new Promise((resolve, reject) => {
    session.once('error', reject);
    session.once('connect', () => {
      session.off('error', reject);
      session.on('error', countError);
      session.setLocalWindowSize(16 * 1024 * 1024);
      resolve(session);
    });
  });
}

async function runHttp(): Promise<Record<string, unknown>> {
  const session = hbone ? await openHboneSession() : undefined;
  let agent: Agent;
  if (session) {
    const hboneAgent = new HboneAgent(session, `${isIPv6(host!) ? `[${host}]` : host}:${port}`);
    await hboneAgent.open(conns);
    agent = hboneAgent;
  } else if (mode === 'https')
    // TLS verified against --ca for --server-name (SNI), as curl --cacert --resolve would.
    agent = new HttpsAgent({
      keepAlive: true,
      maxSockets: conns,
      maxFreeSockets: conns,
      ca: readFileSync(values.ca!),
      servername: values['server-name']!,
    });
  else agent = new Agent({ keepAlive: true, maxSockets: conns, maxFreeSockets: conns });
  const send = mode === 'https' ? httpsRequest : request;
  const body = Buffer.alloc(size, 0x61);
  const samples: number[] = [];
  let ok = 0;
  let failed = 0;
  let warmupEnd = Number.POSITIVE_INFINITY;
  const sockets = new Set<unknown>();
  const t0 = performance.now();
  const { sent } = await schedule((due) => {
    if (warmupEnd === Number.POSITIVE_INFINITY) warmupEnd = due + warmupMs;
    const req = send(
      {
        host,
        port,
        method: 'POST',
        path: '/bench',
        agent,
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': size,
          ...(mode === 'https' ? { host: values['server-name']! } : {}),
        },
        ...(mode === 'https' ? { servername: values['server-name']! } : {}),
      },
      (res) => {
        res.resume();
        res.once('end', () => {
          if (res.statusCode === 200) ok += 1;
          else {
            failed += 1;
            countError(new Error(`HTTP ${res.statusCode}`));
          }
          if (due >= warmupEnd) samples.push(performance.now() - due);
        });
      },
    );
    req.once('socket', (s) => sockets.add(s));
    req.on('error', (err) => {
      failed += 1;
      countError(err);
    });
    req.end(body);
  });
  const drainEnd = performance.now() + 5000;
  while (ok + failed < sent && performance.now() < drainEnd) await sleep(5);
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage();
  agent.destroy();
  session?.close();
  return {
    mode,
    sent,
    ok,
    failed,
    seconds: elapsed,
    connectionsUsed: sockets.size,
    // The load client's own CPU (user + system), to tell when it, not the path, was the limit.
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
    samples: samples.length,
    ...quantiles(samples),
    errors,
  };
}

async function runConnect(): Promise<Record<string, unknown>> {
  const end = performance.now() + seconds * 1000;
  let done = 0;
  let failed = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const s = netConnect({ host, port, noDelay: true });
      let answered = false;
      s.once('connect', () => s.write('x'));
      s.once('data', () => {
        answered = true;
        done += 1;
        s.end();
      });
      s.on('error', countError);
      s.once('close', () => {
        if (!answered) failed += 1;
        resolve();
      });
    });
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) await one();
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return { mode, connections: done, failed, seconds: elapsed, perSecond: done / elapsed, errors };
}

const result = mode === 'tcp' ? await runTcp() : mode === 'connect' ? await runConnect() : await runHttp();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
