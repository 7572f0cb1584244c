// Filter 10b, the upstream try over HTTP/2 (gRPC and h2 services): one stream on the endpoint's
// shared session. Trailers (grpc-status) are passed on; a trailers-only answer reports its
// grpc-status so the retry filter can act on it.
import http2, { type ClientHttp2Stream } from 'node:http2';
import type { Writable } from 'node:stream';
import { transportFailureReason } from '../egress/connect.js';
import type { ProxyFailureCode } from '../errors.js';
import { isConnectFailure, type UpstreamPools } from '../upstream.js';
import { failure, type Outcome, type RequestContext } from './context.js';
import { relay } from './relay.js';
import { responseHead, writeHead } from './respond.js';

type H2Headers = http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader;

export async function http2Try(rc: RequestContext, pools: UpstreamPools): Promise<Outcome> {
  let session: http2.ClientHttp2Session;
  try {
    session = await pools.fetchHttp2(rc.upstream!);
    // Retired while this request waited for it (its tunnel's HBONE connection got GOAWAY): the
    // pool already forgot it, so this opens a new one.
    if (session.closed || session.destroyed) session = await pools.fetchHttp2(rc.upstream!);
  } catch (err) {
    const reason = transportFailureReason(err);
    if (reason !== undefined) rc.upstreamFailureReason = reason;
    return failure(isConnectFailure(err) ? 'CONNECT_FAILED' : 'UPSTREAM_RESET');
  }
  if (rc.aborted !== undefined) return failure(rc.aborted);
  const headers: http2.OutgoingHttpHeaders = {
    ':method': rc.method,
    ':path': rc.upstreamPath,
    ':authority': rc.upstreamHost,
    ':scheme': 'http',
  };
  const h = rc.upstreamHeaders;
  for (const k in h) {
    const v = h[k];
    if (v !== undefined) headers[k] = v;
  }
  const body = rc.body;
  let stream: ClientHttp2Stream;
  try {
    stream = session.request(headers, { endStream: body === null });
  } catch {
    return failure('UPSTREAM_RESET');
  }
  stream.on('error', () => {});
  // Trailers can arrive in the same read as the response headers, before respond() runs: keep
  // them until then (a listener added later never hears them, and the call loses its grpc-status).
  let trailersIn: http2.IncomingHttpHeaders | undefined;
  let onTrailers: ((t: http2.IncomingHttpHeaders) => void) | undefined;
  stream.once('trailers', (t: http2.IncomingHttpHeaders) => {
    if (onTrailers) onTrailers(t);
    else trailersIn = t;
  });
  if (Buffer.isBuffer(body)) stream.end(body);
  else if (body !== null) {
    body.on('data', (c: Buffer) => {
      rc.requestBytes += c.length;
    });
    relay(body, stream);
  }
  const got = await new Promise<H2Headers | ProxyFailureCode>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    // Once only: the stream's later 'close' must not clear the cancel hook of the next step (a
    // retry's backoff or try), or the route timeout could no longer end the request.
    const done = (v: H2Headers | ProxyFailureCode) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      rc.clearAbort();
      resolve(v);
    };
    const cancel = () => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      done('TIMEOUT');
    };
    if (rc.perTryTimeoutMs !== undefined) timer = setTimeout(cancel, rc.perTryTimeoutMs);
    if (!rc.onAbort(cancel)) cancel();
    stream.once('response', (h) => done(h));
    stream.once('close', () => done('UPSTREAM_RESET'));
  });
  if (typeof got === 'string') return failure(got);
  const status = Number(got[':status'] ?? 502);
  // grpc-status among the response headers means a trailers-only answer: nothing was sent yet,
  // so the call can be tried again.
  const gh = got['grpc-status'];
  const gs = typeof gh === 'string' ? Number(gh) : Number.NaN;
  return {
    kind: 'response',
    status,
    grpcStatus: Number.isInteger(gs) ? gs : undefined,
    discard: () => stream.close(http2.constants.NGHTTP2_CANCEL),
    respond: (rc) => {
      const head = responseHead(rc, got);
      const g = head['grpc-status'];
      if (typeof g === 'string') rc.grpcStatus = g;
      const res = rc.res;
      if (res.destroyed) return void stream.close(http2.constants.NGHTTP2_CANCEL);
      writeHead(res, status, head);
      onTrailers = (t: http2.IncomingHttpHeaders) => {
        const trailers: Record<string, string> = {};
        for (const k in t) {
          const v = t[k];
          if (k.charCodeAt(0) !== 58 && v !== undefined) trailers[k] = Array.isArray(v) ? v.join(',') : v;
        }
        if (trailers['grpc-status'] !== undefined) rc.grpcStatus = trailers['grpc-status'];
        res.addTrailers(trailers);
      };
      if (trailersIn !== undefined) onTrailers(trailersIn);
      stream.on('data', (c: Buffer) => {
        rc.responseBytes += c.length;
      });
      relay(stream, res as unknown as Writable);
    },
  };
}
