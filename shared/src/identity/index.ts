// Public surface of @hypha/shared/identity: name every export (no `export *`).
export { DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError, parseSpiffeId, tryParseSpiffeId } from './spiffe.js';
