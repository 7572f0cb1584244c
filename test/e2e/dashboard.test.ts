// `hypha dashboard` in a browser (issue 17 part 2): Debian's chromium, driven by puppeteer-core,
// opens the dashboard of a two-node mesh with traffic flowing, as a person would, and reads the
// pages. One cluster, several looks:
//
//   client ──mTLS (L4)──────────────► echo-l4            (node-b, pod IP: no waypoint on the way)
//   client ──HTTP──► waypoint demo/waypoint ──► echo-v1 | echo-v2   (Service echo)
//   client ──GET /admin/users──► waypoint: 403, AuthorizationPolicy demo/deny-admin
//
// The dashboard runs on the host (loopback), reaching the agents' and the waypoint's admin ports
// and the Prometheus pod through unix sockets forwarded into their namespaces. Screenshots go to
// test-results/dashboard/ (kept by CI as artifacts; docs/img/dashboard.png is one of them).
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exposeInNetns, findOnPath, type PrometheusServer, startPrometheus } from '@hypha/test';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getScript, startWaypointScenario, type WaypointScenario } from './waypoint-fixture.js';

/** What the page functions read (they run in the browser; this package compiles without the DOM lib). */
type Text = { innerText: string };
declare const document: { querySelector(selector: string): Text | null };

const BIN = fileURLToPath(new URL('../../agent/bin/hypha.js', import.meta.url));
const SHOTS = fileURLToPath(new URL('../../test-results/dashboard/', import.meta.url));

const denyAdmin = {
  apiVersion: 'security.hypha.dev/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-admin', namespace: 'demo' },
  spec: {
    targetRefs: [{ kind: 'Service', group: '', name: 'echo' }],
    action: 'DENY',
    rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
  },
};

let s: WaypointScenario;
let prom: PrometheusServer | undefined;
let dashboard: ChildProcess | undefined;
let url = '';
let browser: Browser | undefined;
let page: Page;

/** Calls through the mesh from the client pod: direct to echo-l4 (L4), via the waypoint, one denied. */
async function sendTraffic(n: number): Promise<void> {
  const script = `(async()=>{const out=[];for(let i=0;i<${n};i++){for(const u of ['http://${s.extraPods['echo-l4']!.ip}:8080/direct','http://${s.vips.echo}/through-waypoint']){const r=await fetch(u);await r.text();out.push(r.status)}}const d=await fetch('http://${s.vips.echo}/admin/users');await d.text();out.push(d.status);process.stdout.write(JSON.stringify(out))})()`;
  const statuses = JSON.parse(await s.runInClient(script)) as number[];
  expect(statuses).toEqual([...Array(2 * n).fill(200), 403]);
}

async function shot(name: string): Promise<void> {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path: path as `${string}.png`, fullPage: true });
  process.stdout.write(`dashboard screenshot: ${path}\n`);
}

/** Opens a page of the dashboard and waits until `text` shows in the element `selector`. */
async function open(
  hash: string,
  selector: string,
  text: string | RegExp,
  timeout = 30_000,
): Promise<string> {
  await page.goto(`${url}#/${hash}`, { waitUntil: 'domcontentloaded' });
  return waitText(selector, text, timeout);
}

