// Public surface of @hypha/shared/hbone: name every export (no `export *`).
export {};
