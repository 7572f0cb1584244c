// The hand-off protocol between two agent processes' worth of listeners, in one process over a real
// Unix socket and real SCM_RIGHTS: the taker gets the very sockets (a client connecting after the
// hand-off reaches the new server on the same port), a taker that goes away early leaves the old
// side serving, and junk on the socket changes nothing.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import net, { type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSilentLogger } from '@hypha/shared';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { handoffSocketPath, requestTakeover, serveHandoff } from '../../src/agent/handoff.js';

const logger = createSilentLogger();
let dir: string;
let cleanup: (() => unknown)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hypha-handoff-'));
  cleanup = [];
});
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

/** A TCP server on loopback that answers every connection with `name`. */
async function namedServer(name: string): Promise<Server> {
  const s = net.createServer((c) => c.end(name));
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  cleanup.push(() => s.close());
  return s;
}

function ask(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let got = '';
    c.on('data', (d) => {
      got += d;
    });
    c.on('end', () => resolve(got));
    c.on('error', reject);
  });
}

async function serveOld(servers: Map<string, Server>) {
  let stopped = 0;
  const h = await serveHandoff(
    dir,
    {
      listeners: () => servers,
      stopAccepting: () => {
        stopped++;
        for (const s of servers.values()) s.close();
      },
      live: () => 0,
      drain: async (progress) => {
        progress(0);
        return { cut: 0 };
      },
    },
    logger,
  );
  cleanup.push(() => h.close());
  return { h, stopped: () => stopped };
}

describe('agent hand-off', () => {
  it('hands over the very listening sockets: after the take, new connections reach the new agent', async () => {
    const old = await namedServer('old');
    const port = (old.address() as net.AddressInfo).port;
    const { h, stopped } = await serveOld(new Map([['outbound', old]]));
    expect((await stat(handoffSocketPath(dir))).mode & 0o777).toBe(0o600);
    expect(await ask(port)).toBe('old');

    const t = await requestTakeover(dir, logger);
    expect(t).toBeDefined();
    expect([...(t?.fds.keys() ?? [])]).toEqual(['outbound']);
    // Sockets received but not taken yet: the old agent still serves.
    expect(await ask(port)).toBe('old');
    expect(stopped()).toBe(0);

    await t!.commit();
    expect(stopped()).toBe(1);
    const next = net.createServer((c) => c.end('new'));
    await new Promise<void>((r) => next.listen({ fd: t!.fds.get('outbound')! }, r));
    cleanup.push(() => next.close());
    expect(await ask(port)).toBe('new');
    expect(await h.handedOff).toEqual({ cut: 0 });
    expect(await t!.finished).toEqual({ cut: 0 });
  });

  it('a taker that goes away before taking leaves the old side serving, and a later taker succeeds', async () => {
    const old = await namedServer('old');
    const port = (old.address() as net.AddressInfo).port;
    const { stopped } = await serveOld(new Map([['hbone', old]]));
    const first = await requestTakeover(dir, logger);
    first!.abort('test: going away');
    await new Promise((r) => setTimeout(r, 50));
    expect(stopped()).toBe(0);
    expect(await ask(port)).toBe('old');
    const second = await requestTakeover(dir, logger);
    expect(second?.fds.has('hbone')).toBe(true);
    second!.abort('test: done');
  });

  it('junk and a second taker during a hand-off change nothing', async () => {
    const old = await namedServer('old');
    const port = (old.address() as net.AddressInfo).port;
    const { stopped } = await serveOld(new Map([['outbound', old]]));
    await new Promise<void>((resolve) => {
      const c = net.connect(handoffSocketPath(dir), () => {
        c.write('not json\n{"op":"take"}\n');
        c.write(`${'x'.repeat(70_000)}\n`);
      });
      c.on('close', () => resolve());
      c.on('error', () => resolve());
    });
    expect(stopped()).toBe(0);
    const first = await requestTakeover(dir, logger);
    await expect(requestTakeover(dir, logger)).rejects.toThrow(/another hand-off is under way/);
    expect(await ask(port)).toBe('old');
    first!.abort('test: done');
  });

  it('no agent on the socket: nothing to take over', async () => {
    expect(await requestTakeover(dir, logger)).toBeUndefined();
  });
});