async function waitText(selector: string, text: string | RegExp, timeout = 30_000): Promise<string> {
  const re = typeof text === 'string' ? text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : text.source;
  await page.waitForFunction(
    (sel: string, pattern: string) => {
      const el = document.querySelector(sel);
      return el !== null && new RegExp(pattern).test((el as unknown as Text).innerText);
    },
    { timeout, polling: 200 },
    selector,
    re,
  );
  return page.$eval(selector, (el) => (el as unknown as Text).innerText);
}

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  s = await startWaypointScenario({
    extraPods: [{ node: 'node-b', name: 'echo-l4', labels: { app: 'echo-l4' }, serviceAccount: 'echo-l4' }],
  });
  await s.mesh.cluster.startApp(s.extraPods['echo-l4']!, 'http-echo', [
    '--port',
    '8080',
    '--pod',
    'echo-l4',
    '--namespace',
    'demo',
  ]);
  const version = (e: Record<string, unknown>) => (e.msg === 'config applied' ? Number(e.version) : 0);
  const before = Math.max(0, ...s.waypoint.events.map(version));
  await s.setExtra([denyAdmin]);
  await s.waypoint.waitFor((e) => version(e) > before, 15_000);
  prom = await startPrometheus(s.mesh);
  const admins = await s.mesh.exposeAdmin();
  const promSock = await exposeInNetns(
    s.mesh.cluster,
    prom.pod.netns,
    { host: prom.pod.ip, port: 9090 },
    join(s.mesh.dir, 'prometheus.sock'),
  );
  dashboard = spawn(
    process.execPath,
    [
      BIN,
      'dashboard',
      '--port',
      '0',
      '--prometheus',
      promSock.address,
      '--config',
      s.mesh.configPath,
      ...admins.flatMap((a) => ['--admin', a.address]),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  url = await new Promise<string>((resolve, reject) => {
    let out = '';
    dashboard!.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /hypha dashboard: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) resolve(m[1]!);
    });
    dashboard!.stderr!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    dashboard!.once('exit', (code) => reject(new Error(`hypha dashboard exited ${code}: ${out}`)));
  });
  const chromium = findOnPath('chromium');
  if (chromium === undefined) {
    throw new Error('chromium is not installed: run `bash scripts/install-system-packages.sh test` as root');
  }
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    // Root in CI: Chromium's sandbox needs an unprivileged user.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    defaultViewport: { width: 1400, height: 900 },
  });
  page = await browser.newPage();
  // Two rounds with scrapes between, so rate() over the last minute sees the counters grow.
  await sendTraffic(5);
  await prom.waitForScrapesAfter(Date.now() + 500);
  await sendTraffic(5);
  await prom.waitForScrapesAfter(Date.now() + 500);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  dashboard?.kill('SIGTERM');
  await prom?.stop();
  await s?.mesh.stop();
});

