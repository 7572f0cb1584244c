// The dashboard's view of the agents' and waypoints' admin endpoints. Each target is polled
// (/config_dump, /certs, /connections) every `pollMs`, and its /tap stream is read continuously
// into one bounded buffer of recent events shared by the tap table and the policy page's denials.
//
// Invariants:
// - A target that stops answering keeps its last known identity (node or waypoint name), so the
//   page can say "node-b: not ready (its agent does not answer)" instead of forgetting the node.
// - The tap buffer is bounded (MAX_EVENTS); a slow browser never holds events in this process
//   beyond it. Tap streams reconnect every 2 s while the target is gone.
// - Targets are the given endpoints plus, in a cluster, the ones `discovered` returns at each poll
//   (one per agent or gateway pod); a pod gone is forgotten with its tap stream.
// - Nothing here throws into the server: every failure becomes a target's `error` text.
import type { ClientRequest, IncomingMessage } from 'node:http';
import { request } from 'node:http';
import type { TapEvent, TapLine } from '@hypha/shared/telemetry';
import { connectOptions, type Endpoint, getJson } from './fetch.js';

export const MAX_EVENTS = 2000;

export interface CertView {
  identity: string;
  state: string;
  serial?: string;
  notBefore?: string;
  notAfter?: string;
  failures?: number;
  lastError?: string;
}

/** The parts of a /config_dump the dashboard reads (agents and waypoints send more). */
export interface ConfigDump {
  /** Agents: their node. */
  node?: string;
  /** Waypoints: their Gateway. */
  gateway?: { namespace: string; name: string };
  identity?: string;
  /** The config version the daemon has applied. */
  version?: number;
  /** The daemon itself: Hypha release, Node runtime, pid, start time. */
  hypha?: { version?: string; node?: string; pid?: number; startedAt?: string };
  workloads?: DumpWorkload[];
  services?: DumpService[];
  waypoints?: { namespace: string; name: string; identity: string; ips?: string[] }[];
  policies?: PolicyObject[];
  authorizationPolicies?: unknown[];
  configErrors?: string[];
}

export interface DumpWorkload {
  name: string;
  namespace: string;
  node: string;
  ips: string[];
  identity: string;
  serviceAccount?: string;
  labels?: Record<string, string>;
  inMesh: boolean;
  mtlsMode?: string;
  ready?: boolean;
  waypoint?: { namespace: string; name: string } | null;
}

export interface DumpService {
  name: string;
  namespace: string;
  vips?: string[];
  selector?: Record<string, string>;
  labels?: Record<string, string>;
  waypoint?: { namespace: string; name: string } | null;
  endpoints?: { workloadUid?: string; ip?: string; name?: string }[];
}

/** An AuthorizationPolicy as the agents' config holds it (validated, flattened). */
export interface PolicyObject {
  name: string;
  namespace: string;
  action?: string;
  /** matchLabels; undefined (and no targetRefs) means every workload of the namespace. */
  selector?: Record<string, string>;
  targetRefs?: { kind?: string; group?: string; name?: string }[];
  rules?: unknown[];
  dryRun?: boolean;
}

export interface AdminTargetState {
  label: string;
  /** Whether the last poll answered. */
  ok: boolean;
  error: string | undefined;
  /** Epoch ms of the last answer. */
  lastSeen: number | undefined;
  kind: 'agent' | 'waypoint' | 'unknown';
  /** Agents: the node; waypoints: ns/name. Kept when the target stops answering. */
  name: string | undefined;
  configDump: ConfigDump | undefined;
  certs: CertView[];
  /** Live connections (agents) or HTTP/2 sessions (waypoints). */
  connections: number | undefined;
  tapConnected: boolean;
}

export interface AdminPoller {
  readonly targets: readonly AdminTargetState[];
  /** Recent tap events, oldest first. */
  recentEvents(): readonly TapEvent[];
  /** Called for each new tap event; returns an unsubscribe function. */
  onEvent(listener: (e: TapEvent) => void): () => void;
  /** Polls every target now (the server also calls it before answering when data is stale). */
  refresh(): Promise<void>;
  close(): void;
}

