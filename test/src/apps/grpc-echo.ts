// gRPC over HTTP/2 cleartext (prior knowledge) for pod namespaces, without protobuf: messages are
// length-prefixed bytes, as gRPC frames them. Server and load client in one app.
//   node grpc-echo.js --port P [--pod NAME]
//     serves /hypha.echo.Echo/Say: answers one message "<pod>:<request>" and grpc-status 0;
//     any other method: grpc-status 12 (UNIMPLEMENTED). Prints {"event":"listening","port":P}.
//   node grpc-echo.js --target HOST:PORT [--connections C] [--requests R] [--timeout-ms T]
//     C HTTP/2 connections, R unary calls each (one after another), each with a random payload;
//     a call succeeds when it ends with grpc-status 0 and the one answer carries the payload back.
//     Prints one JSON line {ok, failed, errors, byPod} and exits 0 (2 on bad flags).
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    pod: { type: 'string', default: 'unknown' },
    target: { type: 'string' },
    connections: { type: 'string', default: '1' },
    requests: { type: 'string', default: '1' },
    'timeout-ms': { type: 'string', default: '10000' },
  },
});

const METHOD = '/hypha.echo.Echo/Say';

function frame(body: Buffer): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

function unframe(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off + 5 <= data.length) {
    const len = data.readUInt32BE(off + 1);
    if (off + 5 + len > data.length) break;
    out.push(data.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  return out;
}

function serve(port: number, pod: string): void {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      if (headers[':path'] !== METHOD) {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' },
          { endStream: true },
        );
        return;
      }
      const [req = Buffer.alloc(0)] = unframe(Buffer.concat(chunks));
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(frame(Buffer.concat([Buffer.from(`${pod}:`), req])));
    });
  });
  server.listen(port, () => {
    const addr = server.address();
    process.stdout.write(
      `${JSON.stringify({ event: 'listening', port: typeof addr === 'object' && addr ? addr.port : port })}\n`,
    );
  });
  process.on('SIGTERM', () => process.exit(0));
}

async function load(target: string): Promise<void> {
  const connections = Number(values.connections);
  const requests = Number(values.requests);
  const timeoutMs = Number(values['timeout-ms']);
  const errors: Record<string, number> = {};
  const byPod: Record<string, number> = {};
  let ok = 0;
  let failed = 0;
  const fail = (why: string) => {
    failed++;
    errors[why] = (errors[why] ?? 0) + 1;
  };
  const call = (session: http2.ClientHttp2Session): Promise<void> =>
    new Promise((resolve) => {
      const payload = randomBytes(12).toString('hex');
      let status: string | undefined;
      let body = Buffer.alloc(0);
      let done = false;
      const finish = (why?: string) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (why !== undefined) {
          fail(why);
          return resolve();
        }
        const msgs = unframe(body).map((m) => m.toString());
        const m = msgs[0] ?? '';
        if (status !== '0') fail(`grpc-status ${status ?? 'missing'}`);
        else if (msgs.length !== 1 || !m.endsWith(`:${payload}`)) fail('wrong answer');
        else {
          ok++;
          const pod = m.slice(0, m.length - payload.length - 1);
          byPod[pod] = (byPod[pod] ?? 0) + 1;
        }
        resolve();
      };
      const timer = setTimeout(() => {
        st.close(http2.constants.NGHTTP2_CANCEL);
        finish('timeout');
      }, timeoutMs);
      const st = session.request({
        ':method': 'POST',
        ':path': METHOD,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      st.on('response', (h) => {
        if (h[':status'] !== 200) return finish(`HTTP_${h[':status']}`);
        if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      });
      st.on('data', (c: Buffer) => {
        body = Buffer.concat([body, c]);
      });
      st.on('trailers', (t) => {
        if (t['grpc-status'] !== undefined) status = String(t['grpc-status']);
      });
      st.on('end', () => finish());
      st.on('close', () => finish(st.rstCode ? `RST_STREAM ${st.rstCode}` : 'closed without end'));
      st.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
      st.end(frame(Buffer.from(payload)));
    });
  await Promise.all(
    Array.from({ length: connections }, async () => {
      const session = http2.connect(`http://${target}`);
      session.on('error', () => {});
      for (let i = 0; i < requests; i++) await call(session);
      session.close();
    }),
  );
  process.stdout.write(`${JSON.stringify({ ok, failed, errors, byPod })}\n`);
  process.exit(0);
}

if (values.target !== undefined) {
  if (!/^(\[[^\]]+\]|[^:]+):\d+$/.test(values.target)) {
    process.stderr.write('grpc-echo: --target HOST:PORT\n');
    process.exit(2);
  }
  void load(values.target);
} else {
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0) {
    process.stderr.write('grpc-echo: --port P (serve) or --target HOST:PORT (load) is required\n');
    process.exit(2);
  }
  serve(port, values.pod);
}
