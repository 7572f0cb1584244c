// The DNS proxy as a pod's resolver sees it: real `dig` against real sockets on 127.0.0.1, with a
// fake upstream resolver on loopback. Service names come from the agent's config state; anything
// else is forwarded, cached, truncated over UDP and completed over TCP.
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { promisify } from 'node:util';
import { createConfigState, translateObject } from '@hypha/shared/config';
import packet, { type Answer } from 'dns-packet';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDnsProxy, DnsMetrics, type DnsProxy } from '../../src/dns/index.js';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream.js';

const run = promisify(execFile);

const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } };
const pod = (name: string, ip: string, ready = true) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels: { app: name.replace(/-\d+$/, '') } },
  spec: { nodeName: 'n1', serviceAccountName: 'default' },
  status: { podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});
const service = (name: string, clusterIPs: string[] | 'None', app = name) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop' },
  spec: {
    clusterIP: clusterIPs === 'None' ? 'None' : clusterIPs[0],
    ...(clusterIPs === 'None' ? {} : { clusterIPs }),
    selector: { app },
    ports: [{ port: 80, targetPort: 8080 }],
  },
});
const translated = (raw: unknown) => {
  const t = translateObject(raw, { source: 'test' });
  if (t.status !== 'ok') throw new Error(JSON.stringify(t));
  return t.object;
};

const a = (name: string, ip: string, ttl = 60): Answer => ({ type: 'A', name, ttl, class: 'IN', data: ip });
const bigRecords = Array.from({ length: 60 }, (_, i) => a('big.example.test', `198.51.100.${i + 1}`));

let upstream: FakeUpstream;
let proxy: DnsProxy;
let registry: Registry;
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
const answers = (out: string) =>
  out
    .split('\n')
    .filter((l) => l.length > 0 && !l.startsWith(';'))
    .map((l) => l.split(/\s+/));

