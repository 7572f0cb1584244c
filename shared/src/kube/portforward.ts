// A pod's localhost port reached through the API server's port-forward subresource, as
// `kubectl port-forward` and istioctl (for ztunnel's localhost-only admin port) do: the pod proxy
// dials podIP:port and so cannot reach a port bound to 127.0.0.1 inside the pod; port-forward
// connects inside the pod's network namespace.
//
// Wire protocol (Kubernetes' WebSocket port-forward, subprotocol v4.channel.k8s.io):
//   GET /api/v1/namespaces/{ns}/pods/{pod}/portforward?ports=P   (WebSocket upgrade; RBAC verbs
//   `get` and, since Kubernetes 1.35, `create` on `pods/portforward`).
//   Every binary message starts with one channel byte; port i of the `ports` list has data channel
//   2i and error channel 2i+1. The server's first message on each of the two channels carries the
//   port number (2 bytes, little-endian) before any data. The client writes [0, ...bytes] for port
//   0; the error channel carries text when the kubelet could not connect inside the pod (then the
//   connection ends).
//
// One WebSocket carries exactly one TCP connection to the pod's port. PortForwardAgent makes that
// an http.Agent: each socket it hands out is one port-forward, kept alive between requests (HTTP
// keep-alive over the tunnel), at most `maxSockets` per pod open or opening at once (further
// requests queue for a free one), a new one opened when the last broke. Framing is done by the `ws` package; this module only adds the channel byte.
import { Agent as HttpAgent } from 'node:http';
import { Duplex } from 'node:stream';
import WebSocket from 'ws';
import { KubeError } from './errors.js';
import type { KubeConfig } from './kubeconfig.js';

export const PORT_FORWARD_PROTOCOL = 'v4.channel.k8s.io';

export interface PortForwardOptions {
  /** Time allowed for the TCP/TLS connection and the WebSocket handshake. Default 5 s. */
  connectTimeoutMs?: number;
}

/**
 * One TCP connection to a pod's port, as a stream (with what net.Socket offers that node:http
 * calls). Like net.connect, it exists at once and connects in the background: writes wait for the
 * WebSocket to open; a refused upgrade destroys it with the reason (`ready` rejects with it too).
 */
export class PortForwardStream extends Duplex {
  #ws: WebSocket | undefined;
  readonly #port: number;
  readonly #target: string;
  /** Resolves when the tunnel is open; rejects with why it could not be. */
  readonly ready: Promise<void>;
  #seenPort = [false, false];
  #errorText = '';
  #idleMs = 0;
  #idleTimer: NodeJS.Timeout | undefined;
  timeout: number | undefined;

  constructor(
    kc: KubeConfig,
    namespace: string,
    pod: string,
    port: number,
    options: PortForwardOptions = {},
  ) {
    super();
    this.#port = port;
    this.#target = `${namespace}/${pod}:${port}`;
    this.ready = connect(kc, namespace, pod, port, options).then(
      (ws) => {
        if (this.destroyed) {
          ws.terminate();
          throw new Error(`port-forward to ${this.#target}: closed before it opened`);
        }
        this.#attach(ws);
      },
      (err: Error) => {
        this.destroy(err);
        throw err;
      },
    );
    this.ready.catch(() => {});
  }

  #attach(ws: WebSocket): void {
    const target = this.#target;
    this.#ws = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => this.#onMessage(data, isBinary));
    ws.on('close', (code: number, reason: Buffer) => {
      this.#clearIdle();
      if (this.destroyed) return;
      if (this.#errorText !== '') return;
      if (code !== 1000 && code !== 1005 && code !== 1006)
        this.destroy(new Error(`port-forward to ${target}: closed (${code} ${reason.toString('utf8')})`));
      else this.push(null);
    });
    ws.on('error', (err) => this.destroy(new Error(`port-forward to ${target}: ${err.message}`)));
    if (this.isPaused()) ws.pause();
  }

