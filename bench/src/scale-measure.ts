// What both scale children (file source, Kubernetes source) measure the same way: peak RSS, the
// median of a series, and ns per lookup of the state against a plain Map of the same keys (the
// floor: at 100k every hash lookup slows as the table leaves the CPU caches).
import { readFileSync } from 'node:fs';
import { podIp, serviceVip } from './scale-objects.js';

export function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

function nsPerLookup(keys: string[], lookup: (k: string) => unknown): number {
  let sink = 0;
  const rounds = Math.max(1, Math.floor(2_000_000 / keys.length));
  for (const k of keys) if (lookup(k) !== undefined) sink++; // warm-up
  const t = process.hrtime.bigint();
  for (let r = 0; r < rounds; r++) for (const k of keys) if (lookup(k) !== undefined) sink++;
  const ns = Number(process.hrtime.bigint() - t) / (rounds * keys.length);
  if (sink !== (rounds + 1) * keys.length) throw new Error('lookup missed an existing key');
  return ns;
}

export interface LookupState {
  findWorkloadByIp(ip: string): unknown;
  findServiceByVip(vip: string, port: number): unknown;
}

/** Lookups of 4096 pseudo-random existing keys; call after the RSS figures (the floor Maps cost memory). */
export function measureLookups(state: LookupState, pods: number, services: number) {
  let seed = 12345;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const ipKeys = Array.from({ length: 4096 }, () => podIp(random(pods)));
  const vipKeys = Array.from({ length: 4096 }, () => serviceVip(random(services)));
  const ipFloor = new Map<string, number>();
  for (let n = 0; n < pods; n++) ipFloor.set(podIp(n), n);
  const vipFloor = new Map<string, number>();
  for (let s = 0; s < services; s++) vipFloor.set(serviceVip(s), s);
  return {
    workloadByIpNs: nsPerLookup(ipKeys, (k) => state.findWorkloadByIp(k)),
    serviceByVipNs: nsPerLookup(vipKeys, (k) => state.findServiceByVip(k, 80)),
    mapIpNs: nsPerLookup(ipKeys, (k) => ipFloor.get(k)),
    mapVipNs: nsPerLookup(vipKeys, (k) => vipFloor.get(k)),
  };
}
