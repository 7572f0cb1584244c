// Public surface of @hypha/shared/telemetry: name every export (no `export *`).
export {};
