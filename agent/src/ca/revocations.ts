// Revoked serials and identities: the document format, the file kept in a CA directory, and the
// interface the CA server reads a list through (file or Kubernetes ConfigMap, kube-revocations.ts).
//
// Document (revocations.json, also the key of ConfigMap hypha-ca-revocations):
//   {"version": n, "entries": [{"serial": hex | "id": spiffe-id, "revokedAt": ISO time, "reason"?: text}]}
// Invariants, whatever the store:
// - the version grows by one with every change, letting agents poll cheaply and apply only a
//   list whose version differs from theirs;
// - a repeated revocation (same serial, same identity) changes nothing, not even the version;
// - serials are kept normalized (lowercase hex, no colons or leading zeros), identities as
//   canonical SPIFFE ids, so a hand-edited entry matches what agents compare against.
//
// File mode: `hypha ca revoke` writes the file (atomically, via rename) and the running server
// notices the change within a second (mtime/size check), so no restart or signal is needed.
import { randomBytes } from 'node:crypto';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { normalizeSerial, parseSpiffeId, type SpiffeId } from '@hypha/shared/identity';

export const REVOCATIONS_FILE = 'revocations.json';

export interface RevocationEntry {
  serial?: string;
  id?: string;
  revokedAt: string;
  reason?: string;
}

export interface RevocationSnapshot {
  version: number;
  serials: string[];
  ids: string[];
}

/** The stored form, in a file or a ConfigMap key. */
export interface RevocationDocument {
  version: number;
  entries: RevocationEntry[];
}

/** What to revoke: exactly one of serial (hex) or id (SPIFFE id). */
export interface RevocationRequest {
  serial?: string;
  id?: SpiffeId | string;
  reason?: string;
}

/** What the CA server needs from a revocation list, wherever it is kept. */
export interface RevocationSource {
  /** The current list, as served on GET /v1/revocations. */
  fetchSnapshot(): Promise<RevocationSnapshot>;
  /** Revoked identities are refused new certificates. */
  isIdentityRevoked(id: SpiffeId): Promise<boolean>;
}

export class RevocationError extends Error {
  readonly code = 'REVOCATIONS_INVALID' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'RevocationError';
  }
}

export const EMPTY_REVOCATIONS: RevocationSnapshot = Object.freeze({
  version: 0,
  serials: [],
  ids: [],
}) as RevocationSnapshot;

export function snapshotOf(doc: RevocationDocument): RevocationSnapshot {
  const serials = [...new Set(doc.entries.flatMap((e) => (e.serial ? [e.serial] : [])))].sort();
  const ids = [...new Set(doc.entries.flatMap((e) => (e.id ? [e.id] : [])))].sort();
  return { version: doc.version, serials, ids };
}

/**
 * Parses and validates a revocation document; `where` names its origin in error messages
 * (a path, or "ConfigMap ns/name key revocations.json"). Entries come back normalized.
 */
export function parseRevocationDocument(text: string, where: string): RevocationDocument {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new RevocationError(`${where} is not valid JSON (${(err as Error).message}); fix or remove it`, {
      cause: err,
    });
  }
  const f = parsed as Partial<RevocationDocument> | null;
  if (
    typeof f !== 'object' ||
    f === null ||
    typeof f.version !== 'number' ||
    !Number.isSafeInteger(f.version) ||
    f.version < 0 ||
    !Array.isArray(f.entries)
  ) {
    throw new RevocationError(`${where} must hold {"version": <whole number >= 0>, "entries": [...]}`);
  }
  const entries: RevocationEntry[] = [];
  for (const [i, raw] of f.entries.entries()) {
    const e = raw as Partial<Record<keyof RevocationEntry, unknown>> | null;
    if (
      typeof e !== 'object' ||
      e === null ||
      (typeof e.serial !== 'string') === (typeof e.id !== 'string')
    ) {
      throw new RevocationError(`${where}: entry ${i} needs exactly one of "serial" or "id" (a string)`);
    }
    const entry: RevocationEntry = {
      revokedAt: typeof e.revokedAt === 'string' ? e.revokedAt : '',
    };
    if (typeof e.serial === 'string') {
      try {
        entry.serial = normalizeSerial(e.serial);
      } catch {
        throw new RevocationError(
          `${where}: entry ${i} has serial ${JSON.stringify(e.serial)}, not hexadecimal`,
        );
      }
    } else {
      try {
        entry.id = parseSpiffeId(e.id as string).toString();
      } catch (err) {
        throw new RevocationError(`${where}: entry ${i}: ${(err as Error).message}`);
      }
    }
    if (typeof e.reason === 'string') entry.reason = e.reason;
    entries.push(entry);
  }
  return { version: f.version, entries };
}

