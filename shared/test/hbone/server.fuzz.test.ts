// Fuzzing the HBONE server over real mTLS: each run opens one TLS connection with a workload
// certificate and writes HTTP/2 by hand (a tiny frame and HPACK-literal encoder below, test code,
// not a parser): a mutated or missing preface, random and structured frames (bogus WINDOW_UPDATEs,
// SETTINGS, PINGs, PRIORITY, GOAWAY, stray CONTINUATION and DATA, unknown types), mutated CONNECT
// requests (methods, authorities, pseudo-headers, duplicated and huge headers, odd bytes) and
// rapid-reset bursts, then a PING as a probe. What a client of the server would notice:
// - every stream it opened is answered (HEADERS or RST_STREAM), or the connection is refused
//   (GOAWAY) or closed; the probe PING is acknowledged unless the connection was refused;
// - once the hostile client is gone the server holds no connection and no stream for it;
// - a well-formed HBONE client is served after every case; nothing throws out of the server.
// Replay a failure with FUZZ_SEED (docs/reliability.md).
import { connect as tlsConnect } from 'node:tls';
import { fuzzParameters, fuzzTestTimeout } from '@hypha/test';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  closeServer,
  createMesh,
  type Mesh,
  newPool,
  type RunningServer,
  sleep,
  startEcho,
  startHboneServer,
  startTcpServer,
} from './fixtures.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const T = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST: 3,
  SETTINGS: 4,
  PUSH: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW: 8,
  CONT: 9,
};
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PROBE = Buffer.from('fuzzprob');
const PROBE2 = Buffer.from('fuzzpro2');

let mesh: Mesh;
let echo: Awaited<ReturnType<typeof startEcho>>;
/** An app that sends as fast as it may until its connection closes: tunnels to it always have data in flight. */
let talker: Awaited<ReturnType<typeof startTcpServer>>;
let hbone: RunningServer;
let handlerErrors = 0;

beforeAll(async () => {
  mesh = await createMesh();
  echo = await startEcho();
  talker = await startTcpServer((sock) => {
    const chunk = Buffer.alloc(16 * 1024);
    const pump = (): void => {
      while (!sock.destroyed && sock.write(chunk));
      if (!sock.destroyed) sock.once('drain', pump);
    };
    pump();
  });
  const { tcpHandler } = await import('./fixtures.js');
  hbone = await startHboneServer(mesh.server, {
    // Short handshake/SETTINGS timeouts: a case that never finishes its preface ends quickly.
    limits: { handshakeTimeoutMs: 2_000, settingsTimeoutMs: 2_000 },
    handler: async (req) => {
      try {
        return await tcpHandler(req);
      } catch (err) {
        handlerErrors += 1;
        throw err;
      }
    },
  });
});
afterAll(async () => {
  await hbone?.close();
  if (echo) await closeServer(echo.server);
  if (talker) await closeServer(talker.server);
});

// ---- a tiny HTTP/2 encoder ----

function frame(type: number, flags: number, streamId: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId >>> 0, 5);
  return Buffer.concat([h, payload]);
}

