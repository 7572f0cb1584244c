// `npm run bench -- dns [--json] [--quick]`: answers per second of the agent's DNS proxy for cached
// names, against dnsmasq on the same machine (handbook section 9: >= 0.5x dnsmasq).
//
//   dnsperf (one thread, 4 client sockets, 100 outstanding) ─UDP─► hypha DNS proxy ─┐
//                                                          └─UDP─► dnsmasq (cache) ─┴─► dnsmasq (upstream)
//
// Both are caching forwarders in front of the same upstream (a dnsmasq that answers every name
// under bench.test with TTL 3600), on loopback, each in its own process with one thread, driven by
// the same load generator (dnsperf, a C tool, so the client is not the bottleneck). Each first gets
// one pass over the 1000 names (their caches fill), then the timed run repeats them: every answer
// in the timed run is a cache hit. A second figure asks Service names, which the proxy answers
// from its mesh state and dnsmasq from its own local records (`--address`).
// No timing is asserted anywhere: the machine is shared and small; figures are reported as measured.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { BenchOptions, BenchResult, BenchSuiteResult } from '../types.js';

const execFileAsync = promisify(execFile);
const NAMES = 1000;
const SERVICES = 100;
const BUDGET = 0.5;
const INSTALL_HINT = 'install them with: bash scripts/install-system-packages.sh bench';

export function run(opts: BenchOptions = {}): Promise<BenchSuiteResult> {
  return runDnsBench(opts);
}

interface Server {
  readonly name: string;
  readonly port: number;
  readonly proc: ChildProcess;
}

