// Fuzzing the waypoint through its HBONE entry: each run opens a real mTLS HBONE tunnel to the
// waypoint (the shared pool and server, hboneIngressHandler) and writes one or two hand-made
// HTTP/1.x requests with random methods, paths with odd bytes, versions, header names and values
// at and past the limits, bodies, content-length and chunked-encoding mismatches, then half-closes.
// What a client would notice:
// - it gets an HTTP response, or its tunnel is closed or reset: never a hang, never a crash;
// - the tunnel is released afterwards (the HBONE server holds no stream for it);
// - a well-formed request through a new tunnel is served after every case.
// Replay a failure with FUZZ_SEED (docs/reliability.md).
import type { Duplex } from 'node:stream';
import { createHbonePool, createHboneServer, type HbonePool, type HboneServer } from '@hypha/shared/hbone';
import { CertificateAuthority, SpiffeId, type WorkloadCertificate } from '@hypha/shared/identity';
import { fuzzParameters, fuzzTestTimeout } from '@hypha/test';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { hboneIngressHandler } from '../../src/index.js';
import { type Backend, startBackend, startWaypoint, type TestWaypoint } from '../helpers.js';

const VIP = '10.96.9.1';
const HOST = 'reviews.shop.svc.cluster.local';

let backend: Backend;
let tw: TestWaypoint;
let ingress: HboneServer;
let ingressPort = 0;
let pool: HbonePool;
let clientCert: WorkloadCertificate;
let waypointId: SpiffeId;

beforeAll(async () => {
  backend = await startBackend('reviews');
  const ca = await CertificateAuthority.init({ trustDomain: 'cluster.local' });
  waypointId = SpiffeId.of('cluster.local', 'shop', 'waypoint');
  const [waypointCert, web] = await Promise.all([
    ca.issue(waypointId),
    ca.issue(SpiffeId.of('cluster.local', 'shop', 'web')),
  ]);
  clientCert = web;
  tw = await startWaypoint(
    {
      services: [
        {
          name: 'reviews',
          namespace: 'shop',
          vips: [VIP],
          ports: [{ port: 80, name: 'http' }],
          endpoints: [
            {
              ip: backend.ip,
              targetPorts: { '80': backend.port },
              workload: { name: 'reviews-1', namespace: 'shop', serviceAccount: 'reviews' },
            },
          ],
        },
      ],
    },
    { host: VIP, port: 80 },
    // A short sniff: a case that sends too little to tell HTTP from TCP is decided quickly.
    { sniffTimeoutMs: 200 },
  );
  ingress = createHboneServer({ findCertificate: () => waypointCert, handler: hboneIngressHandler(tw.wp) });
  ingressPort = (await ingress.listen(0, '127.0.0.1')).port;
  pool = createHbonePool();
});

afterAll(async () => {
  pool?.close();
  await ingress?.close();
  await tw?.close();
  await backend?.close();
});

function tunnel(): Promise<Duplex> {
  return pool
    .connect({
      source: clientCert,
      destination: { ip: '127.0.0.1', port: ingressPort },
      expectedIdentities: [waypointId],
      authority: `${VIP}:80`,
    })
    .then((t) => t.stream);
}

/** A long run of one character, built when used so fast-check prints `long(x, 70000)`. */
class Long {
  constructor(
    readonly char: string,
    readonly length: number,
  ) {}
  toString(): string {
    return this.char.repeat(this.length);
  }
  [fc.toStringMethod](): string {
    return `long(${this.char}, ${this.length})`;
  }
}
type Text = string | Long;

const oddBytes = fc.uint8Array({ maxLength: 24 }).map((b) => Buffer.from(b).toString('latin1'));
const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);

const method: fc.Arbitrary<Text> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH') },
  { weight: 2, arbitrary: fc.constantFrom('CONNECT', 'TRACE', 'PRI', 'get', 'G ET', '') },
  { weight: 1, arbitrary: token },
  { weight: 1, arbitrary: oddBytes },
);

