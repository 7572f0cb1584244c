// The demo's outside world (test/src/mesh/demo-edge.ts), one process on a host beyond the cluster:
//   - a resolver for the outside world's names on UDP 53 (`--name host=ip`, repeatable): A records,
//     authoritative, TTL 30 s; NXDOMAIN for every other name, at once;
//   - an external HTTPS API on `--ip`:443 with its own CA's certificate (`--cert`, `--key`), whose
//     answers say how they were reached: the TLS version, the SNI name, the client's address.
// Prints one JSON line `{"event":"listening"}` once both serve.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { createRequire } from 'node:module';
import type { TLSSocket } from 'node:tls';
import { parseArgs } from 'node:util';

// The agent's DNS message library (dns-packet), from the agent's own dependencies.
const require = createRequire(new URL('../../../agent/package.json', import.meta.url));
const dnsPacket = require('dns-packet') as typeof import('dns-packet');

const { values } = parseArgs({
  options: {
    ip: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    name: { type: 'string', multiple: true, default: [] },
  },
});
if (!values.ip || !values.cert || !values.key) {
  process.stderr.write('usage: outside-world-app --ip IP --cert PEM --key PEM [--name host=ip ...]\n');
  process.exit(2);
}
const names = new Map(
  values.name.map((n) => {
    const [host, ip] = n.split('=');
    return [host!.toLowerCase(), ip!] as const;
  }),
);

const dns = createSocket('udp4');
dns.on('message', (msg, rinfo) => {
  let query: ReturnType<typeof dnsPacket.decode>;
  try {
    query = dnsPacket.decode(msg);
  } catch {
    return; // not DNS: nothing to answer
  }
  const q = query.questions?.[0];
  if (q === undefined) return;
  const ip = names.get(q.name.toLowerCase().replace(/\.$/, ''));
  const answers =
    ip !== undefined && q.type === 'A' ? [{ type: 'A' as const, name: q.name, ttl: 30, data: ip }] : [];
  const reply = dnsPacket.encode({
    type: 'response',
    id: query.id ?? 0,
    // Authoritative; rcode NXDOMAIN (3) for names the outside world does not have.
    flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | (ip === undefined ? 3 : 0),
    questions: [q],
    answers,
  });
  dns.send(reply, rinfo.port, rinfo.address);
});

const api = createServer({ key: readFileSync(values.key), cert: readFileSync(values.cert) }, (req, res) => {
  const tls = req.socket as TLSSocket;
  res.setHeader('content-type', 'application/json');
  res.end(
    `${JSON.stringify({
      server: 'external-api',
      sni: tls.servername || null,
      tls: tls.getProtocol(),
      method: req.method,
      path: req.url,
      from: req.socket.remoteAddress,
    })}\n`,
  );
});

await Promise.all([
  new Promise<void>((resolve, reject) => {
    dns.once('error', reject);
    dns.bind(53, values.ip, () => resolve());
  }),
  new Promise<void>((resolve, reject) => {
    api.once('error', reject);
    api.listen(443, values.ip, () => resolve());
  }),
]);
process.stdout.write(`${JSON.stringify({ event: 'listening' })}\n`);
process.on('SIGTERM', () => process.exit(0));
