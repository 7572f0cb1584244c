// WebSocket upgrades and non-HTTP bytes pass through the waypoint untouched.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { loopbackIp, startWaypoint, type TestWaypoint } from '../helpers.js';

let wsHttp: http.Server;
let wss: WebSocketServer;
let echo: net.Server;
let banner: net.Server;
let tw: TestWaypoint;
const ips = { ws: loopbackIp(), echo: loopbackIp(), banner: loopbackIp() };

const listen = (s: net.Server, ip: string) =>
  new Promise<number>((resolve) => s.listen(0, ip, () => resolve((s.address() as AddressInfo).port)));

beforeAll(async () => {
  wsHttp = http.createServer();
  wss = new WebSocketServer({ server: wsHttp });
  wss.on('connection', (sock, req) => {
    sock.on('message', (data, isBinary) =>
      sock.send(isBinary ? data : `echo ${req.url}: ${data.toString()}`, { binary: isBinary }),
    );
  });
  const wsPort = await listen(wsHttp, ips.ws);
  echo = net.createServer((s) => s.pipe(s));
  const echoPort = await listen(echo, ips.echo);
  // A server-first protocol: it talks before the client does.
  banner = net.createServer((s) => {
    s.write('220 ready\r\n');
    s.on('data', (d) => s.end(`got ${d.toString()}`));
  });
  const bannerPort = await listen(banner, ips.banner);
  const svc = (name: string, vip: string, ip: string, port: number, portName: string) => ({
    name,
    namespace: 'shop',
    vips: [vip],
    ports: [{ port: 80, name: portName }],
    endpoints: [{ ip, targetPorts: { '80': port } }],
  });
  tw = await startWaypoint(
    {
      services: [
        svc('chat', '10.96.4.1', ips.ws, wsPort, 'http'),
        svc('echo', '10.96.4.2', ips.echo, echoPort, 'tcp-echo'),
        svc('sniffed', '10.96.4.4', ips.echo, echoPort, 'other'),
        svc('banner', '10.96.4.3', ips.banner, bannerPort, 'tcp-banner'),
      ],
    },
    { host: '10.96.4.1', port: 80 },
    { sniffTimeoutMs: 200 },
  );
});

afterAll(async () => {
  await tw.close();
  wss.close();
  wsHttp.close();
  echo.close();
  banner.close();
});

function connectRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

function readUntil(s: net.Socket, want: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes(want)) {
        s.off('data', onData);
        resolve(got);
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error(`closed before "${want}"; got ${JSON.stringify(got)}`)));
  });
}

describe('WebSocket', () => {
  it('echoes text and binary frames through the waypoint', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${tw.port}/room/7`, {
      headers: { host: 'chat.shop.svc.cluster.local' },
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const next = () =>
      new Promise<{ data: WebSocket.RawData; binary: boolean }>((resolve) =>
        ws.once('message', (data, binary) => resolve({ data, binary })),
      );
    let m = next();
    ws.send('hello');
    expect((await m).data.toString()).toBe('echo /room/7: hello');
    const blob = Buffer.alloc(200_000, 7);
    m = next();
    ws.send(blob);
    const got = await m;
    expect(got.binary).toBe(true);
    expect(Buffer.compare(got.data as Buffer, blob)).toBe(0);
    ws.close();
  });
});

describe('plain TCP', () => {
  it('forwards non-HTTP bytes on a tcp port unchanged', async () => {
    const l = await tw.listen({ host: '10.96.4.2', port: 80 });
    const s = await connectRaw(l.port);
    const payload = Buffer.from([0, 1, 2, 255, 254, 10, 13]).toString('latin1');
    const p = readUntil(s, payload);
    s.write(Buffer.from(payload, 'latin1'));
    expect(await p).toBe(payload);
    s.destroy();
  });

  it('detects a non-HTTP client on an HTTP-capable port and forwards it at L4', async () => {
    const l = await tw.listen({ host: '10.96.4.4', port: 80 });
    const s = await connectRaw(l.port);
    const p = readUntil(s, '\u0016\u0003\u0001hello');
    s.write('\u0016\u0003\u0001hello');
    expect(await p).toBe('\u0016\u0003\u0001hello');
    s.destroy();
  });

  it('lets a server-first protocol speak first', async () => {
    const l = await tw.listen({ host: '10.96.4.3', port: 80 });
    const s = await connectRaw(l.port);
    expect(await readUntil(s, '220 ready')).toBe('220 ready\r\n');
    const p = readUntil(s, 'got HELO');
    s.write('HELO');
    expect(await p).toBe('got HELO');
    s.destroy();
  });
});
