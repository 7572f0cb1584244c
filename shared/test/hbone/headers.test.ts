import {
  buildBaggage,
  buildForwarded,
  formatAuthority,
  HboneError,
  parseAuthority,
  parseBaggage,
  parseForwarded,
  parseTraceParent,
} from '@hypha/shared/hbone';
import { describe, expect, test } from 'vitest';

function badRequest(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(HboneError);
    expect((err as HboneError).code).toBe('BAD_REQUEST');
    return (err as Error).message;
  }
  throw new Error('expected a BAD_REQUEST');
}

describe(':authority', () => {
  test('accepts IPv4 and bracketed IPv6 with a port', () => {
    expect(parseAuthority('10.1.2.3:8080')).toEqual({ host: '10.1.2.3', port: 8080 });
    expect(parseAuthority('[fd00::1]:443')).toEqual({ host: 'fd00::1', port: 443 });
    expect(formatAuthority({ host: 'fd00::1', port: 443 })).toBe('[fd00::1]:443');
  });

  test('canonicalizes IPv6 hosts, so one destination has one spelling', () => {
    expect(parseAuthority('[FD00:0:0:0::1]:8080')).toEqual({ host: 'fd00::1', port: 8080 });
    expect(parseAuthority('[fd68:7970:2a3:4:0:0:0:2]:80')).toEqual({ host: 'fd68:7970:2a3:4::2', port: 80 });
    expect(formatAuthority(parseAuthority('[fd00:0::a]:80'))).toBe('[fd00::a]:80');
    expect(parseForwarded('for="[FD00:0::7]:1"')).toEqual({ ip: 'fd00::7', port: 1 });
  });

  test.each([
    ['', 'no :authority'],
    ['10.1.2.3', 'expected ip:port'],
    ['10.1.2.3:0', 'between 1 and 65535'],
    ['10.1.2.3:65536', 'above 65535'],
    ['10.1.2.3:080', 'between 1 and 65535'],
    ['10.1.2.3:80x', 'between 1 and 65535'],
    ['example.com:80', 'not an IP address'],
    ['fd00::1:80', 'in brackets'],
    ['[fd00::1]80', 'expected ":port"'],
    ['[fe80::1%eth0]:80', 'zone'],
    ['010.1.2.3:80', 'not an IP address'],
    [`${'1'.repeat(70)}:80`, 'longer than'],
  ])('refuses %j (%s)', (input, reason) => {
    expect(badRequest(() => parseAuthority(input))).toContain(reason);
  });
});

describe('forwarded', () => {
  test('round-trips IPv4 and IPv6 with ports', () => {
    expect(parseForwarded(buildForwarded({ ip: '10.0.0.7', port: 51234 }))).toEqual({
      ip: '10.0.0.7',
      port: 51234,
    });
    expect(buildForwarded({ ip: 'fd00::7', port: 1 })).toBe('for="[fd00::7]:1"');
    expect(parseForwarded('for="[fd00::7]:1"')).toEqual({ ip: 'fd00::7', port: 1 });
    expect(parseForwarded('for=10.0.0.7')).toEqual({ ip: '10.0.0.7' });
    expect(parseForwarded('for="[fd00::7]"')).toEqual({ ip: 'fd00::7' });
  });

  test.each([
    'for=10.0.0.7, for=10.0.0.8',
    'by=10.0.0.7',
    'for="10.0.0.7:99999"',
    'for=unknown',
    'for="[fd00::7"',
    `for="${'a'.repeat(300)}"`,
  ])('refuses %j', (input) => {
    badRequest(() => parseForwarded(input));
  });
});

describe('baggage', () => {
  test('round-trips workload metadata with percent-encoding', () => {
    const b = { 'k8s.namespace.name': 'shop', 'service.name': 'web api', 'service.version': 'v1,2' };
    const text = buildBaggage(b);
    expect(text).toBe('k8s.namespace.name=shop,service.name=web%20api,service.version=v1%2C2');
    expect(parseBaggage(text)).toEqual(b);
  });

  test('drops member properties and tolerates spaces', () => {
    expect(parseBaggage(' a=1;prop=x , b=2 ')).toEqual({ a: '1', b: '2' });
  });

  test.each([
    ['a', 'not key=value'],
    ['a b=1', 'not an HTTP token'],
    ['a=x"y', 'percent-encoded'],
    ['a=%zz', 'broken percent-encoding'],
    [Array.from({ length: 65 }, (_, i) => `k${i}=v`).join(','), 'members'],
    [`a=${'x'.repeat(9000)}`, 'longer than'],
  ])('refuses %j (%s)', (input, reason) => {
    expect(badRequest(() => parseBaggage(input))).toContain(reason);
  });
});

describe('traceparent', () => {
  test('parses a W3C traceparent', () => {
    expect(parseTraceParent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')).toEqual({
      version: '00',
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      parentId: '00f067aa0ba902b7',
      flags: '01',
    });
  });

  test.each([
    ['00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', 'is not'],
    ['ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'version ff'],
    ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', 'trace id is all zeros'],
    ['00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', 'parent id is all zeros'],
    ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7', 'is not'],
  ])('refuses %j', (input, reason) => {
    expect(badRequest(() => parseTraceParent(input))).toContain(reason);
  });
});
