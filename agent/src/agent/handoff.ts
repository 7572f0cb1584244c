// The zero-drop upgrade: a new agent process takes the listening sockets of the running one on the
// same node, over a Unix socket in a node-local directory (`<dir>/agent.sock`), with SCM_RIGHTS.
//
//   new agent (config synced, certificates held)        running agent (serving)
//   connect agent.sock, {"op":"takeover"}  ───────────►
//                                          ◄───────────  {"op":"sockets","names":[...]} + the fds
//   {"op":"take"}                          ───────────►  stop accepting, close agent.sock
//                                          ◄───────────  {"op":"released"}
//   listen on every fd (connections that arrived
//   meanwhile waited in the kernel's accept queue
//   of the very same sockets: none is refused)
//   bind agent.sock (for the next upgrade)                GOAWAY to HBONE peers, drain live
//                                          ◄───────────  {"op":"draining","live":N} every second
//                                          ◄───────────  {"op":"done","cut":K}, exit
//
// Invariants:
// - The running agent gives nothing up until the new one asks to take the sockets: a new agent
//   that dies or fails before that leaves the old one serving, and it says so. The new agent does
//   not accept on the received sockets before the old one released them, so one that dies early
//   has accepted nothing (no connection dies with it).
// - The listening sockets are the same kernel objects in both processes (dup'd descriptors): when
//   the old process closes its copies they stay open in the new one, and connections that arrive
//   between "released" and the new agent's first accept wait in the same accept queue.
// - One hand-off at a time; a second taker is told `busy`.
// - Only the agent's own user can connect: the directory is 0700 and the socket 0600.
// - The socket file is bound only after the old agent released it (libuv unlinks a Unix socket's
//   path when its server closes, which would remove a path bound earlier by the new agent).
import { closeSync } from 'node:fs';
import { chmod, unlink } from 'node:fs/promises';
import net, { type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '@hypha/shared';
import { findSocketFd, NativeError, receiveFds, sendFds } from '../native/index.js';

export const HANDOFF_SOCKET = 'agent.sock';

export function handoffSocketPath(dir: string): string {
  return join(dir, HANDOFF_SOCKET);
}

type Message =
  | { op: 'takeover'; pid: number; version?: string }
  | { op: 'sockets'; names: string[]; pid: number }
  | { op: 'take' }
  | { op: 'released'; live: number }
  | { op: 'draining'; live: number }
  | { op: 'done'; cut: number }
  | { op: 'busy' | 'refused'; reason: string };

function parse(line: string): Message | undefined {
  try {
    const m = JSON.parse(line) as Message;
    return typeof m === 'object' && m !== null && typeof m.op === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads newline-delimited JSON messages from a socket. A peer that sends anything else (not JSON,
 * no `op`, or a line over 64 KiB) is not an agent: its connection is closed.
 */
function onMessages(socket: Socket, handle: (m: Message) => void): void {
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buf += chunk;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const m = parse(line);
      if (m === undefined) {
        socket.destroy();
        return;
      }
      handle(m);
    }
    if (buf.length > 65536) socket.destroy();
  });
}

function send(socket: Socket, m: Message): void {
  if (!socket.destroyed) socket.write(`${JSON.stringify(m)}\n`);
}

// ---------------------------------------------------------------------------------------------
// The running agent's side.

export interface HandoffSource {
  /** The listening servers to hand over, by name (outbound, hbone, ..., readiness). */
  listeners(): ReadonlyMap<string, Server>;
  /** Stop accepting on every listener (the new agent holds the sockets now). */
  stopAccepting(): void;
  /** Drain live connections (GOAWAY, wait, cut at the deadline) and report progress; then exit. */
  drain(progress: (live: number) => void): Promise<{ cut: number }>;
  /** How many connections this agent carries now. */
  live(): number;
}

export interface HandoffServer {
  readonly path: string;
  /** Resolves once a hand-off completed and this agent drained (the caller exits then). */
  readonly handedOff: Promise<{ cut: number }>;
  close(): Promise<void>;
}

