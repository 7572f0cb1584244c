// Forwarding to the upstream resolvers (the node's /etc/resolv.conf, or --dns-upstream).
//
// Invariants:
// - Bounded: at most `maxInflight` questions are outstanding upstream at once; beyond that a
//   question fails at once with UPSTREAM_BUSY (the client gets SERVFAIL and retries), so a flood of
//   unique names cannot grow memory without limit.
// - A reply is accepted only from the server asked, on the socket of its question (a fresh random
//   source port each), with the random id we chose and the question we asked; anything else is
//   ignored (spoofing, stale).
// - UDP first; a truncated UDP reply is asked again over TCP (RFC 7766), so the client gets the
//   whole answer. Each try has its own deadline; servers are tried in order, one after another.
// - The proxy's own queries leave the agent's network namespace through OUTPUT: the capture rules
//   hook only PREROUTING, so they are never redirected back to the proxy (no loop).
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net, { isIP } from 'node:net';
import packet, { type Packet, type Question } from 'dns-packet';
import { encodeUpstreamQuery } from './wire.js';

export interface UpstreamServer {
  readonly ip: string;
  readonly port: number;
}

export type UpstreamErrorCode = 'UPSTREAM_BUSY' | 'UPSTREAM_TIMEOUT' | 'UPSTREAM_FAILED' | 'NO_UPSTREAM';

export class UpstreamError extends Error {
  readonly code: UpstreamErrorCode;
  constructor(code: UpstreamErrorCode, message: string) {
    super(message);
    this.name = 'UpstreamError';
    this.code = code;
  }
}

export interface UpstreamReply {
  readonly packet: Packet;
  /** Encoded size, for the cache's byte bound. */
  readonly size: number;
  readonly transport: 'udp' | 'tcp';
  readonly server: UpstreamServer;
}

export interface UpstreamOptions {
  servers: readonly UpstreamServer[];
  /** Per try (default 2 s). */
  timeoutMs?: number;
  /** Default 512. */
  maxInflight?: number;
  /** Called with each try's duration in seconds (the latency histogram). */
  recordLatency?: (transport: 'udp' | 'tcp', seconds: number) => void;
}

/** Nameservers of a resolv.conf (port 53). Throws NO_UPSTREAM if there are none. */
export function readResolvConf(path = '/etc/resolv.conf'): UpstreamServer[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UpstreamError(
      'NO_UPSTREAM',
      `cannot read ${path} for upstream resolvers: ${(err as Error).message}; pass --dns-upstream IP[:PORT]`,
    );
  }
  const out: UpstreamServer[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    const ip = m?.[1]?.replace(/%.*$/, '');
    if (ip !== undefined && isIP(ip) !== 0) out.push({ ip, port: 53 });
  }
  if (out.length === 0)
    throw new UpstreamError('NO_UPSTREAM', `${path} names no nameserver; pass --dns-upstream IP[:PORT]`);
  return out;
}

