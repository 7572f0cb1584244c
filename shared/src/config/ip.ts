// IP addresses and CIDR blocks without allocation-heavy libraries. Config addresses are stored in
// the canonical text form Node itself uses for socket addresses (dotted IPv4, RFC 5952 IPv6), so a
// data-path lookup with `socket.remoteAddress` is a single Map read.
import { isIPv4, isIPv6 } from 'node:net';

export interface ParsedIp {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

export interface Cidr {
  family: 4 | 6;
  bytes: Uint8Array;
  prefix: number;
  /** The block as written back canonically, e.g. `10.0.0.0/8`. */
  text: string;
}

const V4_MAPPED = '::ffff:';

/** Parses an IPv4 or IPv6 address; IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4. */
export function parseIp(input: string): ParsedIp | undefined {
  if (isIPv4(input)) return { family: 4, bytes: parseV4(input) };
  if (!isIPv6(input)) return undefined;
  const lower = input.toLowerCase();
  if (lower.startsWith(V4_MAPPED) && isIPv4(lower.slice(V4_MAPPED.length))) {
    return { family: 4, bytes: parseV4(lower.slice(V4_MAPPED.length)) };
  }
  return { family: 6, bytes: parseV6(lower) };
}

/** Canonical text form (what Node reports for sockets), or undefined if not an IP address. */
export function canonicalIp(input: string): string | undefined {
  const ip = parseIp(input.trim());
  return ip === undefined ? undefined : formatIp(ip);
}

export function formatIp(ip: ParsedIp): string {
  if (ip.family === 4) return ip.bytes.join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((ip.bytes[i]! << 8) | ip.bytes[i + 1]!);
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on ties.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Parses `addr/prefix` or a bare address (a /32 or /128 block). Host bits are masked off. */
export function parseCidr(input: string): Cidr | undefined {
  const trimmed = input.trim();
  const slash = trimmed.indexOf('/');
  const addr = slash < 0 ? trimmed : trimmed.slice(0, slash);
  const ip = parseIp(addr);
  if (ip === undefined) return undefined;
  // A v4-mapped address with a v6 prefix length: translate the prefix to the IPv4 part.
  const mappedV4 = ip.family === 4 && !isIPv4(addr);
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = trimmed.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefix = Number(p);
    if (mappedV4) {
      if (prefix < 96 || prefix > 128) return undefined;
      prefix -= 96;
    }
    if (prefix > max) return undefined;
  }
  const bytes = new Uint8Array(ip.bytes);
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family: ip.family, bytes, prefix, text: `${formatIp({ family: ip.family, bytes })}/${prefix}` };
}

export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  if (cidr.family !== ip.family) return false;
  const full = cidr.prefix >> 3;
  for (let i = 0; i < full; i++) if (cidr.bytes[i] !== ip.bytes[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (ip.bytes[full]! & mask) === cidr.bytes[full];
}

function parseV4(s: string): Uint8Array {
  const out = new Uint8Array(4);
  const parts = s.split('.');
  for (let i = 0; i < 4; i++) out[i] = Number(parts[i]);
  return out;
}

function parseV6(s: string): Uint8Array {
  const out = new Uint8Array(16);
  let text = s;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // A trailing dotted quad (e.g. ::1.2.3.4) stands for the last two groups: rewrite it as hex.
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    const v4 = parseV4(text.slice(lastColon + 1));
    const hi = ((v4[0]! << 8) | v4[1]!).toString(16);
    const lo = ((v4[2]! << 8) | v4[3]!).toString(16);
    text = `${text.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = text.split('::');
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const back = halves.length > 1 && halves[1] !== '' ? halves[1]!.split(':') : [];
  const fill = halves.length > 1 ? 8 - head.length - back.length : 0;
  const groups: number[] = [];
  for (const h of head) groups.push(Number.parseInt(h, 16));
  for (let i = 0; i < fill; i++) groups.push(0);
  for (const h of back) groups.push(Number.parseInt(h, 16));
  for (let i = 0; i < 8; i++) {
    out[i * 2] = (groups[i]! >> 8) & 0xff;
    out[i * 2 + 1] = groups[i]! & 0xff;
  }
  return out;
}
