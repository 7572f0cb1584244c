// Public surface of @hypha/shared/telemetry: name every export (no `export *`).
export type { DryRunLabelName } from './authz-metrics.js';
export { dryRunCounter } from './authz-metrics.js';
export type { ByteCounts, ConnectionMeta, PeerLabels, TcpLabelName, TcpLabels } from './l4-metrics.js';
export { ConnectionRecorder, L4Metrics, TCP_LABEL_NAMES, tcpLabels } from './l4-metrics.js';
export type { CounterSeries } from './series.js';
export { HistogramSeries, SeriesCounter, SeriesHistogram } from './series.js';
export type { TapEvent, TapFilter, TapLine, TapPeer, TapSink } from './tap.js';
export {
  MAX_TAP_SUBSCRIBERS,
  parseTapFilter,
  TAP_FILTER_KEYS,
  TapFilterError,
  TapHub,
  tapFilterQuery,
  tapMatches,
} from './tap.js';
export { appLabel, versionLabel, workloadName } from './workload-labels.js';
