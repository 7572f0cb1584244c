// The CA's HTTPS API (`hypha ca serve`, port 15012).
//
//   POST /v1/certificates   Authorization: Bearer <token>, {"csr": PEM, "ttlSeconds"?: n}
//                           → 200 {"certChain": [PEM...], "trustBundle": [PEM...], "serial", "notAfter"}
//   GET  /v1/revocations    → 200 {"version", "serials": [...], "ids": [...]}  (public, no token)
//   GET  /healthz           → 200 ok
// Errors are JSON {"error": CODE, "message": text}: 400 bad request/CSR, 401 token, 403 node not
// allowed or identity revoked, 404/405, 413 body too large, 500.
//
// Order of checks for a certificate: token (401) → body and CSR signature/SAN (400) → revoked
// identity (403) → a pod with that identity on the caller's node (403) → sign.
//
// The server's own certificate is issued by the CA to spiffe://<td>/ns/hypha-system/sa/hypha-ca,
// plus DNS/IP SANs so curl and browsers can check it by host name; it is renewed at half life.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { createSilentLogger, type Logger } from '@hypha/shared';
import {
  CaError,
  type CertificateAuthority,
  SpiffeId,
  splitPemCertificates,
  type WorkloadCertificate,
} from '@hypha/shared/identity';
import type { Authenticator, NodeAuthorizer } from './auth.js';
import type { RevocationSource } from './revocations.js';

export const CA_PORT = 15012;
export const CA_SERVER_NAMESPACE = 'hypha-system';
export const CA_SERVER_SERVICE_ACCOUNT = 'hypha-ca';
const SERVER_CERT_TTL_SECONDS = 24 * 3600;

export interface CaServerOptions {
  ca: CertificateAuthority;
  authenticator: Authenticator;
  authorizer: NodeAuthorizer;
  /** The revocation list in force: a file (RevocationList) or the ConfigMap (KubeRevocationList). */
  revocations?: RevocationSource;
  host?: string;
  /** 0 picks a free port (tests). Default 15012. */
  port?: number;
  /** DNS names and IPs for the serving certificate, next to its SPIFFE id. */
  serverDnsNames?: string[];
  serverIpAddresses?: string[];
  /** Default 64 KiB: a P-256 CSR is well under 1 KiB. */
  maxBodyBytes?: number;
  /** Whole-request deadline (headers + body). Default 10 s. */
  requestTimeoutMs?: number;
  logger?: Logger;
}

export class CaServerError extends Error {
  readonly code: 'LISTEN_FAILED';
  constructor(code: 'LISTEN_FAILED', message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CaServerError';
    this.code = code;
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface CaServerStats {
  issued: number;
  rejected: number;
}

export class CaServer {
  readonly #opts: CaServerOptions;
  readonly #log: Logger;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly serverId: SpiffeId;
  readonly stats: CaServerStats = { issued: 0, rejected: 0 };
  #servingCert: WorkloadCertificate;
  #renewTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  private constructor(opts: CaServerOptions, serving: WorkloadCertificate, serverId: SpiffeId) {
    this.#opts = opts;
    this.#log = (opts.logger ?? createSilentLogger()).child({ component: 'ca-server' });
    this.#servingCert = serving;
    this.serverId = serverId;
    const timeout = opts.requestTimeoutMs ?? 10_000;
    this.#server = createServer(
      {
        key: serving.keyPem,
        cert: serving.certChainPem,
        minVersion: 'TLSv1.2',
        // Node checks request/header deadlines on this interval (default 30 s): check every second
        // so a slow or stalled client is cut off close to its deadline.
        connectionsCheckingInterval: 1000,
      },
      (req, res) => void this.#handle(req, res),
    );
    this.#server.requestTimeout = timeout;
    this.#server.headersTimeout = Math.min(timeout, 5000);
    this.#server.keepAliveTimeout = 5000;
    this.#server.timeout = 30_000;
    this.#server.maxHeadersCount = 50;
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    this.#server.on('tlsClientError', (err) => this.#log.debug({ err: err.message }, 'TLS handshake failed'));
  }