/** HPACK integer with an n-bit prefix (RFC 7541 section 5.1). */
function hpackInt(value: number, prefixBits: number, firstByte = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const out = [firstByte | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v & 127) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

function hpackString(s: Uint8Array): Buffer {
  return Buffer.concat([hpackInt(s.length, 7), s]);
}

/** Each header as "literal without indexing, new name": any bytes, no table state to get wrong. */
function headerBlock(headers: readonly (readonly [string, string | Long])[]): Buffer {
  return Buffer.concat(
    headers.flatMap(([n, v]) => [
      Buffer.from([0]),
      hpackString(Buffer.from(n, 'latin1')),
      hpackString(Buffer.from(String(v), 'latin1')),
    ]),
  );
}

// ---- what one hostile connection sends ----

/** A long header value, built when encoded so fast-check prints `long(70000)`, not the value. */
class Long {
  constructor(readonly length: number) {}
  toString(): string {
    return 'v'.repeat(this.length);
  }
  [fc.toStringMethod](): string {
    return `long(${this.length})`;
  }
}

type Header = readonly [string, string | Long];

type Op =
  | {
      op: 'headers';
      stream: number;
      headers: Header[];
      endStream: boolean;
      endHeaders: boolean;
      thenReset: boolean;
    }
  | { op: 'burst'; count: number }
  | { op: 'data'; stream: number; bytes: Uint8Array; endStream: boolean }
  | { op: 'window'; stream: number; increment: number }
  | { op: 'settings'; ack: boolean; pairs: [number, number][] }
  | { op: 'ping'; ack: boolean; length: number }
  | { op: 'rst'; stream: number; code: number }
  | { op: 'priority'; stream: number; dependsOn: number; length: number }
  | { op: 'goaway'; last: number; code: number }
  | {
      op: 'raw';
      type: number;
      flags: number;
      stream: number;
      payload: Uint8Array;
      lieLength: number | undefined;
    };

interface Case {
  preface: 'ok' | 'garbage' | 'cut' | 'garbage-after';
  settingsFirst: boolean;
  ops: Op[];
  /** RST_STREAM code the client closes its answered streams with, once the probe came back. */
  closeCode: number;
}

const closeCode = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0x0, 0x8) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 13 }) },
);

const streamId = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(1, 3, 5, 7) },
  { weight: 1, arbitrary: fc.constantFrom(0, 2, 0x7fffffff, 0x80000001) },
  { weight: 1, arbitrary: fc.nat() },
);

const oddText = fc.oneof(
  fc.string({ maxLength: 24 }),
  fc.string({ unit: 'binary-ascii', maxLength: 24 }),
  fc.uint8Array({ maxLength: 24 }).map((b) => Buffer.from(b).toString('latin1')),
);

const rarely = fc.oneof(
  { weight: 9, arbitrary: fc.constant(false) },
  { weight: 1, arbitrary: fc.constant(true) },
);

function connectHeaders(echoPort: number, talkerPort: number): fc.Arbitrary<Header[]> {
  const authority = fc.oneof(
    { weight: 4, arbitrary: fc.constant(`127.0.0.1:${echoPort}`) },
    { weight: 3, arbitrary: fc.constant(`127.0.0.1:${talkerPort}`) },
    {
      weight: 4,
      arbitrary: fc.constantFrom(
        '',
        '127.0.0.1',
        '127.0.0.1:0',
        '127.0.0.1:65536',
        '127.0.0.1:-1',
        `127.000.0.1:${echoPort}`,
        `0127.0.0.1:${echoPort}`,
        `localhost:${echoPort}`,
        `[::1]:${echoPort}`,
        `[fe80::1%eth0]:${echoPort}`,
        `::1:${echoPort}`,
        `127.0.0.1:${echoPort}:1`,
        `127.0.0.1:${echoPort} `,
        '999.1.1.1:80',
        `user@127.0.0.1:${echoPort}`,
      ),
    },
    { weight: 2, arbitrary: oddText },
    { weight: 1, arbitrary: fc.integer({ min: 1000, max: 80_000 }).map((n) => new Long(n)) },
  );
  const method: fc.Arbitrary<string | Long> = fc.oneof(
    { weight: 5, arbitrary: fc.constant('CONNECT') },
    { weight: 2, arbitrary: fc.constantFrom('GET', 'POST', 'connect', 'CONNECT ', 'PRI', '') },
    { weight: 1, arbitrary: oddText },
  );
  const extra = fc.oneof(
    fc.constantFrom<Header>(
      [':path', '/'],
      [':scheme', 'https'],
      [':protocol', 'websocket'],
      [':status', '200'],
      [':bogus', 'x'],
      ['forwarded', 'for=10.0.0.1'],
      ['forwarded', 'for="[::1]:80", for=1.2.3.4'],
      ['baggage', 'a=b,c=d'],
      ['baggage', 'k8s.namespace.name=shop'],
      ['traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'],
      ['traceparent', '00-00000000000000000000000000000000-0000000000000000-01'],
      ['connection', 'keep-alive'],
      ['te', 'trailers'],
      ['Upper-Case', 'x'],
      ['content-length', '-5'],
      ['transfer-encoding', 'chunked'],
    ),
    fc.tuple(fc.constantFrom('forwarded', 'baggage', 'traceparent', 'x-fuzz', 'host'), oddText),
    fc.tuple(oddText, oddText),
    fc
      .tuple(fc.constantFrom('baggage', 'x-big', 'traceparent'), fc.integer({ min: 4000, max: 70_000 }))
      .map(([n, len]): Header => [n, new Long(len)]),
  );
  return fc
    .record({
      method,
      authority,
      extras: fc.array(extra, { maxLength: 6 }),
      many: fc.oneof(
        { weight: 5, arbitrary: fc.constant(0) },
        { weight: 1, arbitrary: fc.integer({ min: 100, max: 300 }) },
      ),
      dropMethod: rarely,
      dropAuthority: rarely,
      reorder: fc.boolean(),
    })
    .map(({ method, authority, extras, many, dropMethod, dropAuthority, reorder }) => {
      const h: Header[] = [];
      if (!dropMethod) h.push([':method', method]);
      if (!dropAuthority) h.push([':authority', authority]);
      for (let i = 0; i < many; i++) h.push([`x-many-${i}`, 'v']);
      // Pseudo-headers after regular ones are malformed (RFC 9113 section 8.3).
      return reorder ? [...extras, ...h] : [...h, ...extras];
    });
}