  #onMessage(data: Buffer, isBinary: boolean): void {
    this.#touch();
    if (!isBinary || data.length === 0) return;
    const channel = data[0]!;
    let payload = data.subarray(1);
    if (channel > 1) {
      this.destroy(new Error(`port-forward to ${this.#target}: message on unknown channel ${channel}`));
      return;
    }
    if (!this.#seenPort[channel]) {
      if (payload.length < 2) {
        this.destroy(new Error(`port-forward to ${this.#target}: first message without the port number`));
        return;
      }
      const port = payload.readUInt16LE(0);
      if (port !== this.#port) {
        this.destroy(
          new Error(
            `port-forward to ${this.#target}: the server answered for port ${port}, not ${this.#port}`,
          ),
        );
        return;
      }
      this.#seenPort[channel] = true;
      payload = payload.subarray(2);
    }
    if (payload.length === 0) return;
    if (channel === 1) {
      this.#errorText += payload.toString('utf8');
      this.destroy(new Error(`port-forward to ${this.#target}: ${this.#errorText.trim()}`));
      return;
    }
    if (!this.push(payload)) this.#ws?.pause();
  }

  override _read(): void {
    this.#ws?.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const ws = this.#ws;
    if (ws === undefined) {
      // Still opening: written once open (writes stay in order: one _write at a time).
      this.ready.then(
        () => this._write(chunk, encoding, callback),
        (err: Error) => callback(err),
      );
      return;
    }
    this.#touch();
    if (ws.readyState !== WebSocket.OPEN) {
      callback(new Error(`port-forward to ${this.#target}: the connection is closed`));
      return;
    }
    ws.send(Buffer.concat([Buffer.of(0), chunk]), { binary: true }, (err) => callback(err ?? null));
  }

  override _final(callback: (error?: Error | null) => void): void {
    // v4 has no half-close: the tunnel closes when the stream is destroyed.
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#clearIdle();
    const ws = this.#ws;
    if (ws !== undefined && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING))
      ws.terminate();
    callback(error);
  }

  // What node:http calls on a socket besides the stream methods.
  setTimeout(ms: number, callback?: () => void): this {
    this.#idleMs = ms;
    this.timeout = ms;
    if (callback) this.once('timeout', callback);
    this.#touch();
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }

  #touch(): void {
    this.#clearIdle();
    if (this.#idleMs > 0 && !this.destroyed) {
      this.#idleTimer = setTimeout(() => this.emit('timeout'), this.#idleMs);
      this.#idleTimer.unref();
    }
  }
  #clearIdle(): void {
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }
}

/** What a refused upgrade means for the operator (403 names the missing verb). */
function refusal(status: number, target: string, namespace: string, body: string): KubeError {
  let message = body.trim().slice(0, 300) || 'no body';
  let reason: string | undefined;
  try {
    const st = JSON.parse(body) as { message?: string; reason?: string };
    if (st.message) message = st.message;
    reason = st.reason;
  } catch {
    // not a Status
  }
  let hint = '';
  if (status === 403)
    hint = ` (RBAC: the kubeconfig's user needs verbs "get" and "create" on "pods/portforward" in namespace ${namespace}: a WebSocket upgrade is a GET, and Kubernetes 1.35+ also checks create; see docs/operations.md, "In a cluster")`;
  else if (status === 401) hint = ' (the credentials in the kubeconfig were refused)';
  else if (status === 404) hint = ' (is the pod still there?)';
  return new KubeError('API_ERROR', `port-forward to ${target}: ${status} ${message}${hint}`, status, reason);
}

/** Opens one port-forward connection to `port` of pod `namespace/pod` (resolves once open). */
export async function openPortForward(
  kc: KubeConfig,
  namespace: string,
  pod: string,
  port: number,
  options: PortForwardOptions = {},
): Promise<PortForwardStream> {
  const stream = new PortForwardStream(kc, namespace, pod, port, options);
  // A refused upgrade destroys the stream with the error `ready` rejects with: said once, here.
  const quiet = () => {};
  stream.on('error', quiet);
  await stream.ready;
  stream.off('error', quiet);
  return stream;
}

