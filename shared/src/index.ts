// Public surface of @hypha/shared. Every export is named; no `export *`.
export { DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError, parseSpiffeId, tryParseSpiffeId } from './identity/spiffe.js';
export type { Logger, LoggerOptions, LogLevel } from './log/logger.js';
export { LOG_LEVELS, createLogger, createSilentLogger, isLogLevel } from './log/logger.js';
