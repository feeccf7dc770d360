// Turns the items of a list, as they are decoded, into the events that bring the consumer from
// what it was last told to the listed state. The first list (nothing delivered yet) hands each
// item on at once, so the whole list is never held. A relist keeps only the items that changed
// and delivers them after the deletions it discovers: a new object may reuse what a vanished one
// held (an IP, a node port).
import type { KubeObject, ObjectKind } from '../model/k8s.js';
import { log } from '../log.js';
import type { EventType } from './types.js';

export function objectKey(o: KubeObject): string | undefined {
  const name = o.metadata?.name;
  if (typeof name !== 'string' || name === '') return undefined;
  return `${o.metadata?.namespace ?? ''}/${name}`;
}

/** Read from a deletion by the endpoint-change latency metric. */
const TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';

// What the store keeps of a delivered object: its key and resourceVersion (for relist diffs)
// and what consumers read from a deletion a relist discovers (identity, a slice's address
// type and change trigger time). Whole objects would be the largest part of the proxy's
// memory at 10,000 services. The own Node is one object, and health reads all of it.
export function tombstone(o: KubeObject): KubeObject {
  if (o.kind === 'Node') return o;
  const m = o.metadata ?? {};
  const meta: NonNullable<KubeObject['metadata']> = {};
  if (m.name !== undefined) meta.name = m.name;
  if (m.namespace !== undefined) meta.namespace = m.namespace;
  if (m.uid !== undefined) meta.uid = m.uid;
  if (m.resourceVersion !== undefined) meta.resourceVersion = m.resourceVersion;
  const trigger = m.annotations?.[TRIGGER_TIME];
  if (trigger !== undefined) meta.annotations = { [TRIGGER_TIME]: trigger };
  const t: KubeObject & { addressType?: unknown } = { kind: o.kind, apiVersion: o.apiVersion, metadata: meta };
  const addressType = (o as { addressType?: unknown }).addressType;
  if (addressType !== undefined) t.addressType = addressType;
  return t;
}

/** The reflector's side of a list: what it has delivered and how it delivers. */
export interface ListTarget {
  readonly kind: ObjectKind;
  /** Key → tombstone of each object delivered and not deleted. */
  readonly store: Map<string, KubeObject>;
  /** Gives a list item the kind and apiVersion lists leave out. */
  complete(o: KubeObject): KubeObject;
  emit(type: EventType, o: KubeObject): void;
}

export class ListSync {
  private readonly fresh = new Set<string>();
  /** Relist only: changed items, delivered after the deletions. */
  private readonly pending = new Map<string, KubeObject>();
  private readonly streaming: boolean;
  private changed = 0;

  constructor(private readonly target: ListTarget) {
    this.streaming = target.store.size === 0;
  }

  item(raw: KubeObject): void {
    const key = objectKey(raw);
    if (!key) {
      log.warn('Skipping object without a name', { kind: this.target.kind });
      return;
    }
    this.fresh.add(key);
    const o = this.target.complete(raw);
    const old = this.target.store.get(key);
    const rv = old?.metadata?.resourceVersion;
    if (old && rv !== undefined && rv === o.metadata?.resourceVersion) {
      this.pending.delete(key);
      return;
    }
    if (this.streaming) this.deliver(key, o);
    else this.pending.set(key, o);
  }

  /** Delivers what a relist found; returns the listed and changed object counts. */
  finish(): { objects: number; changed: number } {
    const { store } = this.target;
    for (const [key, old] of store) {
      if (!this.fresh.has(key)) {
        store.delete(key);
        this.target.emit('DELETED', old);
      }
    }
    for (const [key, o] of this.pending) this.deliver(key, o);
    this.pending.clear();
    return { objects: this.fresh.size, changed: this.changed };
  }

  private deliver(key: string, o: KubeObject): void {
    const had = this.target.store.has(key);
    this.target.store.set(key, tombstone(o));
    this.target.emit(had ? 'MODIFIED' : 'ADDED', o);
    this.changed++;
  }
}