export function createAdminPoller(
  endpoints: readonly Endpoint[],
  pollMs = 2000,
  /** Endpoints that come and go (pods found through the API server); read before every poll. */
  discovered?: () => readonly Endpoint[],
): AdminPoller {
  interface Entry {
    ep: Endpoint;
    state: AdminTargetState;
    tap: ClientRequest | undefined;
    timer: NodeJS.Timeout | undefined;
    removed: boolean;
  }
  const entries = new Map<string, Entry>();
  let targets: AdminTargetState[] = [];
  const events: TapEvent[] = [];
  const listeners = new Set<(e: TapEvent) => void>();
  let closed = false;

  const newState = (e: Endpoint): AdminTargetState => ({
    label: e.label,
    ok: false,
    error: 'not polled yet',
    lastSeen: undefined,
    kind: e.kind ?? 'unknown',
    name: e.name,
    configDump: undefined,
    certs: [],
    connections: undefined,
    tapConnected: false,
  });

  /** Starts polling and tapping new endpoints and forgets those gone (their tap closed). */
  const sync = (): void => {
    const wanted = [...endpoints, ...(discovered?.() ?? [])];
    const labels = new Set(wanted.map((e) => e.label));
    for (const [label, entry] of entries) {
      if (labels.has(label)) continue;
      entry.removed = true;
      entry.tap?.destroy();
      if (entry.timer !== undefined) clearTimeout(entry.timer);
      entries.delete(label);
    }
    for (const ep of wanted) {
      if (entries.has(ep.label)) continue;
      const entry: Entry = { ep, state: newState(ep), tap: undefined, timer: undefined, removed: false };
      entries.set(ep.label, entry);
      tapOne(entry);
    }
    targets = [...entries.values()].map((e) => e.state);
  };

  const pollOne = async (t: AdminTargetState, ep: Endpoint): Promise<void> => {
    try {
      const [dump, certs, conns] = await Promise.all([
        getJson<ConfigDump>(ep, '/config_dump'),
        getJson<CertView[]>(ep, '/certs'),
        getJson<unknown>(ep, '/connections'),
      ]);
      t.ok = true;
      t.error = undefined;
      t.lastSeen = Date.now();
      t.configDump = dump;
      t.certs = Array.isArray(certs) ? certs : [];
      t.connections = Array.isArray(conns)
        ? conns.length
        : typeof (conns as { connections?: unknown })?.connections === 'number'
          ? (conns as { connections: number }).connections
          : undefined;
      if (dump.node !== undefined) {
        t.kind = 'agent';
        t.name = dump.node;
      } else if (dump.gateway !== undefined) {
        t.kind = 'waypoint';
        t.name = `${dump.gateway.namespace}/${dump.gateway.name}`;
      }
    } catch (err) {
      t.ok = false;
      t.error = (err as Error).message;
      t.connections = undefined;
    }
  };

  let inflight: Promise<void> | undefined;
  const refresh = (): Promise<void> => {
    if (!closed) sync();
    inflight ??= Promise.all([...entries.values()].map((e) => pollOne(e.state, e.ep))).then(() => {
      inflight = undefined;
    });
    return inflight;
  };

  const push = (e: TapEvent): void => {
    events.push(e);
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
    for (const l of listeners) l(e);
  };

  function tapOne(entry: Entry): void {
    if (closed || entry.removed) return;
    const t = entry.state;
    let ended = false;
    const again = (): void => {
      if (ended) return;
      ended = true;
      t.tapConnected = false;
      entry.tap = undefined;
      if (closed || entry.removed) return;
      entry.timer = setTimeout(() => {
        entry.timer = undefined;
        tapOne(entry);
      }, 2000);
    };
    const req = request({
      ...connectOptions(entry.ep),
      path: '/tap',
      headers: { accept: 'application/x-ndjson' },
    });
    entry.tap = req;
    req.on('error', again);
    req.on('response', (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        res.resume();
        res.on('end', again);
        return;
      }
      t.tapConnected = true;
      let buffered = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const text = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          nl = buffered.indexOf('\n');
          if (text.trim() === '') continue;
          try {
            const line = JSON.parse(text) as TapLine;
            if (line.kind !== 'dropped') push(line);
          } catch {
            // not JSON: skipped
          }
        }
      });
      res.on('error', again);
      res.on('close', again);
    });
    req.end();
  }

  void refresh();
  const poll = setInterval(() => void refresh(), pollMs);
  poll.unref();

  return {
    get targets() {
      return targets;
    },
    recentEvents: () => events,
    onEvent(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    refresh,
    close() {
      closed = true;
      clearInterval(poll);
      for (const e of entries.values()) {
        e.removed = true;
        if (e.timer !== undefined) clearTimeout(e.timer);
        e.tap?.destroy();
      }
      listeners.clear();
    },
  };
}
