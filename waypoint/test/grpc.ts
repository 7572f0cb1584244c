// A tiny gRPC-over-HTTP/2 toolkit for tests: length-prefixed framing (no protobuf), a server that
// serves unary and server-streaming methods, and a client call that returns messages and trailers.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

export function frame(payload: Buffer | string): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

export function unframe(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off + 5 <= data.length) {
    const len = data.readUInt32BE(off + 1);
    if (off + 5 + len > data.length) throw new Error(`truncated gRPC message at offset ${off}`);
    out.push(data.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  if (off !== data.length) throw new Error('trailing bytes after the last gRPC message');
  return out;
}

export type GrpcMethod = (
  request: Buffer,
  send: (msg: string) => void,
) => Promise<{ status: number; message?: string }>;

export interface GrpcServer {
  ip: string;
  port: number;
  calls: number;
  close(): Promise<void>;
}

/** Answers a call trailers-only (status in the headers, no message) when it returns a status. */
export type GrpcRefusal = (path: string, call: number) => { status: number; message?: string } | undefined;

export async function startGrpcServer(
  ip: string,
  methods: Record<string, GrpcMethod>,
  refuse: GrpcRefusal = () => undefined,
): Promise<GrpcServer> {
  const server = http2.createServer();
  const state = { calls: 0 };
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    state.calls++;
    const call = state.calls;
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', async () => {
      const path = String(headers[':path']);
      const method = methods[path];
      // An unknown method is UNIMPLEMENTED (12).
      const refusal = method === undefined ? { status: 12 } : refuse(path, call);
      if (method === undefined || refusal !== undefined) {
        const { status, message } = refusal ?? { status: 12 };
        const h: http2.OutgoingHttpHeaders = {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': String(status),
        };
        if (message !== undefined) h['grpc-message'] = message;
        stream.respond(h, { endStream: true });
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      const [req = Buffer.alloc(0)] = unframe(Buffer.concat(chunks));
      const result = await method(req, (msg) => stream.write(frame(msg)));
      stream.once('wantTrailers', () => {
        const t: Record<string, string> = { 'grpc-status': String(result.status) };
        if (result.message !== undefined) t['grpc-message'] = result.message;
        stream.sendTrailers(t);
      });
      stream.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, ip, resolve));
  return {
    ip,
    port: (server.address() as AddressInfo).port,
    get calls() {
      return state.calls;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface GrpcResult {
  httpStatus: number;
  messages: string[];
  /** grpc-status from trailers (or from headers for a trailers-only answer). */
  status: string | undefined;
  message: string | undefined;
  /** Milliseconds from the call to each message's arrival. */
  arrivals: number[];
}

export function grpcCall(
  session: http2.ClientHttp2Session,
  path: string,
  request: string,
  headers: Record<string, string> = {},
): Promise<GrpcResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const st = session.request({
      ':method': 'POST',
      ':path': path,
      ':authority': 'reviews.shop.svc.cluster.local',
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    const result: GrpcResult = {
      httpStatus: 0,
      messages: [],
      status: undefined,
      message: undefined,
      arrivals: [],
    };
    let buf = Buffer.alloc(0);
    st.on('response', (h) => {
      result.httpStatus = Number(h[':status']);
      if (h['grpc-status'] !== undefined) result.status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) result.message = String(h['grpc-message']);
    });
    st.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      // Count complete messages as they arrive (server streaming arrives over time).
      let off = 0;
      while (off + 5 <= buf.length && off + 5 + buf.readUInt32BE(off + 1) <= buf.length) {
        const len = buf.readUInt32BE(off + 1);
        result.messages.push(buf.subarray(off + 5, off + 5 + len).toString());
        result.arrivals.push(performance.now() - t0);
        off += 5 + len;
      }
      buf = buf.subarray(off);
    });
    st.on('trailers', (t) => {
      result.status = t['grpc-status'] === undefined ? result.status : String(t['grpc-status']);
      if (t['grpc-message'] !== undefined) result.message = String(t['grpc-message']);
    });
    st.on('end', () => resolve(result));
    st.on('error', reject);
    st.end(frame(request));
  });
}