/** The WebSocket of one port-forward, once the API server accepted the upgrade. */
async function connect(
  kc: KubeConfig,
  namespace: string,
  pod: string,
  port: number,
  options: PortForwardOptions,
): Promise<WebSocket> {
  const target = `${namespace}/${pod}:${port}`;
  const base = new URL(kc.cluster.server);
  const https = base.protocol === 'https:';
  const prefix = base.pathname.replace(/\/$/, '');
  const url = `${https ? 'wss' : 'ws'}://${base.host}${prefix}/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/portforward?ports=${port}`;
  const token = await kc.fetchToken();
  const c = kc.cluster;
  const u = kc.user;
  const ws = new WebSocket(url, [PORT_FORWARD_PROTOCOL], {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    handshakeTimeout: options.connectTimeoutMs ?? 5000,
    perMessageDeflate: false,
    ...(https
      ? {
          ...(c.ca !== undefined ? { ca: c.ca } : {}),
          ...(u.cert !== undefined && u.key !== undefined ? { cert: u.cert, key: u.key } : {}),
          ...(c.tlsServerName ? { servername: c.tlsServerName } : {}),
          rejectUnauthorized: !c.insecureSkipTlsVerify,
        }
      : {}),
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      ws.terminate();
      reject(err);
    };
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => {
        if (chunks.length < 64) chunks.push(d);
      });
      res.on('error', () => fail(refusal(res.statusCode ?? 0, target, namespace, '')));
      res.on('end', () =>
        fail(refusal(res.statusCode ?? 0, target, namespace, Buffer.concat(chunks).toString('utf8'))),
      );
    });
    ws.once('error', (err) =>
      fail(
        new KubeError(
          'API_UNREACHABLE',
          `port-forward to ${target}: ${err.message} (is the API server ${base.origin} reachable from here?)`,
        ),
      ),
    );
    ws.once('open', () => {
      if (settled) return;
      if (ws.protocol !== PORT_FORWARD_PROTOCOL && ws.protocol !== '') {
        fail(
          new KubeError(
            'API_ERROR',
            `port-forward to ${target}: the server chose subprotocol ${ws.protocol}`,
          ),
        );
        return;
      }
      settled = true;
      ws.removeAllListeners('error');
      resolve(ws);
    });
  });
}

/**
 * An http.Agent whose sockets are port-forward connections to one pod's port: requests through it
 * (with any host, e.g. localhost:15000) reach that port inside the pod. Idle connections are kept
 * (keep-alive); at most `maxSockets` at once (default 3: a streaming request plus two others).
 */
export class PortForwardAgent extends HttpAgent {
  readonly #kc: KubeConfig;
  readonly namespace: string;
  readonly pod: string;
  readonly port: number;
  readonly #options: PortForwardOptions;

  constructor(
    kc: KubeConfig,
    namespace: string,
    pod: string,
    port: number,
    options: PortForwardOptions & { maxSockets?: number } = {},
  ) {
    const max = options.maxSockets ?? 3;
    super({ keepAlive: true, maxSockets: max, maxFreeSockets: max });
    this.#kc = kc;
    this.namespace = namespace;
    this.pod = pod;
    this.port = port;
    this.#options = options;
  }

  /** Tunnels open or opening now, in use or idle (never more than maxSockets). */
  get tunnels(): number {
    const count = (d: NodeJS.ReadOnlyDict<unknown[]>) =>
      Object.values(d).reduce((n, list) => n + (list?.length ?? 0), 0);
    return count(this.sockets) + count(this.freeSockets);
  }

  // Synchronous, like net.connect: the agent counts the tunnel while it opens, so maxSockets bounds
  // tunnels and requests beyond it queue for the next free one.
  override createConnection(): Duplex {
    return new PortForwardStream(this.#kc, this.namespace, this.pod, this.port, this.#options);
  }

  override keepSocketAlive(socket: Duplex): boolean {
    // Idle tunnels close after 30 s (the pod or the API server may drop them sooner; a broken one is
    // replaced on the next request).
    (socket as PortForwardStream).setTimeout(30_000);
    return true;
  }

  override reuseSocket(): void {}
}
