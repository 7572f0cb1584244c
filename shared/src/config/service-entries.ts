// ServiceEntries as the data path looks them up: by host name (DNS) and by destination address
// (outbound capture). Owned by the config state, which calls `set` inside its one commit.
//
//   host ──#byHost (exact, then "*.parent" walking up)──▶ entry ──▶ answer: spec.addresses | host VIP
//   ip ──#hostOfVip (allocated VIP) | #byIp (spec.addresses) | CIDR list──▶ entry + port
//
// Invariants:
// - Every lookup is a few Map reads (a wildcard walk is one read per label of the name). Only
//   CIDR addresses are scanned, and only when the exact maps miss.
// - A host with no address of its entry gets one VIP from 240.240.0.0/16 (class E: never a pod,
//   node or Service address), derived from a hash of the host, so every agent and every restart
//   gives the same host the same VIP. On a collision the next free VIP is taken; a host keeps its
//   VIP while any entry names it, so a collision never moves an allocated VIP (only its order of
//   arrival decides which of two colliding hosts gets the hashed one).
// - Several entries may name one host: the first by namespace/name answers (stable).
import { type Cidr, cidrContains, parseCidr, parseIp } from './ip.js';
import type { ServiceEntry, ServiceEntryAddressMatch, ServiceEntryHostMatch } from './types.js';

/** Where hosts without addresses get their VIPs (Istio allocates from the same block). */
export const AUTO_VIP_CIDR = '240.240.0.0/16';
const AUTO_VIP_SLOTS = 65534; // .0.1 to .255.254

