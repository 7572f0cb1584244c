// Resolving a ServiceEntry host (`resolution: DNS`) when a pod connects to it: the pod asked the
// agent's DNS proxy and got the host's VIP; the agent now needs the host's real address. Asked of
// the same upstream resolvers as the proxy's (so the answer is what the pod would have had without
// the mesh), through the same bounded `Upstream`, and kept for the answer's TTL (at most 30 s).
//
// Invariants:
// - Concurrent connections to one host share one question (no thundering herd on a cold cache).
// - A failure is never cached: the next connection asks again.
import { isIP } from 'node:net';
import type { Answer } from 'dns-packet';
import { readResolvConf, Upstream, type UpstreamServer } from './upstream.js';

const MAX_TTL_MS = 30_000;

export interface HostResolverOptions {
  servers: readonly UpstreamServer[];
  timeoutMs?: number;
  now?: () => number;
}

export class HostResolverError extends Error {
  readonly code = 'DNS_RESOLUTION_FAILED' as const;
  constructor(message: string) {
    super(message);
    this.name = 'HostResolverError';
  }
}

export class HostResolver {
  readonly #upstream: Upstream;
  readonly #now: () => number;
  readonly #cache = new Map<string, { addresses: string[]; until: number }>();
  readonly #pending = new Map<string, Promise<string[]>>();

  constructor(opts: HostResolverOptions) {
    this.#upstream = new Upstream({
      servers: opts.servers,
      maxInflight: 128,
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    });
    this.#now = opts.now ?? Date.now;
  }

  /** The host's addresses of `family` (4: A, 6: AAAA); an IP literal is returned as is. */
  async fetchAddresses(host: string, family: 4 | 6): Promise<string[]> {
    if (isIP(host) !== 0) return [host];
    const key = `${family}/${host}`;
    const hit = this.#cache.get(key);
    if (hit !== undefined && hit.until > this.#now()) return hit.addresses;
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = this.#ask(host, family).finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  /** A first address, IPv4 preferred unless the destination the pod dialled was IPv6. */
  async fetchAddress(host: string, family: 4 | 6): Promise<string> {
    const first = await this.fetchAddresses(host, family).catch(() => []);
    if (first.length > 0) return first[0]!;
    const other = await this.fetchAddresses(host, family === 4 ? 6 : 4);
    if (other.length > 0) return other[0]!;
    throw new HostResolverError(`${host} has no address (A or AAAA) at the upstream resolvers`);
  }

  close(): void {
    this.#upstream.close();
  }

  async #ask(host: string, family: 4 | 6): Promise<string[]> {
    const type = family === 4 ? 'A' : 'AAAA';
    let reply: Awaited<ReturnType<Upstream['fetchReply']>>;
    try {
      reply = await this.#upstream.fetchReply({ type, name: host, class: 'IN' });
    } catch (err) {
      throw new HostResolverError(`cannot resolve ${host} (${type}): ${(err as Error).message}`);
    }
    const rcode = (reply.packet.flags ?? 0) & 0xf;
    if (rcode !== 0) {
      throw new HostResolverError(`cannot resolve ${host} (${type}): the resolver answered rcode ${rcode}`);
    }
    const answers = (reply.packet.answers ?? []).filter((a: Answer) => a.type === type);
    const addresses = answers.map((a) => String((a as { data: unknown }).data));
    const ttl = Math.min(...answers.map((a) => (a as { ttl?: number }).ttl ?? 0), MAX_TTL_MS / 1000);
    if (addresses.length > 0 && ttl > 0) {
      this.#cache.set(`${family}/${host}`, { addresses, until: this.#now() + ttl * 1000 });
      if (this.#cache.size > 4096) this.#cache.delete(this.#cache.keys().next().value!);
    }
    return addresses;
  }
}

/**
 * The resolver the agent's outbound path uses for ServiceEntry hosts: the DNS proxy's upstreams
 * (`--dns-upstream`), else the node's /etc/resolv.conf, read at the first use so an agent that never
 * meets such a host never needs one.
 */
export function createHostLookup(
  servers: readonly UpstreamServer[],
): (host: string, family: 4 | 6) => Promise<string> {
  let resolver: HostResolver | undefined;
  return (host, family) => {
    if (resolver === undefined) {
      resolver = new HostResolver({ servers: servers.length > 0 ? servers : readResolvConf() });
    }
    return resolver.fetchAddress(host, family);
  };
}
