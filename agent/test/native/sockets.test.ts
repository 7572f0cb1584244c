import { createServer, type Server, type Socket } from 'node:net';
import { type ClusterNode, type ClusterPod, TestCluster } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectTransparent,
  getMark,
  getOriginalDst,
  NativeError,
  setFreebind,
  setMark,
  setSendBuffer,
  setTransparent,
} from '../../src/native/index.js';

// Real sockets inside a throwaway namespace cluster: one node, two pods.
let cluster: TestCluster;
let node: ClusterNode;
let client: ClusterPod;
let server: ClusterPod;
const servers: Server[] = [];

beforeAll(async () => {
  cluster = await TestCluster.create({ nodes: ['node'] });
  node = cluster.node('node');
  client = await cluster.addPod({ node: 'node', name: 'client' });
  server = await cluster.addPod({ node: 'node', name: 'server' });
});
afterAll(async () => {
  for (const s of servers) s.close();
  await cluster?.destroy();
});

function nextConnection(listener: Server): Promise<Socket> {
  return new Promise((resolve) => listener.once('connection', resolve));
}

async function listenInNode(host: string): Promise<{ listener: Server; port: number }> {
  const listener = await cluster.listenIn(node.netns, { host, port: 0 });
  servers.push(listener);
  const address = listener.address();
  if (!address || typeof address === 'string') throw new Error('no address');
  return { listener, port: address.port };
}

/** Connects from a pod with a one-line Node client and resolves when it exits. */
function connectFromPod(pod: ClusterPod, host: string, port: number): Promise<unknown> {
  return cluster.exec(pod.netns, process.execPath, [
    '-e',
    `const s = require('net').connect(${port}, '${host}', () => s.end('x')); s.on('data', () => {}); s.on('error', () => process.exit(0));`,
  ]);
}

describe('getOriginalDst', () => {
  it('returns the destination a REDIRECTed IPv4 connection was sent to, also on a dual-stack listener', async () => {
    const v4 = await listenInNode('0.0.0.0');
    const dual = await listenInNode('::');
    await cluster.exec(
      node.netns,
      'nft',
      ['-f', '-'],
      `
      table ip origdst {
        chain pre {
          type nat hook prerouting priority dstnat; policy accept;
          ip daddr 192.0.2.10 tcp dport 80 redirect to :${v4.port}
          ip daddr 192.0.2.11 tcp dport 443 redirect to :${dual.port}
        }
      }
    `,
    );
    const accepted = nextConnection(v4.listener);
    const client1 = connectFromPod(client, '192.0.2.10', 80);
    const sock = await accepted;
    expect(getOriginalDst(sock)).toEqual({ address: '192.0.2.10', port: 80, family: 4 });
    expect(sock.remoteAddress).toBe(client.ip);
    sock.end();
    await client1;

    const acceptedDual = nextConnection(dual.listener);
    const client2 = connectFromPod(client, '192.0.2.11', 443);
    const sockDual = await acceptedDual;
    expect(getOriginalDst(sockDual)).toEqual({ address: '192.0.2.11', port: 443, family: 4 });
    sockDual.end();
    await client2;
  });

  it('returns the original IPv6 destination (IP6T_SO_ORIGINAL_DST)', async () => {
    await cluster.exec(client.netns, 'ip', ['-6', 'addr', 'add', 'fd00:77::2/64', 'dev', 'eth0', 'nodad']);
    await cluster.exec(node.netns, 'ip', [
      '-6',
      'addr',
      'add',
      'fd00:77::1/64',
      'dev',
      client.hostInterface,
      'nodad',
    ]);
    await cluster.exec(client.netns, 'ip', ['-6', 'route', 'add', 'default', 'via', 'fd00:77::1']);
    const v6 = await listenInNode('::');
    await cluster.exec(
      node.netns,
      'nft',
      ['-f', '-'],
      `
      table ip6 origdst6 {
        chain pre {
          type nat hook prerouting priority dstnat; policy accept;
          tcp dport 8443 redirect to :${v6.port}
        }
      }
    `,
    );
    const accepted = nextConnection(v6.listener);
    const done = connectFromPod(client, 'fd00:99::5', 8443);
    const sock = await accepted;
    expect(getOriginalDst(sock)).toEqual({ address: 'fd00:99::5', port: 8443, family: 6 });
    sock.end();
    await done;
  });

  it('fails with a clear error for a closed or foreign descriptor', () => {
    expect(() => getOriginalDst(1_000_000)).toThrow(NativeError);
    expect(() => getOriginalDst(1_000_000)).toThrow(/EBADF/);
    const unconnected = createServer();
    expect(() => getOriginalDst(unconnected as unknown as Socket)).toThrow(/no file descriptor/);
  });
});

describe('socket options', () => {
  it('sets SO_MARK, IP_TRANSPARENT and IP_FREEBIND on a live socket', async () => {
    const listener = createServer((s) => s.end());
    servers.push(listener);
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    const fd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
    setMark(fd, 0x111);
    expect(getMark(fd)).toBe(0x111);
    setMark(fd, 0);
    expect(getMark(fd)).toBe(0);
    expect(() => setTransparent(fd, true)).not.toThrow();
    expect(() => setFreebind(fd, true)).not.toThrow();
    expect(() => setMark(fd, -1)).toThrow(/0\.\.0xffffffff/);
  });
});