/** The VIP a host hashes to before collisions: 240.240.x.y. */
export function hashedVip(host: string): string {
  // FNV-1a, 32 bits.
  let h = 0x811c9dc5;
  for (let i = 0; i < host.length; i++) {
    h ^= host.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return vipAt(h % AUTO_VIP_SLOTS);
}

function vipAt(slot: number): string {
  const n = slot + 1;
  return `240.240.${n >> 8}.${n & 0xff}`;
}

function slotOf(vip: string): number {
  const parts = vip.split('.');
  return ((Number(parts[2]) << 8) | Number(parts[3])) - 1;
}

function needsVip(entry: ServiceEntry, host: string): boolean {
  return entry.addresses.length === 0 && entry.resolution !== 'NONE' && !host.startsWith('*.');
}

export class ServiceEntryIndex {
  readonly #entries = new Map<string, ServiceEntry>();
  /** host as written (`a.b`, `*.b`) → keys of the entries naming it, sorted. */
  readonly #byHost = new Map<string, string[]>();
  /** A single-IP spec.address → entry keys, sorted. */
  readonly #byIp = new Map<string, string[]>();
  readonly #cidrs: { cidr: Cidr; key: string }[] = [];
  readonly #vipOf = new Map<string, string>();
  readonly #hostOfVip = new Map<string, string>();
  /** host → how many entries need a VIP for it. */
  readonly #vipRefs = new Map<string, number>();

  get size(): number {
    return this.#entries.size;
  }

  values(): IterableIterator<ServiceEntry> {
    return this.#entries.values();
  }

  find(key: string): ServiceEntry | undefined {
    return this.#entries.get(key);
  }

  /** Replaces (or with undefined removes) the entry under `key` ("namespace/name"). */
  set(key: string, entry: ServiceEntry | undefined): void {
    const prev = this.#entries.get(key);
    // The new version's VIPs are held before the old one's are let go: a host an update keeps keeps
    // its VIP (released first, it could come back elsewhere after a collision).
    if (entry !== undefined) for (const host of entry.hosts) if (needsVip(entry, host)) this.#retainVip(host);
    if (prev !== undefined) this.#unindex(key, prev);
    if (entry === undefined) this.#entries.delete(key);
    else {
      this.#entries.set(key, entry);
      this.#index(key, entry);
    }
  }

  /** The allocated VIP of a host, if it has one. */
  findVip(host: string): string | undefined {
    return this.#vipOf.get(host);
  }

  /** The entry a DNS name (lower case, no trailing dot) belongs to: exact host, else the nearest wildcard. */
  findByHost(name: string): ServiceEntryHostMatch | undefined {
    let host = name;
    let keys = this.#byHost.get(host);
    for (let dot = name.indexOf('.'); keys === undefined && dot >= 0; dot = name.indexOf('.', dot + 1)) {
      host = `*${name.slice(dot)}`;
      keys = this.#byHost.get(host);
    }
    if (keys === undefined) return undefined;
    const entry = this.#entries.get(keys[0]!)!;
    const given = entry.addresses.filter((a) => !a.includes('/'));
    const vip = this.#vipOf.get(host);
    return {
      entry,
      host,
      addresses: given.length > 0 || entry.addresses.length > 0 ? given : vip === undefined ? [] : [vip],
    };
  }

  /** The entry a destination ip:port belongs to (allocated VIP, spec.addresses, then CIDRs). */
  findByAddress(ip: string, port: number): ServiceEntryAddressMatch | undefined {
    const host = this.#hostOfVip.get(ip);
    if (host !== undefined) {
      for (const key of this.#byHost.get(host) ?? []) {
        const entry = this.#entries.get(key)!;
        if (!needsVip(entry, host)) continue;
        const p = entry.ports.find((x) => x.number === port);
        if (p !== undefined) return { entry, host, port: p };
      }
      return undefined;
    }
    for (const key of this.#byIp.get(ip) ?? []) {
      const m = this.#matchPort(key, port);
      if (m !== undefined) return m;
    }
    if (this.#cidrs.length === 0) return undefined;
    const parsed = parseIp(ip);
    if (parsed === undefined) return undefined;
    for (const { cidr, key } of this.#cidrs) {
      if (!cidrContains(cidr, parsed)) continue;
      const m = this.#matchPort(key, port);
      if (m !== undefined) return m;
    }
    return undefined;
  }

  #matchPort(key: string, port: number): ServiceEntryAddressMatch | undefined {
    const entry = this.#entries.get(key)!;
    const p = entry.ports.find((x) => x.number === port);
    if (p === undefined) return undefined;
    return { entry, host: entry.hosts.find((h) => !h.startsWith('*.')), port: p };
  }

  #index(key: string, entry: ServiceEntry): void {
    for (const host of entry.hosts) addSorted(this.#byHost, host, key);
    for (const a of entry.addresses) {
      if (!a.includes('/')) addSorted(this.#byIp, a, key);
      else {
        const cidr = parseCidr(a);
        if (cidr !== undefined) this.#cidrs.push({ cidr, key });
      }
    }
  }

  #unindex(key: string, entry: ServiceEntry): void {
    for (const host of entry.hosts) {
      removeSorted(this.#byHost, host, key);
      if (needsVip(entry, host)) this.#releaseVip(host);
    }
    for (const a of entry.addresses) if (!a.includes('/')) removeSorted(this.#byIp, a, key);
    for (let i = this.#cidrs.length - 1; i >= 0; i--)
      if (this.#cidrs[i]!.key === key) this.#cidrs.splice(i, 1);
  }

  #retainVip(host: string): void {
    const refs = this.#vipRefs.get(host) ?? 0;
    this.#vipRefs.set(host, refs + 1);
    if (refs > 0) return;
    let slot = slotOf(hashedVip(host));
    for (let tries = 0; tries < AUTO_VIP_SLOTS; tries++) {
      const vip = vipAt(slot);
      if (!this.#hostOfVip.has(vip)) {
        this.#vipOf.set(host, vip);
        this.#hostOfVip.set(vip, host);
        return;
      }
      slot = (slot + 1) % AUTO_VIP_SLOTS;
    }
    // 65534 hosts without addresses: the rest answer no address (DNS then forwards upstream).
  }

  #releaseVip(host: string): void {
    const refs = (this.#vipRefs.get(host) ?? 1) - 1;
    if (refs > 0) {
      this.#vipRefs.set(host, refs);
      return;
    }
    this.#vipRefs.delete(host);
    const vip = this.#vipOf.get(host);
    if (vip === undefined) return;
    this.#vipOf.delete(host);
    this.#hostOfVip.delete(vip);
  }
}

function addSorted(map: Map<string, string[]>, k: string, value: string): void {
  const list = map.get(k);
  if (list === undefined) map.set(k, [value]);
  else if (!list.includes(value)) {
    list.push(value);
    list.sort();
  }
}

function removeSorted(map: Map<string, string[]>, k: string, value: string): void {
  const list = map.get(k);
  if (list === undefined) return;
  const i = list.indexOf(value);
  if (i >= 0) list.splice(i, 1);
  if (list.length === 0) map.delete(k);
}
