// Manifest text → the objects the proxy reads. Everything here is hostile-input safe: a
// file too large, too deeply nested or malformed is rejected alone, with its position,
// and never throws past parseManifests.
import { parseAllDocuments } from 'yaml';
import { log } from '../log.js';
import type { KubeObject, ObjectKind } from '../model/k8s.js';

/** Files above this size are rejected unread: no real manifest comes close. */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
/** Kubernetes objects nest a dozen levels; far deeper input is an attack or a bug. */
export const MAX_MANIFEST_DEPTH = 200;

interface KindInfo {
  group: string;
  version: string;
  namespaced: boolean;
}

const KINDS: Record<ObjectKind, KindInfo> = {
  Node: { group: '', version: 'v1', namespaced: false },
  Service: { group: '', version: 'v1', namespaced: true },
  EndpointSlice: { group: 'discovery.k8s.io', version: 'v1', namespaced: true },
};

export interface Entry {
  kind: ObjectKind;
  key: string;
  object: KubeObject;
}

export type ParseResult = { ok: true; objects: Map<string, Entry> } | { ok: false; error: string };

/** 1-based line and column of a character offset. */
function position(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

/**
 * Where flow nesting ([ and {) first goes deeper than the limit, skipping quoted strings
 * and comments; null when it never does. Parsers recurse per level, so this runs first.
 */
function tooDeepAt(text: string, json: boolean): number | null {
  let depth = 0;
  let quote = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote !== '') {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = '';
      continue;
    }
    if (c === '"' || (!json && c === "'" && /[\s[{,:]/.test(text[i - 1] ?? ' '))) quote = c;
    else if (!json && c === '#' && /\s/.test(text[i - 1] ?? '\n')) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl;
    } else if (c === '[' || c === '{') {
      if (++depth > MAX_MANIFEST_DEPTH) return i;
    } else if (c === ']' || c === '}') depth = Math.max(0, depth - 1);
  }
  return null;
}

/** Depth of a parsed value, without recursion. */
function depthOf(value: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (d > max) max = d;
    if (d > MAX_MANIFEST_DEPTH) return d;
    for (const child of Object.values(v as Record<string, unknown>)) stack.push([child, d + 1]);
  }
  return max;
}

/** Parses one file's text into the objects it holds; any error fails the whole file. */
export function parseManifests(text: string, file: string, json: boolean): ParseResult {
  const deep = tooDeepAt(text, json);
  if (deep !== null) return { ok: false, error: `nested deeper than ${MAX_MANIFEST_DEPTH} levels at ${position(text, deep)}` };
  const values: unknown[] = [];
  try {
    if (json) {
      const body = text.replace(/^\uFEFF/, '');
      try {
        values.push(JSON.parse(body));
      } catch (err) {
        const at = /position (\d+)/.exec(errorMessage(err));
        return { ok: false, error: at ? `${errorMessage(err)} (${position(body, Number(at[1]))})` : errorMessage(err) };
      }
    } else {
      for (const doc of parseAllDocuments(text, { merge: true })) {
        const e = doc.errors[0];
        if (e !== undefined) return { ok: false, error: e.message };
        values.push(doc.toJS({ maxAliasCount: 100 }));
      }
    }
  } catch (err) {
    // Deep block nesting, alias bombs and the like: whatever the parser gave up on.
    return { ok: false, error: errorMessage(err) };
  }
  for (const [i, v] of values.entries()) {
    if (depthOf(v) > MAX_MANIFEST_DEPTH) return { ok: false, error: `document ${i + 1} is nested deeper than ${MAX_MANIFEST_DEPTH} levels` };
  }
  const objects = new Map<string, Entry>();
  values.forEach((v, i) => collect(v, file, i, objects, undefined));
  return { ok: true, objects };
}

/** Adds the object (or the items of a List) to out, skipping what the proxy does not read. */
function collect(
  value: unknown,
  file: string,
  doc: number,
  out: Map<string, Entry>,
  listDefaults: { kind?: string; apiVersion?: string } | undefined,
): void {
  if (value === null || value === undefined) return; // empty YAML document
  if (typeof value !== 'object' || Array.isArray(value)) {
    log.warn('skipping manifest document that is not an object', { file, document: doc });
    return;
  }
  const obj = value as KubeObject & { items?: unknown };
  const kind = typeof obj.kind === 'string' ? obj.kind : listDefaults?.kind;
  const apiVersion = typeof obj.apiVersion === 'string' ? obj.apiVersion : listDefaults?.apiVersion;
  if (kind === undefined) {
    log.warn('skipping manifest object without kind', { file, document: doc, object: objectName(obj) });
    return;
  }
  if (kind === 'List' || kind.endsWith('List')) {
    if (!Array.isArray(obj.items)) {
      log.warn('skipping list without items', { file, document: doc, kind });
      return;
    }
    // Items of a typed list (ServiceList) may leave out their kind and apiVersion.
    const itemDefaults = kind === 'List' ? undefined : { kind: kind.slice(0, -'List'.length), apiVersion };
    for (const item of obj.items) collect(item, file, doc, out, itemDefaults);
    return;
  }
  const info = KINDS[kind as ObjectKind] as KindInfo | undefined;
  const group = apiVersion === undefined ? undefined : apiGroup(apiVersion);
  if (!info || (group !== undefined && group !== info.group)) {
    // Other kinds, and same-named kinds of other API groups (e.g. a Knative Service).
    log.v(2, 'ignoring manifest object of a kind the proxy does not use', {
      file,
      kind,
      apiVersion: apiVersion ?? '',
      object: objectName(obj),
    });
    return;
  }
  if (apiVersion !== undefined && apiVersion !== (info.group ? `${info.group}/${info.version}` : info.version)) {
    log.warn('skipping manifest object of an unsupported API version', {
      file,
      kind,
      apiVersion,
      object: objectName(obj),
    });
    return;
  }
  const meta = obj.metadata;
  if (typeof meta !== 'object' || meta === null || typeof meta.name !== 'string' || meta.name === '') {
    log.warn('skipping manifest object without metadata.name', { file, document: doc, kind });
    return;
  }
  if (meta.namespace !== undefined && typeof meta.namespace !== 'string') {
    log.warn('skipping manifest object with an invalid metadata.namespace', { file, kind, name: meta.name });
    return;
  }
  const typedKind = kind as ObjectKind;
  let object: KubeObject = { ...obj, kind, apiVersion: apiVersion ?? (info.group ? `${info.group}/${info.version}` : info.version) };
  let namespace = '';
  if (info.namespaced) {
    namespace = meta.namespace || 'default';
    object = { ...object, metadata: { ...meta, namespace } };
  }
  const key = `${typedKind}/${namespace}/${meta.name}`;
  if (out.has(key)) {
    log.warn('object defined twice in one manifest file; the later one wins', { file, object: key });
  }
  out.set(key, { kind: typedKind, key, object });
}

function apiGroup(apiVersion: string): string {
  const slash = apiVersion.indexOf('/');
  return slash < 0 ? '' : apiVersion.slice(0, slash);
}

/** JSON with object keys sorted, so that key order in a file is not a change. */
export function canonicalJSON(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
    return sorted;
  });
}

export function objectName(obj: KubeObject): string {
  const ns = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? '';
  return ns ? `${ns}/${name}` : String(name);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
