// Parsing and building of everything that crosses the wire in a CONNECT request besides bytes:
// `:authority`, `forwarded`, `baggage`, `traceparent`. Everything here comes from an untrusted peer,
// so each parser is strict, bounded in size, and returns a typed value or throws HboneError
// BAD_REQUEST saying exactly what is wrong (the server turns that into a 400).
import { isIP } from 'node:net';
import { canonicalIp } from '../config/ip.js';
import { HboneError } from './errors.js';

export interface Authority {
  /** IPv4 dotted quad or IPv6 without brackets. */
  readonly host: string;
  readonly port: number;
}

export interface SocketAddress {
  readonly ip: string;
  readonly port?: number;
}

export interface TraceParent {
  readonly version: string;
  readonly traceId: string;
  readonly parentId: string;
  readonly flags: string;
}

/** Baggage members, percent-decoded. Ambient uses k8s.namespace.name, service.name, ... */
export type Baggage = Readonly<Record<string, string>>;

export const MAX_AUTHORITY_LENGTH = 64;
export const MAX_FORWARDED_LENGTH = 256;
export const MAX_BAGGAGE_LENGTH = 8192;
export const MAX_BAGGAGE_MEMBERS = 64;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const PORT = /^[1-9][0-9]{0,4}$/;
// RFC 7230 token, which W3C baggage keys must be.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// W3C baggage-octet: printable ASCII except space, '"', ',', ';', '\' (others percent-encoded).
const BAGGAGE_VALUE = /^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*$/;

function bad(message: string): never {
  throw new HboneError('BAD_REQUEST', message);
}

function parsePort(text: string, what: string): number {
  if (!PORT.test(text)) bad(`${what}: port "${text}" is not a number between 1 and 65535`);
  const port = Number(text);
  if (port > 65535) bad(`${what}: port ${port} is above 65535`);
  return port;
}

/** Splits `ip:port` / `[v6]:port`, requiring a port. */
function splitHostPort(text: string, what: string): { host: string; portText: string } {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) bad(`${what} "${text}": "[" without "]"`);
    if (text[close + 1] !== ':') bad(`${what} "${text}": expected ":port" after "]"`);
    return { host: text.slice(1, close), portText: text.slice(close + 2) };
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0) bad(`${what} "${text}": expected ip:port`);
  const host = text.slice(0, colon);
  if (host.includes(':')) bad(`${what} "${text}": IPv6 addresses must be written in brackets, [addr]:port`);
  return { host, portText: text.slice(colon + 1) };
}

/**
 * Parses a CONNECT `:authority`. Hypha only tunnels to addresses (pod IP:targetPort, or
 * VIP:servicePort towards a waypoint), so host names are refused.
 */
export function parseAuthority(text: string | undefined): Authority {
  if (typeof text !== 'string' || text.length === 0) bad('CONNECT request has no :authority');
  if (text.length > MAX_AUTHORITY_LENGTH) bad(`:authority longer than ${MAX_AUTHORITY_LENGTH} characters`);
  const { host, portText } = splitHostPort(text, ':authority');
  const family = isIP(host);
  if (family === 0) bad(`:authority "${text}": "${host}" is not an IP address (host names are not tunneled)`);
  if (family === 6 && host.includes('%')) bad(`:authority "${text}": IPv6 zone ids are not allowed`);
  // IPv6 in its canonical form (RFC 5952, as sockets report addresses), so `[fd00:0::1]:80` and
  // `[fd00::1]:80` name the same destination in every comparison and lookup.
  return {
    host: family === 6 ? (canonicalIp(host) ?? host) : host,
    port: parsePort(portText, `:authority "${text}"`),
  };
}

export function formatAuthority(a: { host: string; port: number } | { ip: string; port: number }): string {
  const host = 'host' in a ? a.host : a.ip;
  return isIP(host) === 6 ? `[${host}]:${a.port}` : `${host}:${a.port}`;
}

/** `forwarded: for="ip:port"` (RFC 7239), the original client address. */
export function buildForwarded(addr: SocketAddress): string {
  if (isIP(addr.ip) === 0)
    throw new HboneError('INVALID_ARGUMENT', `forwarded-for "${addr.ip}" is not an IP address`);
  if (addr.port === undefined) return isIP(addr.ip) === 6 ? `for="[${addr.ip}]"` : `for=${addr.ip}`;
  return `for="${formatAuthority({ ip: addr.ip, port: addr.port })}"`;
}

