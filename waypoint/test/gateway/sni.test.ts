// SNI from a real TLS ClientHello (node:tls as the client), read without consuming the bytes.
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, expect, it } from 'vitest';
import { parseSni, peekSni } from '../../src/gateway/sni.js';

const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** The first bytes a TLS client sends for `servername` (undefined: no SNI). */
async function clientHello(servername: string | undefined): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer();
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const c = tls.connect({
    port,
    host: '127.0.0.1',
    ...(servername ? { servername } : {}),
    rejectUnauthorized: false,
  });
  c.on('error', () => {});
  return { server, port };
}

it('reads the server name and leaves every byte for the next reader', async () => {
  const { server } = await clientHello('p.example.test');
  const socket = await new Promise<net.Socket>((r) => server.once('connection', r));
  expect(await peekSni(socket, 2000)).toBe('p.example.test');
  // The engine reads with 'readable' (as its protocol sniffing does).
  const first = await new Promise<Buffer>((r) => socket.once('readable', () => r(socket.read() as Buffer)));
  expect(first[0]).toBe(0x16);
  expect(parseSni(first)).toBe('p.example.test');
  socket.destroy();
});

it('a hello without SNI, plain HTTP and a partial record give no name', async () => {
  const { server } = await clientHello(undefined);
  const socket = await new Promise<net.Socket>((r) => server.once('connection', r));
  expect(await peekSni(socket, 2000)).toBeUndefined();
  socket.destroy();
  expect(parseSni(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toBeUndefined();
  expect(parseSni(Buffer.from([0x16, 0x03, 0x01]))).toBe('incomplete');
});
