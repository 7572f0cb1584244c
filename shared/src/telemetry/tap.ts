// Live tap: every finished request (waypoint) and connection (node agent) as one event, streamed to
// whoever asks on the admin port (`GET /tap?...`, newline-delimited JSON) and read by `hypha tap`.
//
// Invariants:
// - Free when nobody listens: `publish` takes a function and calls it only with a subscriber, so
//   the data path builds no event and allocates nothing.
// - Never slows the data path: a subscriber whose socket is full misses events (counted, and told
//   with one `{"kind":"dropped"}` line once it drains) instead of buffering without bound.
// - Bounded: at most MAX_TAP_SUBSCRIBERS at once per process; more are refused (429).
// - Filters are parsed in one place (`parseTapFilter`), for the query string and the CLI flags, so
//   the server filters exactly as the user asked.

export interface TapPeer {
  ip?: string | undefined;
  port?: number | undefined;
  workload?: string | undefined;
  namespace?: string | undefined;
  /** SPIFFE ID, when the hop was mTLS. */
  identity?: string | undefined;
}

export interface TapEvent {
  kind: 'request' | 'connection';
  /** When it finished (ISO 8601). */
  time: string;
  /** `agent <node>` or `waypoint <ns>/<name>`. */
  reporter: string;
  /** Connections: inbound, inbound_plaintext, outbound, ... */
  direction?: string | undefined;
  source: TapPeer;
  destination: TapPeer & { service?: string | undefined };
  mtls: boolean;
  method?: string | undefined;
  path?: string | undefined;
  authority?: string | undefined;
  protocol?: string | undefined;
  /** HTTP status (0 when no response was sent). */
  status?: number | undefined;
  grpcStatus?: string | undefined;
  /** '-' when clean, else Envoy-style response flags (DENY, UAEX, RL, UF, ...). */
  flags: string;
  durationMs: number;
  bytesSent: number;
  bytesReceived: number;
  error?: string | undefined;
  policy?: string | undefined;
  route?: string | undefined;
}

/** What `/tap` streams: events, and a note when a slow reader missed some. */
export type TapLine = TapEvent | { kind: 'dropped'; count: number };

export interface TapFilter {
  /** Source or destination namespace. */
  namespace?: string;
  /** Destination: workload, `ns/workload`, service (`ns/name`), or IP. */
  to?: string;
  /** Source: workload, `ns/workload`, or IP. */
  from?: string;
  method?: string;
  /** Path prefix, or a pattern with `*`. */
  path?: string;
  /** Exact code (`503`) or class (`5xx`). */
  status?: string;
  /** `request` or `connection`. */
  kind?: 'request' | 'connection';
}

export const TAP_FILTER_KEYS = ['namespace', 'to', 'from', 'method', 'path', 'status', 'kind'] as const;
export const MAX_TAP_SUBSCRIBERS = 16;

export class TapFilterError extends Error {}

/** Reads a filter from query parameters or flags; throws TapFilterError naming the bad value. */
export function parseTapFilter(get: (key: string) => string | null | undefined): TapFilter {
  const f: TapFilter = {};
  for (const key of TAP_FILTER_KEYS) {
    const v = get(key);
    if (v === null || v === undefined || v === '') continue;
    if (key === 'status' && !/^([1-5][0-9]{2}|[1-5]xx|0)$/.test(v)) {
      throw new TapFilterError(`status "${v}" must be a code (503) or a class (5xx)`);
    }
    if (key === 'kind') {
      if (v !== 'request' && v !== 'connection') {
        throw new TapFilterError(`kind "${v}" must be "request" or "connection"`);
      }
      f.kind = v;
      continue;
    }
    if (key === 'method') {
      f.method = v.toUpperCase();
      continue;
    }
    f[key] = v;
  }
  return f;
}

/** The filter as query parameters (for `hypha tap` to send). */
export function tapFilterQuery(f: TapFilter): string {
  const q = new URLSearchParams();
  for (const key of TAP_FILTER_KEYS) {
    const v = f[key];
    if (v !== undefined) q.set(key, v);
  }
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}

function peerMatches(want: string, p: TapPeer & { service?: string | undefined }): boolean {
  if (want === p.ip) return true;
  if (p.workload !== undefined) {
    if (want === p.workload || want === `${p.namespace}/${p.workload}`) return true;
  }
  return p.service !== undefined && want === p.service;
}

