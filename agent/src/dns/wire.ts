// DNS messages in and out, on top of dns-packet (no hand-written record codecs here): what a query
// asks, replies built from records, and the UDP size rules.
//
// - A query is read once into a `Query`: id, flags, the one question, the client's EDNS UDP size,
//   and where the question section ends (a cached reply is stamped with the client's id and its own
//   question bytes, so 0x20 case randomisation round-trips).
// - UDP replies never exceed what the client can take: 512 bytes without EDNS, else its advertised
//   size capped at MAX_UDP_PAYLOAD. A reply that does not fit goes out as header + question with
//   TC set, and the client retries over TCP (RFC 1035 4.2.1, RFC 6891 6.2.5).
import packet, { type Answer, type Packet, type Question, type RecordType } from 'dns-packet';

export const CLASSIC_UDP_PAYLOAD = 512;
/** What we advertise and the most we send over UDP (the DNS flag day 2020 value). */
export const MAX_UDP_PAYLOAD = 1232;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export type RcodeName = keyof typeof RCODE;

const QR = 1 << 15;
const OPCODE_MASK = 0xf << 11;
const FLAG_TC = packet.TRUNCATED_RESPONSE;
const FLAG_RD = packet.RECURSION_DESIRED;
const FLAG_RA = packet.RECURSION_AVAILABLE;
const FLAG_AA = packet.AUTHORITATIVE_ANSWER;

export interface Query {
  readonly id: number;
  /** Header flags as sent (QR clear). */
  readonly flags: number;
  readonly question: Question;
  /** The client's EDNS UDP payload size, or undefined without an OPT record. */
  readonly ednsUdpSize: number | undefined;
  /** Byte offset where the question section ends (12 + its length). */
  readonly questionEnd: number;
}

/** Why a message is not a query we serve: dropped silently, or answered with an rcode. */
export type QueryProblem =
  | { readonly kind: 'drop'; readonly reason: string }
  | { readonly kind: 'reply'; readonly rcode: RcodeName; readonly reason: string; readonly id: number };

/** Reads a query, or says why not. Never throws on hostile bytes. */
export function parseQuery(buf: Buffer): Query | QueryProblem {
  if (buf.length < 12) return { kind: 'drop', reason: 'shorter than a DNS header' };
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  // Never answer a response: two DNS servers pointed at each other would ping-pong forever.
  if ((flags & QR) !== 0) return { kind: 'drop', reason: 'a response, not a query' };
  if ((flags & OPCODE_MASK) !== 0) return { kind: 'reply', rcode: 'NOTIMP', reason: 'opcode not QUERY', id };
  if (buf.readUInt16BE(4) !== 1)
    return { kind: 'reply', rcode: 'FORMERR', reason: 'not exactly one question', id };
  let decoded: Packet;
  try {
    decoded = packet.decode(buf);
  } catch {
    return { kind: 'reply', rcode: 'FORMERR', reason: 'malformed message', id };
  }
  const question = decoded.questions?.[0];
  if (question === undefined || typeof question.name !== 'string')
    return { kind: 'reply', rcode: 'FORMERR', reason: 'malformed question', id };
  let ednsUdpSize: number | undefined;
  for (const a of decoded.additionals ?? []) {
    if (a.type === 'OPT')
      ednsUdpSize = (a as { udpPayloadSize?: number }).udpPayloadSize ?? CLASSIC_UDP_PAYLOAD;
  }
  return { id, flags, question, ednsUdpSize, questionEnd: questionSectionEnd(buf) };
}

/** End of the first question (name labels, then type and class). -1 if it uses compression. */
function questionSectionEnd(buf: Buffer): number {
  let i = 12;
  while (i < buf.length) {
    const len = buf[i]!;
    if (len === 0) return i + 5;
    if ((len & 0xc0) !== 0) return -1;
    i += len + 1;
  }
  return -1;
}

export function isProblem(q: Query | QueryProblem): q is QueryProblem {
  return (q as QueryProblem).kind !== undefined;
}

/** The largest UDP reply this client takes. */
export function udpLimit(q: Query): number {
  if (q.ednsUdpSize === undefined) return CLASSIC_UDP_PAYLOAD;
  return Math.min(Math.max(q.ednsUdpSize, CLASSIC_UDP_PAYLOAD), MAX_UDP_PAYLOAD);
}

