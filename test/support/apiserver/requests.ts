// The record the fake API server keeps of every request, and the filter that picks requests out
// of it (for tests counting calls, and for the faults they arm).
import type { ObjectKind } from '../../../src/model/k8s.js';

export type Verb = 'list' | 'watch' | 'get' | 'create' | 'update' | 'delete';

export interface RequestRecord {
  kind: ObjectKind | undefined;
  verb: Verb | undefined;
  method: string;
  path: string;
  namespace: string | undefined;
  query: Record<string, string>;
  /** Date.now() when the request arrived. */
  time: number;
}

export interface RequestFilter {
  kind?: ObjectKind;
  verb?: Verb;
  /** true: only LIST pages that carry a continue token; false: only first pages. */
  continue?: boolean;
}

export function matchesFilter(r: RequestRecord, f: RequestFilter): boolean {
  if (f.kind !== undefined && r.kind !== f.kind) return false;
  if (f.verb !== undefined && r.verb !== f.verb) return false;
  if (f.continue !== undefined && Boolean(r.query.continue) !== f.continue) return false;
  return true;
}