const path: fc.Arbitrary<Text> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom('/', '/reviews/1', '/a?b=c&d', '/%00/%zz', '/../../etc/passwd', '*'),
  },
  { weight: 1, arbitrary: fc.constantFrom(`http://${HOST}/abs`, `//${HOST}/x`, 'no-slash', '') },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }).map((s) => `/${s}`) },
  { weight: 2, arbitrary: oddBytes.map((s) => `/${s}`) },
  { weight: 1, arbitrary: fc.integer({ min: 4_000, max: 120_000 }).map((n) => new Long('p', n)) },
);

const version = fc.oneof(
  { weight: 8, arbitrary: fc.constant('HTTP/1.1') },
  { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'http/1.1', 'HTTP/1.1 x', '') },
);

type Header = readonly [Text, Text];

const header: fc.Arbitrary<Header> = fc.oneof(
  fc.constantFrom<Header>(
    ['host', HOST],
    ['host', ''],
    ['host', `${HOST}:99999`],
    ['host', 'unknown.example'],
    ['content-length', '0'],
    ['content-length', '5'],
    ['content-length', '100000'],
    ['content-length', '-1'],
    ['content-length', '1e3'],
    ['content-length', '18446744073709551616'],
    ['transfer-encoding', 'chunked'],
    ['transfer-encoding', 'gzip, chunked'],
    ['transfer-encoding', 'identity'],
    ['expect', '100-continue'],
    ['connection', 'upgrade'],
    ['upgrade', 'websocket'],
    ['upgrade', 'h2c'],
    ['connection', 'close'],
    ['x-request-id', ''],
    ['x-forwarded-for', 'not-an-ip'],
    ['authorization', 'Bearer x.y.z'],
    ['te', 'trailers'],
    [' leading-space', 'x'],
    ['bad header', 'x'],
    ['no-colon-here', ''],
  ),
  fc.tuple(token, fc.string({ maxLength: 30 })),
  fc.tuple(oddBytes, oddBytes),
  fc.tuple(
    token,
    fc.integer({ min: 8_000, max: 100_000 }).map((n) => new Long('v', n)),
  ),
  fc.integer({ min: 8_000, max: 40_000 }).map((n): Header => [new Long('n', n), 'x']),
);

interface Request {
  method: Text;
  path: Text;
  version: string;
  host: boolean;
  headers: Header[];
  many: number;
  body: Uint8Array | Long | undefined;
  chunked: 'no' | 'good' | 'bad';
  lf: boolean;
}

const request: fc.Arbitrary<Request> = fc.record({
  method,
  path,
  version,
  host: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  headers: fc.array(header, { maxLength: 6 }),
  many: fc.oneof(
    { weight: 6, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: 100, max: 3_000 }) },
  ),
  body: fc.oneof(
    { weight: 3, arbitrary: fc.constant(undefined) },
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 200 }) },
    { weight: 1, arbitrary: fc.integer({ min: 10_000, max: 300_000 }).map((n) => new Long('b', n)) },
  ),
  chunked: fc.constantFrom('no' as const, 'no' as const, 'good' as const, 'bad' as const),
  lf: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});

function encode(r: Request): Buffer {
  const eol = r.lf ? '\n' : '\r\n';
  const lines = [`${r.method} ${r.path} ${r.version}`.trimEnd()];
  if (r.host) lines.push(`host: ${HOST}`);
  for (const [n, v] of r.headers) lines.push(`${n}: ${v}`);
  for (let i = 0; i < r.many; i++) lines.push(`x-many-${i}: v`);
  const bytes =
    r.body === undefined
      ? Buffer.alloc(0)
      : r.body instanceof Long
        ? Buffer.from(String(r.body), 'latin1')
        : Buffer.from(r.body);
  let payload = bytes;
  if (r.chunked === 'good') {
    lines.push('transfer-encoding: chunked');
    payload = Buffer.concat([
      Buffer.from(`${bytes.length.toString(16)}\r\n`),
      bytes,
      Buffer.from('\r\n0\r\n\r\n'),
    ]);
  } else if (r.chunked === 'bad') {
    lines.push('transfer-encoding: chunked');
    payload = Buffer.concat([Buffer.from(`zz${bytes.length}\r\n`), bytes]);
  } else if (bytes.length > 0 && !r.headers.some(([n]) => n === 'content-length')) {
    lines.push(`content-length: ${bytes.length}`);
  }
  return Buffer.concat([Buffer.from(lines.join(eol) + eol + eol, 'latin1'), payload]);
}