describe('setSendBuffer', () => {
  it('gives an HBONE socket a send buffer past net.core.wmem_max (as root), and refuses nonsense', async () => {
    const listener = createServer((s) => s.end());
    servers.push(listener);
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    const fd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
    // The kernel keeps twice the request; wmem_max caps plain SO_SNDBUF at 2 x 212992 by default.
    expect(setSendBuffer(fd, 4 * 1024 * 1024)).toBe(8 * 1024 * 1024);
    expect(() => setSendBuffer(fd, 0)).toThrow(/positive 32-bit integer/);
    expect(() => setSendBuffer(1_000_000, 1024)).toThrow(/EBADF/);
  });
});

describe('connectTransparent', () => {
  // Another pod's IP that is not configured anywhere on this node: the source the server must see.
  const foreignClient = (): string => cluster.allocateServiceIp();

  it('times out with a routing hint when replies are not routed back to the transparent socket', async () => {
    const echo = await cluster.startApp(server, 'http-echo', ['--port', '0', '--pod', 'server']);
    const err = await connectTransparent({
      netns: node.netns,
      localAddress: foreignClient(),
      remoteAddress: server.ip,
      remotePort: echo.port,
      timeoutMs: 500,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NativeError);
    expect((err as NativeError).code).toBe('CONNECT_TIMEOUT');
    expect((err as NativeError).message).toMatch(/policy routing/);
    await echo.stop();
  });

  it('connects from a non-local source IP, and the server sees that IP', async () => {
    // The node-mode capture's policy routing (FACTS.md): mark packets of transparent sockets and
    // deliver marked packets locally.
    await cluster.exec(
      node.netns,
      'nft',
      ['-f', '-'],
      `
      table inet tproxytest {
        chain mangle { type filter hook prerouting priority mangle; policy accept;
          meta l4proto tcp socket transparent 1 meta mark set 0x111
        }
      }
    `,
    );
    await cluster.exec(node.netns, 'ip', ['rule', 'add', 'fwmark', '0x111', 'lookup', '111']);
    await cluster.exec(node.netns, 'ip', ['route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '111']);

    const echo = await cluster.startApp(server, 'http-echo', ['--port', '0', '--pod', 'server']);
    const source = foreignClient();
    const socket = await connectTransparent({
      netns: node.netns,
      localAddress: source,
      remoteAddress: server.ip,
      remotePort: echo.port,
      mark: 0x222,
    });
    expect(socket.remoteAddress).toBe(server.ip);
    expect(socket.localAddress).toBe(source);
    expect(getMark(socket)).toBe(0x222);
    const body = await new Promise<string>((resolve, reject) => {
      let data = '';
      socket.on('data', (d: Buffer) => {
        data += d.toString();
      });
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
      socket.write('GET /hello HTTP/1.1\r\nhost: server\r\nconnection: close\r\n\r\n');
    });
    const json = JSON.parse(body.slice(body.indexOf('\r\n\r\n') + 4)) as { peer: string; path: string };
    expect(json.path).toBe('/hello');
    expect(json.peer).toBe(`${source}:${socket.localPort}`);

    // Many at once: each waits on the event loop, none blocks it.
    const sockets = await Promise.all(
      Array.from({ length: 40 }, () =>
        connectTransparent({
          netns: node.netns,
          localAddress: source,
          remoteAddress: server.ip,
          remotePort: echo.port,
        }),
      ),
    );
    expect(new Set(sockets.map((s) => s.localPort)).size).toBe(40);
    for (const s of sockets) s.destroy();
    socket.destroy();
  });

  it('reports a refused connection with its errno', async () => {
    const err = await connectTransparent({
      netns: node.netns,
      localAddress: foreignClient(),
      remoteAddress: server.ip,
      remotePort: 1,
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CONNECT_FAILED', errno: 'ECONNREFUSED' });
    expect(String((err as Error).message)).toContain(`${server.ip}:1`);
  });

  it('can be aborted, and validates its input before touching the kernel', async () => {
    const controller = new AbortController();
    const pending = connectTransparent({
      netns: node.netns,
      localAddress: foreignClient(),
      // On the fabric but owned by nobody: the connect just waits.
      remoteAddress: node.ip.replace(/\.\d+$/, '.200'),
      remotePort: 80,
      signal: controller.signal,
    });
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'CONNECT_ABORTED' });
    await expect(
      connectTransparent({ localAddress: '::1', remoteAddress: '10.0.0.1', remotePort: 80 }),
    ).rejects.toThrow(/must be an IPv4 address/);
    await expect(
      connectTransparent({ localAddress: '10.0.0.2', remoteAddress: '10.0.0.1', remotePort: 0 }),
    ).rejects.toThrow(/remotePort must be 1..65535/);
    await expect(
      connectTransparent({
        netns: 'no-such-netns-x',
        localAddress: '10.0.0.2',
        remoteAddress: '10.0.0.1',
        remotePort: 80,
      }),
    ).rejects.toThrow(/cannot enter the network namespace/);
  });
});
