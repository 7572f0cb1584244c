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
      stream.destroy();
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
