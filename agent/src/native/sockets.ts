// Typed wrapper over the N-API addon in agent/native (socket options Node lacks).
//
// Invariants:
// - The addon is loaded lazily on first use, so importing this module never fails on a machine
//   without a compiler; callers that need it get one NativeError naming the fix.
// - Every failure is a NativeError with a stable `code` and, where the kernel said something,
//   the errno name in `errno` (EPERM, ECONNREFUSED, ...).
// - connectTransparent() hands back a connected net.Socket or rejects; on timeout or abort the
//   half-open socket is closed natively, never leaked.
import { createRequire } from 'node:module';
import { isIP, Socket } from 'node:net';

export type NativeErrorCode =
  | 'NATIVE_UNAVAILABLE'
  | 'INVALID_ARGUMENT'
  | 'PERMISSION_DENIED'
  | 'NO_ORIGINAL_DST'
  | 'CONNECT_FAILED'
  | 'CONNECT_TIMEOUT'
  | 'CONNECT_ABORTED'
  | 'SYSCALL_FAILED';

export class NativeError extends Error {
  readonly code: NativeErrorCode;
  /** errno name from the kernel, e.g. `EPERM`, when a system call failed. */
  readonly errno: string | undefined;
  constructor(code: NativeErrorCode, message: string, options: { errno?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NativeError';
    this.code = code;
    this.errno = options.errno;
  }
}

export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
}

interface Addon {
  getOriginalDst(fd: number): OriginalDst;
  setTransparent(fd: number, on: boolean): void;
  setFreebind(fd: number, on: boolean): void;
  setMark(fd: number, mark: number): void;
  getMark(fd: number): number;
  setSendBuffer(fd: number, bytes: number): number;
  connectTransparent(
    localAddress: string,
    localPort: number,
    remoteAddress: string,
    remotePort: number,
    mark: number,
    freebind: boolean,
    callback: (err: (Error & { code?: string }) | undefined, fd: number | undefined) => void,
    netns?: string,
  ): () => void;
}

// Same relative path from src/native/*.ts and dist/native/*.js.
const ADDON_PATH = '../../native/build/Release/hypha_native.node';
let addon: Addon | undefined;

export function loadAddon(): Addon {
  if (addon) return addon;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as Addon;
    return addon;
  } catch (err) {
    throw new NativeError(
      'NATIVE_UNAVAILABLE',
      `the native socket addon (agent/native) is not built or does not load (${(err as Error).message}); ` +
        'build it with `npm rebuild -w @hypha/agent` (needs python3, make and a C compiler), Linux only',
      { cause: err },
    );
  }
}

/** True when the addon is built and loads on this machine. */
export function isNativeAvailable(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

export type SocketLike = Socket | number;

/** The file descriptor behind a net.Socket (or a number passed through). */
export function findSocketFd(socket: SocketLike): number {
  if (typeof socket === 'number') return socket;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new NativeError(
      'INVALID_ARGUMENT',
      'the socket has no file descriptor (not connected yet, or already closed)',
    );
  }
  return fd;
}

const HINTS: Record<string, string> = {
  'setsockopt(IP_TRANSPARENT)': 'IP_TRANSPARENT needs CAP_NET_ADMIN',
  'setsockopt(IPV6_TRANSPARENT)': 'IPV6_TRANSPARENT needs CAP_NET_ADMIN',
  'setsockopt(SO_MARK)': 'SO_MARK needs CAP_NET_ADMIN',
};

function translate(err: unknown, context: string): NativeError {
  if (err instanceof NativeError) return err;
  const e = err as Error & { code?: string; syscall?: string };
  const errno = e.code;
  if (e.syscall === 'setns(netns)') {
    return new NativeError(
      errno === 'EPERM' ? 'PERMISSION_DENIED' : 'SYSCALL_FAILED',
      `${context}: cannot enter the network namespace (${e.message}); it must exist and entering it needs CAP_SYS_ADMIN`,
      { ...(errno === undefined ? {} : { errno }), cause: err },
    );
  }
  if (e.name === 'TypeError')
    return new NativeError('INVALID_ARGUMENT', `${context}: ${e.message}`, { cause: err });
  if (errno === 'EPERM' || errno === 'EACCES') {
    const hint = HINTS[e.syscall ?? ''] ?? 'this operation needs CAP_NET_ADMIN';
    return new NativeError(
      'PERMISSION_DENIED',
      `${errno}: ${hint} (run the agent as root or with the NET_ADMIN capability): ${context}`,
      { errno, cause: err },
    );
  }
  return new NativeError('SYSCALL_FAILED', `${context}: ${e.message}`, {
    ...(errno === undefined ? {} : { errno }),
    cause: err,
  });
}

