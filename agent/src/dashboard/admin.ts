// The dashboard's view of the agents' and waypoints' admin endpoints. Each target is polled
// (/config_dump, /certs, /connections) every `pollMs`, and its /tap stream is read continuously
// into one bounded buffer of recent events shared by the tap table and the policy page's denials.
//
// Invariants:
// - A target that stops answering keeps its last known identity (node or waypoint name), so the
//   page can say "node-b: not ready (its agent does not answer)" instead of forgetting the node.
// - The tap buffer is bounded (MAX_EVENTS); a slow browser never holds events in this process
//   beyond it. Tap streams reconnect every 2 s while the target is gone.
// - Nothing here throws into the server: every failure becomes a target's `error` text.
import type { ClientRequest, IncomingMessage } from 'node:http';
import { request } from 'node:http';
import type { TapEvent, TapLine } from '@hypha/shared/telemetry';
import { type Endpoint, getJson } from './fetch.js';

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
  version?: number;
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

export function createAdminPoller(endpoints: readonly Endpoint[], pollMs = 2000): AdminPoller {
  const targets: AdminTargetState[] = endpoints.map((e) => ({
    label: e.label,
    ok: false,
    error: 'not polled yet',
    lastSeen: undefined,
    kind: 'unknown',
    name: undefined,
    configDump: undefined,
    certs: [],
    connections: undefined,
    tapConnected: false,
  }));
  const events: TapEvent[] = [];
  const listeners = new Set<(e: TapEvent) => void>();
  let closed = false;
  const live = new Set<ClientRequest>();
  const timers = new Set<NodeJS.Timeout>();

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
    inflight ??= Promise.all(targets.map((t, i) => pollOne(t, endpoints[i]!))).then(() => {
      inflight = undefined;
    });
    return inflight;
  };

  const push = (e: TapEvent): void => {
    events.push(e);
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
    for (const l of listeners) l(e);
  };

  const tapOne = (t: AdminTargetState, ep: Endpoint): void => {
    if (closed) return;
    let ended = false;
    const again = (): void => {
      if (ended) return;
      ended = true;
      t.tapConnected = false;
      live.delete(req);
      if (closed) return;
      const timer = setTimeout(() => {
        timers.delete(timer);
        tapOne(t, ep);
      }, 2000);
      timers.add(timer);
    };
    const req = request({
      ...('socketPath' in ep ? { socketPath: ep.socketPath } : { host: ep.host, port: ep.port }),
      path: '/tap',
      headers: { accept: 'application/x-ndjson' },
    });
    live.add(req);
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
  };

  void refresh();
  const poll = setInterval(() => void refresh(), pollMs);
  poll.unref();
  endpoints.forEach((ep, i) => {
    tapOne(targets[i]!, ep);
  });

  return {
    targets,
    recentEvents: () => events,
    onEvent(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    refresh,
    close() {
      closed = true;
      clearInterval(poll);
      for (const t of timers) clearTimeout(t);
      for (const r of live) r.destroy();
      listeners.clear();
    },
  };
}
