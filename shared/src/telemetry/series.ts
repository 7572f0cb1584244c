// Metric families whose series are plain objects held by the caller: a request records into a
// series it already has (a counter is one number, a histogram an array of bucket counts), so the
// hot path neither builds a label object nor hashes one. prom-client's own children re-hash their
// labels on every inc()/observe(); these families register with a prom-client Registry and render
// the same text and JSON, so /metrics and Prometheus see no difference.
//
// Invariants:
// - A series is created once per distinct label set (`series(labels)`, keyed by the label values in
//   `labelNames` order) and lives as long as its family: Prometheus counters never go backwards.
// - Histogram buckets are stored per bucket (not cumulative) and made cumulative only when scraped.
import type { Registry } from 'prom-client';

type Labels<N extends string> = Readonly<Record<N, string>>;

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

interface MetricJson {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  values: MetricValue[];
}

abstract class Family<N extends string, S extends { readonly labels: Labels<N> }> {
  readonly name: string;
  readonly help: string;
  readonly aggregator = 'sum' as const;
  abstract readonly type: 'counter' | 'histogram';
  readonly #labelNames: readonly N[];
  readonly #series = new Map<string, S>();

  constructor(opts: { name: string; help: string; labelNames: readonly N[]; registers?: Registry[] }) {
    this.name = opts.name;
    this.help = opts.help;
    this.#labelNames = opts.labelNames;
    // The registry only needs get(), name, help, type and aggregator.
    for (const r of opts.registers ?? []) r.registerMetric(this as never);
  }

  /** The series for these labels, created on first use. Hold on to it; don't call per request. */
  series(labels: Labels<N>): S {
    let key = '';
    for (const n of this.#labelNames) key += `${labels[n]}\u0000`;
    let s = this.#series.get(key);
    if (s === undefined) {
      const own = {} as Record<N, string>;
      for (const n of this.#labelNames) own[n] = labels[n];
      s = this.create(own);
      this.#series.set(key, s);
    }
    return s;
  }

  protected abstract create(labels: Labels<N>): S;
  protected abstract render(s: S, out: MetricValue[]): void;

  get(): Promise<MetricJson> {
    const values: MetricValue[] = [];
    for (const s of this.#series.values()) this.render(s, values);
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  reset(): void {
    this.#series.clear();
  }
}

export interface CounterSeries<N extends string> {
  readonly labels: Labels<N>;
  value: number;
}

export class SeriesCounter<N extends string> extends Family<N, CounterSeries<N>> {
  readonly type = 'counter' as const;
  protected create(labels: Labels<N>): CounterSeries<N> {
    return { labels, value: 0 };
  }
  protected render(s: CounterSeries<N>, out: MetricValue[]): void {
    out.push({ labels: { ...s.labels }, value: s.value });
  }
}

export class HistogramSeries<N extends string> {
  readonly labels: Labels<N>;
  readonly #bounds: readonly number[];
  /** Observations per bucket; the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(labels: Labels<N>, bounds: readonly number[]) {
    this.labels = labels;
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]! += 1;
    this.sum += v;
    this.count += 1;
  }
}

export class SeriesHistogram<N extends string> extends Family<N, HistogramSeries<N>> {
  readonly type = 'histogram' as const;
  readonly #bounds: readonly number[];

  constructor(opts: {
    name: string;
    help: string;
    labelNames: readonly N[];
    buckets: readonly number[];
    registers?: Registry[];
  }) {
    super(opts);
    this.#bounds = [...opts.buckets].sort((a, b) => a - b);
  }

  protected create(labels: Labels<N>): HistogramSeries<N> {
    return new HistogramSeries(labels, this.#bounds);
  }

  protected render(s: HistogramSeries<N>, out: MetricValue[]): void {
    let cumulative = 0;
    const bounds = this.#bounds;
    for (let i = 0; i <= bounds.length; i++) {
      cumulative += s.counts[i]!;
      out.push({
        labels: { ...s.labels, le: i < bounds.length ? bounds[i]! : '+Inf' },
        value: cumulative,
        metricName: `${this.name}_bucket`,
      });
    }
    out.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
    out.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
  }
}
