// UDP with the mesh on (issue 12, docs/capture.md "UDP"): the capture rules match TCP, and DNS
// (port 53, for the agent's DNS proxy, on by default: issue 16), so other UDP between mesh pods
// passes through untouched, as in Istio ambient: no agent on the path, no mTLS, no policy, no
// access log. A resolver (dnsmasq on port 5353, i.e. UDP that is not DNS to the mesh) runs in one
// mesh pod, `dig -p 5353` asks it from another mesh pod, on another node and on the same node; TCP
// between the same pods still goes through the agents over mTLS, so the test fails if capture were
// simply off. Port 53 from a mesh pod, whatever address it asks, is answered by its agent.
import { type ChildProcess, execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type ClusterPod, type DemoResult, eventually, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const execFileAsync = promisify(execFile);
const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
const INSTALL_HINT = 'install them with: bash scripts/install-system-packages.sh test';
const ZONE = 'svc.hypha.test';
const ECHO_PORT = 9100;
/** UDP the mesh does not capture: a resolver on another port than 53. */
const UDP_PORT = 5353;
/** The address the resolvers answer for every name under ZONE (never routed anywhere). */
const ANSWER = { 'echo-v1': '192.0.2.11', 'echo-v2': '192.0.2.12' } as const;

let demo: DemoResult;
let tools: { dnsmasq: string; dig: string };
const resolvers = new Map<string, Resolver>();

interface Resolver {
  process: ChildProcess;
  /** Everything dnsmasq logged (queries included), for assertions on what it saw. */
  log: () => string;
}

/** The absolute path of a system tool (on PATH or in the sbin directories), or undefined. */
function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  return dirs
    .filter(Boolean)
    .map((d) => join(d, name))
    .find((p) => existsSync(p));
}

function requireTools(): { dnsmasq: string; dig: string } {
  const dnsmasq = findTool('dnsmasq');
  const dig = findTool('dig');
  const missing = [
    ...(dnsmasq ? [] : ['dnsmasq (package dnsmasq-base)']),
    ...(dig ? [] : ['dig (package dnsutils)']),
  ];
  if (dnsmasq === undefined || dig === undefined) {
    throw new Error(`the UDP test needs ${missing.join(' and ')}; ${INSTALL_HINT}`);
  }
  // Present but broken (a half-installed package) gets the same hint.
  for (const [tool, args] of [
    [dnsmasq, ['--version']],
    [dig, ['-v']],
  ] as const) {
    try {
      execFileSync(tool, args, { stdio: 'pipe' });
    } catch (err) {
      throw new Error(`\`${tool} ${args.join(' ')}\` failed (${(err as Error).message}); ${INSTALL_HINT}`);
    }
  }
  return { dnsmasq, dig };
}

/**
 * dnsmasq inside the pod's namespace (never the machine's), bound to the pod IP on UDP_PORT,
 * answering every name under ZONE with `answer` and nothing else (no upstream, no /etc/hosts, no
 * config file, no pid file). It runs in the foreground, so the cluster kills it on teardown.
 */
function startResolver(pod: ClusterPod, answer: string): Promise<Resolver> {
  const child = demo.mesh.cluster.spawn(
    pod.netns,
    tools.dnsmasq,
    [
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--pid-file=',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${pod.ip}`,
      `--port=${UDP_PORT}`,
      `--address=/${ZONE}/${answer}`,
      '--log-queries',
      '--log-facility=-',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  const collect = (d: Buffer) => {
    log += d.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail('did not start within 10 s'), 10_000);
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`dnsmasq in ${pod.namespace}/${pod.name} ${why}: ${log.trim()}`));
    };
    child.once('error', (err) => fail(`failed to start (${err.message}; ${INSTALL_HINT})`));
    child.once('exit', (code, signal) => fail(`exited (code ${code}, signal ${signal})`));
    const ready = () => {
      // dnsmasq binds its sockets before it logs "started".
      if (!/started, version/.test(log)) return;
      clearTimeout(timer);
      child.stderr?.off('data', ready);
      child.stdout?.off('data', ready);
      child.removeAllListeners('exit');
      resolve({ process: child, log: () => log });
    };
    child.stderr?.on('data', ready);
    child.stdout?.on('data', ready);
  });
}

/** `dig @server name` over UDP from inside a pod; the answer (+short) or why there was none. */
async function dig(from: ClusterPod, server: string, name: string, port = UDP_PORT): Promise<string> {
  const args = [`@${server}`, '-p', String(port), '+notcp', name, 'A', '+short', '+tries=2', '+time=3'];
  try {
    const r = await execFileAsync('ip', ['netns', 'exec', from.netns, tools.dig, ...args]);
    return r.stdout.trim();
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    return `no answer from dig ${args.join(' ')}: ${`${e.stdout ?? ''} ${e.stderr ?? ''}`.trim() || e.message}`;
  }
}

const uniqueName = () => `q${randomBytes(6).toString('hex')}.${ZONE}`;

beforeAll(async () => {
  tools = requireTools();
  demo = await startDemo();
  const { cluster } = demo.mesh;
  const { echoV1, echoV2 } = demo.pods;
  await Promise.all([
    cluster.startApp(echoV1, 'tcp-echo', ['--port', String(ECHO_PORT)]),
    cluster.startApp(echoV2, 'tcp-echo', ['--port', String(ECHO_PORT)]),
  ]);
  resolvers.set('echo-v1', await startResolver(echoV1, ANSWER['echo-v1']));
  resolvers.set('echo-v2', await startResolver(echoV2, ANSWER['echo-v2']));
}, 120_000);

