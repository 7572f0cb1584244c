// Public surface of @hypha/shared/policy: name every export (no `export *`).
export {};
