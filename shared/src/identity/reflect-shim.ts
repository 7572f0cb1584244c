// Minimal Reflect metadata API (getMetadata, getOwnMetadata, defineMetadata, hasMetadata,
// metadata) for tsyringe inside @peculiar/x509. Installed only if nothing else provided one.
type MetaKey = unknown;
type PropKey = string | symbol | undefined;

const store = new WeakMap<object, Map<PropKey, Map<MetaKey, unknown>>>();

function ownMap(target: object, prop: PropKey, create: boolean): Map<MetaKey, unknown> | undefined {
  let byProp = store.get(target);
  if (!byProp) {
    if (!create) return undefined;
    byProp = new Map();
    store.set(target, byProp);
  }
  let meta = byProp.get(prop);
  if (!meta && create) {
    meta = new Map();
    byProp.set(prop, meta);
  }
  return meta;
}

const api = {
  defineMetadata(key: MetaKey, value: unknown, target: object, prop?: PropKey): void {
    ownMap(target, prop, true)!.set(key, value);
  },
  getOwnMetadata(key: MetaKey, target: object, prop?: PropKey): unknown {
    return ownMap(target, prop, false)?.get(key);
  },
  getMetadata(key: MetaKey, target: object, prop?: PropKey): unknown {
    for (let t: object | null = target; t; t = Object.getPrototypeOf(t) as object | null) {
      const meta = ownMap(t, prop, false);
      if (meta?.has(key)) return meta.get(key);
    }
    return undefined;
  },
  hasMetadata(key: MetaKey, target: object, prop?: PropKey): boolean {
    return api.getMetadata(key, target, prop) !== undefined;
  },
  metadata(key: MetaKey, value: unknown) {
    return (target: object, prop?: PropKey) => api.defineMetadata(key, value, target, prop);
  },
};

const reflect = Reflect as unknown as Record<string, unknown>;
if (typeof reflect.getMetadata !== 'function') {
  for (const [name, fn] of Object.entries(api)) reflect[name] = fn;
}
