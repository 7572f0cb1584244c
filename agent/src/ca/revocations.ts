// Revoked serials and identities, kept as revocations.json in the CA directory.
//
// `hypha ca revoke` writes the file (atomically, via rename) and the running server notices the
// change within a second (mtime/size check), so no restart or signal is needed. The version
// grows by one with every change, letting agents poll cheaply and apply only newer lists.
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

interface FileShape {
  version: number;
  entries: RevocationEntry[];
}

export class RevocationError extends Error {
  readonly code = 'REVOCATIONS_INVALID' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'RevocationError';
  }
}

function snapshot(f: FileShape): RevocationSnapshot {
  const serials = [...new Set(f.entries.flatMap((e) => (e.serial ? [e.serial] : [])))].sort();
  const ids = [...new Set(f.entries.flatMap((e) => (e.id ? [e.id] : [])))].sort();
  return { version: f.version, serials, ids };
}

async function readFileShape(path: string): Promise<FileShape> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 0, entries: [] };
    throw new RevocationError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new RevocationError(`${path} is not valid JSON; fix or remove it`, { cause: err });
  }
  const f = parsed as Partial<FileShape>;
  if (typeof f.version !== 'number' || !Array.isArray(f.entries)) {
    throw new RevocationError(`${path} must hold {"version": number, "entries": [...]}`);
  }
  for (const e of f.entries) {
    if (typeof e !== 'object' || e === null || (typeof e.serial !== 'string' && typeof e.id !== 'string')) {
      throw new RevocationError(`${path}: every entry needs a "serial" or an "id"`);
    }
  }
  return { version: f.version, entries: f.entries };
}

/** Records a revocation in `dir`. Returns the new snapshot; a repeat revocation changes nothing. */
export async function recordRevocation(
  dir: string,
  what: { serial?: string; id?: SpiffeId | string; reason?: string },
): Promise<{ snapshot: RevocationSnapshot; changed: boolean }> {
  if ((what.serial === undefined) === (what.id === undefined)) {
    throw new RevocationError('give exactly one of a serial or an identity to revoke');
  }
  const path = join(dir, REVOCATIONS_FILE);
  const f = await readFileShape(path);
  const entry: RevocationEntry = { revokedAt: new Date().toISOString() };
  if (what.serial !== undefined) {
    entry.serial = normalizeSerial(what.serial);
    if (f.entries.some((e) => e.serial === entry.serial)) return { snapshot: snapshot(f), changed: false };
  } else {
    entry.id = (typeof what.id === 'string' ? parseSpiffeId(what.id) : what.id!).toString();
    if (f.entries.some((e) => e.id === entry.id)) return { snapshot: snapshot(f), changed: false };
  }
  if (what.reason) entry.reason = what.reason;
  const next: FileShape = { version: f.version + 1, entries: [...f.entries, entry] };
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, `${JSON.stringify(next, null, 2)}\n`, { mode: 0o644 });
  await rename(tmp, path);
  return { snapshot: snapshot(next), changed: true };
}

/** The server's view: re-reads the file when it changed. */
export class RevocationList {
  readonly #path: string;
  readonly #recheckMs: number;
  #stamp = '';
  #checkedAt = 0;
  #current: RevocationSnapshot = { version: 0, serials: [], ids: [] };
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
      this.#current = snapshot(await readFileShape(this.#path));
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
