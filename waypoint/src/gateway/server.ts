// The ingress gateway's sockets: one per listener port, reconciled with every new plan.
//
//   :80   HTTP  ─ net.Server ───────────────┐
//   :443  HTTPS ─ tls.Server (SNI → cert) ──┼─► engine.handleStream(socket, authority LISTENER_VIP:port)
//   :8443 TLS   ─ net.Server ─ peek SNI ─► TLSRoute ─► backend ─┐
//   :5432 TCP   ─ net.Server ─► TCPRoute ─► backend ────────────┴─► engine.handleStream(socket, authority VIP:port)
//
// Invariants:
// - Sockets read the current plan at accept/handshake time: a route, listener or certificate change
//   applies to the next connection (a new certificate to the next handshake) without reopening.
// - A port whose kind changed (HTTP → HTTPS) is closed and reopened; a port no listener uses is
//   closed (live connections finish). A port that cannot be bound is reported (Programmed False)
//   and retried with the next plan; the other ports serve.
import net, { type Server, type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { Logger } from '@hypha/shared';
import { listenAllFamilies } from '@hypha/shared/daemon';
import type { Waypoint } from '../proxy.js';
import { type GatewayPlan, LISTENER_VIP } from './input.js';
import { findListenerForSni, type ListenerProtocol } from './listeners.js';
import { findStreamRoute, pickStreamBackend, type StreamRoute } from './routes.js';
import { peekSni } from './sni.js';

export interface GatewayListenersOptions {
  engine: Waypoint;
  logger: Logger;
  /** How long a passthrough connection may take to send its ClientHello. */
  helloTimeoutMs?: number;
}

interface OpenPort {
  kind: ListenerProtocol;
  server: Server;
  /** Set when listening failed. */
  error: string | undefined;
  listening: Promise<void>;
}

function clientOf(s: Socket): { ip: string; port: number } {
  const ip = s.remoteAddress ?? '';
  return { ip: ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip, port: s.remotePort ?? 0 };
}

export class GatewayListeners {
  readonly #engine: Waypoint;
  readonly #log: Logger;
  readonly #helloMs: number;
  readonly #ports = new Map<number, OpenPort>();
  #plan: GatewayPlan | undefined;
  #closed = false;

  constructor(opts: GatewayListenersOptions) {
    this.#engine = opts.engine;
    this.#log = opts.logger.child({ component: 'gateway-listeners' });
    this.#helloMs = opts.helloTimeoutMs ?? 10_000;
  }

  /** Applies a plan: opens, reopens and closes ports; resolves once every port tried to listen. */
  async apply(plan: GatewayPlan | undefined): Promise<void> {
    if (this.#closed) return;
    this.#plan = plan;
    const wanted = plan?.compiled.ports ?? new Map();
    for (const [port, open] of this.#ports) {
      const p = wanted.get(port);
      if (p === undefined || p.kind !== open.kind || open.error !== undefined) {
        this.#ports.delete(port);
        open.server.close();
        if (open.error === undefined) this.#log.info({ port, kind: open.kind }, 'listener port closed');
      }
    }
    const pending: Promise<void>[] = [];
    for (const [port, p] of wanted) {
      let open = this.#ports.get(port);
      if (open === undefined) {
        open = this.#open(port, p.kind);
        this.#ports.set(port, open);
      }
      if (p.kind === 'HTTPS') this.#setDefaultContext(open.server as tls.Server, port);
      pending.push(open.listening);
    }
    await Promise.all(pending);
  }

  /** Why a listener port is not serving, or undefined when it listens. */
  findPortError(port: number): string | undefined {
    const open = this.#ports.get(port);
    if (open === undefined) return 'not open';
    return open.error;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const servers = [...this.#ports.values()].map((o) => o.server);
    this.#ports.clear();
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }

  #open(port: number, kind: ListenerProtocol): OpenPort {
    const server =
      kind === 'HTTPS'
        ? tls.createServer(
            {
              ALPNProtocols: ['h2', 'http/1.1'],
              minVersion: 'TLSv1.2',
              SNICallback: (name, cb) => {
                const l = this.#findTlsListener(port, name);
                if (l?.certificate === undefined) {
                  cb(new Error(`no HTTPS listener on port ${port} serves "${name}"`), undefined);
                  return;
                }
                cb(null, l.certificate.context);
              },
            },
            (s: TLSSocket) => this.#serveHttp(s, port),
          )
        : net.createServer({ allowHalfOpen: true, noDelay: true }, (s: Socket) => {
            if (kind === 'HTTP') this.#serveHttp(s, port);
            else void this.#serveStream(s, port, kind);
          });
    if (kind === 'HTTPS') {
      server.on('tlsClientError', (err: Error, s: TLSSocket) => {
        this.#log.debug({ port, client: clientOf(s).ip, err: err.message }, 'TLS handshake failed');
        s.destroy();
      });
    }
    server.on('error', (err: Error) => this.#log.warn({ port, err: err.message }, 'listener error'));
    const open: OpenPort = {
      kind,
      server,
      error: undefined,
      listening: listenAllFamilies(server, port).then(
        (addr) => {
          this.#log.info({ port, bound: addr.port, kind }, 'listener port open');
        },
        (err: Error) => {
          open.error = `cannot listen on port ${port}: ${err.message}`;
          this.#log.warn({ port, err: err.message }, 'listener port failed to open');
        },
      ),
    };
    return open;
  }

  #findTlsListener(port: number, serverName: string | undefined) {
    const plan = this.#plan?.compiled.ports.get(port);
    return plan === undefined ? undefined : findListenerForSni(plan, serverName);
  }

  /** Clients without SNI get the certificate of a listener without hostname, if there is one. */
  #setDefaultContext(server: tls.Server, port: number): void {
    const l = this.#plan?.compiled.ports.get(port)?.listeners.find((x) => x.hostname === undefined);
    if (l?.certificate !== undefined)
      server.setSecureContext({ cert: l.certificate.certificate, key: l.certificate.privateKey });
  }

  #serveHttp(s: Socket, port: number): void {
    s.on('error', () => {});
    this.#engine.handleStream(s, {
      peer: undefined,
      authority: { host: LISTENER_VIP, port },
      source: clientOf(s),
    });
  }

  async #serveStream(s: Socket, port: number, kind: ListenerProtocol): Promise<void> {
    s.on('error', () => {});
    const sni = kind === 'TLS' ? await peekSni(s, this.#helloMs) : undefined;
    if (s.destroyed) return;
    const plan = this.#plan;
    const routes: StreamRoute[] = kind === 'TLS' ? (plan?.tlsRoutes ?? []) : (plan?.tcpRoutes ?? []);
    const route = findStreamRoute(routes, port, sni);
    const backend = route === undefined ? undefined : pickStreamBackend(route);
    const svc =
      backend === undefined
        ? undefined
        : plan?.input.services.find((x) => `${x.namespace}/${x.name}` === backend.service);
    const vip = svc?.vips[0];
    if (route === undefined || backend === undefined || vip === undefined) {
      this.#log.info(
        { port, sni, client: clientOf(s).ip, route: route?.name, backend: backend?.service },
        route === undefined
          ? `no ${kind === 'TLS' ? 'TLSRoute' : 'TCPRoute'} for this connection; closed`
          : `${route.kind} ${route.name}: backend ${backend?.service ?? '(none)'} unknown; closed`,
      );
      s.destroy();
      return;
    }
    this.#engine.handleStream(s, {
      peer: undefined,
      authority: { host: vip, port: backend.port },
      source: clientOf(s),
    });
  }
}
