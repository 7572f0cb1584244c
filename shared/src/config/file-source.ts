// The file source: Kubernetes-shaped objects from a YAML/JSON file or a directory of them, kept in
// step with the config state as the files change. Used by the demo, the tests and laptops.
//
// Invariants:
// - A file whose YAML does not parse keeps contributing the objects it last contributed (a
//   half-written file never wipes state). An invalid object whose kind/namespace/name can still be
//   read keeps its last good version from the same file; one never seen valid is skipped.
// - A file truncated to nothing within the last 2 s keeps its objects until it has stayed empty
//   past that window (a save in progress writes after truncating).
// - A file that disappears is dropped only if it is still missing on the next scan one debounce
//   period later (editors that delete-then-write, ConfigMap symlink swaps).
// - Loads never overlap: a change that arrives during a load triggers one more load after it.
// - Every problem is one log line naming file, object and field; the same unchanged file is not
//   re-reported on every scan (scans compare stat signatures, and only changed files are re-read;
//   a file modified within the last 2 s is re-read and compared by content hash, because two
//   writes inside one mtime tick leave the same signature — git's "racy clean" problem).
//
// Watching uses fs.watch (recursive on directories; the parent directory for a single file, so
// rename-over saves are seen), debounced, plus a cheap stat poll as a safety net for filesystems
// where inotify events do not arrive. If fs.watch fails, the poll alone keeps working.
import { createHash } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { Composer, Parser, parseAllDocuments } from 'yaml';
import { LARGE_LOAD_OBJECTS, releaseFreedMemoryAfter } from '../daemon/memory.js';
import type { Logger } from '../log/logger.js';
import { createSilentLogger } from '../log/logger.js';
import { ConfigError } from './errors.js';
import { type ConfigChange, type ConfigState, configObjectKey, createConfigState } from './state.js';
import { flattenLists, type TranslateResult, translateObject } from './translate.js';
import type { ConfigObject, ConfigObjectKey } from './types.js';

export interface FileSourceOptions {
  /** A .yaml/.yml/.json file (multi-document allowed) or a directory searched recursively. */
  path: string;
  trustDomain?: string;
  logger?: Logger;
  /** The state to feed; a new one (selector endpoints) by default. */
  state?: ConfigState;
  /** Quiet period after a change event before reloading. Default 100 ms. */
  debounceMs?: number;
  /** Stat poll interval, the safety net for missed watch events. Default 2000 ms. */
  pollIntervalMs?: number;
  /** Use fs.watch (default true). False: rely on polling alone (e.g. network filesystems). */
  watch?: boolean;
}

export interface FileSource {
  readonly state: ConfigState;
  /** Resolves after the first load in which every file parsed (objects may still be invalid). */
  readonly ready: Promise<void>;
  /** The problems found at the last load of each file (what was logged). */
  readonly errors: readonly ConfigError[];
  /** Loads and applies once, then starts watching. Rejects if the path does not exist. */
  start(): Promise<void>;
  /** Re-scans now (also what the watcher calls). */
  reload(): Promise<void>;
  close(): Promise<void>;
}

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

interface FileEntry {
  signature: string;
  /** sha1 of the text last read; undefined when the file could not be read. */
  hash: string | undefined;
  /** Objects this file contributes (the last good ones if its YAML no longer parses). */
  objects: ConfigObject[];
  errors: ConfigError[];
  parsed: boolean;
  missingSince: number | undefined;
  /** objectId of each of `objects`, made once per entry (reused by every later #apply). */
  ids?: string[];
}

export function createFileSource(options: FileSourceOptions): FileSource {
  return new WatchedFileSource(options);
}

class WatchedFileSource implements FileSource {
  readonly state: ConfigState;
  readonly ready: Promise<void>;
  readonly #root: string;
  readonly #log: Logger;
  readonly #debounceMs: number;
  readonly #pollMs: number;
  readonly #useWatch: boolean;
  readonly #files = new Map<string, FileEntry>();
  #resolveReady!: () => void;
  #isReady = false;
  #isDirectory = false;
  #loading: Promise<void> | undefined;
  #again = false;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #recheck: NodeJS.Timeout | undefined;
  #closed = false;
  #duplicateErrors: ConfigError[] = [];
  #rootMissing = false;
  /** What the last #apply handed to the state (id → object), when the state is this source's own. */
  #applied: Map<string, ConfigObject> | undefined;
  readonly #ownState: boolean;