afterAll(async () => {
  for (const r of resolvers.values()) r.process.kill('SIGKILL');
  await demo?.mesh.stop();
});

describe('UDP between mesh pods with the mesh on', () => {
  it('a query over UDP reaches a resolver pod on another node, untouched: plain on the wire, from the client pod IP', async () => {
    const { mesh, pods } = demo;
    const name = uniqueName();
    const wire = await mesh.cluster.startFabricCapture(`udp port ${UDP_PORT}`);
    const answer = await dig(pods.client, pods.echoV2.ip, name);
    const pcap = await wire.stop();
    expect(answer).toBe(ANSWER['echo-v2']);
    // The resolver saw the query from the client's own pod IP (no proxy, no NAT on the way).
    expect(resolvers.get('echo-v2')!.log()).toMatch(
      new RegExp(
        `query\\[A\\] ${name.replace(/\./g, '\\.')} from ${pods.client.ip.replace(/\./g, '\\.')}\\b`,
      ),
    );
    // Not encrypted: the first label of the name (DNS wire format is length-prefixed labels) is
    // readable between the nodes, and so is the answer's address.
    const label = name.split('.')[0]!;
    expect(pcap.includes(Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]))).toBe(true);
    expect(pcap.includes(Buffer.from(ANSWER['echo-v2'].split('.').map(Number)))).toBe(true);
  }, 60_000);

  it('a query over UDP reaches a resolver pod on the same node', async () => {
    const { pods } = demo;
    const name = uniqueName();
    expect(await dig(pods.client, pods.echoV1.ip, name)).toBe(ANSWER['echo-v1']);
    expect(resolvers.get('echo-v1')!.log()).toMatch(
      new RegExp(
        `query\\[A\\] ${name.replace(/\./g, '\\.')} from ${pods.client.ip.replace(/\./g, '\\.')}\\b`,
      ),
    );
  }, 60_000);

  it('the agents never see the UDP traffic, while TCP between the same pods goes through them over mTLS', async () => {
    const { mesh, pods } = demo;
    const clientId = `spiffe://${mesh.trustDomain}/ns/demo/sa/client`;
    // UDP first, then TCP: by the time the agents logged the TCP connection they would have logged
    // anything they did with the DNS queries before it.
    expect(await dig(pods.client, pods.echoV2.ip, uniqueName())).toBe(ANSWER['echo-v2']);
    expect(await dig(pods.client, pods.echoV1.ip, uniqueName())).toBe(ANSWER['echo-v1']);
    for (const target of [pods.echoV2, pods.echoV1]) {
      expect(await mesh.cluster.tcpRoundTrip(pods.client.netns, target.ip, ECHO_PORT)).toBe(true);
    }
    const inbound = (ip: string) => (e: Record<string, unknown>) =>
      e.direction === 'inbound' && e.src_identity === clientId && e.dst === `${ip}:${ECHO_PORT}`;
    const logs = await eventually(
      async () => mesh.accessLogs(),
      (all) => [pods.echoV2, pods.echoV1].every((p) => all.some(inbound(p.ip))),
    );
    for (const target of [pods.echoV2, pods.echoV1]) {
      const tcp = logs.filter(inbound(target.ip));
      expect(tcp.length, JSON.stringify(logs)).toBeGreaterThan(0);
      expect(tcp.every((e) => e.mtls === true)).toBe(true);
    }
    // No agent logged, or holds, anything for the UDP port (or from the resolvers' addresses).
    const port = `:${UDP_PORT}`;
    const udp = logs.filter((e) => String(e.dst).endsWith(port) || String(e.src).endsWith(port));
    expect(udp).toEqual([]);
    for (const node of ['node-a', 'node-b']) {
      const live = JSON.parse(await mesh.fetchInNode(node, 'http://127.0.0.1:15000/connections')) as {
        destination: { address: string };
      }[];
      expect(live.filter((c) => c.destination.address.endsWith(port))).toEqual([]);
    }
  }, 60_000);

  it('DNS (port 53) from a mesh pod is the exception: its agent answers, whatever address it asked', async () => {
    const { pods, vip } = demo;
    // Nothing listens on port 53 at the echo-v2 pod; the client's agent answers the Service name.
    expect(await dig(pods.client, pods.echoV2.ip, 'echo.demo.svc.cluster.local', 53)).toBe(vip);
    expect(resolvers.get('echo-v2')!.log()).not.toContain('echo.demo.svc.cluster.local');
  }, 30_000);

  it('hypha status on a node says UDP is not captured but DNS is, next to the installed TCP capture', async () => {
    const { mesh } = demo;
    const status = await mesh.cluster.exec(mesh.cluster.node('node-b').netns, process.execPath, [
      BIN,
      'status',
    ]);
    expect(status.stdout).toMatch(/^Capture: +installed/m);
    expect(status.stdout).toMatch(
      /^UDP: +not captured \(passes through without mTLS or policy\), except DNS: port 53 from mesh pods goes to the agent's DNS proxy on :15053$/m,
    );
    expect(status.stdout).toMatch(
      /^Egress: +ALLOW_ANY for destinations outside the registry; 0 ServiceEntries$/m,
    );
  }, 30_000);
});
