// The stand-in's pod port-forward subresource over WebSocket, as the API server relays it to the
// kubelet: GET /api/v1/namespaces/{ns}/pods/{name}/portforward?ports=P[,Q] upgraded to a WebSocket
// with subprotocol v4.channel.k8s.io (or none: the same binary framing). RBAC is checked by the
// caller (verbs `get` and `create` on `pods/portforward`, as Kubernetes 1.35 checks an upgrade).
//
// Framing (Kubernetes' wsstream channel protocol): each binary message is [channel byte, ...data].
// Port i of the list gets data channel 2i and error channel 2i+1; the server first sends the port
// number (uint16 little-endian) on both, then relays bytes between the data channel and a TCP
// connection to the port "inside the pod". A connection that fails is reported as text on the
// error channel, as the kubelet does, and the WebSocket closes.
//
// Pods here are not real network namespaces: tests say where each pod's port leads (a host:port
// or a unix socket, e.g. LocalMesh.exposeAdmin()'s socket for a node's localhost admin port).
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';

export const PORT_FORWARD_PROTOCOLS = ['v4.channel.k8s.io'];

/** Where a pod's port leads in the test: TCP or a unix socket. */
export type PortForwardTarget = { host: string; port: number } | { path: string };

/** Parses `ports=` (comma-separated, may repeat) as the kubelet does; throws a message for 400. */
export function parsePorts(query: URLSearchParams): number[] {
  const texts = query.getAll('ports').flatMap((v) => v.split(','));
  if (texts.length === 0) throw new Error('at least one port must be specified');
  return texts.map((t) => {
    const n = Number(t.trim());
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`invalid port "${t}"`);
    return n;
  });
}

function portBytes(channel: number, port: number): Buffer {
  const b = Buffer.alloc(3);
  b[0] = channel;
  b.writeUInt16LE(port, 1);
  return b;
}

export interface PortForwardRelay {
  /** Completes an upgrade the caller has authenticated and authorized. */
  upgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    pod: { namespace: string; name: string; uid?: string },
    ports: number[],
    target: (port: number) => PortForwardTarget | undefined,
  ): void;
  /** Open port-forward WebSockets now. */
  readonly open: number;
  close(): void;
}

export function createPortForwardRelay(): PortForwardRelay {
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (offered) => PORT_FORWARD_PROTOCOLS.find((p) => offered.has(p)) ?? false,
  });
  const live = new Set<WebSocket>();

  const relay = (
    ws: WebSocket,
    pod: { namespace: string; name: string; uid?: string },
    ports: number[],
    target: (port: number) => PortForwardTarget | undefined,
  ): void => {
    live.add(ws);
    const sockets: (Socket | undefined)[] = [];
    const fail = (i: number, port: number, why: string) => {
      if (ws.readyState !== ws.OPEN) return;
      const text = `error forwarding port ${port} to pod ${pod.name}, uid ${pod.uid ?? ''}: failed to connect to localhost:${port} inside the pod's network namespace: ${why}`;
      ws.send(Buffer.concat([Buffer.of(2 * i + 1), Buffer.from(text)]));
      ws.close(1000);
    };
    ports.forEach((port, i) => {
      ws.send(portBytes(2 * i, port));
      ws.send(portBytes(2 * i + 1, port));
      const where = target(port);
      if (where === undefined) {
        fail(i, port, 'connect: connection refused');
        return;
      }
      const s = 'path' in where ? connect(where.path) : connect(where.port, where.host);
      sockets[i] = s;
      s.on('data', (d: Buffer) => {
        if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.of(2 * i), d]));
      });
      s.on('error', (err: NodeJS.ErrnoException) => fail(i, port, `connect: ${err.code ?? err.message}`));
      // The pod's side ended the connection: the port-forward ends with it.
      s.on('end', () => {
        if (ws.readyState === ws.OPEN) ws.close(1000);
      });
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary || data.length === 0) return;
      const channel = data[0]!;
      const i = channel / 2;
      if (!Number.isInteger(i) || i >= ports.length) {
        // Odd channels are the server's error channels; writing there (or past the ports) is a
        // protocol error.
        ws.close(1002, `invalid channel ${channel}`);
        return;
      }
      sockets[i]?.write(data.subarray(1));
    });
    ws.on('close', () => {
      live.delete(ws);
      for (const s of sockets) s?.destroy();
    });
    ws.on('error', () => ws.terminate());
  };

  return {
    upgrade(req, socket, head, pod, ports, target) {
      wss.handleUpgrade(req, socket, head, (ws) => relay(ws, pod, ports, target));
    },
    get open() {
      return live.size;
    },
    close() {
      for (const ws of live) ws.terminate();
      wss.close();
    },
  };
}
