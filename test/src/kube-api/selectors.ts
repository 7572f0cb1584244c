// Label and field selectors, parsed the way the API server parses them, so a selector the real
// server would refuse (bad syntax, an unsupported field) is refused here too with a 400.

export class SelectorError extends Error {
  override readonly name = 'SelectorError';
}

type LabelRequirement =
  | { op: 'eq' | 'neq'; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: string[] }
  | { op: 'exists' | 'notexists'; key: string };

export type LabelMatcher = (labels: Record<string, string> | undefined) => boolean;

const KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Splits on commas that are not inside `( ... )`. */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

function checkKey(key: string): string {
  if (!KEY.test(key)) throw new SelectorError(`unable to parse requirement: invalid label key "${key}"`);
  return key;
}

function checkValue(value: string): string {
  if (!VALUE.test(value) || value.length > 63) {
    throw new SelectorError(`unable to parse requirement: invalid label value: "${value}"`);
  }
  return value;
}

function parseRequirement(text: string): LabelRequirement {
  const setMatch = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(text);
  if (setMatch) {
    const values = (setMatch[3] ?? '')
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v.length > 0)
      .map(checkValue);
    return { op: setMatch[2] as 'in' | 'notin', key: checkKey(setMatch[1] ?? ''), values };
  }
  const ne = text.indexOf('!=');
  if (ne > 0)
    return {
      op: 'neq',
      key: checkKey(text.slice(0, ne).trim()),
      value: checkValue(text.slice(ne + 2).trim()),
    };
  const eq2 = text.indexOf('==');
  if (eq2 > 0)
    return {
      op: 'eq',
      key: checkKey(text.slice(0, eq2).trim()),
      value: checkValue(text.slice(eq2 + 2).trim()),
    };
  const eq = text.indexOf('=');
  if (eq > 0)
    return {
      op: 'eq',
      key: checkKey(text.slice(0, eq).trim()),
      value: checkValue(text.slice(eq + 1).trim()),
    };
  if (text.startsWith('!')) return { op: 'notexists', key: checkKey(text.slice(1).trim()) };
  return { op: 'exists', key: checkKey(text) };
}

export function parseLabelSelector(selector: string | null | undefined): LabelMatcher {
  if (!selector) return () => true;
  const requirements = splitTopLevel(selector).map(parseRequirement);
  return (labels) => {
    const l = labels ?? {};
    return requirements.every((r) => {
      const has = Object.hasOwn(l, r.key);
      const v = l[r.key];
      switch (r.op) {
        case 'eq':
          return has && v === r.value;
        case 'neq':
          return !has || v !== r.value;
        case 'in':
          return has && r.values.includes(v as string);
        case 'notin':
          return !has || !r.values.includes(v as string);
        case 'exists':
          return has;
        case 'notexists':
          return !has;
      }
      return false;
    });
  };
}

export type FieldMatcher = (object: Record<string, unknown>) => boolean;

function fieldValue(object: Record<string, unknown>, path: string): string {
  let current: unknown = object;
  for (const part of path.split('.')) {
    if (current === null || typeof current !== 'object') return '';
    current = (current as Record<string, unknown>)[part];
  }
  if (current === undefined || current === null) return '';
  if (typeof current === 'object') return JSON.stringify(current);
  return String(current);
}

/** `allowed` lists field labels beyond metadata.name/namespace; others get the server's 400 text. */
export function parseFieldSelector(
  selector: string | null | undefined,
  allowed: readonly string[],
): FieldMatcher {
  if (!selector) return () => true;
  const terms = selector
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t.length > 0)
    .map((term) => {
      const ne = term.indexOf('!=');
      const eq2 = term.indexOf('==');
      const eq = term.indexOf('=');
      let field: string;
      let value: string;
      let negate = false;
      if (ne > 0) {
        field = term.slice(0, ne);
        value = term.slice(ne + 2);
        negate = true;
      } else if (eq2 > 0) {
        field = term.slice(0, eq2);
        value = term.slice(eq2 + 2);
      } else if (eq > 0) {
        field = term.slice(0, eq);
        value = term.slice(eq + 1);
      } else {
        throw new SelectorError(`invalid selector: '${term}'; can't understand '${term}'`);
      }
      field = field.trim();
      if (field !== 'metadata.name' && field !== 'metadata.namespace' && !allowed.includes(field)) {
        throw new SelectorError(`field label not supported: ${field}`);
      }
      return { field, value: value.trim(), negate };
    });
  return (object) => terms.every((t) => (fieldValue(object, t.field) === t.value) !== t.negate);
}