/**
 * The destination a redirected connection was originally sent to (SO_ORIGINAL_DST for IPv4, also
 * on dual-stack sockets; IP6T_SO_ORIGINAL_DST for IPv6).
 */
export function getOriginalDst(socket: SocketLike): OriginalDst {
  const native = loadAddon();
  const fd = findSocketFd(socket);
  try {
    return native.getOriginalDst(fd);
  } catch (err) {
    const errno = (err as { code?: string }).code;
    if (errno === 'ENOENT' || errno === 'ENOPROTOOPT') {
      throw new NativeError(
        'NO_ORIGINAL_DST',
        `${errno}: no original destination for this connection; it was not redirected by the capture rules ` +
          '(or the nf_conntrack module is not loaded)',
        { errno, cause: err },
      );
    }
    throw translate(err, 'getOriginalDst');
  }
}

export function setTransparent(socket: SocketLike, on = true): void {
  const native = loadAddon();
  try {
    native.setTransparent(findSocketFd(socket), on);
  } catch (err) {
    throw translate(err, 'setTransparent');
  }
}

export function setFreebind(socket: SocketLike, on = true): void {
  const native = loadAddon();
  try {
    native.setFreebind(findSocketFd(socket), on);
  } catch (err) {
    throw translate(err, 'setFreebind');
  }
}

export function setMark(socket: SocketLike, mark: number): void {
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) {
    throw new NativeError('INVALID_ARGUMENT', `setMark: mark must be an integer 0..0xffffffff, got ${mark}`);
  }
  const native = loadAddon();
  try {
    native.setMark(findSocketFd(socket), mark);
  } catch (err) {
    throw translate(err, 'setMark');
  }
}

/**
 * Raises a TCP socket's send buffer to `bytes` (the kernel reports twice that: it counts its own
 * bookkeeping). With CAP_NET_ADMIN past net.core.wmem_max (SO_SNDBUFFORCE); without it, as far as
 * that cap allows. Returns the size the kernel holds now. Setting it turns off the kernel's send
 * buffer autotuning for this socket; memory is only used for bytes actually queued.
 */
export function setSendBuffer(socket: SocketLike, bytes: number): number {
  if (!Number.isInteger(bytes) || bytes <= 0 || bytes > 0x7fffffff) {
    throw new NativeError(
      'INVALID_ARGUMENT',
      `setSendBuffer: bytes must be a positive 32-bit integer, got ${bytes}`,
    );
  }
  const native = loadAddon();
  try {
    return native.setSendBuffer(findSocketFd(socket), bytes);
  } catch (err) {
    throw translate(err, 'setSendBuffer');
  }
}

export function getMark(socket: SocketLike): number {
  const native = loadAddon();
  try {
    return native.getMark(findSocketFd(socket));
  } catch (err) {
    throw translate(err, 'getMark');
  }
}

export interface TransparentConnectOptions {
  /** Source address to connect from; need not be local (usually the original client's pod IP). */
  localAddress: string;
  /** Source port; 0 (default) lets the kernel choose. */
  localPort?: number;
  remoteAddress: string;
  remotePort: number;
  /** SO_MARK for the socket's packets (0 = none). */
  mark?: number;
  /** Also set IP_FREEBIND (bind to addresses not configured yet). */
  freebind?: boolean;
  /** Default 10 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  allowHalfOpen?: boolean;
  /**
   * Create the socket inside this network namespace (a name under /run/netns or a path such as
   * /proc/PID/ns/net) instead of the caller's. Needs CAP_SYS_ADMIN. For tests, the demo and
   * in-pod capture.
   */
  netns?: string;
}