export async function serveHandoff(
  dir: string,
  source: HandoffSource,
  logger: Logger,
): Promise<HandoffServer> {
  const log = logger.child({ component: 'handoff' });
  const path = handoffSocketPath(dir);
  let busy = false;
  let released = false;
  let resolveHandedOff!: (r: { cut: number }) => void;
  const handedOff = new Promise<{ cut: number }>((r) => {
    resolveHandedOff = r;
  });

  const server = net.createServer((conn) => {
    conn.on('error', () => {});
    let stage: 'request' | 'sent' | 'released' = 'request';
    let taker = 0;
    onMessages(conn, (m) => {
      if (stage === 'request' && m.op === 'takeover') {
        if (busy || released) {
          send(conn, {
            op: 'busy',
            reason: released ? 'this agent already handed off' : 'another hand-off is under way',
          });
          conn.end();
          return;
        }
        busy = true;
        taker = m.pid;
        const listeners = [...source.listeners()];
        try {
          const fds = listeners.map(([, s]) => findSocketFd(s as unknown as Socket));
          sendFds(
            findSocketFd(conn),
            fds,
            JSON.stringify({ op: 'sockets', names: listeners.map(([n]) => n), pid: process.pid }),
          );
          stage = 'sent';
          log.info(
            { taker, sockets: listeners.map(([n]) => n) },
            'hand-off: sockets sent to the new agent; still serving until it takes them',
          );
        } catch (err) {
          busy = false;
          log.error(
            { taker, err: (err as Error).message },
            'hand-off: could not send the sockets; still serving',
          );
          send(conn, { op: 'refused', reason: (err as Error).message });
          conn.end();
        }
        return;
      }
      if (stage === 'sent' && m.op === 'take') {
        stage = 'released';
        released = true;
        source.stopAccepting();
        const live = source.live();
        log.info({ taker, live }, 'hand-off: the new agent takes the sockets; stopped accepting, draining');
        // Closing the listening handle unlinks the socket path at once (the close callback would wait
        // for this very connection), so the new agent may bind it as soon as it reads "released".
        void closeServer();
        void (async () => {
          send(conn, { op: 'released', live });
          const r = await source.drain((n) => send(conn, { op: 'draining', live: n }));
          send(conn, { op: 'done', cut: r.cut });
          conn.end();
          resolveHandedOff(r);
        })();
      }
    });
    conn.on('close', () => {
      if (stage === 'sent') {
        busy = false;
        log.warn(
          { taker },
          'hand-off failed: the new agent went away before it took the sockets; this agent keeps serving',
        );
      }
    });
  });
  server.on('error', (err) => log.error({ err: err.message }, 'hand-off socket error'));

  // A stale file from a crashed agent would make listen fail with EADDRINUSE.
  await unlink(path).catch(() => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Whoever connects here can take this node's listening sockets: only our own user may.
  await chmod(path, 0o600);
  log.info({ path }, 'hand-off socket ready (a new agent on this node takes over through it)');

  let closed: Promise<void> | undefined;
  const closeServer = () => {
    closed ??= new Promise<void>((resolve) => server.close(() => resolve()));
    return closed;
  };
  return { path, handedOff, close: closeServer };
}

// ---------------------------------------------------------------------------------------------
// The new agent's side.

export interface Takeover {
  /** Listening sockets by name, as descriptors this process now owns. */
  readonly fds: ReadonlyMap<string, number>;
  readonly fromPid: number;
  /** Tell the old agent to stop accepting; resolves when it released the sockets (then listen on them). */
  commit(): Promise<void>;
  /** Give up (before commit): the old agent keeps serving. Closes the received descriptors. */
  abort(reason: string): void;
  /** Resolves when the old agent finished draining (or went away). */
  readonly finished: Promise<{ cut?: number; live?: number }>;
}

export class HandoffError extends Error {
  readonly code: 'HANDOFF_BUSY' | 'HANDOFF_FAILED';
  constructor(code: 'HANDOFF_BUSY' | 'HANDOFF_FAILED', message: string) {
    super(message);
    this.name = 'HandoffError';
    this.code = code;
  }
}

/**
 * Asks the agent serving at `dir` for its sockets. Resolves undefined when no agent listens there
 * (no socket file, or a stale one), so the caller binds its own.
 */
export async function requestTakeover(
  dir: string,
  logger: Logger,
  timeoutMs = 10_000,
): Promise<Takeover | undefined> {
  const log = logger.child({ component: 'handoff' });
  const path = handoffSocketPath(dir);
  let got: Awaited<ReturnType<typeof receiveFds>>;
  try {
    got = await receiveFds(path, JSON.stringify({ op: 'takeover', pid: process.pid }), timeoutMs);
  } catch (err) {
    if (err instanceof NativeError && (err.errno === 'ENOENT' || err.errno === 'ECONNREFUSED'))
      return undefined;
    throw new HandoffError(
      'HANDOFF_FAILED',
      `cannot take over from the running agent: ${(err as Error).message}`,
    );
  }
  const { socket, fds } = got;
  socket.on('error', () => {});
  const first = parse(got.message);
  if (first?.op !== 'sockets') {
    for (const fd of fds) closeFd(fd);
    socket.destroy();
    const why = first && 'reason' in first ? first.reason : got.message;
    throw new HandoffError(
      first?.op === 'busy' ? 'HANDOFF_BUSY' : 'HANDOFF_FAILED',
      `the running agent refused the hand-off: ${why}`,
    );
  }
  if (first.names.length !== fds.length) {
    for (const fd of fds) closeFd(fd);
    socket.destroy();
    throw new HandoffError(
      'HANDOFF_FAILED',
      `the running agent named ${first.names.length} sockets but sent ${fds.length}`,
    );
  }
  const byName = new Map(first.names.map((n, i) => [n, fds[i] as number]));
  log.info({ from: first.pid, sockets: first.names }, "hand-off: received the running agent's sockets");

  let resolveReleased!: () => void;
  const released = new Promise<void>((r) => {
    resolveReleased = r;
  });
  let resolveFinished!: (r: { cut?: number; live?: number }) => void;
  const finished = new Promise<{ cut?: number; live?: number }>((r) => {
    resolveFinished = r;
  });
  let lastLive: number | undefined;
  onMessages(socket, (m) => {
    if (m.op === 'released') {
      lastLive = m.live;
      log.info(
        { from: first.pid, live: m.live },
        'hand-off: the old agent stopped accepting; it drains its live connections',
      );
      resolveReleased();
    } else if (m.op === 'draining') {
      lastLive = m.live;
      log.info({ from: first.pid, live: m.live }, 'hand-off: the old agent is still carrying connections');
    } else if (m.op === 'done') {
      log.info({ from: first.pid, cut: m.cut }, 'hand-off: the old agent finished draining and exits');
      resolveFinished({ cut: m.cut });
    }
  });
  socket.on('close', () => {
    resolveReleased();
    resolveFinished(lastLive === undefined ? {} : { live: lastLive });
  });
  return {
    fds: byName,
    fromPid: first.pid,
    finished,
    async commit() {
      send(socket, { op: 'take' });
      await released;
    },
    abort(reason) {
      log.warn({ from: first.pid, reason }, 'hand-off abandoned; the running agent keeps serving');
      for (const fd of fds) closeFd(fd);
      socket.destroy();
    },
  };
}

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
