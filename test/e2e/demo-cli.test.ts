// `hypha demo` as a user runs it: `--check` passes every check including the agent upgrade under
// load and the L7 part (the waypoint's 90/10 split, the 403 on /admin named by the waypoint's access
// log, its request metrics) and the dashboard answering, and the interactive demo shows the same,
// serves the dashboard at the URL it prints, says when one of its processes exits, then removes
// everything (dashboard included) on Ctrl-C. North-south (issue 16 part 5): an outside client
// reaches echo over HTTPS through the ingress gateway, and a mesh app calls an external API by name
// in plain HTTP (ServiceEntry, the agent's DNS proxy) which the waypoint calls over HTTPS (TLS
// origination); the curl commands the demo prints for both work.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HYPHA_BIN, runHypha } from '../../agent/test/run-hypha.js';
import { runCommand } from '../src/cluster/run.js';
import { checkSplit } from '../src/mesh/demo-l7.js';

const netnsList = async () => (await runCommand('ip', ['netns', 'list'])).stdout;

describe('hypha demo', () => {
  it('--check: every check passes, including an agent upgrade under load with nothing failed', async () => {
    const r = await runHypha(['demo', '--check'], { timeoutMs: 150_000 });
    expect(r.stdout).toMatch(
      /PASS {2}agent upgrade on node-a: \d+ connections during the upgrade, 0 failed \(slowest \d+\.\d\d s\); 20 of 20 live streams kept \(sha256-checked\)/,
    );
    expectL7Lines(r.stdout);
    expectEdgeLines(r.stdout);
    // The dashboard was served and answered; with Debian's prometheus installed (CI), it read it.
    expect(r.stdout).toMatch(
      /^ {2}dashboard: http:\/\/127\.0\.0\.1:\d+\/ {3}\(service graph, [^\n]*; rates from the Prometheus pod\)$/m,
    );
    expect(r.stdout).toMatch(
      /PASS {2}dashboard answers at http:\/\/127\.0\.0\.1:\d+\/: page, graph, every node ready, Prometheus read\n/,
    );
    expect(r.stdout).toContain('demo check passed');
    expect(r.code).toBe(0);
  }, 180_000);

  it('--check would fail a split that is not 90/10 (the bounds a 400-request run cannot miss by chance)', () => {
    const run = (v1: number, v2: number, failed = 0) => checkSplit({ v1, v2, failed, requests: 400 });
    expect(run(360, 40)).toBe(true);
    expect(run(388, 12)).toBe(true); // 3 %
    expect(run(320, 80)).toBe(true); // 20 %
    expect(run(200, 200)).toBe(false); // 50/50: the route was ignored
    expect(run(400, 0)).toBe(false); // v2 never chosen
    expect(run(389, 11)).toBe(false);
    expect(run(319, 81)).toBe(false);
    expect(run(350, 40, 10)).toBe(false); // failed requests
  });

  it('interactive: an agent that dies is reported with its status; Ctrl-C still removes every namespace', async () => {
    const child = spawn(process.execPath, [HYPHA_BIN, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const waitFor = (re: RegExp, ms: number) =>
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${re} in demo output:\n${out}`)), ms);
        const check = () => {
          const m = out.match(re);
          if (m) {
            clearTimeout(timer);
            child.stdout.off('data', check);
            resolve(m);
          }
        };
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
        });
        child.stdout.on('data', check);
        check();
      });
    try {
      const nodes = await waitFor(/nodes: node-a \(\S+, netns (hyt[0-9a-f]{3})-node-a\)/, 120_000);
      await waitFor(/Press Ctrl-C to stop/, 120_000);
      expectL7Lines(out);
      expect(out).toMatch(/ip netns exec \S+ curl -si http:\/\/\S+\/admin {3}# 403 from the waypoint/);
      expectEdgeLines(out);
      // The printed curl reaches echo through the gateway from this machine, verifying its certificate.
      const viaGateway = out.match(
        /^ {2}curl (--cacert \S+ --resolve echo\.demo\.test:\d+:127\.0\.0\.1 https:\/\/echo\.demo\.test:\d+\/) {3}# from this machine/m,
      );
      expect(viaGateway, out).not.toBeNull();
      const gwArgs = viaGateway![1]!.split(' ');
      const answer = await runCommand('curl', [
        '-sS',
        '--max-time',
        '10',
        ...gwArgs.slice(0, -1),
        `${gwArgs.at(-1)}through-the-gateway`,
      ]);
      expect(JSON.parse(answer.stdout)).toMatchObject({
        pod: expect.stringMatching(/^echo-v[12]$/),
        path: '/through-the-gateway',
      });
      // The printed egress call: a mesh app calls the external API by name in plain HTTP; the
      // waypoint called it over verified HTTPS (TLS origination), and the API says so.
      const egress = out.match(
        /^ {2}ip netns exec (\S+) curl -s (http:\/\/api\.external\.test\S*) {3}# a mesh app/m,
      );
      expect(egress, out).not.toBeNull();
      const api = await runCommand('ip', [
        'netns',
        'exec',
        egress![1]!,
        'curl',
        '-sS',
        '--max-time',
        '10',
        egress![2]!,
      ]);
      expect(JSON.parse(api.stdout)).toMatchObject({
        server: 'external-api',
        sni: 'api.external.test',
        tls: 'TLSv1.3',
      });
      // hypha tap, as printed, shows a request the user sends while the demo runs.
      const tapLine = out.match(/ {2}npx hypha tap ((?:--admin unix:\S+ ?)+) {2}#/);
      expect(tapLine, out).not.toBeNull();
      const tap = spawn(
        process.execPath,
        [
          HYPHA_BIN,
          'tap',
          ...tapLine![1]!.trim().split(/\s+/),
          '--kind',
          'request',
          // The demo's background traffic (the client's, the outside world's) is tapped too.
          '--path',
          '/tapped-by-the-demo',
          '--max',
          '1',
          '-o',
          'json',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let tapOut = '';
      let tapErr = '';
      tap.stdout.on('data', (d: Buffer) => {
        tapOut += d.toString();
      });
      const tapExited = new Promise<number | null>((r) => tap.once('exit', (c) => r(c)));
      await new Promise<void>((resolve) =>
        tap.stderr.on('data', (d: Buffer) => {
          tapErr += d.toString();
          if (/connected to unix:\S+waypoint/.test(tapErr)) resolve();
        }),
      );
      const call = out.match(/ip netns exec (\S+) curl -s (http:\/\/\S+\/) {3}# call the service/)!;
      await runCommand('ip', ['netns', 'exec', call[1]!, 'curl', '-s', `${call[2]}tapped-by-the-demo`]);
      expect(await tapExited, tapErr).toBe(0);
      expect(JSON.parse(tapOut)).toMatchObject({
        kind: 'request',
        path: '/tapped-by-the-demo',
        status: 200,
        source: { identity: 'spiffe://cluster.local/ns/demo/sa/client' },
      });
      // The printed dashboard URL serves the page, and its API sees both nodes ready.
      const dash = out.match(/ {2}dashboard: (http:\/\/127\.0\.0\.1:\d+\/) /)![1]!;
      expect(await (await fetch(dash)).text()).toContain('<div id="app">');
      const health = (await (await fetch(`${dash}api/health`)).json()) as {
        nodes: { node: string; ready: boolean }[];
      };
      expect(health.nodes.map((n) => `${n.node} ${n.ready}`)).toEqual(['node-a true', 'node-b true']);
      expect(out).toContain(`  open ${dash} in a browser on this machine`);
      const prefix = nodes[1] as string;
      // Kill node-b's agent the way a crash would.
      const pids = (await runCommand('ip', ['netns', 'pids', `${prefix}-node-b`])).stdout
        .split('\n')
        .filter(Boolean);
      for (const pid of pids) {
        const cmdline = (await runCommand('cat', [`/proc/${pid}/cmdline`]).catch(() => ({ stdout: '' })))
          .stdout;
        if (cmdline.includes('agent') && cmdline.includes('node-b')) process.kill(Number(pid), 'SIGKILL');
      }
      const said = await waitFor(/! agent node-b \(pid \d+\) exited with signal SIGKILL: [^\n]+/, 10_000);
      expect(said[0]).toContain('capture stays: fail closed');
      const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(out).toContain('stopping ...');
      expect(await netnsList()).not.toContain(prefix);
      // Ctrl-C stopped the dashboard too, and the gateway's local port, and removed the pod's resolv.conf.
      await expect(fetch(dash)).rejects.toThrow();
      await expect(runCommand('curl', ['-sS', '--max-time', '5', ...gwArgs])).rejects.toThrow();
      expect(existsSync(`/etc/netns/${egress![1]!}`)).toBe(false);
    } finally {
      child.kill('SIGKILL');
    }
  }, 180_000);
});

/** The L7 lines a user reads, with numbers that agree with each other. */
function expectL7Lines(out: string): void {
  expect(out).toMatch(
    /L7: service demo\/echo bound to waypoint demo\/waypoint \([^)]+\); HTTPRoute echo-split 90\/10 over echo-v1\/echo-v2, AuthorizationPolicy deny-admin denies \/admin/,
  );
  const split = out.match(/ {2}400 requests: v1 (\d+) \((\d+\.\d)%\), v2 (\d+) \((\d+\.\d)%\)\n/);
  expect(split, out).not.toBeNull();
  const [, v1, v1Pct, v2, v2Pct] = split! as unknown as [string, string, string, string, string];
  expect(Number(v1) + Number(v2)).toBe(400);
  expect(v1Pct).toBe(((100 * Number(v1)) / 400).toFixed(1));
  expect(v2Pct).toBe(((100 * Number(v2)) / 400).toFixed(1));
  // The client sees a bare 403; only the waypoint's access log names the policy.
  expect(out).toMatch(
    /client → GET http:\/\/\S+\/admin: 403 "RBAC: access denied" \(the response does not name the policy\)\n {2}the waypoint's access log: GET \/admin response_code=403 authz_policy=demo\/deny-admin\n/,
  );
  // The waypoint's metrics counted exactly the requests the client saw answered, by version.
  const metric = (code: number, version: string) =>
    out.match(
      new RegExp(
        `istio_requests_total\\{reporter="waypoint",response_code="${code}",destination_version="${version}"\\} \\+(\\d+)`,
      ),
    )?.[1];
  expect(metric(200, 'v1')).toBe(String(v1));
  expect(metric(200, 'v2')).toBe(String(v2));
  expect(metric(403, '\\w+')).toBe('1');
  for (const check of [
    'waypoint splits 90/10: v2 between 3% and 20% of 400 requests',
    'waypoint denies /admin with 403, logged with AuthorizationPolicy demo/deny-admin',
    'waypoint metrics counted every request by response code and version',
  ]) {
    expect(out).toContain(`PASS  ${check}`);
  }
}

/** The north-south lines: the gateway's HTTPS path into the mesh, the ServiceEntry egress by name. */
function expectEdgeLines(out: string): void {
  expect(out).toMatch(
    /outside client → https:\/\/echo\.demo\.test\/ → gateway demo\/ingress \([^)]*verified against the demo's ingress CA\)\n {2}20 requests: 20 ok \(answered by echo-v1 \d+, echo-v2 \d+[^)]*\), 0 failed\n {2}the waypoint's access log: 20 of them from spiffe:\/\/cluster\.local\/ns\/demo\/sa\/ingress/,
  );
  expect(out).toMatch(/the agent's DNS proxy answered api\.external\.test = 240\.240\.\d+\.\d+ /);
  expect(out).toMatch(
    /mesh app \(demo\/client\) → http:\/\/api\.external\.test\/v1\/hello by name, in plain HTTP\n/,
  );
  expect(out).toMatch(/the waypoint's access log: GET \/v1\/hello response_code=200 /);
  expect(out).toMatch(
    /answer: 200; the API was called over TLSv1\.3 with SNI api\.external\.test from [\d.]+ \(the waypoint: TLS origination, TrafficPolicy external-api-tls/,
  );
  for (const check of [
    "outside client reaches echo through gateway demo/ingress over HTTPS (echo.demo.test, certificate verified), entering the mesh as the gateway's identity",
    "mesh app calls http://api.external.test by name: DNS proxy VIP, ServiceEntry demo/external-api, waypoint demo/waypoint originates HTTPS to the outside world's API",
  ]) {
    expect(out).toContain(`PASS  ${check}`);
  }
}
