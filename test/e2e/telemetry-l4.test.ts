import { fileURLToPath } from 'node:url';
import { type ClusterPod, type DemoResult, eventually, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
const BYTES_PORT = 9000;
const ECHO_PORT = 9100;
const SERVER_SENDS = 700_001;
const CLIENT_SENDS = 300_007;
const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';
const ECHO_ID = 'spiffe://cluster.local/ns/demo/sa/echo';

let demo: DemoResult;

beforeAll(async () => {
  demo = await startDemo();
  await Promise.all([
    demo.mesh.cluster.startApp(demo.pods.echoV2, 'bytes', [
      'serve',
      '--port',
      String(BYTES_PORT),
      '--send',
      String(SERVER_SENDS),
    ]),
    demo.mesh.cluster.startApp(demo.pods.echoV2, 'tcp-echo', ['--port', String(ECHO_PORT)]),
  ]);
}, 120_000);

afterAll(async () => {
  await demo?.mesh.stop();
});

// ---- a strict reader of the Prometheus text exposition format (0.0.4) ----

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** Parses the exposition, throwing on anything a Prometheus server would reject. */
function parseExposition(text: string): Sample[] {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const seen = new Set<string>();
  const closedFamilies = new Set<string>();
  let current: string | undefined;
  const samples: Sample[] = [];
  const familyOf = (name: string) => {
    for (const suffix of ['_bucket', '_sum', '_count', '']) {
      const base = suffix ? name.slice(0, -suffix.length) : name;
      if (name.endsWith(suffix) && types.has(base)) return base;
    }
    return name;
  };
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${line.slice(0, 120)}`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (m === null) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`bad metric name in ${where}`);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`bad type in ${where}`);
        if (types.has(name)) throw new Error(`second TYPE for ${name}: ${where}`);
        if (closedFamilies.has(name)) throw new Error(`TYPE after samples of ${name}: ${where}`);
        types.set(name, rest);
      } else {
        if (helps.has(name)) throw new Error(`second HELP for ${name}: ${where}`);
        if (/\\(?![\\n])/.test(rest)) throw new Error(`bad escape in HELP: ${where}`);
        helps.add(name);
      }
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)( -?\d+)?$/.exec(line);
    if (m === null) throw new Error(`not a sample: ${where}`);
    const name = m[1]!;
    const labels: Record<string, string> = {};
    if (m[3] !== undefined && m[3] !== '') {
      let rest = m[3];
      while (rest.length > 0) {
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/.exec(rest);
        if (lm === null) throw new Error(`bad label set in ${where}`);
        if (!LABEL_NAME.test(lm[1]!) || lm[1]!.startsWith('__'))
          throw new Error(`bad label name in ${where}`);
        if (lm[1]! in labels) throw new Error(`duplicate label ${lm[1]} in ${where}`);
        labels[lm[1]!] = lm[2]!.replace(/\\(["\\n])/g, (_s, c: string) => (c === 'n' ? '\n' : c));
        rest = rest.slice(lm[0].length);
      }
    }
    const raw = m[4]!;
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : raw === 'NaN' ? NaN : Number(raw);
    if (raw !== 'NaN' && Number.isNaN(value)) throw new Error(`bad value in ${where}`);
    const family = familyOf(name);
    if (family !== current) {
      if (closedFamilies.has(family)) throw new Error(`samples of ${family} are not contiguous: ${where}`);
      if (current !== undefined) closedFamilies.add(current);
      current = family;
    }
    if (types.get(family) === 'counter' && (value < 0 || !name.endsWith('_total'))) {
      throw new Error(`counter sample must be a non-negative *_total: ${where}`);
    }
    const key = `${name}{${Object.entries(labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
      .join(',')}}`;
    if (seen.has(key)) throw new Error(`duplicate series ${key}`);
    seen.add(key);
    samples.push({ name, labels, value });
  });
  return samples;
}

async function scrape(node: string): Promise<Sample[]> {
  return parseExposition(await demo.mesh.fetchInNode(node, 'http://127.0.0.1:15020/metrics'));
}

/** Sum of a metric over the series whose labels include `match`. */
function sum(samples: Sample[], name: string, match: Record<string, string>): number {
  return samples
    .filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

const fromClientToEchoV2 = {
  source_workload: 'client',
  source_workload_namespace: 'demo',
  source_principal: CLIENT_ID,
  destination_workload: 'echo-v2', // the pod has no controller: it is its own workload
  destination_workload_namespace: 'demo',
  destination_principal: ECHO_ID,
  destination_version: 'v2',
  destination_app: 'echo',
  request_protocol: 'tcp',
  connection_security_policy: 'mutual_tls',
};

describe('L4 telemetry on the namespace cluster', () => {
  it('counts connections and bytes exactly, with Istio labels from both reporters, and logs each connection', async () => {
    const { mesh, pods } = demo;
    const dst = { ...fromClientToEchoV2, reporter: 'destination', response_flags: '-' };
    const src = { ...fromClientToEchoV2, reporter: 'source', response_flags: '-' };
    const [b0, a0] = await Promise.all([scrape('node-b'), scrape('node-a')]);
    const logsBefore = mesh.accessLogs().length;

    for (let i = 0; i < 2; i++) {
      const r = (await mesh.cluster.runApp(pods.client, 'bytes', [
        'send',
        '--target',
        `${pods.echoV2.ip}:${BYTES_PORT}`,
        '--bytes',
        String(CLIENT_SENDS),
      ])) as { sent: number; received: number };
      expect([r.sent, r.received]).toEqual([CLIENT_SENDS, SERVER_SENDS]);
    }
    // Both agents finish their side asynchronously: wait for the access lines before scraping.
    const lines = await eventually(
      async () =>
        mesh
          .accessLogs()
          .slice(logsBefore)
          .filter((e) => e.dst === `${pods.echoV2.ip}:${BYTES_PORT}`),
      (l) => l.length >= 4,
    );
    const [b1, a1] = await Promise.all([scrape('node-b'), scrape('node-a')]);
    for (const [before, after, labels] of [
      [b0, b1, dst],
      [a0, a1, src],
    ] as const) {
      const delta = (name: string) => sum(after, name, labels) - sum(before, name, labels);
      expect(delta('istio_tcp_connections_opened_total')).toBe(2);
      expect(delta('istio_tcp_connections_closed_total')).toBe(2);
      // Istio's names: received = client → server (the request side), sent = server → client.
      expect(delta('istio_tcp_received_bytes_total')).toBe(2 * CLIENT_SENDS);
      expect(delta('istio_tcp_sent_bytes_total')).toBe(2 * SERVER_SENDS);
      expect(delta('istio_tcp_connections_failed_total')).toBe(0);
    }

    // One access line per connection on each side, with the fields an operator filters on.
    const inbound = lines.filter((e) => e.direction === 'inbound');
    const outbound = lines.filter((e) => e.direction === 'outbound');
    expect(inbound).toHaveLength(2);
    expect(outbound).toHaveLength(2);
    for (const e of [...inbound, ...outbound]) {
      expect(e).toMatchObject({
        type: 'access',
        src: expect.stringMatching(new RegExp(`^${pods.client.ip.replace(/\./g, '\\.')}:\\d+$`)),
        dst: `${pods.echoV2.ip}:${BYTES_PORT}`,
        src_workload: 'client',
        src_namespace: 'demo',
        src_identity: CLIENT_ID,
        dst_workload: 'echo-v2',
        dst_namespace: 'demo',
        mtls: true,
        bytes_sent: CLIENT_SENDS,
        bytes_received: SERVER_SENDS,
        response_flags: '-',
      });
      expect(typeof e.duration_ms).toBe('number');
      expect(e.error).toBeUndefined();
    }
    expect(inbound.every((e) => e.dst_identity === ECHO_ID && e.node === 'node-b')).toBe(true);
    expect(outbound.every((e) => e.node === 'node-a')).toBe(true);
  });

  it('byte counters grow while a long connection runs, before it closes', async () => {
    const { mesh, pods } = demo;
    const labels = { ...fromClientToEchoV2, reporter: 'destination', response_flags: '-' };
    const b0 = await scrape('node-b');
    const held = holdConnection(pods.client, pods.echoV2);
    try {
      expect(await held.exchange(40_000)).toBe(40_000);
      const b1 = await scrape('node-b');
      const delta = (after: Sample[], name: string) => sum(after, name, labels) - sum(b0, name, labels);
      expect(delta(b1, 'istio_tcp_connections_opened_total')).toBe(1);
      expect(delta(b1, 'istio_tcp_connections_closed_total')).toBe(0);
      expect(delta(b1, 'istio_tcp_received_bytes_total')).toBe(40_000);
      expect(delta(b1, 'istio_tcp_sent_bytes_total')).toBe(40_000);

      expect(await held.exchange(25_000)).toBe(65_000);
      const b2 = await scrape('node-b');
      expect(delta(b2, 'istio_tcp_received_bytes_total')).toBe(65_000);
      expect(delta(b2, 'istio_tcp_sent_bytes_total')).toBe(65_000);
      expect(delta(b2, 'istio_tcp_connections_closed_total')).toBe(0);

      // The live table and `hypha status` show it too, with identities and bytes.
      const live = JSON.parse(await mesh.fetchInNode('node-b', 'http://127.0.0.1:15000/connections')) as {
        direction: string;
        source: { identity?: string };
        destination: { identity?: string; workload?: string };
        bytesSent: number;
        bytesReceived: number;
      }[];
      expect(live).toContainEqual(
        expect.objectContaining({
          direction: 'inbound',
          source: expect.objectContaining({ identity: CLIENT_ID }),
          destination: expect.objectContaining({ identity: ECHO_ID, workload: 'demo/echo-v2' }),
          bytesSent: 65_000,
          bytesReceived: 65_000,
        }),
      );
      const status = await mesh.cluster.exec(mesh.cluster.node('node-b').netns, process.execPath, [
        BIN,
        'status',
      ]);
      expect(status.stdout).toMatch(/^Node: +node-b$/m);
      expect(status.stdout).toMatch(/Capture: +installed/);
      expect(status.stdout).toMatch(
        /demo\/echo-v2 .*spiffe:\/\/cluster\.local\/ns\/demo\/sa\/echo .* ready +in \d+h/,
      );
      expect(status.stdout).toMatch(/inbound +demo\/client .*→ +demo\/echo-v2 .*63\.5 KiB +63\.5 KiB/);

      held.end();
      expect((await held.waitClosed()).total).toBe(65_000);
      const b3 = await eventually(
        () => scrape('node-b'),
        (s) => delta(s, 'istio_tcp_connections_closed_total') === 1,
      );
      expect(delta(b3, 'istio_tcp_received_bytes_total')).toBe(65_000);
      expect(delta(b3, 'istio_tcp_sent_bytes_total')).toBe(65_000);
    } finally {
      held.kill();
    }
  });

  it('labels service traffic with destination_service, and exposes agent health', async () => {
    const { mesh, pods, vip } = demo;
    const r = (await mesh.cluster.runApp(pods.client, 'load-client', [
      '--target',
      `${vip}:80`,
      '--connections',
      '4',
      '--requests',
      '1',
    ])) as { ok: number; failed: number };
    expect(r.ok).toBe(4);
    const a = await eventually(
      () => scrape('node-a'),
      (s) =>
        sum(s, 'istio_tcp_connections_closed_total', {
          destination_service: 'echo.demo.svc.cluster.local',
        }) === 4,
    );
    // node-a reports the connections that crossed to echo-v2 as the source, and the ones that stayed
    // on node-a (echo-v1, one tracked connection) as the destination: together, all four.
    expect(
      sum(a, 'istio_tcp_connections_opened_total', {
        source_principal: CLIENT_ID,
        destination_service: 'echo.demo.svc.cluster.local',
        destination_service_name: 'echo',
        destination_service_namespace: 'demo',
      }),
    ).toBe(4);
    // Agent health: certificates and their expiry, config objects, capture state, process metrics.
    expect(sum(a, 'hypha_agent_certificates', {})).toBe(2); // client and echo (echo-v1) on node-a
    const expiry = a.filter((s) => s.name === 'hypha_agent_certificate_expiry_seconds');
    expect(expiry.map((s) => s.labels.identity).sort()).toEqual([CLIENT_ID, ECHO_ID]);
    for (const s of expiry) expect(s.value).toBeGreaterThan(3600);
    expect(sum(a, 'hypha_agent_config_objects', { kind: 'workload' })).toBe(4);
    expect(sum(a, 'hypha_agent_capture_active', {})).toBe(1);
    expect(sum(a, 'hypha_agent_captured_pods', {})).toBe(2);
    expect(a.some((s) => s.name === 'process_resident_memory_bytes' && s.value > 0)).toBe(true);
  });

  it('the exposition reader used here rejects what a Prometheus server rejects', () => {
    const ok = '# HELP a_total x\n# TYPE a_total counter\na_total{l="v\\"q"} 1\n';
    expect(parseExposition(ok)).toEqual([{ name: 'a_total', labels: { l: 'v"q' }, value: 1 }]);
    for (const bad of [
      'a_total{l="v"} 1', // no trailing newline
      'a_total{l="v} 1\n', // unterminated label value
      'a_total{l="v",l="w"} 1\n', // duplicate label
      '# TYPE a_total counter\na_total -1\n', // negative counter
      'a_total 1\na_total 2\n', // duplicate series
      'a_total one\n', // not a number
      '# TYPE a_total counter\na_total 1\nb 1\na_total{x="y"} 1\n', // family not contiguous
      '1a 1\n', // bad name
    ]) {
      expect(() => parseExposition(bad), bad).toThrow();
    }
  });

  it('/config_dump shows workloads, policies and certificates but no private key material', async () => {
    for (const node of ['node-a', 'node-b']) {
      const text = await demo.mesh.fetchInNode(node, 'http://127.0.0.1:15000/config_dump');
      const dump = JSON.parse(text) as {
        node: string;
        workloads: unknown[];
        certificates: { identity: string }[];
      };
      expect(dump.node).toBe(node);
      expect(dump.workloads).toHaveLength(4);
      expect(dump.certificates.map((c) => c.identity)).toContain(ECHO_ID);
      expect(text).not.toMatch(/PRIVATE KEY/);
      expect(text).not.toMatch(/keyPem|privateKey|"key"/i);
      expect(text).not.toMatch(/-----BEGIN/);
    }
  });
});

/** A TCP connection from a pod to the echo port of another, held open (see TestCluster.holdTcpConnection). */
const holdConnection = (from: ClusterPod, to: ClusterPod) =>
  demo.mesh.cluster.holdTcpConnection(from.netns, to.ip, ECHO_PORT);
