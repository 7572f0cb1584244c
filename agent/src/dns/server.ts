// The agent's DNS proxy (port 15053, UDP and TCP). Mesh pods' port-53 traffic is redirected here by
// the capture rules, whatever resolver address the pod asked.
//
//   query ─► parse (malformed: FORMERR or drop) ─► name in the Service index?
//              ├─ yes: A/AAAA from the Service's VIPs (headless: ready endpoint IPs), other types
//              │       an empty NOERROR                                           source="mesh"
//              ├─ a ServiceEntry host (exact, or under a "*." host) with addresses: A/AAAA from
//              │       spec.addresses or the host's allocated VIP                source="mesh"
//              │       (an entry with nothing to answer, e.g. a wildcard: forwarded as usual)
//              ├─ under svc.<cluster domain> but unknown: NXDOMAIN                source="mesh"
//              │  (names below a known Service, pod hostnames and SRV, go upstream)
//              └─ else: cache hit ─► reply with aged TTLs                         source="cache"
//                       miss ─► upstream (one outstanding query per name, shared)  source="upstream"
//   reply ─► UDP: TC and no records if larger than the client takes; TCP: whole, length-prefixed
//
// Invariants:
// - Hostile input never stops the server: every message is parsed defensively, a bad one gets
//   FORMERR (or is dropped when it is not even a query), and the others keep being served.
// - Memory is bounded: the cache (entries and bytes), the upstream in-flight count, TCP
//   connections, the queries pipelined per TCP connection, the bytes buffered per connection (one
//   frame is at most 64 KiB) and the recent-queries ring all have limits; a TCP client that stalls
//   mid-frame or stops reading its answers is disconnected.
// - Only `svc.<cluster domain>` is ours: every other name goes upstream, so pod names, the node's
//   search domains and the internet resolve as they did before capture.
import dgram from 'node:dgram';
import net, { isIP } from 'node:net';
import { createSilentLogger, type Logger } from '@hypha/shared';
import type { ConfigState, Service } from '@hypha/shared/config';
import type { Answer } from 'dns-packet';
import { type CacheLimits, cacheKey, DnsCache } from './cache.js';
import { type DnsDropReason, DnsMetrics, type DnsSource } from './metrics.js';
import { DEFAULT_CLUSTER_DOMAIN, normalizeName, ServiceNameIndex } from './names.js';
import { Upstream, type UpstreamReply, type UpstreamServer } from './upstream.js';
import {
  encodeError,
  encodeReply,
  fitUdp,
  isProblem,
  parseQuery,
  type Query,
  RCODE,
  rcodeLabel,
  rcodeOf,
  typeLabel,
} from './wire.js';

export const DEFAULT_DNS_PORT = 15053;
/** TTL of the answers the proxy makes itself (Services move; Istio's proxy uses the same). */
export const MESH_TTL = 30;
const RECENT = 64;

export interface DnsTcpLimits {
  /** Open TCP connections at once (default 256); more are closed on accept. */
  maxConnections: number;
  /** A connection idle, or stalled in the middle of a message, this long is closed (default 10 s). */
  idleMs: number;
  /** Queries in flight per connection before it stops being read (default 16). */
  maxPipelined: number;
  /** Unsent reply bytes a connection may hold before it counts as not reading (default 256 KiB). */
  maxWriteBuffer: number;
}

export interface DnsProxyOptions {
  state: ConfigState;
  upstreams: readonly UpstreamServer[];
  /** Default `::` (both families), falling back to 0.0.0.0 where there is no IPv6. */
  host?: string;
  /** Default 15053; 0 picks a free port (UDP and TCP share it). */
  port?: number;
  clusterDomain?: string;
  /** SO_REUSEPORT on both sockets (default true): a new agent binds beside the old one on upgrade. */
  reusePort?: boolean;
  cache?: Partial<CacheLimits>;
  upstreamTimeoutMs?: number;
  maxUpstreamInflight?: number;
  tcp?: Partial<DnsTcpLimits>;
  metrics?: DnsMetrics;
  logger?: Logger;
}

export interface DnsRecentQuery {
  readonly at: string;
  readonly client: string;
  readonly transport: 'udp' | 'tcp';
  readonly name: string;
  readonly type: string;
  readonly source: DnsSource;
  readonly rcode: string;
}

export interface DnsDebugView {
  readonly port: number;
  readonly clusterDomain: string;
  readonly upstreams: readonly string[];
  /** Service names, and ServiceEntries (their hosts are looked up in the config state). */
  readonly index: { readonly names: number; readonly serviceEntries: number };
  readonly cache: {
    readonly entries: number;
    readonly bytes: number;
    readonly hits: number;
    readonly misses: number;
  };
  readonly upstreamInflight: number;
  readonly tcpConnections: number;
  /** The last queries, newest first. */
  readonly recent: readonly DnsRecentQuery[];
}