interface Outcome {
  response: string | undefined;
  ended: boolean;
}

/** Sends `bytes` on a fresh tunnel, half-closes, and waits for a status line or the end. */
async function exchange(bytes: Buffer): Promise<Outcome> {
  const stream = await tunnel();
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    let done = false;
    const finish = (ended: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const text = got.toString('latin1');
      const line = /^HTTP\/1\.[01] \d{3}[^\r\n]*\r\n/.exec(text)?.[0];
      hangUp(stream);
      resolve({ response: line, ended });
    };
    // Bounded wait: neither a response nor the end is a hang, which the property rejects.
    const timer = setTimeout(() => finish(false), 10_000);
    stream.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (/^HTTP\/1\.[01] \d{3}[^\r\n]*\r\n/.test(got.toString('latin1'))) finish(false);
    });
    stream.on('error', () => finish(true));
    stream.on('end', () => finish(true));
    stream.on('close', () => finish(true));
    stream.end(bytes);
  });
}

/**
 * Ends our side and lets the waypoint finish, resetting only a tunnel that stays open. Resetting
 * every tunnel right after its answer would be, at this rate, what the HBONE server's rapid-reset
 * guard answers with GOAWAY(ENHANCE_YOUR_CALM) for the whole connection (docs/hbone.md).
 */
function hangUp(stream: Duplex): void {
  stream.resume();
  stream.end();
  setTimeout(() => stream.destroy(), 2_000).unref();
}

async function goodRequestServed(): Promise<void> {
  const out = await exchange(Buffer.from(`GET /good HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`));
  expect(out.response ?? JSON.stringify(out)).toMatch(/^HTTP\/1\.1 200/);
}

async function tunnelsReleased(): Promise<number> {
  let n = ingress.stats().streams;
  for (let i = 0; i < 250 && n > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    n = ingress.stats().streams;
  }
  return n;
}

const params = fuzzParameters({ runs: 80, timeLimitMs: 12_000 });

test('every odd HTTP request through HBONE gets a response or a clean close, and the waypoint keeps serving', {
  timeout: fuzzTestTimeout(params),
}, async () => {
  await goodRequestServed();
  await fc.assert(
    fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 2 }), async (reqs) => {
      const out = await exchange(Buffer.concat(reqs.map(encode)));
      expect(out.response !== undefined || out.ended, 'a response or the end of the tunnel').toBe(true);
      expect(await tunnelsReleased()).toBe(0);
      await goodRequestServed();
    }),
    params,
  );
});

// ---- HTTP/2 with prior knowledge: hand-written frames, one request on stream 1 ----

function h2frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = Buffer.alloc(0),
): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}