function globMatches(pattern: string, path: string): boolean {
  if (!pattern.includes('*')) return path.startsWith(pattern);
  const re = new RegExp(`^${pattern.split('*').map(escapeRe).join('.*')}$`);
  return re.test(path);
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function tapMatches(f: TapFilter, e: TapEvent): boolean {
  if (f.kind !== undefined && e.kind !== f.kind) return false;
  if (
    f.namespace !== undefined &&
    e.source.namespace !== f.namespace &&
    e.destination.namespace !== f.namespace &&
    !(e.destination.service ?? '').startsWith(`${f.namespace}/`)
  ) {
    return false;
  }
  if (f.to !== undefined && !peerMatches(f.to, e.destination)) return false;
  if (f.from !== undefined && !peerMatches(f.from, e.source)) return false;
  if (f.method !== undefined && e.method !== f.method) return false;
  if (f.path !== undefined && (e.path === undefined || !globMatches(f.path, e.path))) return false;
  if (f.status !== undefined) {
    const code = String(e.status ?? '');
    if (f.status.endsWith('xx') ? code[0] !== f.status[0] || code.length !== 3 : code !== f.status)
      return false;
  }
  return true;
}

/** Where a subscriber's lines go: returns false when the reader is full (then `onDrain` is awaited). */
export interface TapSink {
  /**
   * One event; `line()` is its NDJSON line, serialised on the first call and shared by every sink of
   * the event (a sink that forwards objects, an agent worker's over IPC, never pays for it).
   */
  write(event: TapLine, line: () => string): boolean;
  onDrain(listener: () => void): void;
}

interface Subscriber {
  filter: TapFilter;
  sink: TapSink;
  congested: boolean;
  dropped: number;
}

export class TapHub {
  readonly #subscribers = new Set<Subscriber>();
  readonly #activeListeners = new Set<(active: boolean) => void>();
  /** Events published while someone listened, for tests and /debug. */
  published = 0;

  /**
   * Calls `listener` whenever the hub goes from no reader to one (true) or back (false): the agent's
   * workers forward their events only while the supervisor's hub has readers.
   */
  onActiveChange(listener: (active: boolean) => void): () => void {
    this.#activeListeners.add(listener);
    return () => this.#activeListeners.delete(listener);
  }

  #activeChanged(active: boolean): void {
    for (const l of this.#activeListeners) l(active);
  }

  get active(): boolean {
    return this.#subscribers.size > 0;
  }

  get subscribers(): number {
    return this.#subscribers.size;
  }

  /** Adds a reader; undefined when the hub is full. Call the returned function to leave. */
  subscribe(filter: TapFilter, sink: TapSink): (() => void) | undefined {
    if (this.#subscribers.size >= MAX_TAP_SUBSCRIBERS) return undefined;
    const sub: Subscriber = { filter, sink, congested: false, dropped: 0 };
    this.#subscribers.add(sub);
    if (this.#subscribers.size === 1) this.#activeChanged(true);
    return () => {
      if (this.#subscribers.delete(sub) && this.#subscribers.size === 0) this.#activeChanged(false);
    };
  }

  /** Builds the event (only when someone listens) and hands it to every matching reader. */
  publish(make: () => TapEvent): void {
    if (this.#subscribers.size === 0) return;
    const event = make();
    this.published++;
    const line = lineOf(event);
    for (const sub of this.#subscribers) {
      if (!tapMatches(sub.filter, event)) continue;
      if (sub.congested) {
        sub.dropped++;
        continue;
      }
      this.#write(sub, event, line);
    }
  }

  #write(sub: Subscriber, event: TapLine, line: () => string): void {
    if (sub.sink.write(event, line)) return;
    sub.congested = true;
    sub.sink.onDrain(() => {
      sub.congested = false;
      if (sub.dropped > 0) {
        const dropped = { kind: 'dropped', count: sub.dropped } as const;
        sub.dropped = 0;
        sub.sink.write(dropped, lineOf(dropped));
      }
    });
  }

  /** Tells every reader that `count` events were lost before reaching this hub (a worker's backlog). */
  publishDropped(count: number): void {
    if (count <= 0) return;
    const dropped = { kind: 'dropped', count } as const;
    const line = lineOf(dropped);
    for (const sub of this.#subscribers) {
      if (sub.congested) sub.dropped += count;
      else this.#write(sub, dropped, line);
    }
  }
}

/** An event's NDJSON line, made on the first call only. */
function lineOf(event: TapLine): () => string {
  let line: string | undefined;
  return () => {
    line ??= `${JSON.stringify(event)}\n`;
    return line;
  };
}