async function runDnsBench(opts: BenchOptions): Promise<BenchSuiteResult> {
  const seconds = opts.quick ? 3 : 10;
  for (const tool of ['dnsmasq', 'dnsperf']) {
    if (!['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(join(d, tool))))
      throw new Error(`the dns bench needs ${tool}; ${INSTALL_HINT}`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'hypha-bench-dns-'));
  const procs: ChildProcess[] = [];
  try {
    const cachedFile = join(dir, 'cached.txt');
    const meshFile = join(dir, 'mesh.txt');
    await writeFile(cachedFile, Array.from({ length: NAMES }, (_, i) => `n${i}.bench.test A\n`).join(''));
    await writeFile(
      meshFile,
      Array.from({ length: SERVICES }, (_, i) => `svc-${i}.bench.svc.cluster.local A\n`).join(''),
    );
    const upstream = await startDnsmasq(
      'upstream',
      ['--local-ttl=3600', '--address=/bench.test/192.0.2.1'],
      procs,
    );
    const dnsmasq = await startDnsmasq(
      'dnsmasq',
      [
        `--server=127.0.0.1#${upstream.port}`,
        '--cache-size=10000',
        '--dns-forward-max=1000',
        '--address=/bench.svc.cluster.local/10.96.0.1',
      ],
      procs,
    );
    const hypha = await startProxy(upstream.port, procs);
    const results: BenchResult[] = [];
    const figures: Record<string, Record<string, Perf>> = { cached: {}, mesh: {} };
    for (const [kind, file] of [
      ['cached', cachedFile],
      ['mesh', meshFile],
    ] as const) {
      for (const s of [dnsmasq, hypha]) await dnsperf(s.port, file, { passes: 1 }); // warm: fill caches, JIT
      for (const s of [dnsmasq, hypha]) {
        const cpu0 = await cpuSeconds(s.proc.pid!);
        const perf = await dnsperf(s.port, file, { seconds });
        perf.cpu = (await cpuSeconds(s.proc.pid!)) - cpu0;
        figures[kind]![s.name] = perf;
      }
    }
    const c = figures.cached!;
    const m = figures.mesh!;
    const ratio = c.hypha!.qps / c.dnsmasq!.qps;
    results.push({
      name: 'answers/s, cached forwarded names (UDP, 100 outstanding)',
      value: c.hypha!.qps,
      unit: 'answers/s',
      peer: 'dnsmasq',
      peerValue: c.dnsmasq!.qps,
      ratio,
      budget: `ratio >= ${BUDGET}`,
      met: ratio >= BUDGET,
    });
    results.push({
      name: 'answers per CPU-second, cached forwarded names',
      value: c.hypha!.completed / c.hypha!.cpu,
      unit: 'answers/CPU-s',
      peer: 'dnsmasq',
      peerValue: c.dnsmasq!.completed / c.dnsmasq!.cpu,
      ratio: c.hypha!.completed / c.hypha!.cpu / (c.dnsmasq!.completed / c.dnsmasq!.cpu),
    });
    results.push({
      name: 'answers/s, Service names (mesh state vs dnsmasq --address)',
      value: m.hypha!.qps,
      unit: 'answers/s',
      peer: 'dnsmasq',
      peerValue: m.dnsmasq!.qps,
      ratio: m.hypha!.qps / m.dnsmasq!.qps,
    });
    for (const [kind, f] of Object.entries(figures)) {
      for (const [who, p] of Object.entries(f)) {
        if (p.lost > 0 || p.noerror < p.completed)
          results.push({
            name: `${kind} ${who}: queries lost or not NOERROR`,
            value: p.lost + p.completed - p.noerror,
            unit: 'queries',
          });
      }
    }
    const rss = await readFile(`/proc/${hypha.proc.pid}/status`, 'utf8');
    results.push({
      name: 'DNS proxy peak RSS (VmHWM)',
      value: Number(/^VmHWM:\s+(\d+)/m.exec(rss)?.[1] ?? Number.NaN) / 1024,
      unit: 'MB',
    });
    return {
      suite: 'dns',
      environment: {
        command: `npm run bench -- dns${opts.json ? ' --json' : ''}${opts.quick ? ' --quick' : ''}`,
        load: `dnsperf -c 4 -T 1 -q 100 -l ${seconds}, ${NAMES} cached names / ${SERVICES} Service names`,
        seconds,
      },
      results,
    };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

interface Perf {
  qps: number;
  completed: number;
  lost: number;
  noerror: number;
  cpu: number;
}

async function dnsperf(port: number, file: string, o: { seconds?: number; passes?: number }): Promise<Perf> {
  const args = [
    '-s',
    '127.0.0.1',
    '-p',
    String(port),
    '-d',
    file,
    '-c',
    '4',
    '-T',
    '1',
    '-q',
    '100',
    '-t',
    '2',
  ];
  if (o.seconds !== undefined) args.push('-l', String(o.seconds));
  if (o.passes !== undefined) args.push('-n', String(o.passes));
  const { stdout } = await execFileAsync('dnsperf', args, { maxBuffer: 16 * 1024 * 1024 });
  const num = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? Number.NaN);
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    completed: num(/Queries completed:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    noerror: Number(/NOERROR (\d+)/.exec(stdout)?.[1] ?? 0),
    cpu: 0,
  };
}

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A free loopback port for UDP (dnsmasq binds TCP on it too; a clash fails its start loudly). */
async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  s.close();
  return port;
}

/** dnsmasq on loopback only, no system config, resolv.conf, hosts file, pid file or logging. */
async function startDnsmasq(name: string, extra: string[], procs: ChildProcess[]): Promise<Server> {
  const port = await freePort();
  const proc = spawn(
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--pid-file=',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      '--listen-address=127.0.0.1',
      `--port=${port}`,
      '--log-facility=-',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  procs.push(proc);
  await waitForLine(proc, /started, version/, `dnsmasq (${name})`);
  return { name, port, proc };
}

async function startProxy(upstreamPort: number, procs: ChildProcess[]): Promise<Server> {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const app = fileURLToPath(new URL(`../apps/dns-proxy${ext}`, import.meta.url));
  const proc = spawn(
    process.execPath,
    [app, '--port', '0', '--upstream', `127.0.0.1:${upstreamPort}`, '--services', String(SERVICES)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  procs.push(proc);
  const line = await waitForLine(proc, /"event":"listening"/, 'hypha DNS proxy');
  const port = (JSON.parse(line) as { port: number }).port;
  return { name: 'hypha', port, proc };
}

function waitForLine(proc: ChildProcess, re: RegExp, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start in 10 s: ${out}`)), 10_000);
    const on = (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => re.test(l));
      if (line === undefined) return;
      clearTimeout(timer);
      resolve(line);
    };
    proc.stdout?.on('data', on);
    proc.stderr?.on('data', on);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}): ${out}`));
    });
  });
}
