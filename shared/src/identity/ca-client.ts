// Client of the CA's HTTPS API (see docs/identity-and-ca.md).
//
// The CA server is authenticated like any mesh peer: its certificate must chain to the configured
// root and carry the CA's SPIFFE id (spiffe://<td>/ns/hypha-system/sa/hypha-ca by default); host
// names are not used. Every response is checked before use: the chain verifies against the returned
// trust bundle, names the requested identity, and certifies our own public key.
import { createPublicKey, type KeyObject, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { Agent, request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import type { IssuedCertificate, WorkloadCertificate } from './ca.js';
import {
  identityFromCertificate,
  joinPem,
  normalizeSerial,
  splitPemCertificates,
  verifyChain,
} from './certificate.js';
import { createCsr, generateKeyPair, type KeyPair } from './keys.js';
import type { SpiffeId } from './spiffe.js';
import { subtle } from './x509.js';

export type CaClientErrorCode =
  /** TCP/TLS connection failed (CA down, wrong address, network policy). Retry with backoff. */
  | 'CA_UNREACHABLE'
  /** No answer within the timeout. Retry with backoff. */
  | 'CA_TIMEOUT'
  /** The CA's certificate did not verify or is not the CA's identity. Check the root and address. */
  | 'CA_SERVER_IDENTITY'
  /** 401: the token is missing or unknown to the CA. */
  | 'CA_UNAUTHENTICATED'
  /** 403: this node may not obtain that identity (no such pod on the node, or revoked). */
  | 'CA_FORBIDDEN'
  /** 400: the CA refused the CSR (see message). */
  | 'CA_REJECTED'
  /** 5xx or another unexpected status. Retry with backoff. */
  | 'CA_SERVER_ERROR'
  /** The answer was not what was asked for (bad JSON, chain does not verify, other key or identity). */
  | 'CA_BAD_RESPONSE';

export class CaClientError extends Error {
  readonly code: CaClientErrorCode;
  /** HTTP status when the CA answered. */
  readonly status: number | undefined;
  /** The CA's own error code ({error} in the JSON body), when it sent one. */
  readonly serverCode: string | undefined;
  constructor(
    code: CaClientErrorCode,
    message: string,
    extra: { status?: number; serverCode?: string; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'CaClientError';
    this.code = code;
    this.status = extra.status;
    this.serverCode = extra.serverCode;
  }

  /** Worth retrying later (the CA or the network may recover); 4xx answers are not. */
  get retryable(): boolean {
    return this.code === 'CA_UNREACHABLE' || this.code === 'CA_TIMEOUT' || this.code === 'CA_SERVER_ERROR';
  }
}

export interface RevocationSnapshot {
  version: number;
  serials: string[];
  ids: string[];
}

export interface CaClientOptions {
  /** e.g. https://hypha-ca.hypha-system.svc:15012 or https://127.0.0.1:15012 */
  url: string;
  /** Bearer token, or a function returning the current one (rotated service-account tokens). */
  token: string | (() => string | Promise<string>);
  /** Roots that the CA server's certificate must chain to (PEM). */
  caTrustBundlePem: string;
  /** The CA server's SPIFFE id. Default: ns hypha-system, sa hypha-ca, in the trust domain asked for. */
  caId?: SpiffeId;
  /** Per-request deadline. Default 10 s. */
  timeoutMs?: number;
  /** Concurrent connections to the CA. Default 8. */
  maxSockets?: number;
}

export class CaClient {
  readonly #url: URL;
  readonly #opts: CaClientOptions;
  readonly #agent: Agent;

  constructor(opts: CaClientOptions) {
    let url: URL;
    try {
      url = new URL(opts.url);
    } catch {
      throw new TypeError(`CA address ${JSON.stringify(opts.url)} is not a URL; use https://host:15012`);
    }
    if (url.protocol !== 'https:') throw new TypeError(`CA address ${opts.url} must use https://`);
    if (splitPemCertificates(opts.caTrustBundlePem).length === 0) {
      throw new TypeError('caTrustBundlePem holds no PEM certificate: pass the CA root (root-cert.pem)');
    }
    this.#url = url;
    this.#opts = opts;
    this.#agent = new Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 8, ca: opts.caTrustBundlePem });
  }

  /** Sends a CSR for `id` made with `keys`; returns the verified chain and trust bundle. */
  async fetchCertificate(
    id: SpiffeId,
    keys: KeyPair,
    opts: { ttlSeconds?: number } = {},
  ): Promise<IssuedCertificate> {
    const csr = await createCsr(id, keys);
    const body: { csr: string; ttlSeconds?: number } = { csr };
    if (opts.ttlSeconds !== undefined) body.ttlSeconds = opts.ttlSeconds;
    const res = await this.#request('POST', '/v1/certificates', id, body);
    const data = res as { certChain?: unknown; trustBundle?: unknown };
    if (!isPemList(data.certChain) || !isPemList(data.trustBundle)) {
      throw new CaClientError('CA_BAD_RESPONSE', 'CA answer lacks "certChain" and "trustBundle" PEM lists');
    }
    const certChainPem = joinPem(data.certChain);
    const trustBundlePem = joinPem(data.trustBundle);
    const check = verifyChain(certChainPem, trustBundlePem);
    if (!check.ok)
      throw new CaClientError('CA_BAD_RESPONSE', `certificate from the CA does not verify: ${check.reason}`);
    if (!check.id.equals(id)) {
      throw new CaClientError('CA_BAD_RESPONSE', `CA issued a certificate for ${check.id}, not ${id}`);
    }
    const leaf = new NodeX509Certificate(splitPemCertificates(certChainPem)[0]!);
    const ours = createPublicKey(await spkiPem(keys.publicKey));
    if (!sameKey(leaf.publicKey, ours)) {
      throw new CaClientError('CA_BAD_RESPONSE', 'certificate from the CA is not for the key in our CSR');
    }
    return {
      id,
      serial: normalizeSerial(leaf.serialNumber),
      notBefore: leaf.validFromDate,
      notAfter: leaf.validToDate,
      certChainPem,
      trustBundlePem,
    };
  }

  /** New key, CSR and certificate in one call: what a certificate manager needs. */
  async fetchWorkloadCertificate(
    id: SpiffeId,
    opts: { ttlSeconds?: number } = {},
  ): Promise<WorkloadCertificate> {
    const keys = await generateKeyPair();
    const issued = await this.fetchCertificate(id, keys, opts);
    return { ...issued, keyPem: keys.privateKeyPem };
  }

  async fetchRevocations(): Promise<RevocationSnapshot> {
    const res = (await this.#request(
      'GET',
      '/v1/revocations',
      undefined,
      undefined,
    )) as Partial<RevocationSnapshot>;
    if (typeof res.version !== 'number' || !Array.isArray(res.serials) || !Array.isArray(res.ids)) {
      throw new CaClientError('CA_BAD_RESPONSE', 'CA revocation list lacks version, serials or ids');
    }
    return { version: res.version, serials: res.serials.map(String), ids: res.ids.map(String) };
  }

  close(): void {
    this.#agent.destroy();
  }

  async #request(method: string, path: string, forId: SpiffeId | undefined, body: unknown): Promise<unknown> {
    const token = method === 'POST' ? await this.#token() : undefined;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const url = new URL(path, this.#url);
    const timeoutMs = this.#opts.timeoutMs ?? 10_000;
    const expected = this.#opts.caId;
    let identityProblem: string | undefined;
    const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
      try {
        const sid = identityFromCertificate(cert.raw);
        const ok = expected
          ? sid.equals(expected)
          : sid.namespace === 'hypha-system' &&
            sid.serviceAccount === 'hypha-ca' &&
            (forId === undefined || sid.trustDomain === forId.trustDomain);
        if (!ok)
          identityProblem = `CA server presented ${sid}, expected ${expected ?? 'the hypha-ca identity'}`;
      } catch (err) {
        identityProblem = `CA server certificate has no usable identity: ${(err as Error).message}`;
      }
      return identityProblem ? new Error(identityProblem) : undefined;
    };
    return new Promise<unknown>((resolve, reject) => {
      const headers: Record<string, string | number> = { accept: 'application/json' };
      if (token !== undefined) headers.authorization = `Bearer ${token}`;
      if (payload !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = Buffer.byteLength(payload);
      }
      const req = request(
        url,
        {
          method,
          headers,
          agent: this.#agent,
          ca: this.#opts.caTrustBundlePem,
          checkServerIdentity,
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > 1024 * 1024) res.destroy(new Error('CA answer larger than 1 MiB'));
            else chunks.push(c);
          });
          res.on('error', (err) =>
            reject(
              new CaClientError('CA_UNREACHABLE', `reading the CA answer failed: ${err.message}`, {
                cause: err,
              }),
            ),
          );
          res.on('end', () => {
            clearTimeout(deadline);
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            const status = res.statusCode ?? 0;
            if (status === 200) {
              if (json === undefined)
                reject(new CaClientError('CA_BAD_RESPONSE', 'CA answered 200 with a body that is not JSON'));
              else resolve(json);
              return;
            }
            const err = json as { error?: unknown; message?: unknown } | undefined;
            const serverCode = typeof err?.error === 'string' ? err.error : undefined;
            const detail = typeof err?.message === 'string' ? err.message : text.slice(0, 200);
            const code: CaClientErrorCode =
              status === 401
                ? 'CA_UNAUTHENTICATED'
                : status === 403
                  ? 'CA_FORBIDDEN'
                  : status >= 400 && status < 500
                    ? 'CA_REJECTED'
                    : 'CA_SERVER_ERROR';
            const opts: { status: number; serverCode?: string } = { status };
            if (serverCode !== undefined) opts.serverCode = serverCode;
            reject(
              new CaClientError(
                code,
                `CA answered ${status}${serverCode ? ` ${serverCode}` : ''}: ${detail}`,
                opts,
              ),
            );
          });
        },
      );
      // Whole-request deadline; `timeout` above only covers socket inactivity.
      const deadline = setTimeout(
        () =>
          req.destroy(
            new CaClientError(
              'CA_TIMEOUT',
              `no answer from the CA at ${this.#url.origin} within ${timeoutMs} ms`,
            ),
          ),
        timeoutMs,
      );
      req.on('timeout', () =>
        req.destroy(
          new CaClientError(
            'CA_TIMEOUT',
            `no answer from the CA at ${this.#url.origin} within ${timeoutMs} ms`,
          ),
        ),
      );
      req.on('error', (err) => {
        clearTimeout(deadline);
        if (err instanceof CaClientError) reject(err);
        else if (identityProblem)
          reject(new CaClientError('CA_SERVER_IDENTITY', identityProblem, { cause: err }));
        else if (isTlsVerifyError(err)) {
          reject(
            new CaClientError(
              'CA_SERVER_IDENTITY',
              `CA server certificate at ${this.#url.origin} does not verify against the configured root (${err.message}); check the root file`,
              { cause: err },
            ),
          );
        } else {
          reject(
            new CaClientError(
              'CA_UNREACHABLE',
              `cannot reach the CA at ${this.#url.origin}: ${err.message}; check the address and that \`hypha ca serve\` runs`,
              {
                cause: err,
              },
            ),
          );
        }
      });
      req.end(payload);
    });
  }

  async #token(): Promise<string> {
    const t = this.#opts.token;
    return typeof t === 'function' ? await t() : t;
  }
}

function isPemList(v: unknown): v is string[] {
  return (
    Array.isArray(v) &&
    v.length > 0 &&
    v.every((s) => typeof s === 'string' && s.includes('BEGIN CERTIFICATE'))
  );
}

function isTlsVerifyError(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code);
}

async function spkiPem(key: KeyPair['publicKey']): Promise<string> {
  const der = Buffer.from(await subtle.exportKey('spki', key));
  return `-----BEGIN PUBLIC KEY-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END PUBLIC KEY-----\n`;
}

function sameKey(a: KeyObject, b: KeyObject): boolean {
  return a.equals(b);
}