function caseArbitrary(echoPort: number, talkerPort: number): fc.Arbitrary<Case> {
  const op: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        op: fc.constant('headers' as const),
        stream: streamId,
        headers: connectHeaders(echoPort, talkerPort),
        endStream: fc.boolean(),
        endHeaders: fc.oneof(
          { weight: 9, arbitrary: fc.constant(true) },
          { weight: 1, arbitrary: fc.constant(false) },
        ),
        thenReset: fc.boolean(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant('burst' as const), count: fc.integer({ min: 10, max: 400 }) }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('data' as const),
        stream: streamId,
        bytes: fc.uint8Array({ maxLength: 64 }),
        endStream: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('window' as const),
        stream: streamId,
        increment: fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff), fc.nat()),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('settings' as const),
        ack: fc.boolean(),
        pairs: fc.array(
          fc.tuple(
            fc.oneof(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 0xffff })),
            fc.oneof(
              fc.constantFrom(0, 1, 16383, 16384, 16777216, 0x7fffffff, 0x80000000, 0xffffffff),
              fc.nat(),
            ),
          ),
          { maxLength: 6 },
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('ping' as const),
        ack: fc.boolean(),
        length: fc.oneof(fc.constant(8), fc.integer({ min: 0, max: 20 })),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('rst' as const),
        stream: streamId,
        code: fc.oneof(fc.integer({ min: 0, max: 13 }), fc.nat()),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('priority' as const),
        stream: streamId,
        dependsOn: streamId,
        length: fc.oneof(fc.constant(5), fc.integer({ min: 0, max: 10 })),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('goaway' as const),
        last: streamId,
        code: fc.integer({ min: 0, max: 13 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('raw' as const),
        type: fc.oneof(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 255 })),
        flags: fc.integer({ min: 0, max: 255 }),
        stream: streamId,
        payload: fc.uint8Array({ maxLength: 48 }),
        lieLength: fc.option(fc.oneof(fc.integer({ min: 0, max: 100 }), fc.constant(0xffffff)), {
          nil: undefined,
        }),
      }),
    },
  );
  // Well-framed requests: CONNECTs on fresh odd stream ids (1, 3, 5, ...), with DATA, resets and
  // window updates on them; only the requests' headers are mutated. Without this half most cases
  // would end at the first malformed frame with GOAWAY(PROTOCOL_ERROR).
  const requests: fc.Arbitrary<Case> = fc
    .array(
      fc.record({
        headers: connectHeaders(echoPort, talkerPort),
        endStream: rarely,
        thenReset: rarely,
        data: fc.option(fc.uint8Array({ maxLength: 32 }), { nil: undefined }),
        window: fc.option(fc.oneof(fc.constantFrom(1, 65_535, 0x7fffffff), fc.nat({ max: 0x7fffffff })), {
          nil: undefined,
        }),
      }),
      { minLength: 1, maxLength: 6 },
    )
    .chain((reqs) => closeCode.map((code) => ({ reqs, code })))
    .map(({ reqs, code }) => ({
      preface: 'ok' as const,
      settingsFirst: true,
      closeCode: code,
      ops: reqs.flatMap((r, i): Op[] => {
        const stream = 1 + 2 * i;
        const ops: Op[] = [
          {
            op: 'headers',
            stream,
            headers: r.headers,
            endStream: r.endStream,
            endHeaders: true,
            thenReset: r.thenReset,
          },
        ];
        if (r.data !== undefined) ops.push({ op: 'data', stream, bytes: r.data, endStream: false });
        if (r.window !== undefined) ops.push({ op: 'window', stream, increment: r.window });
        return ops;
      }),
    }));
  const frames: fc.Arbitrary<Case> = fc.record({
    preface: fc.oneof(
      { weight: 12, arbitrary: fc.constant('ok' as const) },
      { weight: 1, arbitrary: fc.constantFrom('garbage' as const, 'cut' as const, 'garbage-after' as const) },
    ),
    settingsFirst: fc.oneof(
      { weight: 9, arbitrary: fc.constant(true) },
      { weight: 1, arbitrary: fc.constant(false) },
    ),
    ops: fc.array(op, { minLength: 1, maxLength: 8 }),
    closeCode,
  });
  return fc.oneof(requests, frames);
}

