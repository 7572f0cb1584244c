// Public surface of @hypha/shared. Every export is named; no `export *`.
export {
  DEFAULT_TRUST_DOMAIN,
  parseSpiffeId,
  SpiffeId,
  SpiffeIdError,
  tryParseSpiffeId,
} from './identity/spiffe.js';
export type { Logger, LoggerOptions, LogLevel } from './log/logger.js';
export { createLogger, createSilentLogger, isLogLevel, LOG_LEVELS } from './log/logger.js';