/**
 * Adds one revocation to a document (pure). `changed` is false for a repeat, and `next` is then
 * the document unchanged. Throws RevocationError on a bad request.
 */
export function applyRevocation(
  doc: RevocationDocument,
  what: RevocationRequest,
  now: Date = new Date(),
): { next: RevocationDocument; changed: boolean; subject: string } {
  if ((what.serial === undefined) === (what.id === undefined)) {
    throw new RevocationError('give exactly one of a serial or an identity to revoke');
  }
  const entry: RevocationEntry = { revokedAt: now.toISOString() };
  let subject: string;
  if (what.serial !== undefined) {
    try {
      entry.serial = normalizeSerial(what.serial);
    } catch (err) {
      throw new RevocationError((err as Error).message);
    }
    subject = `serial ${entry.serial}`;
    if (doc.entries.some((e) => e.serial === entry.serial)) return { next: doc, changed: false, subject };
  } else {
    try {
      entry.id = (typeof what.id === 'string' ? parseSpiffeId(what.id) : what.id!).toString();
    } catch (err) {
      throw new RevocationError((err as Error).message);
    }
    subject = `identity ${entry.id}`;
    if (doc.entries.some((e) => e.id === entry.id)) return { next: doc, changed: false, subject };
  }
  if (what.reason) entry.reason = what.reason;
  return { next: { version: doc.version + 1, entries: [...doc.entries, entry] }, changed: true, subject };
}

export function formatRevocationDocument(doc: RevocationDocument): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}

async function readDocument(path: string): Promise<RevocationDocument> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 0, entries: [] };
    throw new RevocationError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseRevocationDocument(text, path);
}

/** Records a revocation in `dir`. Returns the new snapshot; a repeat revocation changes nothing. */
export async function recordRevocation(
  dir: string,
  what: RevocationRequest,
): Promise<{ snapshot: RevocationSnapshot; changed: boolean }> {
  if ((what.serial === undefined) === (what.id === undefined)) {
    throw new RevocationError('give exactly one of a serial or an identity to revoke');
  }
  const path = join(dir, REVOCATIONS_FILE);
  const { next, changed } = applyRevocation(await readDocument(path), what);
  if (!changed) return { snapshot: snapshotOf(next), changed: false };
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, formatRevocationDocument(next), { mode: 0o644 });
  await rename(tmp, path);
  return { snapshot: snapshotOf(next), changed: true };
}

/** The server's view of <dir>/revocations.json: re-reads the file when it changed. */
export class RevocationList implements RevocationSource {
  readonly #path: string;
  readonly #recheckMs: number;
  #stamp = '';
  #checkedAt = 0;
  #current: RevocationSnapshot = EMPTY_REVOCATIONS;
  #ids = new Set<string>();

  /** `recheckMs`: how often to look at the file for changes (default 1 s; 0 = on every request). */
  constructor(dir: string, opts: { recheckMs?: number } = {}) {
    this.#path = join(dir, REVOCATIONS_FILE);
    this.#recheckMs = opts.recheckMs ?? 1000;
  }

  async fetchSnapshot(): Promise<RevocationSnapshot> {
    const now = Date.now();
    if (this.#stamp !== '' && now - this.#checkedAt < this.#recheckMs) return this.#current;
    this.#checkedAt = now;
    let stamp = 'absent';
    try {
      const s = await stat(this.#path);
      stamp = `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (stamp !== this.#stamp) {
      this.#current = snapshotOf(await readDocument(this.#path));
      this.#ids = new Set(this.#current.ids);
      this.#stamp = stamp;
    }
    return this.#current;
  }

  async isIdentityRevoked(id: SpiffeId): Promise<boolean> {
    await this.fetchSnapshot();
    return this.#ids.has(id.toString());
  }
}

/**
 * Several lists in force at once (a ConfigMap and a plug-in directory's file): an entry in any of
 * them is revoked. The version is the sum of theirs, so it changes whenever one of them does.
 */
export function mergeRevocationSources(sources: readonly RevocationSource[]): RevocationSource {
  if (sources.length === 1) return sources[0]!;
  return {
    async fetchSnapshot() {
      const snaps = await Promise.all(sources.map((s) => s.fetchSnapshot()));
      return {
        version: snaps.reduce((n, s) => n + s.version, 0),
        serials: [...new Set(snaps.flatMap((s) => s.serials))].sort(),
        ids: [...new Set(snaps.flatMap((s) => s.ids))].sort(),
      };
    },
    async isIdentityRevoked(id) {
      const answers = await Promise.all(sources.map((s) => s.isIdentityRevoked(id)));
      return answers.some(Boolean);
    },
  };
}