describe('hypha dashboard in a browser', () => {
  it('the graph shows the client → echo edge marked mTLS with a non-zero rate, and the waypoint on the HTTP path', async () => {
    const direct = 'tr[data-edge="demo/client->demo/echo-l4"]';
    await open('graph', direct, /mTLS/);
    // Prometheus' rate over the last minute: wait until it is non-zero (the page updates itself).
    const row = await waitText(direct, /TCP\s+(0\.0[1-9]|0\.[1-9]|[1-9])[\d.]* conn\/s/);
    expect(row).toContain('cluster.local/ns/demo/sa/client → cluster.local/ns/demo/sa/echo-l4');
    expect(row).toContain('direct');
    const viaWaypoint = await waitText(
      'tr[data-edge="demo/client->demo/echo"]',
      /HTTP\s+(0\.0[1-9]|0\.[1-9]|[1-9])[\d.]* req\/s/,
    );
    expect(viaWaypoint).toContain('via waypoint demo/waypoint');
    expect(viaWaypoint).toContain('mTLS');
    // 1 in 11 requests on this edge was denied (403): success counts non-5xx, the 4xx are shown.
    expect(viaWaypoint).toMatch(/100%\s+\(4xx [\d.]+ \/s\)/);
    expect(await page.$('[data-testid="prometheus-down"]')).toBeNull();
    await page.waitForSelector('[data-testid="graph"] canvas');
    await shot('graph');
  });

  it('the denied call is on the policy page with the policy name, and the explain box says why', async () => {
    const denial = await open('policies', '[data-testid="denials"] tbody', 'demo/deny-admin');
    expect(denial).toMatch(
      /demo\/client\s+cluster\.local\/ns\/demo\/sa\/client\s+demo\/echo\s+GET \/admin\/users\s+403\s+demo\/deny-admin/,
    );
    const policies = await page.$eval('[data-testid="policies"]', (el) => (el as unknown as Text).innerText);
    expect(policies).toMatch(/demo\/deny-admin\s+DENY\s+Service echo\s+waypoint \(L7\)/);
    await page.type('input[name="from"]', 'demo/client');
    await page.type('input[name="to"]', 'demo/echo:80');
    await page.type('input[name="path"]', '/admin/users');
    await page.click('form.explain button');
    expect(await waitText('[data-testid="explain-decision"]', /DENY/)).toBe('DENY');
    expect(await waitText('[data-testid="explain-answer"]', 'deny-admin')).toMatch(
      /waypoint demo\/waypoint \(L7\): DENY/,
    );
    await shot('policies');
  });

  it("the workload page shows its certificate's identity and expiry, its pods and golden signals", async () => {
    const certs = await open('workload/demo/echo-v1', '[data-testid="certificates"] tbody', 'spiffe://');
    expect(certs).toContain('spiffe://cluster.local/ns/demo/sa/echo');
    const notAfter = await page.$eval(
      '[data-testid="cert-expiry"]',
      (el) => (el as unknown as Text).innerText,
    );
    // Valid now, and within the 24 h workload certificate lifetime.
    const left = Date.parse(notAfter) - Date.now();
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(24 * 3600_000 + 60_000);
    expect(certs).toMatch(/ready\s+in \d+ h \d+ min/);
    const pods = await page.$eval('[data-testid="pods"] tbody', (el) => (el as unknown as Text).innerText);
    expect(pods).toContain('echo-v1\tnode-a');
    await page.waitForSelector('.chart canvas');
    await shot('workload');
  });

  it('the live tap table shows requests as they finish', async () => {
    await page.goto(`${url}#/tap`, { waitUntil: 'domcontentloaded' });
    await waitText('.hint', /^Streaming/);
    await s.runInClient(getScript(`http://${s.vips.echo}/seen-live-in-the-browser`));
    const row = await waitText('[data-testid="tap"] tbody', '/seen-live-in-the-browser');
    expect(row).toMatch(/request\s+demo\/client\s+demo\/echo\s+GET \/seen-live-in-the-browser\s+200/);
  });

  it('with Prometheus stopped the page says so and still shows what the admin endpoints give', async () => {
    await prom!.stop();
    prom = undefined;
    await sendTraffic(1);
    const banner = await open('graph', '[data-testid="prometheus-down"]', 'Prometheus is unreachable');
    expect(banner).toContain('Showing what the admin endpoints give');
    // Edges now come from the live tap: the direct mTLS edge is still there.
    expect(await waitText('tr[data-edge="demo/client->demo/echo-l4"]', /mTLS/)).toContain('TCP');
    await shot('prometheus-down');
    const nodes = await open('health', '[data-testid="nodes"] tbody', /node-a\s+ready/);
    expect(nodes).toMatch(/node-b\s+ready/);
    // Each agent says which Hypha release it runs (its /config_dump), as `hypha --version` prints it.
    const release = (
      JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
    ).version;
    expect(nodes).toMatch(new RegExp(`node-a\\s+ready\\s+${release.replaceAll('.', '\\.')}\\s+synced`));
    expect(await page.$eval('[data-testid="ca"]', (el) => (el as unknown as Text).innerText)).toMatch(
      /^issuing: \d+ certificates held/,
    );
  });

  it("with node-b's agent gone, node-b is shown not ready and node-a still ready", async () => {
    const agent = s.mesh.agents.get('node-b')!.process;
    const exited = new Promise((r) => agent.once('exit', r));
    agent.kill('SIGKILL');
    await exited;
    const nodes = await open('health', '[data-testid="nodes"] tbody', /node-b\s+NOT READY/);
    expect(nodes).toMatch(/node-b\s+NOT READY[^\n]*its agent does not answer/);
    expect(nodes).toMatch(/node-a\s+ready/);
    await shot('agent-down');
  });
});