beforeAll(async () => {
  state.applySnapshot(
    [
      ns,
      pod('web-1', '10.1.0.1'),
      pod('db-1', '10.1.0.2'),
      pod('db-2', '10.1.0.3'),
      pod('db-3', '10.1.0.4', false),
      service('web', ['10.96.0.10', 'fd00:96::10']),
      service('db', 'None'),
    ].map(translated),
  );
  upstream = await startFakeUpstream({
    records: new Map([
      ['ext.example.test', [a('ext.example.test', '192.0.2.10', 120)]],
      ['big.example.test', bigRecords],
      ['slow.example.test', [a('slow.example.test', '192.0.2.20')]],
      ['db-0.db.shop.svc.cluster.local', [a('db-0.db.shop.svc.cluster.local', '10.1.0.2')]],
    ]),
    nxdomain: new Map([['gone.example.test', 60]]),
    truncateUdp: new Set(['big.example.test']),
    silent: new Set(['silent.example.test']),
    delayMs: new Map([['slow.example.test', 200]]),
  });
  registry = new Registry();
  proxy = createDnsProxy({
    state,
    host: '127.0.0.1',
    port: 0,
    upstreams: [{ ip: '127.0.0.1', port: upstream.port }],
    upstreamTimeoutMs: 300,
    metrics: new DnsMetrics(registry),
    tcp: { idleMs: 300 },
  });
  await proxy.start();
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

describe('DNS proxy: Service names from the mesh state', () => {
  it('answers A and AAAA for a Service with its VIPs, authoritatively', async () => {
    const out = await dig('web.shop.svc.cluster.local', 'A');
    expect(status(out)).toBe('NOERROR');
    expect(out).toMatch(/flags: qr aa rd ra/);
    expect(answers(out).map((r) => r[4])).toEqual(['10.96.0.10']);
    expect(await dig('+short', 'web.shop.svc.cluster.local', 'AAAA')).toBe('fd00:96::10\n');
    expect(upstream.asked).toEqual([]);
  });

  it('matches names case-insensitively and keeps the case the client asked in', async () => {
    const out = await dig('+noall', '+question', '+answer', 'WeB.Shop.SVC.cluster.local', 'A');
    expect(out).toContain('WeB.Shop.SVC.cluster.local.');
    expect(out).toContain('10.96.0.10');
  });

  it('resolves short names through a search path, as a pod resolver expands them', async () => {
    const out = await dig('+search', '+domain=shop.svc.cluster.local', '+short', 'web', 'A');
    expect(out).toBe('10.96.0.10\n');
    const twoLabels = await dig(
      '+search',
      '+domain=svc.cluster.local',
      '+ndots=5',
      '+short',
      'web.shop',
      'A',
    );
    expect(twoLabels).toBe('10.96.0.10\n');
  });

  it('answers a headless Service with its ready endpoints only', async () => {
    const out = await dig('+short', 'db.shop.svc.cluster.local', 'A');
    expect(out.trim().split('\n').sort()).toEqual(['10.1.0.2', '10.1.0.3']);
  });

  it('says NXDOMAIN for a Service that does not exist, without asking upstream', async () => {
    const out = await dig('nope.shop.svc.cluster.local', 'A');
    expect(status(out)).toBe('NXDOMAIN');
    expect(out).toMatch(/cluster\.local\.\s+\d+\s+IN\s+SOA/);
    expect(upstream.asked).toEqual([]);
  });

  it("forwards names below a known Service (a StatefulSet pod's hostname, SRV) to the cluster's DNS", async () => {
    expect(await dig('+short', 'db-0.db.shop.svc.cluster.local')).toBe('10.1.0.2\n');
    expect(status(await dig('_http._tcp.web.shop.svc.cluster.local', 'SRV'))).toBe('NOERROR');
    expect(upstream.asked).toEqual([
      'db-0.db.shop.svc.cluster.local/A/udp',
      '_http._tcp.web.shop.svc.cluster.local/SRV/udp',
    ]);
    // Below an unknown name (what a search path makes of a full name) is still NXDOMAIN, locally.
    expect(status(await dig('web.shop.svc.cluster.local.shop.svc.cluster.local'))).toBe('NXDOMAIN');
    upstream.asked.length = 0;
  });

  it('answers a type it does not make (MX, TXT) for a Service name with an empty NOERROR', async () => {
    for (const type of ['MX', 'TXT']) {
      const out = await dig('web.shop.svc.cluster.local', type);
      expect(status(out)).toBe('NOERROR');
      expect(out).toContain('ANSWER: 0');
    }
  });

  it('follows the state: a Service created later answers, a deleted one is NXDOMAIN', async () => {
    state.upsert(translated(service('late', ['10.96.0.20'])));
    expect(await dig('+short', 'late.shop.svc.cluster.local')).toBe('10.96.0.20\n');
    state.remove({ kind: 'Service', namespace: 'shop', name: 'late' });
    expect(status(await dig('late.shop.svc.cluster.local'))).toBe('NXDOMAIN');
  });
});

describe('DNS proxy: forwarding and the cache', () => {
  it('forwards other names upstream and answers again from its cache with a TTL that counts down', async () => {
    const first = await dig('ext.example.test', 'A');
    expect(status(first)).toBe('NOERROR');
    expect(answers(first)[0]).toEqual(['ext.example.test.', '120', 'IN', 'A', '192.0.2.10']);
    const second = await dig('EXT.example.test', 'A');
    expect(answers(second)[0]?.[4]).toBe('192.0.2.10');
    expect(Number(answers(second)[0]?.[1])).toBeLessThanOrEqual(120);
    expect(upstream.asked.filter((q) => q.startsWith('ext.example.test'))).toEqual([
      'ext.example.test/A/udp',
    ]);
  });

  it('caches NXDOMAIN from upstream for the SOA minimum', async () => {
    expect(status(await dig('gone.example.test'))).toBe('NXDOMAIN');
    expect(status(await dig('gone.example.test'))).toBe('NXDOMAIN');
    expect(upstream.asked.filter((q) => q.startsWith('gone.'))).toHaveLength(1);
  });

  it('gets a large answer over TCP when upstream truncates, and sets TC for a UDP client that cannot take it', async () => {
    const truncated = await dig('+notcp', '+ignore', '+noedns', 'big.example.test', 'A');
    expect(truncated).toMatch(/flags: qr tc rd ra/);
    expect(truncated).toContain('ANSWER: 0');
    expect(upstream.asked.filter((q) => q.startsWith('big.'))).toEqual([
      'big.example.test/A/udp',
      'big.example.test/A/tcp',
    ]);
    const overTcp = await dig('+tcp', 'big.example.test', 'A');
    expect(answers(overTcp)).toHaveLength(60);
    // dig's default: UDP, TC, retry over TCP by itself.
    const auto = await dig('big.example.test', 'A');
    expect(answers(auto)).toHaveLength(60);
    expect(auto).not.toMatch(/flags: qr tc/);
  });

  it('asks upstream once for a name many clients want at the same moment', async () => {
    const outs = await Promise.all(Array.from({ length: 5 }, () => dig('+short', 'slow.example.test')));
    expect(outs).toEqual(Array(5).fill('192.0.2.20\n'));
    expect(upstream.asked.filter((q) => q.startsWith('slow.'))).toEqual(['slow.example.test/A/udp']);
  });

  it('answers SERVFAIL at once, without asking, when its upstream questions are at their bound', async () => {
    const bounded = createDnsProxy({
      state,
      host: '127.0.0.1',
      port: 0,
      upstreams: [{ ip: '127.0.0.1', port: upstream.port }],
      upstreamTimeoutMs: 1000,
      maxUpstreamInflight: 1,
    });
    const port = await bounded.start();
    try {
      const ask = (name: string) =>
        run('dig', ['-p', String(port), '@127.0.0.1', '+tries=1', '+time=3', name]).then((r) => r.stdout);
      const hanging = ask('silent.example.test');
      // Once the first question is outstanding upstream, a second name is refused without asking.
      while (bounded.findDebugView().upstreamInflight === 0) await new Promise((r) => setTimeout(r, 10));
      expect(status(await ask('other.example.test'))).toBe('SERVFAIL');
      expect(upstream.asked.some((q) => q.startsWith('other.'))).toBe(false);
      expect(status(await hanging)).toBe('SERVFAIL');
    } finally {
      await bounded.close();
    }
  });

  it('answers SERVFAIL when the upstream resolver does not answer', async () => {
    expect(status(await dig('silent.example.test'))).toBe('SERVFAIL');
  });
});

describe('DNS proxy: hostile input', () => {
  const udpExchange = (msg: Buffer): Promise<Buffer | undefined> =>
    new Promise((resolve) => {
      const s = dgram.createSocket('udp4');
      const timer = setTimeout(() => {
        s.close();
        resolve(undefined);
      }, 500);
      s.on('message', (m) => {
        clearTimeout(timer);
        s.close();
        resolve(m);
      });
      s.send(msg, proxy.port, '127.0.0.1');
    });

  it('drops garbage, says FORMERR to a malformed query, and keeps answering others', async () => {
    expect(await udpExchange(Buffer.from('hello'))).toBeUndefined();
    const broken = Buffer.from(
      packet.encode({ id: 7, type: 'query', questions: [{ type: 'A', name: 'x.example.test' }] }),
    );
    const cut = broken.subarray(0, broken.length - 3);
    const r = await udpExchange(cut);
    expect(r?.readUInt16BE(0)).toBe(7);
    expect((r?.readUInt16BE(2) ?? 0) & 0xf).toBe(1); // FORMERR
    const two = packet.encode({
      id: 8,
      type: 'query',
      questions: [
        { type: 'A', name: 'a.example.test' },
        { type: 'A', name: 'b.example.test' },
      ],
    });
    expect(((await udpExchange(two))?.readUInt16BE(2) ?? 0) & 0xf).toBe(1);
    expect(await dig('+short', 'web.shop.svc.cluster.local')).toBe('10.96.0.10\n');
  });

  it('keeps serving after thousands of corrupted queries (seeded mutations of real ones)', async () => {
    let seed = 0x2545f491;
    const rand = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const bases = [
      packet.encode({ id: 1, type: 'query', questions: [{ type: 'A', name: 'web.shop.svc.cluster.local' }] }),
      packet.encode({
        id: 2,
        type: 'query',
        questions: [{ type: 'TXT', name: 'ext.example.test' }],
        additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096 } as Answer],
      }),
    ];
    const s = dgram.createSocket('udp4');
    for (let i = 0; i < 3000; i++) {
      const m = Buffer.from(bases[i % 2]!);
      for (let k = 0; k <= rand(6); k++) m[rand(m.length)] = rand(256);
      const cut = rand(4) === 0 ? m.subarray(0, rand(m.length)) : m;
      s.send(cut, proxy.port, '127.0.0.1');
      if (i % 200 === 0) await new Promise((r) => setImmediate(r));
    }
    s.close();
    expect(await dig('+short', 'web.shop.svc.cluster.local')).toBe('10.96.0.10\n');
    expect(await dig('+tcp', '+short', 'web.shop.svc.cluster.local')).toBe('10.96.0.10\n');
  });

  it('never answers a response (no ping-pong between two servers)', async () => {
    const resp = packet.encode({
      id: 9,
      type: 'response',
      questions: [{ type: 'A', name: 'ext.example.test' }],
    });
    expect(await udpExchange(resp)).toBeUndefined();
  });

  it('closes a TCP client that sends a frame too short to be DNS, a response, or stalls mid-message', async () => {
    const closed = (s: net.Socket) => new Promise<void>((r) => s.on('close', () => r()));
    const bad = net.connect(proxy.port, '127.0.0.1');
    bad.on('error', () => {});
    const badClosed = closed(bad);
    bad.write(Buffer.from([0, 3, 1, 2, 3]));
    await badClosed;
    const responder = net.connect(proxy.port, '127.0.0.1');
    responder.on('error', () => {});
    const responderClosed = closed(responder);
    responder.write(
      packet.streamEncode({ id: 5, type: 'response', questions: [{ type: 'A', name: 'x.example.test' }] }),
    );
    await responderClosed;
    const slow = net.connect(proxy.port, '127.0.0.1');
    slow.on('error', () => {});
    const slowClosed = closed(slow);
    slow.write(Buffer.from([0x01, 0x00, 0xaa])); // announces 256 bytes, sends one
    await slowClosed;
    expect(await dig('+tcp', '+short', 'web.shop.svc.cluster.local')).toBe('10.96.0.10\n');
    expect(await registry.getSingleMetricAsString('hypha_dns_dropped_total')).toMatch(
      /reason="malformed"} [1-9]/,
    );
  });

  it('refuses TCP connections beyond its limit and serves again once they close', async () => {
    const limited = createDnsProxy({
      state,
      host: '127.0.0.1',
      port: 0,
      upstreams: [],
      tcp: { maxConnections: 2 },
    });
    const port = await limited.start();
    try {
      const open = () =>
        new Promise<net.Socket>((resolve) => {
          const s = net.connect(port, '127.0.0.1', () => resolve(s));
          s.on('error', () => {});
        });
      const held = [await open(), await open()];
      while (limited.findDebugView().tcpConnections < 2) await new Promise((r) => setTimeout(r, 10));
      const third = await open();
      await new Promise<void>((r) => third.on('close', () => r()));
      for (const s of held) s.destroy();
      while (limited.findDebugView().tcpConnections > 0) await new Promise((r) => setTimeout(r, 10));
      const { stdout } = await run('dig', [
        '-p',
        String(port),
        '@127.0.0.1',
        '+tcp',
        '+short',
        'web.shop.svc.cluster.local',
      ]);
      expect(stdout).toBe('10.96.0.10\n');
    } finally {
      await limited.close();
    }
  });

  it('answers several pipelined TCP queries on one connection', async () => {
    const s = net.connect(proxy.port, '127.0.0.1');
    const got: number[] = [];
    await new Promise<void>((resolve) => {
      let buf = Buffer.alloc(0);
      s.on('data', (c) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          got.push(packet.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))).id ?? -1);
          buf = buf.subarray(2 + buf.readUInt16BE(0));
        }
        if (got.length === 3) resolve();
      });
      for (const id of [1, 2, 3])
        s.write(
          packet.streamEncode({
            id,
            type: 'query',
            questions: [{ type: 'A', name: 'web.shop.svc.cluster.local' }],
          }),
        );
    });
    s.destroy();
    expect(got.sort()).toEqual([1, 2, 3]);
  });
});

describe('DNS proxy: what an operator sees', () => {
  it('counts requests by type, source and rcode, and times upstream', async () => {
    const text = await registry.metrics();
    expect(text).toMatch(/hypha_dns_requests_total\{type="A",source="mesh",rcode="NOERROR"\} [1-9]/);
    expect(text).toMatch(/hypha_dns_requests_total\{type="A",source="cache",rcode="NOERROR"\} [1-9]/);
    expect(text).toMatch(/hypha_dns_requests_total\{type="A",source="upstream",rcode="NXDOMAIN"\} 1/);
    expect(text).toMatch(/hypha_dns_requests_total\{type="A",source="mesh",rcode="NXDOMAIN"\} [1-9]/);
    expect(text).toMatch(/hypha_dns_upstream_duration_seconds_count\{transport="tcp"\} 1/);
  });

  it('shows the index, the cache and recent queries in its debug view', () => {
    const v = proxy.findDebugView();
    expect(v.index.names).toBe(2);
    expect(v.cache.entries).toBeGreaterThanOrEqual(3);
    expect(v.recent[0]?.name).toBe('web.shop.svc.cluster.local');
    expect(v.upstreams).toEqual([`127.0.0.1:${upstream.port}`]);
  });
});
