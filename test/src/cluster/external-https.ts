// An external HTTPS API for a host beyond the cluster (TestCluster.addExternalHost `https`): a
// certificate for its names from a CA of its own (openssl, made per run), served by node's https
// server on a socket inside the host's namespace. Every request it answers is recorded with how it
// came: TLS version, the SNI name, the client certificate's CN, the client's address. A second CA
// that signed nothing here (`otherCaPem`) lets a test trust the wrong CA.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server as HttpsServer } from 'node:https';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';

export interface ExternalHttpsOptions {
  /** DNS names on the server certificate (the first is its CN). */
  hosts: readonly string[];
  /** Default 443. */
  port?: number;
}

export interface ExternalRequest {
  method: string;
  url: string;
  /** `TLSv1.3`, … */
  tlsVersion: string | null;
  servername: string | undefined;
  /** CN of the client certificate, when one was presented. */
  clientCn: string | undefined;
  remoteAddress: string | undefined;
  host: string | undefined;
}

export interface ExternalHttps {
  readonly port: number;
  /** The CA that signed the server certificate (and `clientCert`). */
  readonly caPem: string;
  /** A CA that signed nothing this server presents. */
  readonly otherCaPem: string;
  /** A client certificate from `caPem` (CN `mesh-egress`), for MUTUAL origination. */
  readonly clientCert: { certificate: string; privateKey: string };
  /** Every request answered so far, in order. */
  readonly requests: readonly ExternalRequest[];
  close(): void;
}

function makePki(hosts: readonly string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'hypha-external-'));
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  try {
    for (const ca of ['ca', 'other-ca'])
      run([
        'req',
        '-x509',
        ...ec,
        '-keyout',
        `${ca}.key`,
        '-out',
        `${ca}.pem`,
        '-days',
        '2',
        '-subj',
        `/CN=external ${ca}`,
      ]);
    const leaf = (name: string, subject: string, ext: string) => {
      run(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
      writeFileSync(join(dir, `${name}.ext`), ext);
      run([
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-days',
        '2',
        '-out',
        `${name}.pem`,
        '-extfile',
        `${name}.ext`,
      ]);
    };
    leaf(
      'server',
      `/CN=${hosts[0]}`,
      `subjectAltName=${hosts.map((h) => `DNS:${h}`).join(',')}\nextendedKeyUsage=serverAuth\n`,
    );
    leaf('client', '/CN=mesh-egress', 'extendedKeyUsage=clientAuth\n');
    const read = (f: string) => readFileSync(join(dir, f), 'utf8');
    return {
      ca: read('ca.pem'),
      otherCa: read('other-ca.pem'),
      server: { cert: read('server.pem'), key: read('server.key') },
      client: { certificate: read('client.pem'), privateKey: read('client.key') },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Serves HTTPS on `ip:port` through `listen` (a listener inside the host's namespace). Answers
 * `200 {"tls": "TLSv1.3", "sni": ..., "path": ...}`; a client certificate is asked for, not required.
 */
export async function startExternalHttps(
  listen: (o: { host: string; port: number }) => Promise<Server>,
  ip: string,
  opts: ExternalHttpsOptions,
): Promise<ExternalHttps> {
  const pki = makePki(opts.hosts);
  const requests: ExternalRequest[] = [];
  const https: HttpsServer = createServer(
    { cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requestCert: true, rejectUnauthorized: false },
    (req, res) => {
      const sock = req.socket as TLSSocket & { servername?: string };
      const peer = sock.getPeerCertificate();
      const r: ExternalRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        tlsVersion: sock.getProtocol(),
        servername: sock.servername || undefined,
        clientCn: sock.authorized && peer?.subject ? String(peer.subject.CN) : undefined,
        remoteAddress: sock.remoteAddress,
        host: req.headers.host,
      };
      requests.push(r);
      req.resume();
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(
          `${JSON.stringify({ tls: r.tlsVersion, sni: r.servername, path: r.url, clientCn: r.clientCn })}\n`,
        );
      });
    },
  );
  const port = opts.port ?? 443;
  const server = await listen({ host: ip, port });
  server.on('connection', (s) => https.emit('connection', s));
  return {
    port,
    caPem: pki.ca,
    otherCaPem: pki.otherCa,
    clientCert: pki.client,
    requests,
    close: () => {
      server.close();
      https.close();
    },
  };
}