/**
 * Accepts exactly one `for=` element, as Hypha and ztunnel send it: `for=1.2.3.4`,
 * `for="1.2.3.4:5678"`, `for="[::1]"`, `for="[::1]:5678"`. Anything else is a 400.
 */
export function parseForwarded(text: string): SocketAddress {
  if (text.length > MAX_FORWARDED_LENGTH)
    bad(`forwarded header longer than ${MAX_FORWARDED_LENGTH} characters`);
  const m = /^for=(?:"([^"]*)"|([^",;\s]+))$/i.exec(text.trim());
  if (!m) bad(`forwarded header "${text}": expected exactly one for="ip:port" element`);
  const value = (m[1] ?? m[2]) as string;
  if (value.startsWith('[')) {
    const close = value.indexOf(']');
    if (close < 0) bad(`forwarded "${text}": "[" without "]"`);
    const ip = canonicalIp(value.slice(1, close)) ?? '';
    if (isIP(ip) !== 6 || ip.includes('%'))
      bad(`forwarded "${text}": "${value.slice(1, close)}" is not an IPv6 address`);
    if (close === value.length - 1) return { ip };
    if (value[close + 1] !== ':') bad(`forwarded "${text}": expected ":port" after "]"`);
    return { ip, port: parsePort(value.slice(close + 2), `forwarded "${text}"`) };
  }
  if (isIP(value) === 4) return { ip: value };
  const { host, portText } = splitHostPort(value, 'forwarded');
  if (isIP(host) !== 4) bad(`forwarded "${text}": "${host}" is not an IPv4 address`);
  return { ip: host, port: parsePort(portText, `forwarded "${text}"`) };
}

export function buildBaggage(members: Baggage): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(members)) {
    if (!TOKEN.test(key))
      throw new HboneError('INVALID_ARGUMENT', `baggage key "${key}" is not an HTTP token`);
    parts.push(`${key}=${encodeURIComponent(value)}`);
  }
  const out = parts.join(',');
  if (out.length > MAX_BAGGAGE_LENGTH) {
    throw new HboneError('INVALID_ARGUMENT', `baggage is ${out.length} bytes, above ${MAX_BAGGAGE_LENGTH}`);
  }
  return out;
}

/** W3C baggage; member properties (`;k=v`) are accepted and dropped. */
export function parseBaggage(text: string): Baggage {
  if (text.length > MAX_BAGGAGE_LENGTH) bad(`baggage header longer than ${MAX_BAGGAGE_LENGTH} bytes`);
  const out: Record<string, string> = Object.create(null);
  if (text.trim() === '') return out;
  const members = text.split(',');
  if (members.length > MAX_BAGGAGE_MEMBERS)
    bad(`baggage has ${members.length} members, above ${MAX_BAGGAGE_MEMBERS}`);
  for (const raw of members) {
    const member = (raw.split(';', 1)[0] as string).trim();
    const eq = member.indexOf('=');
    if (eq <= 0) bad(`baggage member "${member}" is not key=value`);
    const key = member.slice(0, eq).trim();
    const value = member.slice(eq + 1).trim();
    if (!TOKEN.test(key)) bad(`baggage key "${key}" is not an HTTP token`);
    if (!BAGGAGE_VALUE.test(value))
      bad(`baggage value for "${key}" has characters that must be percent-encoded`);
    try {
      out[key] = decodeURIComponent(value);
    } catch {
      bad(`baggage value for "${key}" has a broken percent-encoding`);
    }
  }
  return out;
}

export function parseTraceParent(text: string): TraceParent {
  const m = TRACEPARENT.exec(text.trim());
  if (!m)
    bad(`traceparent "${text.slice(0, 80)}" is not version-traceid(32 hex)-parentid(16 hex)-flags(2 hex)`);
  const [, version, traceId, parentId, flags] = m as unknown as [string, string, string, string, string];
  if (version === 'ff') bad('traceparent version ff is invalid');
  if (/^0+$/.test(traceId)) bad('traceparent trace id is all zeros');
  if (/^0+$/.test(parentId)) bad('traceparent parent id is all zeros');
  return { version, traceId, parentId, flags };
}

export function formatTraceParent(t: TraceParent): string {
  return `${t.version}-${t.traceId}-${t.parentId}-${t.flags}`;
}
