// Label and field selectors of LIST and WATCH requests: parsed as the real server does (a bad
// one is a 400 Status) and matched against objects.
import type { KubeObject } from '../../../src/model/k8s.js';
import { StatusError } from './status.js';

export interface LabelRequirement {
  key: string;
  op: 'exists' | 'notexists' | 'eq' | 'neq' | 'in' | 'notin';
  values: string[];
}

export interface FieldRequirement {
  field: 'metadata.name' | 'metadata.namespace';
  op: 'eq' | 'neq';
  value: string;
}

// Commas separate requirements except inside the parentheses of a set.
function splitTerms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

const LABEL_KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const LABEL_VALUE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$/;

export function parseLabelSelector(sel: string): LabelRequirement[] {
  const reqs: LabelRequirement[] = [];
  for (const term of splitTerms(sel)) {
    let m: RegExpMatchArray | null;
    let req: LabelRequirement;
    if ((m = term.match(/^!\s*(\S+)$/))) req = { key: m[1]!, op: 'notexists', values: [] };
    else if ((m = term.match(/^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/))) {
      const values = m[3]!.split(',').map((v) => v.trim());
      req = { key: m[1]!, op: m[2] === 'in' ? 'in' : 'notin', values };
    } else if ((m = term.match(/^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/))) {
      req = { key: m[1]!, op: m[2] === '!=' ? 'neq' : 'eq', values: [m[3]!] };
    } else if ((m = term.match(/^([^!=\s()]+)$/))) req = { key: m[1]!, op: 'exists', values: [] };
    else throw new StatusError(400, 'BadRequest', `unable to parse requirement: ${JSON.stringify(term)}`);
    if (!LABEL_KEY.test(req.key)) throw new StatusError(400, 'BadRequest', `invalid label key ${JSON.stringify(req.key)}`);
    for (const v of req.values) {
      if (!LABEL_VALUE.test(v)) throw new StatusError(400, 'BadRequest', `invalid label value ${JSON.stringify(v)}`);
    }
    reqs.push(req);
  }
  return reqs;
}

export function parseFieldSelector(sel: string): FieldRequirement[] {
  const reqs: FieldRequirement[] = [];
  for (const term of splitTerms(sel)) {
    const m = term.match(/^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw new StatusError(400, 'BadRequest', `invalid field selector term ${JSON.stringify(term)}`);
    const field = m[1]!;
    if (field !== 'metadata.name' && field !== 'metadata.namespace') {
      throw new StatusError(400, 'BadRequest', `field label not supported: ${field}`);
    }
    reqs.push({ field, op: m[2] === '!=' ? 'neq' : 'eq', value: m[3]!.trim() });
  }
  return reqs;
}

export function labelsMatch(reqs: LabelRequirement[], obj: KubeObject): boolean {
  const labels = obj.metadata?.labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case 'exists':
        return has;
      case 'notexists':
        return !has;
      case 'eq':
        return has && v === r.values[0];
      case 'neq':
        return !has || v !== r.values[0];
      case 'in':
        return has && r.values.includes(v!);
      case 'notin':
        return !has || !r.values.includes(v!);
    }
  });
}

export function fieldsMatch(reqs: FieldRequirement[], obj: KubeObject): boolean {
  return reqs.every((r) => {
    const actual = (r.field === 'metadata.name' ? obj.metadata?.name : obj.metadata?.namespace) ?? '';
    return r.op === 'eq' ? actual === r.value : actual !== r.value;
  });
}