  constructor(options: FileSourceOptions) {
    this.#root = resolve(options.path);
    this.#log = (options.logger ?? createSilentLogger()).child({ component: 'config-file' });
    this.state = options.state ?? createConfigState({ trustDomain: options.trustDomain ?? 'cluster.local' });
    this.#ownState = options.state === undefined;
    this.#debounceMs = options.debounceMs ?? 100;
    this.#pollMs = options.pollIntervalMs ?? 2000;
    this.#useWatch = options.watch ?? true;
    this.ready = new Promise((r) => {
      this.#resolveReady = r;
    });
  }

  get errors(): readonly ConfigError[] {
    const out: ConfigError[] = [];
    for (const e of this.#files.values()) out.push(...e.errors);
    out.push(...this.#duplicateErrors);
    return out;
  }

  async start(): Promise<void> {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(this.#root);
    } catch {
      throw new ConfigError(
        'PATH_NOT_FOUND',
        { source: this.#root },
        '',
        'config path does not exist: pass a YAML/JSON file or a directory of them',
      );
    }
    this.#isDirectory = info.isDirectory();
    await this.reload();
    if (this.#closed) return;
    this.#startWatcher();
    this.#poll = setInterval(() => void this.reload(), this.#pollMs);
    this.#poll.unref();
  }

  reload(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#loading !== undefined) {
      this.#again = true;
      return this.#loading;
    }
    this.#loading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#scan();
        } while (this.#again && !this.#closed);
      } catch (err) {
        this.#log.error({ err }, `config reload from ${this.#root} failed: ${(err as Error).message}`);
      } finally {
        this.#loading = undefined;
      }
    })();
    return this.#loading;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
    clearTimeout(this.#recheck);
    await this.#loading;
  }

  // ---- watching ----

  #startWatcher(): void {
    if (this.#closed || !this.#useWatch || this.#watcher !== undefined) return;
    const target = this.#isDirectory ? this.#root : dirname(this.#root);
    const name = basename(this.#root);
    try {
      const w = watch(target, { recursive: this.#isDirectory, persistent: false }, (_event, file) => {
        if (!this.#isDirectory && file !== null && file !== name) return;
        this.#schedule();
      });
      w.on('error', (err) => {
        this.#log.warn(
          { err: String(err) },
          `watching ${target} failed; falling back to polling every ${this.#pollMs} ms`,
        );
        w.close();
        if (this.#watcher === w) this.#watcher = undefined;
      });
      this.#watcher = w;
    } catch (err) {
      this.#log.warn(
        { err: String(err) },
        `cannot watch ${target}; polling every ${this.#pollMs} ms instead`,
      );
    }
  }

  #recheckLater(): void {
    if (this.#closed || this.#recheck !== undefined) return;
    this.#recheck = setTimeout(() => {
      this.#recheck = undefined;
      void this.reload();
    }, RACY_MS + 50);
    this.#recheck.unref();
  }

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.reload(), this.#debounceMs);
    this.#debounce.unref();
  }

  // ---- loading ----

  async #scan(): Promise<void> {
    const found = await this.#listFiles();
    if (found === undefined) return;
    let changed = false;
    /** Files whose entry this scan replaced or removed → the entry before (undefined: new file). */
    const replaced = new Map<string, FileEntry | undefined>();
    const now = Date.now();
    for (const [file, signature] of found) {
      const entry = this.#files.get(file);
      if (entry !== undefined && entry.signature === signature && !isRacy(signature, now)) {
        entry.missingSince = undefined;
        continue;
      }
      const next = await this.#load(file, signature, entry);
      if (next !== undefined && next === entry) {
        next.missingSince = undefined;
        continue;
      }
      if (next === undefined) {
        // Vanished between listing and reading (a replace in progress): look again shortly.
        this.#schedule();
        continue;
      }
      if (!replaced.has(file)) replaced.set(file, entry);
      this.#files.set(file, next);
      changed = true;
    }
    for (const [file, entry] of this.#files) {
      if (found.has(file)) continue;
      if (entry.missingSince === undefined) {
        entry.missingSince = now;
        this.#schedule();
      } else if (now - entry.missingSince >= this.#debounceMs / 2) {
        if (!replaced.has(file)) replaced.set(file, entry);
        this.#files.delete(file);
        this.#log.info({ file }, `${file}: file removed; its objects are withdrawn`);
        changed = true;
      } else {
        this.#schedule();
      }
    }
    if (!changed && this.#isReady) return;
    this.#apply(replaced);
    let loaded = 0;
    for (const file of replaced.keys()) loaded += this.#files.get(file)?.objects.length ?? 0;
    // The YAML text and its parse are garbage now; give their pages back (see daemon/memory.ts).
    if (loaded >= LARGE_LOAD_OBJECTS)
      releaseFreedMemoryAfter(this.#log, `loading ${loaded} objects`, { objects: loaded });
    this.#startWatcher();
    if (!this.#isReady && [...this.#files.values()].every((e) => e.parsed)) {
      this.#isReady = true;
      this.#resolveReady();
    }
  }

  /** Map of file → stat signature, or undefined if the root cannot be read right now. */
  async #listFiles(): Promise<Map<string, string> | undefined> {
    const out = new Map<string, string>();
    const visit = async (path: string, depth: number): Promise<void> => {
      let info: Awaited<ReturnType<typeof stat>>;
      try {
        info = await stat(path);
      } catch {
        return;
      }
      if (info.isDirectory()) {
        if (depth > 16) return;
        let names: string[];
        try {
          names = await readdir(path);
        } catch {
          return;
        }
        names.sort();
        for (const n of names) if (!n.startsWith('.')) await visit(join(path, n), depth + 1);
      } else if (info.isFile() && (depth === 0 || EXTENSIONS.has(extname(path).toLowerCase()))) {
        out.set(path, `${info.ino}:${info.size}:${info.mtimeMs}`);
      }
    };
    try {
      await stat(this.#root);
    } catch {
      if (!this.#rootMissing) {
        this.#rootMissing = true;
        this.#log.error(
          { code: 'PATH_NOT_FOUND', source: this.#root },
          `${this.#root}: config path disappeared; keeping the last loaded state until it returns`,
        );
        // The inotify watch died with the path; a new one is set up once the path is back.
        this.#watcher?.close();
        this.#watcher = undefined;
      }
      return undefined;
    }
    if (this.#rootMissing) {
      this.#rootMissing = false;
      this.#log.info({ source: this.#root }, `${this.#root}: config path is back`);
      this.#startWatcher();
    }
    await visit(this.#root, 0);
    return out;
  }

  async #load(
    file: string,
    signature: string,
    previous: FileEntry | undefined,
  ): Promise<FileEntry | undefined> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      const e = new ConfigError('READ_ERROR', { source: file }, '', `cannot read: ${(err as Error).message}`);
      this.#report([e]);
      return {
        signature,
        hash: undefined,
        objects: previous?.objects ?? [],
        errors: [e],
        parsed: false,
        missingSince: undefined,
      };
    }
    const hash = createHash('sha1').update(text).digest('hex');
    if (previous !== undefined && previous.hash === hash) {
      previous.signature = signature;
      return previous;
    }
    if (text.trim() === '' && (previous?.objects.length ?? 0) > 0 && isRacy(signature, Date.now())) {
      // Truncated a moment ago: most likely a save in progress (open with O_TRUNC, then write).
      // Keep the previous objects and look again once the file has been quiet for a while.
      this.#recheckLater();
      return previous;
    }
    // Common case first: parse, convert and translate one document at a time, so only one
    // document's syntax tree is alive at once (a 100k-pod file's trees are gigabytes). A file
    // with a parse error takes the path below, which reports errors as before.
    const streamed = translateDocuments(text, file);
    if (streamed !== undefined) return this.#collect(file, signature, hash, previous, streamed);
    const docs = parseAllDocuments(text);
    const list = Array.isArray(docs) ? docs : [];
    const parseErrors: ConfigError[] = [];
    list.forEach((doc, i) => {
      for (const err of doc.errors) {
        const at = err.linePos?.[0];
        const where = at !== undefined ? `line ${at.line}, column ${at.col}: ` : '';
        const first = err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
        parseErrors.push(
          new ConfigError(
            'PARSE_ERROR',
            { source: file, document: list.length > 1 ? i + 1 : undefined },
            '',
            `${where}${first}`,
          ),
        );
      }
    });
    const values: unknown[] = [];
    if (parseErrors.length === 0) {
      list.forEach((doc, i) => {
        try {
          // Bounded alias expansion: a "billion laughs" document is an error, not an outage.
          values.push(doc.toJS({ maxAliasCount: 100 }));
        } catch (err) {
          const where = { source: file, document: list.length > 1 ? i + 1 : undefined };
          parseErrors.push(new ConfigError('PARSE_ERROR', where, '', (err as Error).message));
        }
      });
    }
    if (parseErrors.length > 0) {
      const kept = previous?.objects ?? [];
      this.#report(
        parseErrors,
        kept.length > 0 ? `keeping the ${kept.length} objects last loaded from this file` : undefined,
      );
      return { signature, hash, objects: kept, errors: parseErrors, parsed: false, missingSince: undefined };
    }
    const results: TranslateResult[] = [];
    values.forEach((value, i) => {
      translateValue(value, file, list.length > 1 ? i + 1 : undefined, results);
    });
    return this.#collect(file, signature, hash, previous, results);
  }

  #collect(
    file: string,
    signature: string,
    hash: string,
    previous: FileEntry | undefined,
    results: readonly TranslateResult[],
  ): FileEntry {
    const lastGood = new Map<string, ConfigObject>();
    for (const o of previous?.objects ?? [])
      lastGood.set(objectId(o.kind, o.kind === 'Namespace' ? '' : o.namespace, o.name), o);
    const objects: ConfigObject[] = [];
    const errors: ConfigError[] = [];
    for (const result of results) {
      if (result.status === 'ok') objects.push(result.object);
      else if (result.status === 'ignored') {
        this.#log.debug({ file, kind: result.kind }, `${file}: ignoring ${result.kind}: ${result.reason}`);
      } else {
        const old =
          result.key === undefined
            ? undefined
            : lastGood.get(objectId(result.key.kind, result.key.namespace, result.key.name));
        if (old !== undefined) objects.push(old);
        this.#report(
          result.errors,
          old !== undefined ? 'the previous version stays in force' : 'object skipped',
        );
        errors.push(...result.errors);
      }
    }
    return { signature, hash, objects, errors, parsed: true, missingSince: undefined };
  }

  #apply(replaced: ReadonlyMap<string, FileEntry | undefined>): void {
    const changed = this.#applyChanged(replaced);
    const change = changed === false ? this.#applyAll() : changed;
    if (change !== undefined) {
      const s = this.state.stats();
      this.#log.info(
        {
          version: change.version,
          files: this.#files.size,
          workloads: s.workloads,
          services: s.services,
          authorizationPolicies: s.authorizationPolicies,
          waypoints: s.waypoints,
        },
        `config applied from ${this.#root} (version ${change.version})`,
      );
    }
  }

  /**
   * The common case in O(size of the changed files): the state is this source's own, the last
   * apply found no duplicates and the changed files bring none. Objects of the files not re-read
   * are the ones already applied, so only the changed files' old and new objects are looked at
   * (one edited pod is one upsert, not a comparison of the whole cluster). Returns `false` when
   * that does not hold (the caller then recomputes everything), else the state's change.
   */
  #applyChanged(replaced: ReadonlyMap<string, FileEntry | undefined>): ConfigChange | undefined | false {
    const all = this.#applied;
    if (!this.#ownState || all === undefined || this.#duplicateErrors.length > 0) return false;
    const gone = new Set<string>();
    for (const old of replaced.values()) for (const id of old === undefined ? [] : idsOf(old)) gone.add(id);
    const added = new Map<string, ConfigObject>();
    for (const file of replaced.keys()) {
      const entry = this.#files.get(file);
      if (entry === undefined) continue;
      const ids = idsOf(entry);
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        if (added.has(id) || (all.has(id) && !gone.has(id))) return false; // a duplicate
        added.set(id, entry.objects[i]!);
      }
    }
    const upsert: ConfigObject[] = [];
    const remove: ConfigObjectKey[] = [];
    for (const id of gone) {
      if (added.has(id)) continue;
      const o = all.get(id);
      if (o !== undefined) remove.push(configObjectKey(o));
      all.delete(id);
    }
    for (const [id, o] of added) {
      if (all.get(id) !== o) upsert.push(o);
      all.set(id, o);
    }
    if (upsert.length === 0 && remove.length === 0) return undefined;
    return this.state.update({ upsert, remove });
  }

  #applyAll(): ConfigChange | undefined {
    const seen = new Map<string, string>();
    const all = new Map<string, ConfigObject>();
    const duplicates: ConfigError[] = [];
    const files = [...this.#files.keys()].sort();
    for (const file of files) {
      const entry = this.#files.get(file)!;
      const ids = idsOf(entry);
      for (let i = 0; i < ids.length; i++) {
        const o = entry.objects[i]!;
        const id = ids[i]!;
        const first = seen.get(id);
        if (first !== undefined) {
          const ns = o.kind === 'Namespace' ? '' : o.namespace;
          duplicates.push(
            new ConfigError(
              'DUPLICATE_OBJECT',
              { source: file, kind: o.kind, namespace: ns === '' ? undefined : ns, name: o.name },
              '',
              `also defined in ${first}; the first definition wins`,
            ),
          );
          continue;
        }
        seen.set(id, file);
        all.set(id, o);
      }
    }
    const fresh = duplicates.filter((d) => !this.#duplicateErrors.some((o) => o.message === d.message));
    this.#report(fresh);
    this.#duplicateErrors = duplicates;
    return this.#commit(all);
  }

  /**
   * Hands the objects to the state. The first time (or when the state was given, and others may
   * write to it) as a snapshot; after that only what changed since the last commit: objects of
   * files that were not re-read are the same objects as last time, so one edited pod costs one
   * upsert instead of comparing the whole cluster again. The state ends up the same either way.
   */
  #commit(all: Map<string, ConfigObject>): ConfigChange | undefined {
    const last = this.#applied;
    if (!this.#ownState || last === undefined) {
      const change = this.state.applySnapshot(all.values());
      if (this.#ownState) this.#applied = all;
      return change;
    }
    const upsert: ConfigObject[] = [];
    const remove: ConfigObjectKey[] = [];
    for (const [id, o] of last) if (!all.has(id)) remove.push(configObjectKey(o));
    for (const [id, o] of all) if (last.get(id) !== o) upsert.push(o);
    this.#applied = all;
    if (upsert.length === 0 && remove.length === 0) return undefined;
    return this.state.update({ upsert, remove });
  }

  #report(errors: readonly ConfigError[], consequence?: string): void {
    for (const e of errors) {
      this.#log.error(
        e.toLogFields(),
        consequence === undefined ? e.message : `${e.message} (${consequence})`,
      );
    }
  }
}

