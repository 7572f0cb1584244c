// Resolving ServiceEntry hosts (`resolution: DNS`) for egress: as the agents do (agent/src/dns/
// resolve-host.ts), asked of the upstream resolvers the waypoint is given (`--dns-upstream`), else
// of the system's, and kept for the answer's TTL (at most 30 s). The waypoint must not ask the
// mesh's DNS proxy: that answers a ServiceEntry host with its VIP, which leads back here.
//
// Invariants:
// - Concurrent connections to one host share one question; a failure is never cached.
// - IPv4 first, then IPv6.
import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';

const MAX_TTL_MS = 30_000;

export interface HostResolver {
  /** One address of `host` (an IP literal is returned as is). Rejects with a readable reason. */
  fetchAddress(host: string): Promise<string>;
}

export interface HostResolverOptions {
  /** `ip` or `ip:port` (`[v6]:port`) of DNS servers; empty or absent: the system resolver. */
  servers?: readonly string[];
  now?: () => number;
}

export function createHostResolver(opts: HostResolverOptions = {}): HostResolver {
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { address: string; until: number }>();
  const pending = new Map<string, Promise<string>>();
  const servers = opts.servers ?? [];
  let resolver: dns.Resolver | undefined;
  if (servers.length > 0) {
    resolver = new dns.Resolver({ timeout: 2000, tries: 2 });
    resolver.setServers([...servers]);
  }

  async function ask(host: string): Promise<{ address: string; ttlMs: number }> {
    if (resolver === undefined) {
      // The system resolver gives no TTL: keep the answer 5 s.
      const r = await dns
        .lookup(host, { family: 0, order: 'ipv4first' })
        .catch((err: NodeJS.ErrnoException) => {
          throw new Error(`cannot resolve ${host}: ${err.code ?? err.message}`);
        });
      return { address: r.address, ttlMs: 5_000 };
    }
    const errors: string[] = [];
    for (const family of [4, 6] as const) {
      try {
        const answers =
          family === 4
            ? await resolver.resolve4(host, { ttl: true })
            : await resolver.resolve6(host, { ttl: true });
        const first = answers[0];
        if (first !== undefined)
          return { address: first.address, ttlMs: Math.min(first.ttl * 1000, MAX_TTL_MS) };
        errors.push(`${family === 4 ? 'A' : 'AAAA'}: no answer`);
      } catch (err) {
        errors.push(
          `${family === 4 ? 'A' : 'AAAA'}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
    }
    throw new Error(`cannot resolve ${host} at ${servers.join(', ')} (${errors.join('; ')})`);
  }

  return {
    fetchAddress(host: string): Promise<string> {
      if (isIP(host) !== 0) return Promise.resolve(host);
      const hit = cache.get(host);
      if (hit !== undefined && hit.until > now()) return Promise.resolve(hit.address);
      let p = pending.get(host);
      if (p === undefined) {
        p = ask(host)
          .then((r) => {
            // Bounded by the hosts of the ServiceEntries this waypoint serves.
            cache.set(host, { address: r.address, until: now() + r.ttlMs });
            return r.address;
          })
          .finally(() => pending.delete(host));
        pending.set(host, p);
      }
      return p;
    },
  };
}
