// Protocol detection on a fresh stream: HTTP/2 prior knowledge (the client preface), HTTP/1.x (a
// method token and a space), or anything else (forwarded at L4). Bytes read while deciding are put
// back with unshift(), so the HTTP servers see the stream from its first byte.
import type { Duplex } from 'node:stream';

export type SniffedProtocol = 'http1' | 'http2' | 'tcp' | 'closed';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const METHOD_THEN_SPACE = /^[A-Z]{1,20} /;
const METHOD_SO_FAR = /^[A-Z]{1,20}$/;

function classify(buf: Buffer): SniffedProtocol | undefined {
  const n = Math.min(buf.length, PREFACE.length);
  if (buf.subarray(0, n).equals(PREFACE.subarray(0, n)))
    return buf.length >= PREFACE.length ? 'http2' : undefined;
  const head = buf.subarray(0, 24).toString('latin1');
  if (METHOD_THEN_SPACE.test(head)) return 'http1';
  if (METHOD_SO_FAR.test(head)) return undefined;
  return 'tcp';
}

/**
 * Waits for enough bytes to decide. A client that sends nothing within `timeoutMs` (a server-first
 * protocol) is treated as TCP.
 */
export function sniffProtocol(stream: Duplex, timeoutMs: number): Promise<SniffedProtocol> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = (p: SniffedProtocol) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      if (buf.length > 0) stream.unshift(buf);
      resolve(p);
    };
    const onReadable = () => {
      for (let c = stream.read() as Buffer | null; c !== null; c = stream.read() as Buffer | null)
        buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
      const p = classify(buf);
      if (p !== undefined) finish(p);
    };
    const onEnd = () => finish(buf.length > 0 ? (classify(buf) ?? 'tcp') : 'closed');
    const timer = setTimeout(() => finish('tcp'), timeoutMs);
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
  });
}