export interface DnsProxy {
  /** Binds UDP and TCP; resolves with the port. */
  start(): Promise<number>;
  readonly port: number;
  findDebugView(): DnsDebugView;
  close(): Promise<void>;
}

type Send = (reply: Buffer, source: DnsSource) => void;

export function createDnsProxy(opts: DnsProxyOptions): DnsProxy {
  const log = (opts.logger ?? createSilentLogger()).child({ component: 'dns' });
  const metrics = opts.metrics ?? new DnsMetrics();
  const index = new ServiceNameIndex(opts.state, opts.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN);
  const cache = new DnsCache(opts.cache);
  const upstream = new Upstream({
    servers: opts.upstreams,
    ...(opts.upstreamTimeoutMs !== undefined ? { timeoutMs: opts.upstreamTimeoutMs } : {}),
    ...(opts.maxUpstreamInflight !== undefined ? { maxInflight: opts.maxUpstreamInflight } : {}),
    recordLatency: (t, s) => metrics.recordUpstreamLatency(t, s),
  });
  const tcpLimits: DnsTcpLimits = {
    maxConnections: 256,
    idleMs: 10_000,
    maxPipelined: 16,
    maxWriteBuffer: 256 * 1024,
    ...opts.tcp,
  };
  const reusePort = opts.reusePort ?? true;
  const soa: Answer = {
    type: 'SOA',
    name: index.clusterDomain,
    ttl: MESH_TTL,
    class: 'IN',
    data: {
      mname: `ns.dns.${index.clusterDomain}`,
      rname: `hostmaster.${index.clusterDomain}`,
      serial: 1,
      refresh: 7200,
      retry: 1800,
      expire: 86400,
      minimum: MESH_TTL,
    },
  };
  // One upstream question per name at a time: concurrent askers share its answer.
  const forwarding = new Map<string, Promise<UpstreamReply>>();
  // The ring holds plain values; timestamps become text only when someone looks (debug view).
  const recent: (Omit<DnsRecentQuery, 'at'> & { at: number })[] = [];
  let recentNext = 0;
  const tcpConnections = new Set<net.Socket>();
  let udp: dgram.Socket | undefined;
  let tcp: net.Server | undefined;
  let port = 0;
  let closed = false;

  const record = (
    q: Query | undefined,
    client: string,
    transport: 'udp' | 'tcp',
    reply: Buffer,
    source: DnsSource,
  ) => {
    const type = q === undefined ? 'other' : typeLabel(q.question.type);
    const rcode = rcodeLabel(rcodeOf(reply));
    metrics.recordRequest(type, source, rcode);
    const entry = {
      at: Date.now(),
      client,
      transport,
      name: q?.question.name ?? '',
      type: q?.question.type ?? '',
      source,
      rcode,
    };
    recent[recentNext] = entry;
    recentNext = (recentNext + 1) % RECENT;
  };

  const serviceIps = (svc: Service): readonly string[] =>
    svc.vips.length > 0 ? svc.vips : svc.endpoints.filter((e) => e.ready).map((e) => e.ip);

  const meshReply = (q: Query, ips: readonly string[]): Buffer => {
    const type = q.question.type;
    const family = type === 'A' ? 4 : type === 'AAAA' ? 6 : 0;
    const answers: Answer[] = [];
    if (family !== 0) {
      const seen = new Set<string>();
      for (const ip of ips) {
        if (isIP(ip) !== family || seen.has(ip)) continue;
        seen.add(ip);
        answers.push({ type, name: q.question.name, ttl: MESH_TTL, class: 'IN', data: ip } as Answer);
      }
    }
    return encodeReply(q, {
      rcode: RCODE.NOERROR,
      authoritative: true,
      answers,
      authorities: answers.length === 0 ? [soa] : [],
      additionals: [],
    });
  };

  const forward = (q: Query, key: string, send: Send): void => {
    let pending = forwarding.get(key);
    if (pending === undefined) {
      pending = upstream.fetchReply(q.question);
      forwarding.set(key, pending);
      const p = pending;
      // Nothing on this chain may reject: an unhandled rejection would stop the agent.
      p.then(
        (r) => {
          try {
            cache.store(key, r.packet, r.size);
          } catch (err) {
            log.debug({ name: q.question.name, err: (err as Error).message }, 'upstream answer not cached');
          }
        },
        () => {},
      ).finally(() => {
        if (forwarding.get(key) === p) forwarding.delete(key);
      });
    }
    pending.then(
      (r) => {
        const records = {
          rcode: (r.packet.flags ?? 0) & 0xf,
          authoritative: false,
          answers: r.packet.answers ?? [],
          authorities: (r.packet.authorities ?? []).filter((a) => a.type !== 'OPT'),
          additionals: (r.packet.additionals ?? []).filter((a) => a.type !== 'OPT'),
        };
        let out: Buffer;
        try {
          out = encodeReply(q, records);
        } catch (err) {
          // A record dns-packet decoded but cannot encode again: the client gets SERVFAIL.
          log.debug(
            { name: q.question.name, err: (err as Error).message },
            'upstream answer not re-encodable',
          );
          out = encodeError(q.id, 'SERVFAIL', q);
        }
        send(out, 'upstream');
      },
      (err: Error & { code?: string }) => {
        log.debug({ name: q.question.name, type: q.question.type, err: err.message }, 'upstream failed');
        send(encodeError(q.id, 'SERVFAIL', q), 'upstream');
      },
    );
  };

  /**
   * Answers one message whatever it holds: an exception from the codec (a bug, or a record it
   * cannot handle) costs that query a SERVFAIL, never the process. False: dropped, no reply comes.
   */
  const answer = (
    buf: Buffer,
    client: string,
    transport: 'udp' | 'tcp',
    reply: (b: Buffer) => void,
  ): boolean => {
    try {
      return answerOrThrow(buf, client, transport, reply);
    } catch (err) {
      log.warn(
        { client, err: (err as Error).message },
        'DNS query failed inside the proxy; answered SERVFAIL',
      );
      reply(encodeError(buf.readUInt16BE(0), 'SERVFAIL'));
      return true;
    }
  };

  /** Answers one message; `reply` gets the whole reply (the transport applies its size rule). */
  const answerOrThrow = (
    buf: Buffer,
    client: string,
    transport: 'udp' | 'tcp',
    reply: (b: Buffer) => void,
  ): boolean => {
    const q = parseQuery(buf);
    if (isProblem(q)) {
      if (q.kind === 'drop') {
        metrics.recordDropped('malformed');
        return false;
      }
      const r = encodeError(q.id, q.rcode);
      record(undefined, client, transport, r, 'mesh');
      reply(r);
      return true;
    }
    const send: Send = (r, source) => {
      const out = transport === 'udp' ? fitUdp(q, r) : r;
      record(q, client, transport, out, source);
      reply(out);
    };
    if ((q.question.class ?? 'IN') === 'IN') {
      const name = normalizeName(q.question.name);
      const svc = index.findService(name);
      if (svc !== undefined) {
        send(meshReply(q, serviceIps(svc)), 'mesh');
        return true;
      }
      const entry = opts.state.findServiceEntryByHost(name);
      if (entry !== undefined && entry.addresses.length > 0) {
        send(meshReply(q, entry.addresses), 'mesh');
        return true;
      }
      if (index.isInServiceZone(name) && !index.isBelowService(name)) {
        const r = encodeReply(q, {
          rcode: RCODE.NXDOMAIN,
          authoritative: true,
          answers: [],
          authorities: [soa],
          additionals: [],
        });
        send(r, 'mesh');
        return true;
      }
    }
    const key = cacheKey(q.question);
    const hit = cache.findReply(key, q, buf);
    if (hit !== undefined) {
      send(hit, 'cache');
      return true;
    }
    forward(q, key, send);
    return true;
  };

  const onUdp = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    const client = `${rinfo.address}:${rinfo.port}`;
    answer(msg, client, 'udp', (out) => {
      if (!closed) udp?.send(out, rinfo.port, rinfo.address);
    });
  };

  const drop = (socket: net.Socket, reason: DnsDropReason) => {
    metrics.recordDropped(reason);
    socket.destroy();
  };

  const onTcp = (socket: net.Socket): void => {
    socket.on('error', () => {});
    if (tcpConnections.size >= tcpLimits.maxConnections || closed) {
      drop(socket, 'tcp_limit');
      return;
    }
    tcpConnections.add(socket);
    socket.on('close', () => tcpConnections.delete(socket));
    socket.setNoDelay(true);
    socket.setTimeout(tcpLimits.idleMs, () => drop(socket, 'tcp_idle'));
    const client = `${socket.remoteAddress}:${socket.remotePort}`;
    let buffered: Buffer = Buffer.alloc(0);
    let inFlight = 0;
    let stall: NodeJS.Timeout | undefined;
    socket.on('close', () => clearTimeout(stall));
    const write = (out: Buffer) => {
      inFlight--;
      if (socket.destroyed) return;
      if (out.length > 0xffff) out = encodeError(out.readUInt16BE(0), 'SERVFAIL');
      const frame = Buffer.allocUnsafe(2 + out.length);
      frame.writeUInt16BE(out.length, 0);
      out.copy(frame, 2);
      socket.write(frame);
      if (socket.writableLength > tcpLimits.maxWriteBuffer) {
        drop(socket, 'tcp_slow_reader');
        return;
      }
      if (socket.isPaused() && inFlight < tcpLimits.maxPipelined) socket.resume();
    };
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const len = buffered.readUInt16BE(0);
        if (len < 12) {
          drop(socket, 'malformed');
          return;
        }
        if (buffered.length < 2 + len) break;
        const msg = buffered.subarray(2, 2 + len);
        buffered = buffered.subarray(2 + len);
        inFlight++;
        if (!answer(msg, client, 'tcp', write)) {
          // Not a query (a response, or no header): whoever sends that is no DNS client.
          socket.destroy();
          return;
        }
        if (socket.destroyed) return;
      }
      if (inFlight >= tcpLimits.maxPipelined) socket.pause();
      // A message must arrive whole within the idle time, however slowly its bytes trickle in.
      if (buffered.length === 0) {
        clearTimeout(stall);
        stall = undefined;
      } else if (stall === undefined) {
        stall = setTimeout(() => drop(socket, 'tcp_stalled'), tcpLimits.idleMs);
      }
    });
  };

  const bindUdp = (host: string, wantPort: number): Promise<dgram.Socket> =>
    new Promise((resolve, reject) => {
      const type = isIP(host) === 4 ? 'udp4' : 'udp6';
      const s = dgram.createSocket({ type, reusePort, ...(type === 'udp6' ? { ipv6Only: false } : {}) });
      s.once('error', reject);
      s.bind({ address: host, port: wantPort }, () => {
        s.off('error', reject);
        s.on('error', (err) => log.warn({ err: err.message }, 'DNS UDP socket error'));
        resolve(s);
      });
    });

  const listenTcp = (host: string, wantPort: number): Promise<net.Server> =>
    new Promise((resolve, reject) => {
      const server = net.createServer({ noDelay: true }, onTcp);
      server.once('error', reject);
      server.listen(
        { host, port: wantPort, reusePort, ...(isIP(host) === 6 ? { ipv6Only: false } : {}) },
        () => {
          server.off('error', reject);
          resolve(server);
        },
      );
    });

  const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT']);

  const bindBoth = async (host: string, wanted: number): Promise<void> => {
    const u = await bindUdp(host, wanted);
    const p = u.address().port;
    try {
      tcp = await listenTcp(host, p);
    } catch (err) {
      u.close();
      throw err;
    }
    udp = u;
    port = p;
  };

  const start = async (): Promise<number> => {
    let host = opts.host ?? '::';
    const wanted = opts.port ?? DEFAULT_DNS_PORT;
    // Port 0: the UDP port the kernel picked may be taken for TCP; pick again (a few times).
    for (let attempt = 0; ; attempt++) {
      try {
        await bindBoth(host, wanted);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (opts.host === undefined && host !== '0.0.0.0' && NO_IPV6.has(code)) host = '0.0.0.0';
        else if (!(wanted === 0 && code === 'EADDRINUSE' && attempt < 10)) throw bindError(err, wanted);
      }
    }
    udp!.on('message', onUdp);
    log.info(
      { host, port, upstreams: upstream.servers, clusterDomain: index.clusterDomain },
      'DNS proxy listening (UDP and TCP)',
    );
    return port;
  };

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    index.close();
    upstream.close();
    udp?.close();
    for (const s of tcpConnections) s.destroy();
    await new Promise<void>((r) => (tcp ? tcp.close(() => r()) : r()));
  };

  return {
    start,
    get port() {
      return port;
    },
    findDebugView: () => ({
      port,
      clusterDomain: index.clusterDomain,
      upstreams: upstream.servers.map((s) => `${s.ip}:${s.port}`),
      index: { names: index.size, serviceEntries: opts.state.stats().serviceEntries },
      cache: { entries: cache.size, bytes: cache.bytes, hits: cache.hits, misses: cache.misses },
      upstreamInflight: upstream.inflight,
      tcpConnections: tcpConnections.size,
      recent: [...recent.slice(recentNext), ...recent.slice(0, recentNext)]
        .reverse()
        .map((r) => ({ ...r, at: new Date(r.at).toISOString() })),
    }),
    close,
  };
}

function bindError(err: unknown, port: number): Error {
  const e = err as NodeJS.ErrnoException;
  return new Error(
    `cannot bind the DNS proxy on port ${port} (UDP and TCP): ${e.message}${e.code === 'EADDRINUSE' ? ' (another DNS server on this port? run the agent with --dns-port or --no-dns-proxy)' : ''}`,
  );
}