const RACY_MS = 2000;

function isRacy(signature: string, now: number): boolean {
  const mtime = Number(signature.slice(signature.lastIndexOf(':') + 1));
  return now - mtime < RACY_MS;
}

/** Translates the objects of one parsed document (Lists expanded, empty documents skipped). */
function translateValue(
  value: unknown,
  file: string,
  document: number | undefined,
  out: TranslateResult[],
): void {
  for (const raw of flattenLists(value)) {
    if (raw === null || raw === undefined) continue; // empty document (e.g. a trailing ---)
    out.push(translateObject(raw, { source: file, document }));
  }
}

/**
 * Parses, converts and translates a file document by document (what parseAllDocuments does, without
 * holding every document's syntax tree until the end). Undefined when a document does not parse
 * or convert: the caller then parses the whole file again to report the errors. Documents are
 * numbered only in files with more than one, so each is translated once the next one (or the end)
 * has been seen.
 */
function translateDocuments(text: string, file: string): TranslateResult[] | undefined {
  const results: TranslateResult[] = [];
  // One copy of each distinct string of the file (namespaces, node names, label values repeat in
  // every pod): dropped with the load, so it pins nothing afterwards.
  const strings = new Map<string, string>();
  const composer = new Composer();
  let pending: unknown;
  let count = 0;
  for (const doc of composer.compose(new Parser().parse(text))) {
    if (doc.errors.length > 0) return undefined;
    let value: unknown;
    try {
      value = detachStrings(doc.toJS({ maxAliasCount: 100 }), new Set(), strings);
    } catch {
      return undefined;
    }
    count++;
    if (count > 1) translateValue(pending, file, count - 1, results);
    pending = value;
  }
  if (count > 0) translateValue(pending, file, count > 1 ? count : undefined, results);
  return results;
}