/** Frames of a case, and the streams whose answer the client may expect. */
function encode(c: Case): { bytes: Buffer; expectAnswer: Set<number>; complete: boolean; toTalker: boolean } {
  const out: Buffer[] = [];
  const expectAnswer = new Set<number>();
  let toTalker = false;
  let complete = true;
  if (c.preface === 'ok' || c.preface === 'garbage-after') out.push(PREFACE);
  else if (c.preface === 'cut') out.push(PREFACE.subarray(0, 10));
  else out.push(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  if (c.settingsFirst) out.push(frame(T.SETTINGS, 0, 0));
  if (c.preface === 'garbage-after') out.push(Buffer.from('\u0000\u0000\u0000garbage after the preface\r\n'));
  let burstStream = 1_001;
  // RFC 9113 section 5.1.1: a HEADERS frame on a stream id not above every id used before is not a
  // new stream (nghttp2 ignores it); only new streams can expect an answer.
  let highest = 0;
  for (const o of c.ops) {
    switch (o.op) {
      case 'headers': {
        const block = headerBlock(o.headers);
        if (o.headers.some(([n, v]) => n === ':authority' && v === `127.0.0.1:${talker.port}`))
          toTalker = true;
        const chunks: Buffer[] = [];
        for (let i = 0; i < block.length; i += 16_384) chunks.push(block.subarray(i, i + 16_384));
        if (chunks.length === 0) chunks.push(Buffer.alloc(0));
        chunks.forEach((chunk, i) => {
          const last = i === chunks.length - 1;
          const flags = (last && o.endHeaders ? END_HEADERS : 0) | (i === 0 && o.endStream ? END_STREAM : 0);
          out.push(frame(i === 0 ? T.HEADERS : T.CONT, flags, o.stream, chunk));
        });
        if (!o.endHeaders) complete = false;
        if (o.thenReset) {
          const code = Buffer.alloc(4);
          code.writeUInt32BE(0x8);
          out.push(frame(T.RST, 0, o.stream, code));
        } else if (o.endHeaders && o.stream % 2 === 1 && o.stream < 0x80000000 && o.stream > highest)
          expectAnswer.add(o.stream);
        else expectAnswer.delete(o.stream);
        highest = Math.max(highest, o.stream);
        break;
      }
      case 'burst': {
        const block = headerBlock([
          [':method', 'CONNECT'],
          [':authority', `127.0.0.1:${echo.port}`],
        ]);
        const cancel = Buffer.alloc(4);
        cancel.writeUInt32BE(0x8);
        for (let i = 0; i < o.count; i++) {
          out.push(frame(T.HEADERS, END_HEADERS, burstStream, block), frame(T.RST, 0, burstStream, cancel));
          burstStream += 2;
        }
        highest = Math.max(highest, burstStream);
        break;
      }
      case 'data':
        out.push(frame(T.DATA, o.endStream ? END_STREAM : 0, o.stream, o.bytes));
        break;
      case 'window': {
        const p = Buffer.alloc(4);
        p.writeUInt32BE(o.increment >>> 0);
        out.push(frame(T.WINDOW, 0, o.stream, p));
        break;
      }
      case 'settings': {
        const p = Buffer.alloc(6 * o.pairs.length);
        o.pairs.forEach(([id, v], i) => {
          p.writeUInt16BE(id, 6 * i);
          p.writeUInt32BE(v >>> 0, 6 * i + 2);
        });
        out.push(frame(T.SETTINGS, o.ack ? ACK : 0, 0, p));
        break;
      }
      case 'ping':
        out.push(frame(T.PING, o.ack ? ACK : 0, 0, Buffer.alloc(o.length, 7)));
        break;
      case 'rst': {
        const p = Buffer.alloc(4);
        p.writeUInt32BE(o.code >>> 0);
        out.push(frame(T.RST, 0, o.stream, p));
        expectAnswer.delete(o.stream);
        break;
      }
      case 'priority': {
        const p = Buffer.alloc(o.length);
        if (o.length >= 4) p.writeUInt32BE(o.dependsOn >>> 0);
        out.push(frame(T.PRIORITY, 0, o.stream, p));
        break;
      }
      case 'goaway': {
        const p = Buffer.alloc(8);
        p.writeUInt32BE(o.last >>> 0);
        p.writeUInt32BE(o.code, 4);
        out.push(frame(T.GOAWAY, 0, 0, p));
        break;
      }
      case 'raw': {
        const f = frame(o.type, o.flags, o.stream, o.payload);
        if (o.lieLength !== undefined) f.writeUIntBE(o.lieLength, 0, 3);
        out.push(f);
        if (o.lieLength !== undefined) complete = false;
        break;
      }
    }
  }
  out.push(frame(T.PING, 0, 0, PROBE));
  return { bytes: Buffer.concat(out), expectAnswer, complete: complete && c.preface === 'ok', toTalker };
}

interface Seen {
  answered: Set<number>;
  goaway: boolean;
  probeAcked: boolean;
  closed: boolean;
  /**
   * After the client closed its streams (RST_STREAM with the case's code) and a second probe came
   * back: did the server release them all while the connection stayed up? Undefined when the
   * connection did not get that far.
   */
  releasedWhileOpen?: boolean;
}

async function streamsReleased(): Promise<boolean> {
  for (let i = 0; i < 250 && hbone.server.stats().streams > 0; i++) await sleep(20);
  return hbone.server.stats().streams === 0;
}

/** Runs one case on a fresh mTLS connection; resolves with what the server did. */
function runCase(
  bytes: Buffer,
  expectAnswer: ReadonlySet<number>,
  complete: boolean,
  closeCode: number,
  toTalker: boolean,
): Promise<Seen> {
  return new Promise((resolve) => {
    const seen: Seen = { answered: new Set(), goaway: false, probeAcked: false, closed: false };
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: hbone.port,
      key: mesh.client.keyPem,
      cert: mesh.client.certChainPem,
      ca: mesh.client.trustBundlePem,
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3',
      checkServerIdentity: () => undefined,
    });
    let buf = Buffer.alloc(0);
    let finished = false;
    const done = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(seen);
    };
    let closing = false;
    let probe2Acked = false;
    const settled = (): boolean =>
      seen.closed || seen.goaway || (seen.probeAcked && [...expectAnswer].every((s) => seen.answered.has(s)));
    // Phase 2, on a connection still up: close every answered stream, probe again, then the server
    // must hold no stream although the connection lives on.
    const closeStreams = (): void => {
      closing = true;
      const code = Buffer.alloc(4);
      code.writeUInt32BE(closeCode >>> 0);
      socket.write(
        Buffer.concat([
          // A bare RST_STREAM, or (CANCEL) DATA with END_STREAM first, as node's close(code) does.
          ...[...expectAnswer].flatMap((id) =>
            closeCode === 0x8
              ? [frame(T.DATA, END_STREAM, id), frame(T.RST, 0, id, code)]
              : [frame(T.RST, 0, id, code)],
          ),
          frame(T.PING, 0, 0, PROBE2),
        ]),
      );
    };
    // Bounded wait: a server that neither answers nor closes fails the property below.
    // A case that leaves a frame half-sent can only be waited out; keep that wait short.
    const timer = setTimeout(done, complete ? 5_000 : 1_000);
    socket.on('secureConnect', () => socket.write(bytes));
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        if (type === T.HEADERS || type === T.RST) seen.answered.add(id);
        if (type === T.GOAWAY) seen.goaway = true;
        if (type === T.PING && flags & ACK && payload.equals(PROBE)) seen.probeAcked = true;
        if (type === T.PING && flags & ACK && payload.equals(PROBE2)) probe2Acked = true;
        buf = buf.subarray(9 + len);
      }
      if (seen.closed || seen.goaway) return done();
      if (!closing && settled()) {
        closing = true;
        // A tunnel to the app that keeps sending: let the server's writes fill the stream's window
        // first, so the close lands while the server still has data it cannot send.
        if (toTalker) setTimeout(closeStreams, 150);
        else closeStreams();
      } else if (closing && probe2Acked && seen.releasedWhileOpen === undefined) {
        void streamsReleased().then((released) => {
          if (!seen.closed && !seen.goaway) seen.releasedWhileOpen = released;
          done();
        });
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      seen.closed = true;
      done();
    });
  });
}

