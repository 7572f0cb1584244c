// Steady churn against a TCP echo server, to show what an agent upgrade does to traffic:
//   node churn-client.js --target HOST:PORT [--rate 200] [--long 20] [--duration-ms 10000]
//                        [--bytes 256] [--timeout-ms 5000]
// - new connections: `rate` a second, each one round trip of `bytes` checked byte for byte, then closed;
// - long-lived streams: `long` connections opened first, each writing 16 KiB every 50 ms for the whole
//   run while the echo comes back; at the end each half-closes and waits for the last byte, and the
//   sha256 of what came back must equal the sha256 of what was sent. A stream the far side ends
//   before the client does counts as failed (LONG_CLOSED_EARLY): it was cut.
// Prints {"event":"started"} once every long stream is up, then one {"event":"result",...} line,
// and exits 0 (the result says what failed), or 2 on bad flags.
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    rate: { type: 'string', default: '200' },
    long: { type: 'string', default: '20' },
    'duration-ms': { type: 'string', default: '10000' },
    bytes: { type: 'string', default: '256' },
    'timeout-ms': { type: 'string', default: '5000' },
  },
});
const [bracketed, portText] = (values.target ?? '').split(/:(?=\d+$)/);
const host = bracketed?.replace(/^\[(.*)\]$/, '$1');
const port = Number(portText);
const rate = Number(values.rate);
const longCount = Number(values.long);
const durationMs = Number(values['duration-ms']);
const bytes = Number(values.bytes);
const timeoutMs = Number(values['timeout-ms']);
if (!host || !Number.isInteger(port) || port <= 0 || !(rate >= 0) || !(longCount >= 0) || !(durationMs > 0)) {
  process.stderr.write(
    'churn-client: --target HOST:PORT and positive --rate/--long/--duration-ms are required\n',
  );
  process.exit(2);
}

const errors: Record<string, number> = {};
const short = { started: 0, ok: 0, failed: 0, maxConnectMs: 0, maxRoundTripMs: 0 };
/** Per second of the run: connections started, failed, and the slowest round trip (ms) that second. */
const timeline: { started: number; failed: number; slowestMs: number }[] = [];
let runStart = performance.now();
function second(at: number) {
  const i = Math.max(0, Math.floor((at - runStart) / 1000));
  while (timeline.length <= i) timeline.push({ started: 0, failed: 0, slowestMs: 0 });
  return timeline[i] as { started: number; failed: number; slowestMs: number };
}
const long = { ok: 0, failed: 0, mismatched: 0, bytesEchoed: 0 };

function countError(err: unknown): void {
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message ?? String(err);
  errors[code] = (errors[code] ?? 0) + 1;
}

function shortConnection(): Promise<void> {
  short.started++;
  const started = performance.now();
  const bucket = second(started);
  bucket.started++;
  const payload = randomBytes(bytes);
  return new Promise((resolve) => {
    const s = connect({ host, port, noDelay: true });
    const chunks: Buffer[] = [];
    let got = 0;
    let done = false;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      bucket.slowestMs = Math.max(bucket.slowestMs, Math.round(performance.now() - started));
      if (err === undefined) short.ok++;
      else {
        short.failed++;
        bucket.failed++;
        countError(err);
      }
      resolve();
    };
    const timer = setTimeout(() => finish(new Error('TIMEOUT')), timeoutMs);
    s.once('connect', () => {
      short.maxConnectMs = Math.max(short.maxConnectMs, performance.now() - started);
      s.write(payload);
    });
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got < bytes) return;
      short.maxRoundTripMs = Math.max(short.maxRoundTripMs, performance.now() - started);
      finish(Buffer.concat(chunks).equals(payload) ? undefined : new Error('MISMATCH'));
    });
    s.once('error', (err) => finish(err));
    s.once('close', () => finish(new Error('CLOSED_EARLY')));
  });
}

interface LongStream {
  socket: Socket;
  sent: ReturnType<typeof createHash>;
  received: ReturnType<typeof createHash>;
  sentBytes: number;
  receivedBytes: number;
  /** Set when this client half-closes at the end of the run; an end before it is a cut stream. */
  ending: boolean;
  done: Promise<void>;
}

function openLong(): Promise<LongStream> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true });
    const stream: LongStream = {
      socket,
      sent: createHash('sha256'),
      received: createHash('sha256'),
      sentBytes: 0,
      receivedBytes: 0,
      ending: false,
      done: Promise.resolve(),
    };
    stream.done = new Promise<void>((settle) => {
      let failed = false;
      socket.on('data', (d: Buffer) => {
        stream.received.update(d);
        stream.receivedBytes += d.length;
      });
      socket.once('error', (err) => {
        failed = true;
        long.failed++;
        countError(err);
        settle();
      });
      socket.once('end', () => {
        if (failed) return;
        if (!stream.ending) {
          // The far side (or the mesh) ended the stream while we were still sending: it was cut.
          long.failed++;
          countError(new Error('LONG_CLOSED_EARLY'));
          socket.destroy();
          settle();
          return;
        }
        const equal =
          stream.receivedBytes === stream.sentBytes &&
          stream.received.digest('hex') === stream.sent.digest('hex');
        if (equal) {
          long.ok++;
          long.bytesEchoed += stream.receivedBytes;
        } else {
          long.mismatched++;
          countError(new Error('LONG_MISMATCH'));
        }
        socket.destroy();
        settle();
      });
    });
    socket.once('connect', () => resolve(stream));
    socket.once('error', reject);
  });
}

const streams = await Promise.all(Array.from({ length: longCount }, () => openLong())).catch((err: Error) => {
  process.stdout.write(
    `${JSON.stringify({ event: 'result', error: `long stream did not open: ${err.message}` })}\n`,
  );
  process.exit(0);
});
process.stdout.write(`${JSON.stringify({ event: 'started', long: streams.length })}\n`);

const writer = setInterval(() => {
  for (const st of streams) {
    if (st.socket.destroyed || st.socket.writableEnded) continue;
    const chunk = randomBytes(16 * 1024);
    st.sent.update(chunk);
    st.sentBytes += chunk.length;
    st.socket.write(chunk);
  }
}, 50);

const pending = new Set<Promise<void>>();
const t0 = performance.now();
runStart = t0;
let launched = 0;
await new Promise<void>((resolve) => {
  const tick = setInterval(() => {
    const elapsed = performance.now() - t0;
    const due = Math.min(Math.floor((elapsed / 1000) * rate), Math.floor((durationMs / 1000) * rate));
    while (launched < due) {
      launched++;
      const p = shortConnection();
      pending.add(p);
      void p.then(() => pending.delete(p));
    }
    if (elapsed >= durationMs) {
      clearInterval(tick);
      resolve();
    }
  }, 5);
});
clearInterval(writer);
await Promise.all(pending);
for (const st of streams) {
  st.ending = true;
  st.socket.end();
}
await Promise.race([
  Promise.all(streams.map((s) => s.done)),
  new Promise((r) => setTimeout(r, timeoutMs * 2)),
]);
const unfinished = streams.length - long.ok - long.failed - long.mismatched;
process.stdout.write(
  `${JSON.stringify({
    event: 'result',
    durationMs: Math.round(performance.now() - t0),
    short: {
      ...short,
      maxConnectMs: Math.round(short.maxConnectMs),
      maxRoundTripMs: Math.round(short.maxRoundTripMs),
    },
    long: { ...long, count: streams.length, unfinished },
    errors,
    timeline,
  })}\n`,
);
process.exit(0);
