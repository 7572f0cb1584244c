// Fuzzing the config edge: mutated Kubernetes-shaped objects into translateObject, and mutated
// YAML files into the file source. Seeds are the objects the other tests build, the demo config
// and manifests/examples/*.yaml; mutations drop, retype and duplicate fields, change kinds, blow up
// sizes and nesting, and (for files) cut bytes and add alias bombs. What a user relies on:
// - nothing throws, whatever the input;
// - an invalid object is refused with an error that names the object's field (so it can be fixed);
// - valid objects keep loading, and a bad write leaves the file source's last good state in force.
// Replay a failure with FUZZ_SEED (docs/reliability.md).
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createFileSource,
  demoConfigYaml,
  type FileSource,
  type TranslateResult,
  translateObject,
} from '@hypha/shared/config';
import { fuzzParameters, fuzzTestTimeout } from '@hypha/test';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { authz, gateway, ns, pod, svc } from './objects.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const EXAMPLES = new URL('../../../manifests/examples/', import.meta.url);

function yamlDocuments(text: string): Json[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as Json)
    .filter((v) => v !== null && v !== undefined);
}

const SEEDS: Json[] = [
  ns('shop', { 'hypha.dev/dataplane-mode': 'ambient' }),
  pod('web-1', { namespace: 'shop', ip: '10.1.0.1', labels: { app: 'web' }, sa: 'web', ready: true }),
  svc('web', '10.96.0.1', { app: 'web' }, [{ port: 80, targetPort: 8080, name: 'http' }], {
    namespace: 'shop',
  }),
  gateway('waypoint', 'shop', 'service'),
  authz('shop', 'allow-web', {
    action: 'ALLOW',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }],
  }),
  ...yamlDocuments(demoConfigYaml()),
  ...['authorization-policies.yaml', 'peer-authentications.yaml', 'traffic-policies.yaml'].flatMap((f) =>
    yamlDocuments(readFileSync(new URL(f, EXAMPLES), 'utf8')),
  ),
] as Json[];

/** Every path of a JSON value (objects and arrays), the root excluded. */
function pathsOf(v: Json, prefix: (string | number)[] = [], out: (string | number)[][] = []) {
  if (prefix.length > 20) return out; // deep-nested values are mutated as a whole
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push([...prefix, i]);
      pathsOf(x, [...prefix, i], out);
    });
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      out.push([...prefix, k]);
      pathsOf(x, [...prefix, k], out);
    }
  }
  return out;
}

function deepNest(depth: number, leaf: Json, asArray: boolean): Json {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = asArray ? [v] : { a: v };
  return v;
}

const HUGE = 'x'.repeat(200_000);

/** A big value built only when applied, so fast-check never prints (or recurses into) it. */
class Big {
  constructor(
    readonly kind: 'nest' | 'nest-array' | 'long-array',
    readonly size: number,
  ) {}
  build(): Json {
    if (this.kind === 'long-array') return Array.from({ length: this.size }, () => 'item');
    return deepNest(this.size, 'deep', this.kind === 'nest-array');
  }
  [fc.toStringMethod](): string {
    return `${this.kind}(${this.size})`;
  }
}

const oddValue: fc.Arbitrary<Json | Big> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
  fc.constantFrom<Json>(
    '',
    -1,
    0,
    1.5,
    2 ** 53,
    -(2 ** 31),
    65536,
    'True',
    '10.0.0.256',
    '::ffff:1.2.3.4',
    '0.0.0.0/0',
    HUGE,
    '__proto__',
    'constructor',
    [],
    {},
  ),
  fc
    .tuple(fc.constantFrom('nest' as const, 'nest-array' as const), fc.integer({ min: 100, max: 800 }))
    .map(([k, d]) => new Big(k, d)),
  fc.integer({ min: 1000, max: 50_000 }).map((n) => new Big('long-array', n)),
);

type Mutation =
  | { op: 'drop'; pick: number }
  | { op: 'retype'; pick: number; value: Json | Big }
  | { op: 'duplicate'; pick: number }
  | { op: 'rename'; pick: number; to: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('drop' as const), pick: fc.nat() }),
  fc.record({ op: fc.constant('retype' as const), pick: fc.nat(), value: oddValue }),
  fc.record({ op: fc.constant('duplicate' as const), pick: fc.nat() }),
  fc.record({
    op: fc.constant('rename' as const),
    pick: fc.nat(),
    to: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('kind', 'apiVersion', 'name', '__proto__')),
  }),
);

