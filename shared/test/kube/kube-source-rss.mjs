// Memory of the Kubernetes config source as a daemon pays it: a fresh Node process imports
// @hypha/shared/kube, starts createKubeSource against the stand-in API server (test/src/kube-api,
// seeded with namespaces, pods, services and EndpointSlices) and waits for `ready`. Prints, per run,
// RSS after import and when ready, and how many modules the import loaded (and how many of them
// are @kubernetes/client-node's). Not a test: a measurement for docs/benchmarks.md.
//
//   npm run build   # or npx turbo run build
//   node_modules/.bin/node shared/test/kube/kube-source-rss.mjs [--runs 5] [--pods 1000] [--kube URL-or-path]
//
// --kube points at another build of shared/dist/kube/index.js (e.g. one made from an older commit)
// to compare against.
//
// --agent PATH/bin/hypha.js runs the whole agent instead (`hypha agent --config kubernetes:...
// --capture none`, with the agent's V8 flags) and reads its RSS from /proc when it logs
// "loading config" (the Kubernetes source is imported and built), when it logs the initial sync,
// and 2 s later; then it is killed (no CA runs: the figures are config and runtime, not certificates).
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    pods: { type: 'string', default: '1000' },
    kube: { type: 'string' },
    child: { type: 'string' },
    kubeconfig: { type: 'string' },
    agent: { type: 'string' },
  },
});

if (values.child) {
  // Child: one measured daemon start.
  const { registerHooks } = await import('node:module');
  const loaded = [];
  registerHooks({
    load(url, context, next) {
      loaded.push(url);
      return next(url, context);
    },
  });
  const mb = () => Math.round((process.memoryUsage.rss() / 1024 / 1024) * 10) / 10;
  const baseline = mb();
  const kube = await import(values.child);
  const afterImport = mb();
  const modules = loaded.length;
  const clientNode = loaded.filter((u) => u.includes('/node_modules/@kubernetes/client-node/')).length;
  const source = kube.createKubeSource({ kubeconfig: values.kubeconfig });
  await source.start();
  const workloads = [...source.state.workloads()].length;
  // Let the first burst of garbage go before reading "ready" RSS, as a daemon would a second later.
  await new Promise((r) => setTimeout(r, 1000));
  globalThis.gc?.();
  const ready = mb();
  await source.close();
  process.stdout.write(
    `${JSON.stringify({ baseline, afterImport, ready, modules, clientNode, workloads })}\n`,
  );
  process.exit(0);
}

const { createKubeApiServer } = await import('@hypha/test');
const kubeUrl = values.kube
  ? values.kube.startsWith('file:')
    ? values.kube
    : pathToFileURL(values.kube).href
  : import.meta.resolve('@hypha/shared/kube');
const api = await createKubeApiServer({ bookmarkIntervalMs: 60_000 });
const pods = Number(values.pods);
for (let n = 0; n < 20; n++) {
  api.put({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: `ns-${n}`, labels: { 'hypha.dev/dataplane-mode': 'ambient' } },
  });
}
for (let i = 0; i < pods; i++) {
  const ns = `ns-${i % 20}`;
  const ip = `10.${1 + Math.floor(i / 65_000)}.${Math.floor(i / 250) % 256}.${(i % 250) + 1}`;
  api.put({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `pod-${i}`, namespace: ns, labels: { app: `app-${i % 50}` } },
    spec: {
      nodeName: `node-${i % 10}`,
      serviceAccountName: `app-${i % 50}`,
      containers: [{ name: 'app', image: 'example/app:1', ports: [{ containerPort: 8080 }] }],
    },
    status: {
      phase: 'Running',
      podIP: ip,
      podIPs: [{ ip }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  });
}
for (let s = 0; s < 50; s++) {
  const ns = `ns-${s % 20}`;
  api.put({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `app-${s}`, namespace: ns },
    spec: {
      clusterIP: `10.96.0.${s + 1}`,
      selector: { app: `app-${s}` },
      ports: [{ port: 80, targetPort: 8080 }],
    },
  });
}

/** One `hypha agent` start: RSS (MB, from /proc) at "loading config", at the initial sync, and 2 s later. */
function runAgent(bin) {
  const child = spawn(
    process.execPath,
    [
      '--external-memory-accounted-in-global-limit',
      '--initial-heap-size=64',
      '--max-semi-space-size=2',
      bin,
      'agent',
      '--node',
      'node-0',
      '--config',
      `kubernetes:${api.kubeconfigPath}`,
      '--capture',
      'none',
      '--handoff-dir',
      'none',
      '--ca-address',
      'https://127.0.0.1:1',
      ...['--outbound-port', '0', '--inbound-port', '0', '--hbone-port', '0'],
      ...['--admin-address', '127.0.0.1:0', '--metrics-address', '127.0.0.1:0'],
      ...['--readiness-address', '127.0.0.1:0'],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const rss = () => {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    return Math.round((Number(m?.[1]) / 1024) * 10) / 10;
  };
  return new Promise((resolve, reject) => {
    const r = {};
    let buf = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the agent did not sync:\n${buf.slice(-3000)}`));
    }, 120_000);
    const onData = (chunk) => {
      buf += chunk;
      if (r.afterImport === undefined && buf.includes('"msg":"loading config"')) r.afterImport = rss();
      if (r.ready === undefined && buf.includes('"msg":"initial sync from the Kubernetes API complete"')) {
        r.ready = rss();
        setTimeout(() => {
          r.settled = rss();
          clearTimeout(timer);
          child.kill('SIGKILL');
          resolve(r);
        }, 2000);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
}

const results = [];
for (let run = 0; run < Number(values.runs); run++) {
  if (values.agent) {
    results.push(await runAgent(values.agent));
    continue;
  }
  const out = await new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--expose-gc', import.meta.filename, '--child', kubeUrl, '--kubeconfig', api.kubeconfigPath],
      { timeout: 120_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
  results.push(JSON.parse(String(out)));
}
await api.close();
const median = (key) => {
  const v = results.map((r) => r[key]).sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
};
const summary = values.agent
  ? {
      agent: values.agent,
      pods,
      runs: results.length,
      median: {
        afterImportMb: median('afterImport'),
        readyMb: median('ready'),
        settledMb: median('settled'),
      },
      results,
    }
  : {
      kube: kubeUrl,
      pods,
      runs: results.length,
      median: {
        baselineMb: median('baseline'),
        afterImportMb: median('afterImport'),
        readyMb: median('ready'),
        modules: median('modules'),
        clientNodeModules: median('clientNode'),
      },
      results,
    };
process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