  /** Issues the serving certificate and builds the server; call start() to listen. */
  static async create(opts: CaServerOptions): Promise<CaServer> {
    const serverId = SpiffeId.of(opts.ca.trustDomain, CA_SERVER_NAMESPACE, CA_SERVER_SERVICE_ACCOUNT);
    const serving = await CaServer.#issueServing(opts, serverId);
    return new CaServer(opts, serving, serverId);
  }

  static async #issueServing(opts: CaServerOptions, id: SpiffeId): Promise<WorkloadCertificate> {
    return opts.ca.issue(id, {
      ttlSeconds: SERVER_CERT_TTL_SECONDS,
      dnsNames: opts.serverDnsNames ?? [
        'localhost',
        'hypha-ca',
        'hypha-ca.hypha-system',
        'hypha-ca.hypha-system.svc',
      ],
      ipAddresses: opts.serverIpAddresses ?? ['127.0.0.1', '::1'],
    });
  }

  get servingCertificate(): WorkloadCertificate {
    return this.#servingCert;
  }

  async start(): Promise<AddressInfo> {
    const host = this.#opts.host ?? '0.0.0.0';
    const port = this.#opts.port ?? CA_PORT;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const hint =
          err.code === 'EADDRINUSE' ? ' (another process uses the port; pick one with --listen)' : '';
        reject(
          new CaServerError('LISTEN_FAILED', `cannot listen on ${host}:${port}: ${err.message}${hint}`, {
            cause: err,
          }),
        );
      };
      this.#server.once('error', onError);
      this.#server.listen(port, host, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
    this.#scheduleRenewal();
    const addr = this.address;
    this.#log.info(
      { address: addr.address, port: addr.port, serverId: this.serverId.toString() },
      'CA server listening',
    );
    return addr;
  }

  get address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  /** Stops accepting, lets in-flight requests finish until graceMs, then cuts what is left. */
  close(graceMs = 5000): Promise<void> {
    if (this.#closing) return this.#closing;
    clearTimeout(this.#renewTimer);
    this.#closing = new Promise<void>((resolve) => {
      if (!this.#server.listening) {
        resolve();
        return;
      }
      const force = setTimeout(() => {
        for (const s of this.#sockets) s.destroy();
      }, graceMs);
      force.unref();
      this.#server.close(() => {
        clearTimeout(force);
        resolve();
      });
      this.#server.closeIdleConnections();
    });
    return this.#closing;
  }

  #scheduleRenewal(): void {
    const { notAfter } = this.#servingCert;
    const delay = Math.max(1000, (notAfter.getTime() - Date.now()) / 2);
    this.#renewTimer = setTimeout(
      () => {
        CaServer.#issueServing(this.#opts, this.serverId)
          .then((cert) => {
            this.#servingCert = cert;
            this.#server.setSecureContext({
              key: cert.keyPem,
              cert: cert.certChainPem,
              minVersion: 'TLSv1.2',
            });
            this.#log.info(
              { serial: cert.serial, notAfter: cert.notAfter.toISOString() },
              'renewed CA serving certificate',
            );
          })
          .catch((err: unknown) =>
            this.#log.error({ err: (err as Error).message }, 'renewing CA serving certificate failed'),
          )
          .finally(() => {
            if (!this.#closing) this.#scheduleRenewal();
          });
      },
      Math.min(delay, 2 ** 31 - 1),
    );
    this.#renewTimer.unref();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/v1/certificates') {
        if (req.method !== 'POST')
          throw new HttpError(405, 'METHOD_NOT_ALLOWED', 'use POST /v1/certificates');
        await this.#certificates(req, res);
      } else if (path === '/v1/revocations') {
        if (req.method !== 'GET') throw new HttpError(405, 'METHOD_NOT_ALLOWED', 'use GET /v1/revocations');
        const snap = (await this.#opts.revocations?.fetchSnapshot()) ?? { version: 0, serials: [], ids: [] };
        sendJson(res, 200, snap);
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else {
        throw new HttpError(
          404,
          'NOT_FOUND',
          `no such endpoint ${path}; see POST /v1/certificates, GET /v1/revocations`,
        );
      }
    } catch (err) {
      this.stats.rejected++;
      if (err instanceof HttpError) {
        if (err.status >= 500) this.#log.error({ err: err.message }, 'request failed');
        else this.#log.info({ status: err.status, code: err.code, reason: err.message }, 'request refused');
        sendError(res, err.status, err.code, err.message, err.status === 401);
      } else {
        this.#log.error({ err: (err as Error).message, stack: (err as Error).stack }, 'internal error');
        sendError(res, 500, 'INTERNAL', 'internal error in the CA; see its logs', false);
      }
    }
  }

  async #certificates(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const auth = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (!m) {
      throw new HttpError(401, 'UNAUTHENTICATED', 'missing "Authorization: Bearer <token>" header');
    }
    const caller = await this.#opts.authenticator.authenticate(m[1]!);
    if (!caller)
      throw new HttpError(
        401,
        'UNAUTHENTICATED',
        'unknown bearer token; check the agent token and the CA token file',
      );
    const body = await readBody(req, this.#opts.maxBodyBytes ?? 64 * 1024);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new HttpError(400, 'BAD_REQUEST', 'body is not JSON; send {"csr": "<PEM>", "ttlSeconds": 86400}');
    }
    if (
      typeof parsed !== 'object' ||
      parsed === null ||
      typeof (parsed as { csr?: unknown }).csr !== 'string'
    ) {
      throw new HttpError(400, 'BAD_REQUEST', 'body must be a JSON object with a string field "csr" (PEM)');
    }
    const { csr, ttlSeconds } = parsed as { csr: string; ttlSeconds?: unknown };
    if (
      ttlSeconds !== undefined &&
      (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds < 1)
    ) {
      throw new HttpError(400, 'TTL_INVALID', '"ttlSeconds" must be a number >= 1');
    }
    const ca = this.#opts.ca;
    let verified: Awaited<ReturnType<CertificateAuthority['verifyCsr']>>;
    try {
      verified = await ca.verifyCsr(csr);
    } catch (err) {
      if (err instanceof CaError && err.isClientError) throw new HttpError(400, err.code, err.message);
      throw err;
    }
    const { id } = verified;
    if (await this.#opts.revocations?.isIdentityRevoked(id)) {
      throw new HttpError(403, 'IDENTITY_REVOKED', `${id} is revoked; the CA issues no certificates for it`);
    }
    if (!(await this.#opts.authorizer.authorize(caller.node, id, caller))) {
      throw new HttpError(
        403,
        'FORBIDDEN',
        caller.role === 'workload'
          ? `${caller.serviceAccount?.namespace}/${caller.serviceAccount?.name} (pod ${caller.pod?.name ?? '?'}) may obtain only its own identity with a token bound to a running pod, not ${id}`
          : `node "${caller.node}" runs no pod with service account ${id.namespace}/${id.serviceAccount}; an agent may only obtain identities of pods on its own node`,
      );
    }
    const issued = await ca.signVerifiedCsr(verified, ttlSeconds === undefined ? {} : { ttlSeconds });
    this.stats.issued++;
    this.#log.info(
      {
        node: caller.node,
        id: id.toString(),
        serial: issued.serial,
        notAfter: issued.notAfter.toISOString(),
      },
      'issued certificate',
    );
    sendJson(res, 200, {
      certChain: splitPemCertificates(issued.certChainPem).map(derToPemBlock),
      trustBundle: splitPemCertificates(issued.trustBundlePem).map(derToPemBlock),
      serial: issued.serial,
      notBefore: issued.notBefore.toISOString(),
      notAfter: issued.notAfter.toISOString(),
    });
  }
}

function derToPemBlock(der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    return Promise.reject(new HttpError(413, 'BODY_TOO_LARGE', `request body larger than ${limit} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new HttpError(413, 'BODY_TOO_LARGE', `request body larger than ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const data = JSON.stringify(body);
  res
    .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) })
    .end(data);
}

function sendError(
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  bearer: boolean,
): void {
  if (res.headersSent || res.destroyed) return;
  const data = JSON.stringify({ error: code, message });
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(data),
  };
  if (bearer) headers['www-authenticate'] = 'Bearer realm="hypha-ca"';
  // The body may be unread: do not keep a connection whose request stream is in an unknown state.
  if (status === 413 || status === 401) headers.connection = 'close';
  res.writeHead(status, headers).end(data);
}
