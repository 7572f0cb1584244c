// ServiceEntry hosts through the DNS proxy (real `dig` on loopback, fake upstream): a host without
// addresses answers its allocated VIP (the same on every agent), a host with spec.addresses answers
// those, wildcards answer the names under them, an entry with nothing to answer is forwarded; and
// the resolver the outbound path uses for `resolution: DNS` hosts.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createConfigState, hashedVip, translateObject } from '@hypha/shared/config';
import type { Answer } from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDnsProxy, type DnsProxy, HostResolver } from '../../src/dns/index.js';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.js';

const run = promisify(execFile);
const API = 'networking.hypha.dev/v1';
const entry = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: API,
  kind: 'ServiceEntry',
  metadata: { name, namespace: 'shop' },
  spec,
});
const translated = (raw: unknown) => {
  const t = translateObject(raw, { source: 'test' });
  if (t.status !== 'ok') throw new Error(JSON.stringify(t));
  return t.object;
};
const a = (name: string, ip: string, ttl = 60): Answer => ({ type: 'A', name, ttl, class: 'IN', data: ip });

let upstream: FakeUpstream;
let proxy: DnsProxy;
const state = createConfigState();

async function dig(...args: string[]): Promise<string> {
  const { stdout } = await run('dig', [
    '-p',
    String(proxy.port),
    '@127.0.0.1',
    '+tries=1',
    '+time=3',
    ...args,
  ]);
  return stdout;
}
const status = (out: string) => /status: (\w+)/.exec(out)?.[1];

beforeAll(async () => {
  state.applySnapshot(
    [
      entry('external-api', {
        hosts: ['api.external.test'],
        ports: [{ number: 80, name: 'http', protocol: 'HTTP' }],
        resolution: 'DNS',
      }),
      entry('db', {
        hosts: ['db.example.test'],
        addresses: ['192.0.2.40', '2001:db8::40'],
        ports: [{ number: 5432 }],
        resolution: 'STATIC',
        endpoints: [{ address: '192.0.2.41' }],
      }),
      entry('wide', { hosts: ['*.eu.example.test'], addresses: ['192.0.2.50'], ports: [{ number: 443 }] }),
      entry('cdn', { hosts: ['*.cdn.example.test'], ports: [{ number: 443 }] }),
    ].map(translated),
  );
  upstream = await startFakeUpstream({
    records: new Map([
      ['img.cdn.example.test', [a('img.cdn.example.test', '198.51.100.9')]],
      ['api.external.test', [a('api.external.test', '198.51.100.80', 5)]],
    ]),
    silent: new Set(['silent.example.test']),
  });
  proxy = createDnsProxy({
    state,
    host: '127.0.0.1',
    port: 0,
    upstreams: [{ ip: '127.0.0.1', port: upstream.port }],
    upstreamTimeoutMs: 300,
  });
  await proxy.start();
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

describe('DNS proxy: ServiceEntry hosts', () => {
  it('answers a host without addresses with its allocated VIP, without asking upstream', async () => {
    const out = await dig('api.external.test', 'A');
    expect(status(out)).toBe('NOERROR');
    expect(out).toMatch(/flags: qr aa rd ra/);
    expect(await dig('+short', 'API.External.Test.', 'A')).toBe(`${hashedVip('api.external.test')}\n`);
    // The VIP is IPv4 only: AAAA is an empty NOERROR, so a client falls back to A.
    const aaaa = await dig('api.external.test', 'AAAA');
    expect(status(aaaa)).toBe('NOERROR');
    expect(aaaa).toContain('ANSWER: 0');
    expect(upstream.asked.filter((q) => q.startsWith('api.external.test'))).toEqual([]);
  });

  it('answers spec.addresses by family', async () => {
    expect(await dig('+short', 'db.example.test', 'A')).toBe('192.0.2.40\n');
    expect(await dig('+short', 'db.example.test', 'AAAA')).toBe('2001:db8::40\n');
    expect(status(await dig('db.example.test', 'MX'))).toBe('NOERROR');
  });

  it('answers the names under a wildcard host, not the bare parent', async () => {
    expect(await dig('+short', 'a.eu.example.test', 'A')).toBe('192.0.2.50\n');
    expect(await dig('+short', 'x.y.eu.example.test', 'A')).toBe('192.0.2.50\n');
    // The parent itself is not under the wildcard: forwarded, as any name outside the mesh.
    expect(await dig('+short', 'eu.example.test', 'A')).toBe('');
    expect(upstream.asked).toContain('eu.example.test/A/udp');
  });

  it('forwards a name whose entry has nothing to answer (a wildcard without addresses)', async () => {
    expect(await dig('+short', 'img.cdn.example.test', 'A')).toBe('198.51.100.9\n');
    expect(upstream.asked).toContain('img.cdn.example.test/A/udp');
  });

  it('follows the state: a new entry answers at once, a removed one no longer does', async () => {
    state.upsert(
      translated(entry('late', { hosts: ['late.example.test'], ports: [{ number: 80 }], resolution: 'DNS' })),
    );
    expect(await dig('+short', 'late.example.test', 'A')).toBe(`${hashedVip('late.example.test')}\n`);
    state.remove({ kind: 'ServiceEntry', namespace: 'shop', name: 'late' });
    expect(await dig('+short', 'late.example.test', 'A')).toBe('');
  });
});

describe('HostResolver (resolution: DNS on the outbound path)', () => {
  it('asks the upstream once per TTL and shares a question between concurrent callers', async () => {
    let now = 1_000_000;
    const resolver = new HostResolver({
      servers: [{ ip: '127.0.0.1', port: upstream.port }],
      timeoutMs: 300,
      now: () => now,
    });
    const before = upstream.asked.filter((q) => q.startsWith('api.external.test/A')).length;
    const [x, y] = await Promise.all([
      resolver.fetchAddress('api.external.test', 4),
      resolver.fetchAddress('api.external.test', 4),
    ]);
    expect([x, y]).toEqual(['198.51.100.80', '198.51.100.80']);
    await resolver.fetchAddress('api.external.test', 4);
    const asked = () => upstream.asked.filter((q) => q.startsWith('api.external.test/A')).length - before;
    expect(asked()).toBe(1);
    now += 6_000; // past the 5 s TTL
    await resolver.fetchAddress('api.external.test', 4);
    expect(asked()).toBe(2);
  });

  it('fails with a clear reason, and does not keep the failure', async () => {
    const resolver = new HostResolver({
      servers: [{ ip: '127.0.0.1', port: upstream.port }],
      timeoutMs: 200,
    });
    await expect(resolver.fetchAddress('nothing.example.test', 4)).rejects.toThrow(
      /nothing\.example\.test has no address \(A or AAAA\)/,
    );
    await expect(resolver.fetchAddress('silent.example.test', 4)).rejects.toThrow(/silent\.example\.test/);
    expect(await resolver.fetchAddress('192.0.2.7', 4)).toBe('192.0.2.7');
  });
});
