// DNS proxy metrics. A series is bound once per (type, source, rcode) and kept in a map by a short
// key, so a query records with one Map read and an increment (no label object per query).
import {
  type CounterSeries,
  type HistogramSeries,
  SeriesCounter,
  SeriesHistogram,
} from '@hypha/shared/telemetry';
import { Counter, type Registry } from 'prom-client';

/** Who answered: the agent from mesh state, the upstream resolver, or the cache of its answers. */
export type DnsSource = 'mesh' | 'upstream' | 'cache';
/** Why a message got no reply or a connection was closed. */
export type DnsDropReason = 'malformed' | 'tcp_stalled' | 'tcp_idle' | 'tcp_limit' | 'tcp_slow_reader';

type RequestLabel = 'type' | 'source' | 'rcode';

export class DnsMetrics {
  readonly #requests: SeriesCounter<RequestLabel>;
  readonly #latency: SeriesHistogram<'transport'>;
  readonly #dropped: Counter<'reason'>;
  readonly #bound = new Map<string, CounterSeries<RequestLabel>>();
  readonly #udp: HistogramSeries<'transport'>;
  readonly #tcp: HistogramSeries<'transport'>;

  constructor(registry?: Registry) {
    const registers = registry ? [registry] : [];
    this.#requests = new SeriesCounter({
      name: 'hypha_dns_requests_total',
      help: 'DNS queries answered by the agent DNS proxy, by query type, who answered (mesh, upstream, cache) and response code',
      labelNames: ['type', 'source', 'rcode'],
      registers,
    });
    this.#latency = new SeriesHistogram({
      name: 'hypha_dns_upstream_duration_seconds',
      help: 'Time for the upstream resolver to answer one forwarded query, per try, by transport',
      labelNames: ['transport'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.#dropped = new Counter({
      name: 'hypha_dns_dropped_total',
      help: 'DNS messages dropped or TCP connections closed by the DNS proxy without an answer, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.#udp = this.#latency.series({ transport: 'udp' });
    this.#tcp = this.#latency.series({ transport: 'tcp' });
  }

  recordRequest(type: string, source: DnsSource, rcode: string): void {
    const key = `${type}/${source}/${rcode}`;
    let s = this.#bound.get(key);
    if (s === undefined) {
      s = this.#requests.series({ type, source, rcode });
      this.#bound.set(key, s);
    }
    s.value++;
  }

  recordUpstreamLatency(transport: 'udp' | 'tcp', seconds: number): void {
    (transport === 'udp' ? this.#udp : this.#tcp).observe(seconds);
  }

  recordDropped(reason: DnsDropReason): void {
    this.#dropped.inc({ reason });
  }
}