/**
 * Connects from a possibly non-local source address, preserving the original client's IP.
 * IP_TRANSPARENT (and SO_MARK) must be set before bind and connect, which net.Socket cannot do:
 * the addon creates the socket, starts a non-blocking connect and waits for it on the event loop;
 * the connected fd is then adopted by a net.Socket.
 *
 * Replies from the destination are addressed to the foreign source IP; they reach this socket only
 * with the policy routing that capture installs (mark transparent sockets' packets, route marked
 * packets locally). Without it the connect times out.
 */
export function connectTransparent(options: TransparentConnectOptions): Promise<Socket> {
  const { localAddress, remoteAddress, remotePort } = options;
  const localPort = options.localPort ?? 0;
  const mark = options.mark ?? 0;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const target = `${remoteAddress}:${remotePort} from ${localAddress}:${localPort}`;
  const localFamily = isIP(localAddress);
  const remoteFamily = isIP(remoteAddress);
  if (remoteFamily === 0)
    return Promise.reject(invalid(`remoteAddress "${remoteAddress}" is not an IP address`));
  if (localFamily !== remoteFamily) {
    return Promise.reject(
      invalid(`localAddress "${localAddress}" must be an IPv${remoteFamily} address like the remote`),
    );
  }
  if (!Number.isInteger(remotePort) || remotePort < 1 || remotePort > 65535) {
    return Promise.reject(invalid(`remotePort must be 1..65535, got ${remotePort}`));
  }
  if (!Number.isInteger(localPort) || localPort < 0 || localPort > 65535) {
    return Promise.reject(invalid(`localPort must be 0..65535, got ${localPort}`));
  }
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) {
    return Promise.reject(invalid(`mark must be an integer 0..0xffffffff, got ${mark}`));
  }
  if (options.signal?.aborted) {
    return Promise.reject(new NativeError('CONNECT_ABORTED', `connect to ${target} aborted`));
  }
  if (options.netns === '') return Promise.reject(invalid('netns must not be empty'));
  const netnsPath = options.netns === undefined ? undefined : findNetnsPath(options.netns);
  let native: Addon;
  try {
    native = loadAddon();
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let cancel: (() => void) | undefined;
    const onAbort = (): void => {
      cleanup();
      cancel?.();
      reject(new NativeError('CONNECT_ABORTED', `connect to ${target} aborted`));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    };
    try {
      cancel = native.connectTransparent(
        localAddress,
        localPort,
        remoteAddress,
        remotePort,
        mark,
        options.freebind ?? false,
        (err, fd) => {
          cleanup();
          if (err || fd === undefined) {
            const errno = err?.code;
            reject(
              new NativeError('CONNECT_FAILED', `connect to ${target} failed: ${err?.message ?? 'no fd'}`, {
                ...(errno === undefined ? {} : { errno }),
                cause: err,
              }),
            );
            return;
          }
          resolve(
            new Socket({ fd, readable: true, writable: true, allowHalfOpen: options.allowHalfOpen ?? false }),
          );
        },
        netnsPath,
      );
    } catch (err) {
      cleanup();
      reject(translate(err, `connectTransparent to ${target}`));
      return;
    }
    timer = setTimeout(() => {
      cleanup();
      cancel?.();
      reject(
        new NativeError(
          'CONNECT_TIMEOUT',
          `connect to ${target} timed out after ${timeoutMs} ms; check that the destination is reachable and ` +
            'that replies to transparent sockets are routed back locally (fwmark policy routing from capture)',
          { errno: 'ETIMEDOUT' },
        ),
      );
    }, timeoutMs);
    options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function invalid(message: string): NativeError {
  return new NativeError('INVALID_ARGUMENT', `connectTransparent: ${message}`);
}

/** `/run/netns/NAME` for a bare name (as `ip netns` creates them), the path itself otherwise. */
export function findNetnsPath(netns: string): string {
  if (netns.length === 0) throw new NativeError('INVALID_ARGUMENT', 'netns must not be empty');
  if (netns.includes('/')) return netns;
  return `/run/netns/${netns}`;
}
