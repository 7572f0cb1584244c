// Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and by package/file, so a
// profile's top entries can go into docs/benchmarks.md next to the command that made it.
//   node bench/tools/cpuprofile-top.mjs PROFILE [--top N]
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
if (file === undefined) {
  process.stderr.write('usage: node bench/tools/cpuprofile-top.mjs PROFILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const ti = args.indexOf('--top');
const top = ti >= 0 ? Number(args[ti + 1]) : 30;
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
const deltas = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  self.set(id, (self.get(id) ?? 0) + (deltas[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
const fn = new Map();
const area = new Map();
function areaOf(url) {
  if (url === '') return '(native/VM)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:')) return url.replace(/^node:internal\//, 'node:');
  const w = /\/(shared|agent|waypoint|test|bench)\/(?:dist|src)\/(.+)$/.exec(url);
  return w ? `${w[1]}/${w[2]}` : url;
}
for (const [id, t] of self) {
  const n = byId.get(id);
  const cf = n.callFrame;
  const name = `${cf.functionName || '(anonymous)'} ${areaOf(cf.url)}:${cf.lineNumber + 1}`;
  fn.set(name, (fn.get(name) ?? 0) + t);
  const a = cf.url === '' ? cf.functionName || '(native)' : areaOf(cf.url);
  area.set(a, (area.get(a) ?? 0) + t);
}
const idle = [...fn].filter(([k]) => k.startsWith('(idle)')).reduce((s, [, v]) => s + v, 0);
const busy = total - idle;
// Shares are of the busy (non-idle) time: where the process spent the CPU it used.
const pct = (v) => `${((100 * v) / busy).toFixed(1)}%`;
process.stdout.write(
  `${file}\nsampled ${(total / 1e6).toFixed(2)} s, busy ${((100 * busy) / total).toFixed(1)}%; shares below are of the busy time\n`,
);
process.stdout.write(`\nself time by area (busy ${(busy / 1e6).toFixed(2)} s)\n`);
for (const [k, v] of [...area]
  .filter(([k]) => k !== '(idle)')
  .sort((a, b) => b[1] - a[1])
  .slice(0, top))
  process.stdout.write(`${pct(v).padStart(6)}  ${k}\n`);
// Inclusive: a sample counts for every area on its stack (so shares overlap).
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const incl = new Map();
for (const [id, t] of self) {
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const cf = byId.get(cur).callFrame;
    if (cf.url !== '') seen.add(areaOf(cf.url));
  }
  for (const a of seen) incl.set(a, (incl.get(a) ?? 0) + t);
}
process.stdout.write('\ntime with the area on the stack (inclusive; overlapping)\n');
for (const [k, v] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, top))
  process.stdout.write(`${pct(v).padStart(6)}  ${k}\n`);
process.stdout.write('\nself time by function\n');
for (const [k, v] of [...fn]
  .filter(([k]) => !k.startsWith('(idle)'))
  .sort((a, b) => b[1] - a[1])
  .slice(0, top))
  process.stdout.write(`${pct(v).padStart(6)}  ${k}\n`);
