// The agent's DNS proxy on its own, for the dns bench: the same code the agent runs
// (agent/dist/dns), over a config state of `--services` Services in namespace `bench`, forwarding
// everything else to `--upstream`. Its own process, so the load generator never shares its core.
//   node dns-proxy.js --port P --upstream IP:PORT [--services N]
// Prints {"event":"listening","port":P} once it serves UDP and TCP; runs until killed.
import { parseArgs } from 'node:util';
import { createConfigState, translateObject } from '@hypha/shared/config';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    upstream: { type: 'string' },
    services: { type: 'string', default: '100' },
  },
});
const [upHost, upPort] = (values.upstream ?? '').split(/:(?=\d+$)/);
if (!upHost || !(Number(upPort) > 0)) {
  process.stderr.write('dns-proxy: --upstream IP:PORT is required\n');
  process.exit(2);
}

interface DnsModule {
  createDnsProxy(opts: {
    state: unknown;
    host: string;
    port: number;
    upstreams: { ip: string; port: number }[];
  }): { start(): Promise<number> };
}
const dns = (await import(new URL('../../../agent/dist/dns/index.js', import.meta.url).href)) as DnsModule;

const state = createConfigState();
const objects: unknown[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } }];
for (let i = 0; i < Number(values.services); i++) {
  objects.push({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `svc-${i}`, namespace: 'bench' },
    spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, ports: [{ port: 80 }] },
  });
}
state.applySnapshot(
  objects.map((o) => {
    const t = translateObject(o, { source: 'bench' });
    if (t.status !== 'ok') throw new Error(JSON.stringify(t));
    return t.object;
  }),
);
const proxy = dns.createDnsProxy({
  state,
  host: '127.0.0.1',
  port: Number(values.port),
  upstreams: [{ ip: upHost, port: Number(upPort) }],
});
const port = await proxy.start();
process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`);
