// Shared test fixtures: a CA, workload certificates, HBONE servers on loopback, and upstream apps.
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { type ClientHttp2Session, type ClientHttp2Stream, connect as h2connect } from 'node:http2';
import { type AddressInfo, createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  createHbonePool,
  createHboneServer,
  type HboneHandler,
  type HbonePool,
  type HbonePoolOptions,
  type HboneServer,
  type HboneServerOptions,
} from '@hypha/shared/hbone';
import { CertificateAuthority, SpiffeId, type WorkloadCertificate } from '@hypha/shared/identity';

export interface Mesh {
  ca: CertificateAuthority;
  clientId: SpiffeId;
  serverId: SpiffeId;
  client: WorkloadCertificate;
  server: WorkloadCertificate;
}

export async function createMesh(trustDomain = 'cluster.local'): Promise<Mesh> {
  const ca = await CertificateAuthority.init({ trustDomain });
  const clientId = SpiffeId.of(trustDomain, 'shop', 'web');
  const serverId = SpiffeId.of(trustDomain, 'shop', 'db');
  const [client, server] = await Promise.all([ca.issue(clientId), ca.issue(serverId)]);
  return { ca, clientId, serverId, client, server };
}

/** Connects each CONNECT to the TCP address in its authority (what the agent does for a local pod). */
export const tcpHandler: HboneHandler = (req) =>
  new Promise((resolve) => {
    const upstream = netConnect({
      host: req.authority.host,
      port: req.authority.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    upstream.once('connect', () => {
      upstream.removeAllListeners('error');
      resolve({ status: 200, upstream });
    });
    upstream.once('error', () => resolve({ status: 503, reason: 'upstream_connect_failure' }));
  });

export interface RunningServer {
  server: HboneServer;
  port: number;
  close(): Promise<void>;
}

export async function startHboneServer(
  cert: WorkloadCertificate,
  opts: Partial<HboneServerOptions> = {},
): Promise<RunningServer> {
  const server = createHboneServer({ findCertificate: () => cert, handler: tcpHandler, ...opts });
  const addr = await server.listen(0, '127.0.0.1');
  return { server, port: addr.port, close: () => server.close() };
}

export function newPool(opts: HbonePoolOptions = {}): HbonePool {
  return createHbonePool(opts);
}

/** TCP echo server (half-close aware: ends its side when the client ends). */
export async function startEcho(): Promise<{ port: number; server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  serverSockets.set(server, sockets);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server, sockets };
}

const serverSockets = new WeakMap<Server, Set<Socket>>();

export async function startTcpServer(
  onSocket: (s: Socket) => void,
): Promise<{ port: number; server: Server }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  serverSockets.set(server, sockets);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server };
}

/** Closes a server and destroys whatever connections it still has. */
export function closeServer(server: Server): Promise<void> {
  for (const s of serverSockets.get(server) ?? []) s.destroy();
  return new Promise((r) => server.close(() => r()));
}

/**
 * Writes `total` pseudo-random bytes (AES-CTR keystream: fast and not compressible) with
 * backpressure, then ends. Resolves with their sha256.
 */
export function writePattern(stream: Duplex, total: number, seed = randomBytes(16)): Promise<string> {
  const cipher = createCipheriv('aes-128-ctr', seed, Buffer.alloc(16));
  const zeros = Buffer.alloc(256 * 1024);
  const hash = createHash('sha256');
  let left = total;
  return new Promise((resolve, reject) => {
    stream.once('error', reject);
    const pump = (): void => {
      while (left > 0) {
        const chunk = cipher.update(left >= zeros.length ? zeros : zeros.subarray(0, left));
        left -= chunk.length;
        hash.update(chunk);
        if (!stream.write(chunk)) {
          stream.once('drain', pump);
          return;
        }
      }
      stream.end();
      resolve(hash.digest('hex'));
    };
    pump();
  });
}

/** Reads a stream to its end; resolves with byte count and sha256. */
export function readAll(stream: Duplex): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  return new Promise((resolve, reject) => {
    stream.on('data', (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    stream.once('end', () => resolve({ bytes, sha256: hash.digest('hex') }));
    stream.once('error', reject);
  });
}

export function once<T = unknown>(
  emitter: NodeJS.EventEmitter,
  event: string,
  timeoutMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeoutMs);
    emitter.once(event, (v: T) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A bare node:http2 client with a workload certificate, for sending what the pool never would. */
export function rawH2Client(port: number, cert: WorkloadCertificate): ClientHttp2Session {
  const session = h2connect(`https://127.0.0.1:${port}`, {
    key: cert.keyPem,
    cert: cert.certChainPem,
    ca: cert.trustBundlePem,
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
  });
  session.on('error', () => {});
  return session;
}

/** Sends one request on a raw session; resolves with the status, or the reset code if there was none. */
export function rawRequest(
  session: ClientHttp2Session,
  headers: Record<string, string>,
): Promise<{ status?: number; rstCode?: number }> {
  return new Promise((resolve) => {
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: false });
    } catch (err) {
      resolve({ rstCode: -1, ...(err instanceof Error ? {} : {}) });
      return;
    }
    stream.on('error', () => {});
    stream.once('response', (h) => {
      resolve({ status: Number(h[':status']) });
      stream.close();
    });
    stream.once('close', () => resolve({ rstCode: stream.rstCode ?? -1 }));
  });
}