/** `IP`, `IP:PORT` or `[IPv6]:PORT`. */
export function parseUpstream(value: string): UpstreamServer {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(value);
  let ip = value;
  let port = 53;
  if (bracket) {
    ip = bracket[1]!;
    if (bracket[2] !== undefined) port = Number(bracket[2]);
  } else if (isIP(value) === 0) {
    const i = value.lastIndexOf(':');
    ip = value.slice(0, i);
    port = Number(value.slice(i + 1));
  }
  if (isIP(ip) === 0 || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new UpstreamError(
      'NO_UPSTREAM',
      `"${value}" is not an upstream resolver: use IP, IP:PORT or [IPv6]:PORT`,
    );
  return { ip, port };
}

export class Upstream {
  readonly servers: readonly UpstreamServer[];
  readonly #timeoutMs: number;
  readonly #maxInflight: number;
  readonly #recordLatency: UpstreamOptions['recordLatency'];
  /** Outstanding UDP questions: their sockets, and how to abandon each when the proxy stops. */
  readonly #udp = new Map<dgram.Socket, () => void>();
  readonly #tcp = new Set<net.Socket>();
  #inflight = 0;
  #closed = false;

  constructor(opts: UpstreamOptions) {
    this.servers = opts.servers;
    this.#timeoutMs = opts.timeoutMs ?? 2000;
    this.#maxInflight = opts.maxInflight ?? 512;
    this.#recordLatency = opts.recordLatency;
  }

  get inflight(): number {
    return this.#inflight;
  }

  /** Asks the upstream servers in turn; UDP, then TCP when the UDP reply is truncated. */
  async fetchReply(question: Question): Promise<UpstreamReply> {
    if (this.#closed) throw new UpstreamError('UPSTREAM_FAILED', 'the DNS proxy is stopping');
    if (this.servers.length === 0)
      throw new UpstreamError(
        'NO_UPSTREAM',
        'no upstream resolver configured: pass --dns-upstream IP[:PORT]',
      );
    if (this.#inflight >= this.#maxInflight)
      throw new UpstreamError('UPSTREAM_BUSY', `${this.#maxInflight} questions already outstanding upstream`);
    this.#inflight++;
    try {
      let last: Error | undefined;
      for (const server of this.servers) {
        if (this.#closed) break;
        try {
          const udp = await this.#timed('udp', () => this.#askUdp(server, question));
          if (((udp.packet.flags ?? 0) & packet.TRUNCATED_RESPONSE) === 0)
            return { packet: udp.packet, size: udp.buf.length, transport: 'udp', server };
          const tcp = await this.#timed('tcp', () => this.#askTcp(server, question));
          return { packet: tcp.packet, size: tcp.buf.length, transport: 'tcp', server };
        } catch (err) {
          last = err as Error;
        }
      }
      throw last instanceof UpstreamError
        ? last
        : new UpstreamError('UPSTREAM_FAILED', last?.message ?? 'upstream failed');
    } finally {
      this.#inflight--;
    }
  }

  close(): void {
    this.#closed = true;
    for (const abandon of [...this.#udp.values()]) abandon();
    for (const s of this.#tcp) s.destroy();
  }

  async #timed<T>(transport: 'udp' | 'tcp', ask: () => Promise<T>): Promise<T> {
    const start = performance.now();
    const r = await ask();
    this.#recordLatency?.(transport, (performance.now() - start) / 1000);
    return r;
  }

  /**
   * One UDP question on its own socket (a fresh random source port, as dnsmasq does), so a spoofed
   * answer has to guess the port as well as the 16-bit id. Only misses pay for it: cached answers
   * never reach here.
   */
  #askUdp(server: UpstreamServer, question: Question): Promise<{ buf: Buffer; packet: Packet }> {
    const id = (Math.random() * 0x10000) | 0;
    const query = encodeUpstreamQuery(id, question);
    const socket = dgram.createSocket(isIP(server.ip) === 6 ? 'udp6' : 'udp4');
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#udp.delete(socket);
        socket.close();
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new UpstreamError(
            'UPSTREAM_TIMEOUT',
            `upstream resolver ${server.ip}:${server.port} did not answer in ${this.#timeoutMs} ms`,
          ),
        );
      }, this.#timeoutMs);
      this.#udp.set(socket, () => {
        done();
        reject(new UpstreamError('UPSTREAM_FAILED', 'the DNS proxy is stopping'));
      });
      // ICMP unreachable and the like: the question times out, or the next server is asked.
      socket.on('error', () => {});
      socket.on('message', (buf, rinfo) => {
        if (buf.length < 12 || buf.readUInt16BE(0) !== id) return;
        if (rinfo.port !== server.port || stripMapped(rinfo.address) !== server.ip) return;
        let decoded: Packet;
        try {
          decoded = packet.decode(buf);
        } catch {
          return;
        }
        if (decoded.type !== 'response' || !sameQuestion(decoded.questions?.[0], question)) return;
        done();
        resolve({ buf, packet: decoded });
      });
      socket.send(query, server.port, server.ip);
    });
  }

  #askTcp(server: UpstreamServer, question: Question): Promise<{ buf: Buffer; packet: Packet }> {
    const id = (Math.random() * 0x10000) | 0;
    const query = encodeUpstreamQuery(id, question);
    const frame = Buffer.alloc(2 + query.length);
    frame.writeUInt16BE(query.length, 0);
    query.copy(frame, 2);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: server.ip, port: server.port });
      this.#tcp.add(socket);
      const chunks: Buffer[] = [];
      let got = 0;
      const fail = (msg: string, code: UpstreamErrorCode = 'UPSTREAM_FAILED') => {
        socket.destroy();
        reject(new UpstreamError(code, `upstream resolver ${server.ip}:${server.port} over TCP: ${msg}`));
      };
      socket.setTimeout(this.#timeoutMs, () =>
        fail(`no answer in ${this.#timeoutMs} ms`, 'UPSTREAM_TIMEOUT'),
      );
      socket.on('close', () => {
        this.#tcp.delete(socket);
        fail('closed before a whole reply');
      });
      socket.on('error', (err) => fail(err.message));
      socket.on('data', (chunk) => {
        chunks.push(chunk);
        got += chunk.length;
        if (got < 2) return;
        const all = Buffer.concat(chunks);
        const len = all.readUInt16BE(0);
        if (all.length < 2 + len) return;
        const buf = all.subarray(2, 2 + len);
        try {
          const decoded = packet.decode(buf);
          if (decoded.id !== id || !sameQuestion(decoded.questions?.[0], question))
            return fail('reply to another question');
          socket.removeAllListeners('close');
          this.#tcp.delete(socket);
          socket.destroy();
          resolve({ buf, packet: decoded });
        } catch {
          fail('malformed reply');
        }
      });
      socket.write(frame);
    });
  }
}

function stripMapped(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

function sameQuestion(a: Question | undefined, b: Question): boolean {
  return a !== undefined && a.type === b.type && a.name.toLowerCase() === b.name.toLowerCase();
}
