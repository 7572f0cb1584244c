// The server name (SNI) of a TLS ClientHello, read from the first bytes of a connection without
// consuming them, for TLS passthrough: the gateway routes by SNI and forwards the bytes untouched.
//
// Reads: record header (type 22, length) → handshake header (type 1) → version, random, session
// id, cipher suites, compression methods → extensions, looking for server_name (0) host_name (0).
// Bounded: a hello larger than MAX_HELLO_BYTES, or one that is not TLS, yields `undefined`.
import type { Duplex } from 'node:stream';

export const MAX_HELLO_BYTES = 16 * 1024;

/** 'incomplete': more bytes needed; undefined: TLS without SNI or not TLS; else the name. */
export function parseSni(buf: Buffer): string | undefined | 'incomplete' {
  if (buf.length < 5) return 'incomplete';
  if (buf[0] !== 0x16) return undefined;
  const recordLen = buf.readUInt16BE(3);
  if (buf.length < 5 + Math.min(recordLen, 4)) return 'incomplete';
  if (buf[5] !== 0x01) return undefined;
  const helloLen = buf.readUIntBE(6, 3);
  const end = 9 + helloLen;
  // Hellos split over several records are rare; read what the first record holds.
  if (buf.length < Math.min(end, 5 + recordLen)) return 'incomplete';
  let p = 9 + 2 + 32; // version, random
  const need = (n: number) => p + n <= buf.length && p + n <= end;
  if (!need(1)) return undefined;
  p += 1 + buf[p]!; // session id
  if (!need(2)) return undefined;
  p += 2 + buf.readUInt16BE(p); // cipher suites
  if (!need(1)) return undefined;
  p += 1 + buf[p]!; // compression methods
  if (!need(2)) return undefined;
  const extEnd = p + 2 + buf.readUInt16BE(p);
  p += 2;
  while (p + 4 <= extEnd && p + 4 <= buf.length) {
    const type = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    p += 4;
    if (type === 0 && p + len <= buf.length) {
      // server_name_list: u16 length, then entries (u8 type, u16 length, name)
      let q = p + 2;
      while (q + 3 <= p + len) {
        const nameType = buf[q]!;
        const nameLen = buf.readUInt16BE(q + 1);
        q += 3;
        if (nameType === 0 && q + nameLen <= buf.length) return buf.toString('ascii', q, q + nameLen);
        q += nameLen;
      }
      return undefined;
    }
    p += len;
  }
  return undefined;
}

/**
 * Reads the ClientHello's SNI and puts the bytes back (unshift), so whoever reads the stream next
 * sees the connection from its first byte. Resolves undefined for a non-TLS or SNI-less client, or
 * when nothing usable arrives within `timeoutMs`.
 */
export function peekSni(stream: Duplex, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (name: string | undefined) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.pause();
      if (size > 0) stream.unshift(Buffer.concat(chunks, size));
      resolve(name);
    };
    const onData = (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      const r = parseSni(Buffer.concat(chunks, size));
      if (r !== 'incomplete') done(r);
      else if (size >= MAX_HELLO_BYTES) done(undefined);
    };
    const onEnd = () => done(undefined);
    const timer = setTimeout(() => done(undefined), timeoutMs);
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
  });
}
