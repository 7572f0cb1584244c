// A tiny authoritative DNS server on loopback (UDP and TCP) standing in for the node's resolver:
// it answers from a table, counts what it was asked, and can truncate over UDP or stay silent.
import dgram from 'node:dgram';
import net from 'node:net';
import packet, { type Answer, type Packet } from 'dns-packet';

export interface FakeZone {
  /** name → records (name lower case, no trailing dot). */
  records: Map<string, Answer[]>;
  /** Names answered NXDOMAIN with an SOA (negative TTL `minimum`). */
  nxdomain?: Map<string, number>;
  /** Names whose UDP answer is always truncated (TC, no records). */
  truncateUdp?: Set<string>;
  /** Names never answered. */
  silent?: Set<string>;
  /** Names answered only after this many milliseconds. */
  delayMs?: Map<string, number>;
}

export interface FakeUpstream {
  readonly port: number;
  /** Questions received, as `name/type/transport`. */
  readonly asked: string[];
  close(): Promise<void>;
}

function reply(zone: FakeZone, query: Packet, transport: 'udp' | 'tcp'): Packet | undefined {
  const q = query.questions?.[0];
  if (q === undefined) return undefined;
  const name = q.name.toLowerCase().replace(/\.$/, '');
  if (zone.silent?.has(name)) return undefined;
  const base = { id: query.id, type: 'response' as const, questions: [q], flags: packet.RECURSION_AVAILABLE };
  const neg = zone.nxdomain?.get(name);
  if (neg !== undefined) {
    return {
      ...base,
      flags: base.flags | 3,
      authorities: [
        {
          type: 'SOA',
          name: 'example.test',
          ttl: 300,
          data: { mname: 'ns.example.test', rname: 'root.example.test', minimum: neg },
        } as Answer,
      ],
    };
  }
  if (transport === 'udp' && zone.truncateUdp?.has(name))
    return { ...base, flags: base.flags | packet.TRUNCATED_RESPONSE, answers: [] };
  const answers = (zone.records.get(name) ?? []).filter((a) => a.type === q.type);
  return { ...base, answers };
}

export async function startFakeUpstream(zone: FakeZone): Promise<FakeUpstream> {
  const asked: string[] = [];
  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    let query: Packet;
    try {
      query = packet.decode(msg);
    } catch {
      return;
    }
    asked.push(`${query.questions?.[0]?.name}/${query.questions?.[0]?.type}/udp`);
    const r = reply(zone, query, 'udp');
    const delay = zone.delayMs?.get(query.questions?.[0]?.name.toLowerCase() ?? '') ?? 0;
    if (r) setTimeout(() => udp.send(packet.encode(r), rinfo.port, rinfo.address), delay);
  });
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  const port = udp.address().port;
  const tcp = net.createServer((s) => {
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const query = packet.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        asked.push(`${query.questions?.[0]?.name}/${query.questions?.[0]?.type}/tcp`);
        const r = reply(zone, query, 'tcp');
        if (r) s.write(packet.streamEncode(r));
      }
    });
  });
  await new Promise<void>((r) => tcp.listen(port, '127.0.0.1', r));
  return {
    port,
    asked,
    close: async () => {
      udp.close();
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
}