/** objectId of each of the entry's objects, made once per entry (reused by every later apply). */
function idsOf(entry: FileEntry): string[] {
  entry.ids ??= entry.objects.map((o) => objectId(o.kind, o.kind === 'Namespace' ? '' : o.namespace, o.name));
  return entry.ids;
}

/**
 * Gives every string of a parsed document its own storage, one per distinct value within the file
 * (`pool`). The parser's scalars of 13 characters or more are slices of the file's text, and one
 * slice kept in the state keeps the whole text alive (45 MB for a file of 100k pods); shorter ones
 * are copies already, but each occurrence is its own copy (a namespace name once per pod).
 */
function detachStrings(value: unknown, seen: Set<object>, pool: Map<string, string>): unknown {
  if (typeof value === 'string') {
    const known = pool.get(value);
    if (known !== undefined) return known;
    // A flat copy of a long one (`' ' + s` sliced would be a slice again; JSON round-trips every
    // string exactly, lone surrogates included).
    const own = value.length < 13 ? value : (JSON.parse(JSON.stringify(value)) as string);
    pool.set(own, own);
    return own;
  }
  if (value === null || typeof value !== 'object' || seen.has(value)) return value;
  seen.add(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = detachStrings(value[i], seen, pool);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    const o = value as Record<string, unknown>;
    for (const k of Object.keys(o)) if (k !== '__proto__') o[k] = detachStrings(o[k], seen, pool);
  }
  return value;
}

function objectId(kind: string, namespace: string, name: string): string {
  // join, not a template literal: one flat string instead of a cons string per object (kept in
  // entry.ids for every object of the file).
  return [kind, namespace, name].join('\0');
}