export interface ReplyRecords {
  readonly rcode: number;
  /** Our own answer (AA), or a recursive one passed on. */
  readonly authoritative: boolean;
  readonly answers: readonly Answer[];
  readonly authorities: readonly Answer[];
  /** Without any OPT record: the reply gets its own when the query had one. */
  readonly additionals: readonly Answer[];
}

const OPT_RECORD = { type: 'OPT', name: '.', udpPayloadSize: MAX_UDP_PAYLOAD, flags: 0 } as unknown as Answer;

/** A full reply to `q` (any size: callers apply the UDP limit with `fitUdp`). */
export function encodeReply(q: Query, r: ReplyRecords): Buffer {
  const flags = (q.flags & FLAG_RD) | FLAG_RA | (r.authoritative ? FLAG_AA : 0) | (r.rcode & 0xf);
  const additionals = q.ednsUdpSize === undefined ? r.additionals : [...r.additionals, OPT_RECORD];
  return packet.encode({
    id: q.id,
    type: 'response',
    flags,
    questions: [q.question],
    answers: r.answers as Answer[],
    authorities: r.authorities as Answer[],
    additionals: additionals as Answer[],
  });
}

/** A reply with only an rcode (FORMERR, SERVFAIL, NOTIMP...). Works without a parsed question. */
export function encodeError(id: number, rcode: RcodeName, q?: Query): Buffer {
  if (q === undefined) {
    const b = Buffer.alloc(12);
    b.writeUInt16BE(id, 0);
    b.writeUInt16BE(QR | FLAG_RA | RCODE[rcode], 2);
    return b;
  }
  return encodeReply(q, {
    rcode: RCODE[rcode],
    authoritative: false,
    answers: [],
    authorities: [],
    additionals: [],
  });
}

/** The reply as it may go over UDP: itself if it fits, else header + question with TC set. */
export function fitUdp(q: Query, reply: Buffer): Buffer {
  if (reply.length <= udpLimit(q)) return reply;
  const rcode = reply.readUInt16BE(2) & 0xf;
  const flags = (q.flags & FLAG_RD) | FLAG_RA | FLAG_TC | rcode;
  return packet.encode({
    id: q.id,
    type: 'response',
    flags,
    questions: [q.question],
    answers: [],
    authorities: [],
    additionals: q.ednsUdpSize === undefined ? [] : [OPT_RECORD],
  });
}

/** Copies the client's id, RD bit and question bytes into a reply encoded for another client. */
export function stampReply(template: Buffer, templateQuestionEnd: number, q: Query, query: Buffer): Buffer {
  const out = Buffer.allocUnsafe(template.length);
  template.copy(out);
  out.writeUInt16BE(q.id, 0);
  out[2] = (out[2]! & ~(FLAG_RD >> 8)) | ((q.flags & FLAG_RD) >> 8);
  if (q.questionEnd === templateQuestionEnd && q.questionEnd > 0) query.copy(out, 12, 12, q.questionEnd);
  return out;
}

/** Where the question section of an encoded reply ends (our encoder never compresses it). */
export function encodedQuestionEnd(reply: Buffer): number {
  return questionSectionEnd(reply);
}

/** A query for `question` as the proxy sends it upstream: its own id, RD, and EDNS. */
export function encodeUpstreamQuery(id: number, question: Question): Buffer {
  return packet.encode({
    id,
    type: 'query',
    flags: FLAG_RD,
    questions: [{ name: question.name, type: question.type, class: question.class ?? 'IN' }],
    additionals: [OPT_RECORD],
  });
}

/** Record type names the metrics keep as their own label value; anything else is `other`. */
const TYPE_LABELS = new Set<string>([
  'A',
  'AAAA',
  'CNAME',
  'SRV',
  'PTR',
  'TXT',
  'MX',
  'NS',
  'SOA',
  'HTTPS',
  'ANY',
]);
export function typeLabel(type: RecordType | string): string {
  return TYPE_LABELS.has(type) ? type : 'other';
}

const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'] as const;
export function rcodeLabel(rcode: number): string {
  return RCODE_NAMES[rcode] ?? 'other';
}

export function rcodeOf(reply: Buffer): number {
  return reply.length >= 4 ? reply.readUInt16BE(2) & 0xf : RCODE.SERVFAIL;
}
