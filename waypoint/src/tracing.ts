// Request tracing. When no OTLP endpoint is configured the waypoint uses NOOP_TRACING and never
// loads the OpenTelemetry SDK (no import, no context propagation work): tracing costs one boolean
// check per request. With an endpoint, @opentelemetry/sdk-node is loaded once per process and
// exports spans over OTLP/HTTP JSON to `<endpoint>/v1/traces`.
//
// Invariant: the waypoint continues the client's W3C `traceparent` (its span is a child of the
// client's span) and sends its own span's traceparent upstream, so the backend's spans nest under it.
import type { Span, Tracer } from '@opentelemetry/api';

export interface RequestSpan {
  /** Writes this span's `traceparent`/`tracestate` into the upstream headers. */
  inject(headers: Record<string, string | string[] | undefined>): void;
  end(attributes: Record<string, string | number>, error: boolean): void;
  readonly traceId: string;
}

export interface Tracing {
  readonly enabled: boolean;
  startSpan(
    name: string,
    headers: Readonly<Record<string, string | string[] | undefined>>,
    attributes: Record<string, string | number>,
  ): RequestSpan | undefined;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export const NOOP_TRACING: Tracing = {
  enabled: false,
  startSpan: () => undefined,
  flush: async () => {},
  close: async () => {},
};

export interface TracingOptions {
  /** OTLP/HTTP base URL (traces go to `<endpoint>/v1/traces`); defaults to OTEL_EXPORTER_OTLP_ENDPOINT. */
  otlpEndpoint?: string | undefined;
  serviceName?: string | undefined;
}

interface SdkHandle {
  refs: number;
  tracer: Tracer;
  api: typeof import('@opentelemetry/api');
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

// The SDK registers process-global providers, so one handle serves every waypoint in the process.
let shared: Promise<SdkHandle> | undefined;

async function startSdk(endpoint: string, serviceName: string): Promise<SdkHandle> {
  const [api, { NodeSDK }, { OTLPTraceExporter }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
  ]);
  const exporter = new OTLPTraceExporter({ url: `${endpoint.replace(/\/+$/, '')}/v1/traces` });
  const sdk = new NodeSDK({
    serviceName,
    traceExporter: exporter,
    instrumentations: [],
    metricReaders: [],
    logRecordProcessors: [],
    autoDetectResources: false,
  });
  sdk.start();
  const provider = api.trace.getTracerProvider() as {
    getDelegate?: () => { forceFlush?: () => Promise<void> };
  };
  return {
    refs: 0,
    api,
    tracer: api.trace.getTracer('hypha-waypoint'),
    flush: async () => {
      await provider.getDelegate?.().forceFlush?.();
    },
    shutdown: () => sdk.shutdown(),
  };
}

export async function createTracing(opts: TracingOptions = {}): Promise<Tracing> {
  const endpoint = opts.otlpEndpoint ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (endpoint === undefined || endpoint === '') return NOOP_TRACING;
  shared ??= startSdk(endpoint, opts.serviceName ?? 'hypha-waypoint');
  const sdk = await shared;
  sdk.refs++;
  const { api, tracer } = sdk;
  let closed = false;
  return {
    enabled: true,
    startSpan(name, headers, attributes) {
      const parent = api.propagation.extract(api.ROOT_CONTEXT, headers, {
        get: (carrier, key) => carrier[key] as string | string[] | undefined,
        keys: (carrier) => Object.keys(carrier),
      });
      const span: Span = tracer.startSpan(name, { kind: api.SpanKind.SERVER, attributes }, parent);
      const ctx = api.trace.setSpan(parent, span);
      return {
        traceId: span.spanContext().traceId,
        inject(out) {
          api.propagation.inject(ctx, out, {
            set: (carrier, key, value) => {
              carrier[key] = value;
            },
          });
        },
        end(attrs, error) {
          span.setAttributes(attrs);
          if (error) span.setStatus({ code: api.SpanStatusCode.ERROR });
          span.end();
        },
      };
    },
    flush: () => sdk.flush(),
    async close() {
      if (closed) return;
      closed = true;
      await sdk.flush();
      if (--sdk.refs === 0 && shared !== undefined) {
        shared = undefined;
        await sdk.shutdown();
      }
    },
  };
}