function materialize(v: Json | Big): Json {
  return v instanceof Big ? v.build() : structuredClone(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

/** Applies one mutation; returns the path it touched (undefined if the object had no fields). */
function mutate(root: Json, m: Mutation): (string | number)[] | undefined {
  const paths = pathsOf(root);
  if (paths.length === 0) return undefined;
  const path = paths[m.pick % paths.length]!;
  const parent = path.slice(0, -1).reduce<Json>((v, k) => (v as Record<string, Json>)[k]!, root) as
    | Json[]
    | Record<string, Json>;
  const key = path[path.length - 1]!;
  if (Array.isArray(parent)) {
    const i = key as number;
    if (m.op === 'drop') parent.splice(i, 1);
    else if (m.op === 'retype') parent[i] = materialize(m.value);
    else parent.splice(i, 0, clone(parent[i]!));
    return path;
  }
  const k = key as string;
  if (m.op === 'drop') delete parent[k];
  else if (m.op === 'retype') parent[k] = materialize(m.value);
  else if (m.op === 'duplicate') parent[`${k}`] = [clone(parent[k]!), clone(parent[k]!)];
  else {
    Object.defineProperty(parent, m.to, {
      value: parent[k],
      enumerable: true,
      configurable: true,
      writable: true,
    });
    if (m.to !== k) delete parent[k];
  }
  return path;
}

const seedIndex = fc.nat({ max: SEEDS.length - 1 });

function checkResult(result: TranslateResult, raw: unknown): void {
  expect(['ok', 'ignored', 'invalid']).toContain(result.status);
  if (result.status !== 'invalid') return;
  expect(result.errors.length).toBeGreaterThan(0);
  const isMapping = raw !== null && typeof raw === 'object' && !Array.isArray(raw);
  for (const e of result.errors) {
    expect(e.message).toContain('fuzz.yaml');
    expect(e.detail.length).toBeGreaterThan(0);
    // A mapping's problem is always at a field an operator can find; only a non-mapping is whole.
    if (isMapping) expect(e.field, e.message).not.toBe('');
  }
}

describe('translateObject under mutated objects', () => {
  it('seeds are valid objects', () => {
    for (const seed of SEEDS) {
      const r = translateObject(clone(seed), { source: 'fuzz.yaml' });
      expect(r.status, JSON.stringify(r)).not.toBe('invalid');
    }
  });

  const anyObject = fuzzParameters({ runs: 400, timeLimitMs: 8_000 });
  const oneField = fuzzParameters({ runs: 300, timeLimitMs: 6_000 });

  it('never throws; every refusal names a field; valid objects still load afterwards', {
    timeout: fuzzTestTimeout(anyObject),
  }, () => {
    fc.assert(
      fc.property(seedIndex, fc.array(mutation, { minLength: 1, maxLength: 4 }), (i, ms) => {
        const raw = clone(SEEDS[i]!);
        for (const m of ms) mutate(raw, m);
        checkResult(translateObject(raw, { source: 'fuzz.yaml' }), raw);
        // No state leaks between calls: the untouched seed translates as before.
        expect(translateObject(clone(SEEDS[i]!), { source: 'fuzz.yaml' }).status).not.toBe('invalid');
      }),
      anyObject,
    );
  });

  it('a single dropped or retyped field of a valid object is refused at that field or above it', {
    timeout: fuzzTestTimeout(oneField),
  }, () => {
    fc.assert(
      fc.property(
        seedIndex,
        fc.oneof(
          fc.record({ op: fc.constant('drop' as const), pick: fc.nat() }),
          fc.record({ op: fc.constant('retype' as const), pick: fc.nat(), value: oddValue }),
        ),
        (i, m) => {
          const raw = clone(SEEDS[i]!);
          const path = mutate(raw, m);
          const r = translateObject(raw, { source: 'fuzz.yaml' });
          checkResult(r, raw);
          if (r.status !== 'invalid' || path === undefined || path[0] === 'kind' || path[0] === 'apiVersion')
            return;
          // The refusal points at the mutated field, one of its ancestors or one of its children
          // (a required field dropped under it), never somewhere unrelated.
          const mutated = formatPath(path);
          const related = r.errors.some((e) => {
            const field = normalizePath(e.field);
            return (
              field === mutated ||
              mutated.startsWith(`${field}.`) ||
              field.startsWith(`${mutated}.`) ||
              // A name or namespace that no longer parses makes metadata the culprit.
              field.startsWith('metadata')
            );
          });
          expect(related, `${mutated}: ${r.errors.map((e) => e.message).join(' | ')}`).toBe(true);
        },
      ),
      oneField,
    );
  });

  it('self-referencing and huge documents are refused, not crashed on', () => {
    const cyclic: Record<string, unknown> = clone(SEEDS[1]!) as Record<string, unknown>;
    (cyclic.spec as Record<string, unknown>).containers = [cyclic];
    checkResult(translateObject(cyclic, { source: 'fuzz.yaml' }), cyclic);
  });
});

function formatPath(path: readonly (string | number)[]): string {
  return path.join('.');
}

/** `spec.ports[0].x` and `spec.portLevelMtls["8081"]` as dotted segments, to compare with formatPath. */
function normalizePath(field: string): string {
  return field.replace(/\["([^"]*)"\]/g, '.$1').replace(/\[(\d+)\]/g, '.$1');
}

// ---- the file source ----

type TextMutation =
  | { op: 'cut'; at: number }
  | { op: 'insert'; at: number; text: string }
  | { op: 'flip'; at: number; byte: number }
  | { op: 'bomb'; depth: number }
  | { op: 'nest'; depth: number }
  | { op: 'objects'; ms: Mutation[] };

const textMutation: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({
    op: fc.constant('insert' as const),
    at: fc.nat(),
    text: fc.oneof(
      fc.string({ maxLength: 8 }),
      fc.constantFrom(
        ':',
        '- ',
        '\t',
        '---\n',
        '...\n',
        '&a ',
        '*a',
        '!!binary ',
        '{',
        ']',
        '"',
        "'",
        '\u0000',
        '%YAML 1.1\n',
        '<<: *a\n',
      ),
    ),
  }),
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('bomb' as const), depth: fc.integer({ min: 3, max: 12 }) }),
  fc.record({ op: fc.constant('nest' as const), depth: fc.integer({ min: 50, max: 3000 }) }),
  fc.record({ op: fc.constant('objects' as const), ms: fc.array(mutation, { minLength: 1, maxLength: 3 }) }),
);