async function goodClientServed(): Promise<void> {
  const pool = newPool({ connectTimeoutMs: 5_000 });
  try {
    const t = await pool.connect({
      source: mesh.client,
      destination: { ip: '127.0.0.1', port: hbone.port },
      expectedIdentities: [mesh.serverId],
      authority: `127.0.0.1:${echo.port}`,
    });
    const reply = new Promise<string>((resolve) =>
      t.stream.once('data', (d: Buffer) => resolve(d.toString())),
    );
    t.stream.write('hello');
    expect(await reply).toBe('hello');
    t.stream.end();
  } finally {
    pool.close();
  }
}

async function serverHoldsNothing(): Promise<{ connections: number; streams: number }> {
  let s = hbone.server.stats();
  for (let i = 0; i < 250 && (s.connections > 0 || s.streams > 0); i++) {
    await sleep(20);
    s = hbone.server.stats();
  }
  return { connections: s.connections, streams: s.streams };
}

const params = fuzzParameters({ runs: 100, timeLimitMs: 12_000 });

test('hostile HTTP/2 and HBONE CONNECT input is answered or refused, leaks nothing, and good clients stay served', {
  timeout: fuzzTestTimeout(params),
}, async () => {
  await goodClientServed();
  await fc.assert(
    fc.asyncProperty(caseArbitrary(echo.port, talker.port), async (c) => {
      const { bytes, expectAnswer, complete, toTalker } = encode(c);
      const seen = await runCase(bytes, expectAnswer, complete, c.closeCode, toTalker);
      // Refused, closed, or alive and answering: the probe PING comes back and every stream opened
      // with a complete header block got HEADERS or RST_STREAM.
      if (!seen.goaway && !seen.closed && complete) {
        expect(seen.probeAcked, 'probe PING acknowledged').toBe(true);
        for (const s of expectAnswer) expect(seen.answered.has(s), `stream ${s} answered`).toBe(true);
      }
      // Streams the client closed are released while its connection lives (not only when it ends).
      if (seen.releasedWhileOpen !== undefined)
        expect(seen.releasedWhileOpen, 'closed streams released').toBe(true);
      expect(await serverHoldsNothing()).toEqual({ connections: 0, streams: 0 });
      await goodClientServed();
      expect(handlerErrors).toBe(0);
    }),
    params,
  );
});
