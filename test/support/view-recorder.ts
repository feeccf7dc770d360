// The consumer's side of list/watch tests: what a client of the fake API server believes, to
// compare with what the server holds.
import type { KubeObject, ObjectKind } from '../../src/model/k8s.js';
import type { ChangeType } from './apiserver/object-store.js';
import { keyOf } from './apiserver/resources.js';

export interface RecordedEvent {
  kind: ObjectKind;
  type: ChangeType;
  object: KubeObject;
}

/** A SourceHandler that rebuilds the view a consumer would have and flags inconsistent
 *  events (ADDED for a known object, MODIFIED or DELETED for an unknown one, double sync). */
export class ViewRecorder {
  readonly events: RecordedEvent[] = [];
  readonly synced: ObjectKind[] = [];
  readonly problems: string[] = [];
  private readonly views: Record<ObjectKind, Map<string, KubeObject>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };

  onEvent(e: RecordedEvent): void {
    this.events.push(e);
    const view = this.views[e.kind];
    const key = keyOf(e.object);
    const known = view.has(key);
    if (e.type === 'ADDED' && known) this.problems.push(`ADDED for known ${e.kind} ${key}`);
    if (e.type !== 'ADDED' && !known) this.problems.push(`${e.type} for unknown ${e.kind} ${key}`);
    if (e.type === 'DELETED') view.delete(key);
    else view.set(key, e.object);
  }

  onSynced(kind: ObjectKind): void {
    if (this.synced.includes(kind)) this.problems.push(`synced twice: ${kind}`);
    this.synced.push(kind);
  }

  /** key → resourceVersion of what the consumer currently believes. */
  view(kind: ObjectKind): Record<string, string> {
    return versions([...this.views[kind].values()]);
  }
}

/** key → resourceVersion of a list of objects, for comparing views. */
export function versions(objs: KubeObject[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const o of [...objs].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1))) {
    out[keyOf(o)] = o.metadata?.resourceVersion ?? '';
  }
  return out;
}
