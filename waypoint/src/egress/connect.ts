// Dialing endpoints outside the mesh (ServiceEntry endpoints, egress): plain TCP to the address, or
// to what the host resolves to, then TLS when the entry's TrafficPolicy originates it. Mesh
// endpoints go to the wrapped connector (HBONE) unchanged.
//
// Invariants:
// - TLS origination always verifies the server: the chain against the policy's CA bundle and the
//   name against the SNI (or `subjectAltNames`). A failure rejects the connection with an
//   EgressConnectError whose message is the access log's `upstream_transport_failure_reason`.
// - A connect (TCP plus TLS handshake) that does not finish in `connectTimeoutMs` fails.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { ConnectUpstream, UpstreamEndpoint } from '../upstream.js';
import type { HostResolver } from './resolve.js';

/** A failed egress connection; `reason` goes to the access log. */
export class EgressConnectError extends Error {
  readonly reason: string;
  readonly code = 'EGRESS_CONNECT';
  constructor(reason: string) {
    super(reason);
    this.name = 'EgressConnectError';
    this.reason = reason;
  }
}

/** The reason an upstream try failed, for the access log (undefined: nothing more than the flag). */
export function transportFailureReason(err: unknown): string | undefined {
  if (err instanceof EgressConnectError) return err.reason;
  let e: unknown = err;
  for (let depth = 0; depth < 4 && typeof e === 'object' && e !== null; depth++) {
    const r = (e as { reason?: unknown }).reason;
    if (typeof r === 'string' && (e as { code?: unknown }).code === 'EGRESS_CONNECT') return r;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export interface EgressConnectOptions {
  resolver: HostResolver;
  connectTimeoutMs?: number;
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export function egressConnect(inner: ConnectUpstream, opts: EgressConnectOptions): ConnectUpstream {
  const timeoutMs = opts.connectTimeoutMs ?? 10_000;
  return async (ep: UpstreamEndpoint): Promise<Duplex> => {
    const eg = ep.egress;
    if (eg === undefined) return inner(ep);
    let ip = ep.ip;
    if (eg.dnsName !== undefined) {
      try {
        ip = await opts.resolver.fetchAddress(eg.dnsName);
      } catch (err) {
        throw new EgressConnectError(`DNS: ${(err as Error).message}`);
      }
    }
    const where = hostPort(ip, ep.port);
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: ip, port: ep.port, noDelay: true });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new EgressConnectError(`connect to ${where} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new EgressConnectError(`connect to ${where}: ${err.code ?? err.message}`));
      });
    });
    const t = eg.tls;
    if (t === undefined) return socket;
    if (t.error !== undefined || t.context === undefined) {
      socket.destroy();
      throw new EgressConnectError(`upstream TLS to ${where}: ${t.error ?? 'no TLS context'}`);
    }
    const names = t.subjectAltNames ?? [t.servername];
    return await new Promise<Duplex>((resolve, reject) => {
      const secure = tls.connect({
        socket,
        servername: t.servername,
        secureContext: t.context,
        rejectUnauthorized: true,
        ALPNProtocols: [eg.h2 === true ? 'h2' : 'http/1.1'],
        checkServerIdentity: (_host, cert) => {
          // Any of the accepted names; node's own check does the wildcard and SAN matching.
          let last: Error | undefined;
          for (const n of names) {
            last = tls.checkServerIdentity(n, cert);
            if (last === undefined) return undefined;
          }
          return last;
        },
      });
      const timer = setTimeout(() => {
        secure.destroy();
        reject(new EgressConnectError(`upstream TLS to ${where} (SNI ${t.servername}): handshake timed out`));
      }, timeoutMs);
      secure.once('secureConnect', () => {
        clearTimeout(timer);
        secure.removeAllListeners('error');
        if (eg.h2 === true && secure.alpnProtocol !== 'h2') {
          secure.destroy();
          reject(
            new EgressConnectError(
              `upstream TLS to ${where} (SNI ${t.servername}): the server did not accept HTTP/2 (ALPN h2) for this HTTP2/GRPC port`,
            ),
          );
          return;
        }
        resolve(secure);
      });
      secure.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        secure.destroy();
        reject(
          new EgressConnectError(
            `upstream TLS to ${where} (SNI ${t.servername}): ${tlsFailure(err, eg.h2 === true)}`,
          ),
        );
      });
    });
  };
}

/** A TLS handshake failure in words: verification (the server's certificate) or the handshake itself. */
function tlsFailure(err: NodeJS.ErrnoException, h2: boolean): string {
  const code = err.code ?? '';
  if (code === 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL')
    return `the server did not accept ${h2 ? 'HTTP/2 (ALPN h2) for this HTTP2/GRPC port' : 'HTTP/1.1 (ALPN http/1.1)'}`;
  if (code.startsWith('ERR_SSL_') || code === 'ECONNRESET' || code === 'EPIPE') {
    // OpenSSL's text ends with the alert's name, e.g. "...:tlsv1 alert unknown ca:...".
    const alert = /alert ([a-z ]+)/.exec(err.message)?.[1];
    return `handshake refused by the server${alert ? ` (alert: ${alert})` : ''}: ${code}`;
  }
  return `certificate verify failed: ${err.message}${code === '' ? '' : ` (${code})`}`;
}
