// The one place that loads @peculiar/x509. It needs two things before first use:
// - a Reflect metadata API (its DI container, tsyringe, throws at import time without one). We
//   only need the four functions tsyringe calls, so a tiny shim replaces the reflect-metadata
//   package; it is installed before the library is evaluated (ESM evaluates imports in order).
// - a WebCrypto provider: Node's own.
// Every identity module imports x509 from here, never from '@peculiar/x509' directly.
import './reflect-shim.js';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// biome-ignore lint/suspicious/noExplicitAny: the library types its provider with the DOM Crypto type.
x509.cryptoProvider.set(webcrypto as any);

export type { webcrypto as WebCrypto } from 'node:crypto';
export { x509 };
export const subtle = webcrypto.subtle;
