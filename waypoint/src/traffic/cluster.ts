// A cluster is one backend Service as the waypoint's upstream side sees it: its endpoints with their
// health, the load balancer, and the circuit breaker.
//
// Invariants:
// - Endpoint state (active requests, consecutive 5xx, ejection) is keyed by endpoint IP and survives
//   config updates, so a config push does not un-eject a failing endpoint or reset least-request.
// - Circuit breaking: at most min(maxConnections, maxRequests) requests run at once (HTTP/1.1 carries
//   one request per connection); up to maxPendingRequests more wait in FIFO order; beyond that the
//   request overflows (503, flag UO) immediately, without waiting.
// - Outlier detection ejects an endpoint after N consecutive 5xx/connect failures for
//   baseEjectionTime × times-ejected (capped by maxEjectionTime), unless that would push the ejected
//   share to maxEjectionPercent or beyond. Ejections expire lazily at pick time.
import type { EndpointInfo, ServiceEntry } from '../model.js';
import { DEFAULT_TRAFFIC, type TrafficSettings } from './policy.js';

export interface EndpointState {
  readonly ip: string;
  info: EndpointInfo;
  active: number;
  consecutive5xx: number;
  ejections: number;
  /** 0 when not ejected; epoch ms when the ejection ends. */
  ejectedUntil: number;
}

export class Cluster {
  service: ServiceEntry;
  settings: TrafficSettings;
  #endpoints: EndpointState[] = [];
  #rr = 0;
  #active = 0;
  #queue: (() => void)[] = [];
  #ejected = 0;
  /** Called when an endpoint is ejected or restored (for logs and tests). */
  onHealthChange: ((ep: EndpointState, ejected: boolean) => void) | undefined;

  constructor(service: ServiceEntry, settings: TrafficSettings = DEFAULT_TRAFFIC) {
    this.service = service;
    this.settings = settings;
    this.#setEndpoints(service);
  }

  update(service: ServiceEntry, settings: TrafficSettings): void {
    // Unchanged objects are reused from one config snapshot to the next (compile cache).
    if (service === this.service && settings === this.settings) return;
    this.service = service;
    this.settings = settings;
    this.#setEndpoints(service);
  }

  #setEndpoints(service: ServiceEntry): void {
    const old = new Map(this.#endpoints.map((e) => [e.ip, e]));
    this.#endpoints = service.endpoints
      .filter((e) => e.ready)
      .map((info) => {
        const prev = old.get(info.ip);
        if (prev !== undefined) {
          prev.info = info;
          return prev;
        }
        return { ip: info.ip, info, active: 0, consecutive5xx: 0, ejections: 0, ejectedUntil: 0 };
      });
    this.#ejected = this.#endpoints.filter((e) => e.ejectedUntil > 0).length;
    this.#drainQueue();
  }

  get endpoints(): readonly EndpointState[] {
    return this.#endpoints;
  }

  get activeRequests(): number {
    return this.#active;
  }

  get pendingRequests(): number {
    return this.#queue.length;
  }

  // ---- circuit breaker ----

  /**
   * Takes a request slot: immediately, after a wait (cancel it if the request gives up first), or
   * not at all (overflow). Every slot obtained must be given back with release().
   */
  acquire(): { result: 'ok' | 'overflow' } | { wait: Promise<void>; cancel: () => boolean } {
    const limit = Math.min(this.settings.maxConnections, this.settings.maxRequests);
    if (this.#active < limit && this.#queue.length === 0) {
      this.#active++;
      return { result: 'ok' };
    }
    if (this.#queue.length >= this.settings.maxPendingRequests) return { result: 'overflow' };
    let waiter!: () => void;
    const wait = new Promise<void>((resolve) => {
      waiter = () => {
        this.#active++;
        resolve();
      };
    });
    this.#queue.push(waiter);
    return {
      wait,
      // false: the slot was already granted, and the caller owns it (must release it).
      cancel: () => {
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
        return i >= 0;
      },
    };
  }

  /** Gives back a slot taken by acquire (exactly once per slot). */
  release(): void {
    this.#active--;
    this.#drainQueue();
  }

  #drainQueue(): void {
    const limit = Math.min(this.settings.maxConnections, this.settings.maxRequests);
    while (this.#active < limit && this.#queue.length > 0) this.#queue.shift()!();
  }

  // ---- load balancing ----

  /** Picks a healthy endpoint, or undefined when none is left (flag UH). */
  findEndpoint(hashKey: string | undefined, now = Date.now()): EndpointState | undefined {
    const all = this.#endpoints;
    if (all.length === 0) return undefined;
    if (this.#ejected > 0) this.#restoreExpired(now);
    const healthy = this.#ejected === 0 ? all : all.filter((e) => e.ejectedUntil === 0);
    const n = healthy.length;
    if (n === 0) return undefined;
    if (n === 1) return healthy[0];
    switch (this.settings.loadBalancer) {
      case 'ROUND_ROBIN':
        return healthy[this.#rr++ % n];
      case 'RANDOM':
        return healthy[Math.floor(Math.random() * n)];
      case 'LEAST_REQUEST': {
        // Power of two choices: two distinct random endpoints, the less busy one wins.
        const i = Math.floor(Math.random() * n);
        let j = Math.floor(Math.random() * (n - 1));
        if (j >= i) j++;
        const a = healthy[i]!;
        const b = healthy[j]!;
        return b.active < a.active ? b : a;
      }
      case 'CONSISTENT_HASH': {
        if (hashKey === undefined) return healthy[Math.floor(Math.random() * n)];
        // Rendezvous hashing: the endpoint with the highest hash(key, ip) wins; adding or removing an
        // endpoint only moves the keys that endpoint wins or loses.
        let best = healthy[0]!;
        let bestScore = -1;
        for (const e of healthy) {
          const score = fnv1a(hashKey, e.ip);
          if (score > bestScore) {
            bestScore = score;
            best = e;
          }
        }
        return best;
      }
    }
  }

  // ---- outlier detection ----

  /** Records the outcome of one upstream attempt: `failed` = 5xx status or connect/reset failure. */
  recordOutcome(ep: EndpointState, failed: boolean, now = Date.now()): void {
    if (!failed) {
      ep.consecutive5xx = 0;
      return;
    }
    const od = this.settings.outlier;
    if (od === undefined) return;
    ep.consecutive5xx++;
    if (ep.consecutive5xx < od.consecutive5xx || ep.ejectedUntil > 0) return;
    const total = this.#endpoints.length;
    if (total === 0 || (this.#ejected * 100) / total >= od.maxEjectionPercent) return;
    ep.ejections++;
    ep.ejectedUntil = now + Math.min(od.baseEjectionMs * ep.ejections, od.maxEjectionMs);
    ep.consecutive5xx = 0;
    this.#ejected++;
    this.onHealthChange?.(ep, true);
  }

  #restoreExpired(now: number): void {
    for (const e of this.#endpoints) {
      if (e.ejectedUntil > 0 && e.ejectedUntil <= now) {
        e.ejectedUntil = 0;
        this.#ejected--;
        this.onHealthChange?.(e, false);
      }
    }
  }
}

function fnv1a(a: string, b: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < a.length; i++) h = Math.imul(h ^ a.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ 0x2f, 0x01000193);
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b.charCodeAt(i), 0x01000193);
  // Final avalanche so close IPs don't produce close scores.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}
