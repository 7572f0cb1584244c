// Public surface of the native socket helpers (agent/native addon).

export type { ReceivedFds } from './fd-passing.js';
export { receiveFds, sendFds } from './fd-passing.js';
export type { NativeErrorCode, OriginalDst, SocketLike, TransparentConnectOptions } from './sockets.js';
export {
  connectTransparent,
  findNetnsPath,
  findSocketFd,
  getMark,
  getOriginalDst,
  isNativeAvailable,
  NativeError,
  setFreebind,
  setMark,
  setSendBuffer,
  setTransparent,
} from './sockets.js';