/** A "billion laughs" YAML: each level aliases the one below ten times. */
function aliasBomb(depth: number): string {
  const lines = ['a0: &a0 ["lol"]'];
  for (let i = 1; i <= depth; i++) {
    lines.push(`a${i}: &a${i} [${Array.from({ length: 10 }, () => `*a${i - 1}`).join(', ')}]`);
  }
  return `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bomb\n${lines.map((l) => `  ${l}`).join('\n')}\n`;
}

function applyText(good: string, goodObjects: Json[], m: TextMutation): string {
  const at = (n: number) => n % (good.length + 1);
  switch (m.op) {
    case 'cut':
      return good.slice(0, at(m.at));
    case 'insert':
      return good.slice(0, at(m.at)) + m.text + good.slice(at(m.at));
    case 'flip': {
      const b = Buffer.from(good);
      b[m.at % b.length] = m.byte;
      return b.toString('latin1');
    }
    case 'bomb':
      return `${good}---\n${aliasBomb(m.depth)}`;
    case 'nest':
      return `${good}---\n${'['.repeat(m.depth)}${']'.repeat(m.depth)}\n---\n${'- '.repeat(Math.min(m.depth, 500))}x\n`;
    case 'objects': {
      const objects = clone(goodObjects);
      const target = objects[m.ms[0]!.pick % objects.length]!;
      for (const x of m.ms) mutate(target, x);
      return objects.map((o) => stringify(o, { aliasDuplicateObjects: false })).join('---\n');
    }
  }
}

describe('file source under mutated YAML writes', () => {
  let dir: string;
  let source: FileSource;
  let file: string;
  const good = demoConfigYaml();
  const goodObjects = yamlDocuments(good);
  let goodStats: ReturnType<FileSource['state']['stats']>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hypha-fuzz-config-'));
    file = join(dir, 'mesh.yaml');
    await writeFile(file, good);
    source = createFileSource({ path: file, watch: false, pollIntervalMs: 3_600_000, debounceMs: 1 });
    await source.start();
    const { version: _, ...counts } = source.state.stats();
    goodStats = { version: 0, ...counts };
    expect(source.errors).toEqual([]);
  });
  afterAll(async () => {
    await source?.close();
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  });

  const counts = () => ({ ...source.state.stats(), version: 0 });

  const writes = fuzzParameters({ runs: 30, timeLimitMs: 6_000 });

  it('never throws; a write that does not parse keeps the last good state; a good write restores it', {
    timeout: fuzzTestTimeout(writes),
  }, async () => {
    await fc.assert(
      fc.asyncProperty(textMutation, async (m) => {
        const bad = applyText(good, goodObjects, m);
        await writeFile(file, bad);
        await source.reload();
        if (source.errors.some((e) => e.code === 'PARSE_ERROR')) {
          expect(counts()).toEqual(goodStats);
          for (const e of source.errors) expect(e.message).toContain('mesh.yaml');
        }
        const objectErrors = source.errors.filter(
          (e) => e.code === 'INVALID_OBJECT' || e.code === 'WRONG_API_VERSION' || e.code === 'UNKNOWN_KIND',
        );
        for (const e of objectErrors) expect(e.field, e.message).not.toBe('');
        await writeFile(file, good);
        await source.reload();
        expect(source.errors).toEqual([]);
        expect(counts()).toEqual(goodStats);
      }),
      writes,
    );
  });
});
