// Listening sockets handed from one agent process to another (the upgrade hand-off), over a Unix
// socket with SCM_RIGHTS (agent/native/src/fd_passing.c). Node hands handles only to its own
// children; the old and the new agent are strangers, so the descriptors travel natively.
import { Socket } from 'node:net';
import { loadAddon, NativeError } from './sockets.js';

interface FdAddon {
  sendFds(fd: number, fds: number[], message: string): void;
  receiveFds(
    path: string,
    request: string,
    timeoutMs: number,
    cb: (
      err: (Error & { code?: string }) | undefined,
      r: { fd: number; fds: number[]; message: string },
    ) => void,
  ): void;
}

function fdAddon(): FdAddon {
  return loadAddon() as unknown as FdAddon;
}

/** Sends `message` (one line) with `fds` attached on a connected Unix socket (net.Socket or fd). */
export function sendFds(socketFd: number, fds: readonly number[], message: string): void {
  try {
    fdAddon().sendFds(socketFd, [...fds], message.endsWith('\n') ? message : `${message}\n`);
  } catch (err) {
    const e = err as Error & { code?: string };
    throw new NativeError('SYSCALL_FAILED', `sending sockets to the new agent: ${e.message}`, {
      ...(e.code === undefined ? {} : { errno: e.code }),
      cause: err,
    });
  }
}

export interface ReceivedFds {
  /** The connected Unix socket, to go on talking on (line protocol). */
  socket: Socket;
  fds: number[];
  /** The reply line that carried the descriptors. */
  message: string;
}

/**
 * Connects to `path`, sends `request` (one line), and resolves with the reply line and the
 * descriptors sent with it. Rejects with errno ENOENT/ECONNREFUSED when nothing listens there.
 */
export function receiveFds(path: string, request: string, timeoutMs: number): Promise<ReceivedFds> {
  return new Promise((resolve, reject) => {
    try {
      fdAddon().receiveFds(path, request.endsWith('\n') ? request : `${request}\n`, timeoutMs, (err, r) => {
        if (err) {
          reject(
            new NativeError('SYSCALL_FAILED', `hand-off via ${path}: ${err.message}`, {
              ...(err.code === undefined ? {} : { errno: err.code }),
              cause: err,
            }),
          );
          return;
        }
        const socket = new Socket({ fd: r.fd, readable: true, writable: true });
        resolve({ socket, fds: r.fds, message: r.message });
      });
    } catch (err) {
      reject(
        err instanceof NativeError
          ? err
          : new NativeError('INVALID_ARGUMENT', (err as Error).message, { cause: err }),
      );
    }
  });
}
