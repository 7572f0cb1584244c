// The three PATCH flavours the API server accepts: JSON merge patch (RFC 7386), JSON patch
// (RFC 6902) and strategic merge patch. Strategic merge is implemented for the lists Hypha and
// its tests touch: lists of objects merge by their key field (containers by name, conditions by
// type, ...), `$patch: delete` removes an item, `$patch: replace` replaces; every other list is
// replaced wholesale, as with merge patch. Server-side apply is treated as a merge patch.

export class PatchError extends Error {
  override readonly name = 'PatchError';
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(v: unknown): v is Record<string, Json> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

export function mergePatch(target: unknown, patch: unknown): Json {
  if (!isObject(patch)) return clone(patch as Json);
  const result: Record<string, Json> = isObject(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

/** Merge keys of the strategic-merge lists that matter here (from the Kubernetes type tags). */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  env: 'name',
  conditions: 'type',
  ports: 'port',
  containerStatuses: 'name',
  initContainerStatuses: 'name',
  ownerReferences: 'uid',
  imagePullSecrets: 'name',
  tolerations: 'key',
  hostAliases: 'ip',
  podIPs: 'ip',
  hostIPs: 'ip',
};
/** Lists of scalars that strategic merge treats as sets. */
const MERGE_SETS = new Set(['finalizers']);

function strategicList(key: string, target: Json[] | undefined, patch: Json[]): Json[] {
  const mergeKey = MERGE_KEYS[key];
  if (MERGE_SETS.has(key)) {
    const out = [...(target ?? [])];
    for (const v of patch) if (!out.includes(v)) out.push(v);
    return out;
  }
  if (!mergeKey || !patch.every(isObject)) return clone(patch);
  if (patch.some((p) => isObject(p) && p.$patch === 'replace')) {
    return patch.filter((p) => !(isObject(p) && p.$patch === 'replace')).map(clone);
  }
  const out: Json[] = (target ?? []).map(clone);
  for (const item of patch as Record<string, Json>[]) {
    const id = item[mergeKey];
    const index = out.findIndex((existing) => isObject(existing) && existing[mergeKey] === id);
    if (item.$patch === 'delete') {
      if (index >= 0) out.splice(index, 1);
      continue;
    }
    if (index >= 0) out[index] = strategicMergePatch(out[index], item);
    else out.push(strategicMergePatch(undefined, item));
  }
  return out;
}

export function strategicMergePatch(target: unknown, patch: unknown): Json {
  if (!isObject(patch)) return clone(patch as Json);
  if (patch.$patch === 'replace') {
    const { $patch: _ignored, ...rest } = patch;
    return clone(rest);
  }
  const result: Record<string, Json> = isObject(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) continue;
    if (value === null) delete result[key];
    else if (Array.isArray(value)) {
      const existing = result[key];
      result[key] = strategicList(key, Array.isArray(existing) ? existing : undefined, value);
    } else result[key] = strategicMergePatch(result[key], value);
  }
  return result;
}

function unescapePointer(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new PatchError(`invalid JSON pointer "${pointer}"`);
  return pointer.slice(1).split('/').map(unescapePointer);
}

function parentOf(doc: Json, tokens: string[], pointer: string): { parent: Json; last: string } {
  let current: Json = doc;
  for (const token of tokens.slice(0, -1)) {
    if (Array.isArray(current)) current = current[Number(token)] as Json;
    else if (isObject(current)) current = current[token] as Json;
    else current = undefined as unknown as Json;
    if (current === undefined) throw new PatchError(`path "${pointer}" does not exist`);
  }
  return { parent: current, last: tokens[tokens.length - 1] ?? '' };
}

function getAt(doc: Json, pointer: string): Json {
  let current: Json = doc;
  for (const token of parsePointer(pointer)) {
    if (Array.isArray(current)) current = current[Number(token)] as Json;
    else if (isObject(current)) current = current[token] as Json;
    else throw new PatchError(`path "${pointer}" does not exist`);
    if (current === undefined) throw new PatchError(`path "${pointer}" does not exist`);
  }
  return current;
}

function removeAt(doc: Json, pointer: string): Json {
  const tokens = parsePointer(pointer);
  const { parent, last } = parentOf(doc, tokens, pointer);
  if (Array.isArray(parent)) {
    const i = Number(last);
    if (!(i >= 0 && i < parent.length)) throw new PatchError(`path "${pointer}" does not exist`);
    return parent.splice(i, 1)[0] as Json;
  }
  if (isObject(parent) && Object.hasOwn(parent, last)) {
    const v = parent[last] as Json;
    delete parent[last];
    return v;
  }
  throw new PatchError(`unable to remove nonexistent key: ${last}: missing value`);
}

function addAt(doc: Json, pointer: string, value: Json, replace: boolean): Json {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return value;
  const { parent, last } = parentOf(doc, tokens, pointer);
  if (Array.isArray(parent)) {
    const i = last === '-' ? parent.length : Number(last);
    if (!(i >= 0 && i <= parent.length)) throw new PatchError(`path "${pointer}" is out of bounds`);
    if (replace) parent[i] = value;
    else parent.splice(i, 0, value);
  } else if (isObject(parent)) {
    if (replace && !Object.hasOwn(parent, last)) {
      throw new PatchError(`replace operation does not apply: doc is missing key: ${pointer}: missing value`);
    }
    parent[last] = value;
  } else throw new PatchError(`path "${pointer}" does not exist`);
  return doc;
}

export function jsonPatch(target: unknown, operations: unknown): Json {
  if (!Array.isArray(operations)) throw new PatchError('json patch must be an array of operations');
  let doc = clone(target as Json);
  for (const op of operations) {
    if (!isObject(op) || typeof op.op !== 'string' || typeof op.path !== 'string') {
      throw new PatchError('each json patch operation needs "op" and "path"');
    }
    const path = op.path;
    switch (op.op) {
      case 'add':
        doc = addAt(doc, path, clone(op.value as Json), false);
        break;
      case 'replace':
        doc = addAt(doc, path, clone(op.value as Json), true);
        break;
      case 'remove':
        removeAt(doc, path);
        break;
      case 'move': {
        const v = removeAt(doc, String(op.from));
        doc = addAt(doc, path, v, false);
        break;
      }
      case 'copy':
        doc = addAt(doc, path, clone(getAt(doc, String(op.from))), false);
        break;
      case 'test':
        if (JSON.stringify(getAt(doc, path)) !== JSON.stringify(op.value)) {
          throw new PatchError(`testing value ${path} failed`);
        }
        break;
      default:
        throw new PatchError(`unexpected op "${op.op}"`);
    }
  }
  return doc;
}
