// `npm run bench -- <suite...> [--json] [--quick]`: runs benchmark suites side by side with their
// peers and prints a table, or JSON `{suite, results: [...]}` per suite with --json.
import * as os from 'node:os';
import type { BenchOptions, BenchSuite, BenchSuiteResult } from './types.js';

// Suites are loaded lazily (each is ./suites/<name>.js exporting `run`) so one suite's missing
// peer tool does not stop the others from loading.
const SUITE_NAMES = ['ca', 'dns', 'hbone', 'ingress', 'l4', 'scale', 'soak', 'upgrade', 'waypoint'] as const;
/** Not part of "all": the soak runs for minutes (`soak [--minutes N]`, default 20). */
const LONG_SUITES = new Set(['soak']);
const SUITES: Record<string, () => Promise<BenchSuite>> = Object.fromEntries(
  SUITE_NAMES.map((name) => [
    name,
    async () => ((await import(`./suites/${name}.js`)) as { run: BenchSuite }).run,
  ]),
);

function usage(): string {
  return `usage: npm run bench -- <suite...> [--json] [--quick] [--minutes N]
suites: ${Object.keys(SUITES).join(', ')} (or "all", which leaves out soak)
  --minutes N  the soak's duration (default 20)
  --json   print one JSON object per suite: {suite, results: [{name, value, unit, peer?, peerValue?, ratio?}]}
  --quick  shorter runs (smoke check; figures are noisier)`;
}

function formatTable(res: BenchSuiteResult): string {
  const rows = res.results.map((r) => [
    r.name,
    `${round(r.value)} ${r.unit}`,
    r.peer ? `${r.peer}: ${round(r.peerValue ?? Number.NaN)} ${r.unit}` : '',
    r.ratio !== undefined ? `${round(r.ratio)}x` : '',
    r.budget ? `${r.budget} ${r.met ? 'met' : 'NOT met'}` : '',
  ]);
  const head = ['figure', 'hypha', 'peer', 'ratio', 'budget'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [`== ${res.suite}`, line(head), ...rows.map(line)].join('\n');
}

function round(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(2) : n.toPrecision(3);
}

async function main(argv: string[]): Promise<number> {
  const opts: BenchOptions = {};
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') opts.json = true;
    else if (a === '--minutes' || a.startsWith('--minutes=')) {
      const v = Number(a === '--minutes' ? argv[++i] : a.slice('--minutes='.length));
      if (!(v > 0)) {
        process.stderr.write(`bench: --minutes needs a positive number\n${usage()}\n`);
        return 2;
      }
      opts.minutes = v;
    } else if (a === '--quick') opts.quick = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`${usage()}\n`);
      return 0;
    } else if (a.startsWith('-')) {
      process.stderr.write(`bench: unknown option ${a}\n${usage()}\n`);
      return 2;
    } else names.push(a);
  }
  const selected =
    names.length === 0 || names.includes('all')
      ? Object.keys(SUITES).filter((n) => !LONG_SUITES.has(n))
      : names;
  for (const n of selected) {
    if (!SUITES[n]) {
      process.stderr.write(`bench: unknown suite "${n}"\n${usage()}\n`);
      return 2;
    }
  }
  let failed = 0;
  for (const n of selected) {
    try {
      const run = await SUITES[n]!();
      const res = await run(opts);
      res.environment = {
        node: process.version,
        cpus: os.cpus().length,
        cpu: os.cpus()[0]?.model ?? '?',
        ...res.environment,
      };
      process.stdout.write(opts.json ? `${JSON.stringify(res)}\n` : `${formatTable(res)}\n\n`);
    } catch (err) {
      failed++;
      process.stderr.write(`bench: suite ${n} failed: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
