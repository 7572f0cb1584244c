// Public surface of @hypha/shared/config: name every export (no `export *`).
export {};