/** HPACK integer with an n-bit prefix (RFC 7541 section 5.1). */
function hpackInt(value: number, prefixBits: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([value]);
  const out = [max];
  let v = value - max;
  while (v >= 128) {
    out.push((v & 127) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** Every header as "literal without indexing, new name": any bytes, no table state. */
function hpack(headers: readonly Header[]): Buffer {
  return Buffer.concat(
    headers.flatMap(([n, v]) => {
      const name = Buffer.from(String(n), 'latin1');
      const value = Buffer.from(String(v), 'latin1');
      return [Buffer.from([0]), hpackInt(name.length, 7), name, hpackInt(value.length, 7), value];
    }),
  );
}

interface H2Request {
  method: Text;
  scheme: string | undefined;
  path: Text | undefined;
  authority: Text | undefined;
  headers: Header[];
  body: Uint8Array | undefined;
  endStream: boolean;
}

const h2Header: fc.Arbitrary<Header> = fc.oneof(
  fc.constantFrom<Header>(
    ['content-length', '0'],
    ['content-length', '5'],
    ['content-length', 'x'],
    ['connection', 'keep-alive'],
    ['te', 'gzip'],
    ['te', 'trailers'],
    ['upgrade', 'websocket'],
    ['Upper', 'x'],
    [':status', '200'],
    [':bogus', 'x'],
    ['host', 'other.example'],
    ['content-type', 'application/grpc'],
    ['grpc-timeout', '1S'],
    ['grpc-timeout', 'forever'],
    ['x-request-id', ''],
  ),
  fc.tuple(
    token.map((t) => t.toLowerCase()),
    fc.string({ maxLength: 30 }),
  ),
  fc.tuple(oddBytes, oddBytes),
  fc.tuple(
    token.map((t) => t.toLowerCase()),
    fc.integer({ min: 8_000, max: 70_000 }).map((n) => new Long('v', n)),
  ),
);

const h2Request: fc.Arbitrary<H2Request> = fc.record({
  method,
  scheme: fc.oneof(
    { weight: 6, arbitrary: fc.constant('http') },
    { weight: 1, arbitrary: fc.constantFrom(undefined, 'https', 'ftp', '') },
  ),
  path: fc.oneof({ weight: 6, arbitrary: path }, { weight: 1, arbitrary: fc.constant(undefined) }),
  authority: fc.oneof(
    { weight: 6, arbitrary: fc.constant(HOST) },
    { weight: 1, arbitrary: fc.constantFrom(undefined, '', 'unknown.example', `${HOST}:99999`) },
    { weight: 1, arbitrary: oddBytes },
  ),
  headers: fc.array(h2Header, { maxLength: 5 }),
  body: fc.option(fc.uint8Array({ maxLength: 300 }), { nil: undefined }),
  endStream: fc.oneof(
    { weight: 4, arbitrary: fc.constant(true) },
    { weight: 1, arbitrary: fc.constant(false) },
  ),
});

function encodeH2(r: H2Request): Buffer {
  const headers: Header[] = [[':method', r.method]];
  if (r.scheme !== undefined) headers.push([':scheme', r.scheme]);
  if (r.path !== undefined) headers.push([':path', r.path]);
  if (r.authority !== undefined) headers.push([':authority', r.authority]);
  headers.push(...r.headers);
  const block = hpack(headers);
  const frames = [Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), h2frame(4, 0, 0)];
  const noBody = r.body === undefined;
  for (let i = 0; i < block.length || i === 0; i += 16_384) {
    const last = i + 16_384 >= block.length;
    const flags = (last ? 0x4 : 0) | (i === 0 && noBody && r.endStream ? 0x1 : 0);
    frames.push(h2frame(i === 0 ? 1 : 9, flags, 1, block.subarray(i, i + 16_384)));
  }
  if (r.body !== undefined) frames.push(h2frame(0, r.endStream ? 0x1 : 0, 1, r.body));
  return Buffer.concat(frames);
}

/** Sends one HTTP/2 request on a fresh tunnel; resolves once stream 1 is answered or the tunnel ends. */
async function exchangeH2(bytes: Buffer, complete: boolean): Promise<{ answered: boolean; ended: boolean }> {
  const stream = await tunnel();
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (answered: boolean, ended: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      hangUp(stream);
      resolve({ answered, ended });
    };
    // Bounded wait: a complete request neither answered nor refused is a hang, which the property
    // rejects. One without END_STREAM may rightly wait for the rest of its body: waited on briefly.
    const timer = setTimeout(() => finish(false, false), complete ? 10_000 : 1_000);
    stream.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        // HEADERS or RST_STREAM on stream 1, or GOAWAY: the request got its answer or refusal.
        if (((type === 1 || type === 3) && id === 1) || type === 7) return finish(true, false);
        buf = buf.subarray(9 + len);
      }
    });
    stream.on('error', () => finish(false, true));
    stream.on('end', () => finish(false, true));
    stream.on('close', () => finish(false, true));
    stream.write(bytes);
  });
}

const h2Params = fuzzParameters({ runs: 60, timeLimitMs: 8_000 });

test('every odd HTTP/2 request through HBONE is answered, refused or closed, and the waypoint keeps serving', {
  timeout: fuzzTestTimeout(h2Params),
}, async () => {
  await fc.assert(
    fc.asyncProperty(h2Request, async (r) => {
      const out = await exchangeH2(encodeH2(r), r.endStream);
      if (r.endStream)
        expect(out.answered || out.ended, 'an answer, a refusal or the end of the tunnel').toBe(true);
      expect(await tunnelsReleased()).toBe(0);
      await goodRequestServed();
    }),
    h2Params,
  );
});
