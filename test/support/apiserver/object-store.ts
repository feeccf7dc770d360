// The fake API server's storage, standing in for etcd and the watch cache: the objects of each
// kind under one global resourceVersion counter, the recent change history that watches resume
// from and older list snapshots are rebuilt from, and paginated consistent LISTs. Every change
// is handed to onChange, which fans it out to the open watches.
import { randomUUID } from 'node:crypto';
import type { KubeObject, ObjectKind } from '../../../src/model/k8s.js';
import { KINDS, keyOf, type Meta, type Route } from './resources.js';
import { fieldsMatch, labelsMatch, parseFieldSelector, parseLabelSelector } from './selectors.js';
import { StatusError } from './status.js';

export type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface HistoryEvent {
  rv: number;
  kind: ObjectKind;
  type: ChangeType;
  object: KubeObject;
  /** State before this change (absent for ADDED). */
  prev?: KubeObject;
}

export interface ObjectList {
  kind: string;
  apiVersion: string;
  metadata: Record<string, unknown>;
  items: KubeObject[];
}

function clone<T>(o: T): T {
  return structuredClone(o);
}

interface ContinueToken {
  rv: number;
  start: string;
}

function encodeContinue(t: ContinueToken): string {
  return Buffer.from(JSON.stringify(t)).toString('base64url');
}

function decodeContinue(s: string): ContinueToken {
  try {
    const t = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as ContinueToken;
    if (typeof t.rv === 'number' && typeof t.start === 'string') return t;
  } catch {
    // fall through
  }
  throw new StatusError(400, 'BadRequest', 'continue key is not valid');
}

export class ObjectStore {
  private readonly stores: Record<ObjectKind, Map<string, KubeObject>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };
  history: HistoryEvent[] = [];
  /** Wire text (without kind/apiVersion) of each stored object a list has served. */
  private readonly serialized = new WeakMap<KubeObject, string>();
  /** Every change with a version above this one is still in history. */
  compactedRv = 0;
  /** The global resourceVersion counter. */
  rv = 1;

  constructor(
    private readonly historyLimit: number,
    private readonly pageCachedLists: boolean,
    private readonly onChange: (ev: HistoryEvent) => void,
  ) {}

  private normalize(kind: ObjectKind, obj: KubeObject): KubeObject {
    const info = KINDS[kind];
    const o = clone(obj);
    o.kind = kind;
    o.apiVersion = info.apiVersion;
    o.metadata = { ...(o.metadata ?? {}) };
    if (!o.metadata.name) throw new StatusError(422, 'Invalid', `${kind} has no metadata.name`);
    if (info.namespaced) o.metadata.namespace = o.metadata.namespace || 'default';
    else delete o.metadata.namespace;
    return o;
  }

  private record(kind: ObjectKind, type: ChangeType, object: KubeObject, prev?: KubeObject): void {
    const ev: HistoryEvent = { rv: this.rv, kind, type, object, ...(prev ? { prev } : {}) };
    this.history.push(ev);
    while (this.history.length > this.historyLimit) {
      this.compactedRv = this.history.shift()!.rv;
    }
    this.onChange(ev);
  }

  create(kind: ObjectKind, obj: KubeObject): KubeObject {
    const o = this.normalize(kind, obj);
    const key = keyOf(o);
    if (this.stores[kind].has(key)) {
      throw new StatusError(409, 'AlreadyExists', `${KINDS[kind].plural} "${o.metadata!.name}" already exists`);
    }
    this.rv++;
    o.metadata!.uid = randomUUID();
    o.metadata!.resourceVersion = String(this.rv);
    (o.metadata as Meta).creationTimestamp = new Date().toISOString();
    this.stores[kind].set(key, o);
    this.serialize(o);
    this.record(kind, 'ADDED', clone(o));
    return clone(o);
  }

  update(kind: ObjectKind, obj: KubeObject): KubeObject {
    const o = this.normalize(kind, obj);
    const key = keyOf(o);
    const prev = this.stores[kind].get(key);
    if (!prev) throw new StatusError(404, 'NotFound', `${KINDS[kind].plural} "${o.metadata!.name}" not found`);
    this.rv++;
    o.metadata!.uid = prev.metadata!.uid;
    (o.metadata as Meta).creationTimestamp = (prev.metadata as Meta).creationTimestamp;
    o.metadata!.resourceVersion = String(this.rv);
    this.stores[kind].set(key, o);
    this.serialize(o);
    this.record(kind, 'MODIFIED', clone(o), prev);
    return clone(o);
  }

  /** Deletes an object; returns its final state, or undefined when it did not exist. */
  remove(kind: ObjectKind, namespace: string | undefined, name: string): KubeObject | undefined {
    const key = `${KINDS[kind].namespaced ? namespace || 'default' : ''}/${name}`;
    const prev = this.stores[kind].get(key);
    if (!prev) return undefined;
    this.rv++;
    this.stores[kind].delete(key);
    const final = clone(prev);
    final.metadata!.resourceVersion = String(this.rv);
    this.record(kind, 'DELETED', final, prev);
    return clone(final);
  }

  /** Current objects of a kind, sorted by namespace/name like the real storage. */
  list(kind: ObjectKind): KubeObject[] {
    return [...this.stores[kind].entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => clone(o));
  }

  /** Forgets the event history and outstanding snapshots: resuming a watch or following a
   *  continue token from before now answers 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv + 1;
    // Later changes get versions above the compaction point so new clients still work.
    this.rv++;
  }

  /** The stored object under a namespace/name key, as it is (not a copy). */
  get(kind: ObjectKind, key: string): KubeObject | undefined {
    return this.stores[kind].get(key);
  }

  /** The objects of a kind as they were at version rv, rebuilt by undoing later history. */
  private stateAt(kind: ObjectKind, rv: number): Map<string, KubeObject> {
    const m = new Map(this.stores[kind]);
    for (let i = this.history.length - 1; i >= 0 && this.history[i]!.rv > rv; i--) {
      const e = this.history[i]!;
      if (e.kind !== kind) continue;
      if (e.type === 'ADDED') m.delete(keyOf(e.object));
      else m.set(keyOf(e.object), e.prev!);
    }
    return m;
  }

  /** One page of a LIST request: of the current state, or of the older snapshot the request names. */
  listPage(r: Route, q: Record<string, string>): ObjectList {
    const labels = parseLabelSelector(q.labelSelector ?? '');
    const fields = parseFieldSelector(q.fieldSelector ?? '');
    let limit = 0;
    if (q.limit !== undefined) {
      limit = Number(q.limit);
      if (!Number.isInteger(limit) || limit < 0) throw new StatusError(400, 'BadRequest', `invalid limit ${q.limit}`);
    }
    let snapshotRv = this.rv;
    let start = '';
    if (q.continue) {
      const tok = decodeContinue(q.continue);
      if (tok.rv < this.compactedRv) {
        throw new StatusError(410, 'Expired', 'continue token is too old for a consistent list; start a new list');
      }
      snapshotRv = tok.rv;
      start = tok.start;
    } else if (q.resourceVersion && q.resourceVersion !== '0') {
      const want = Number(q.resourceVersion);
      if (!Number.isInteger(want) || want < 0) {
        throw new StatusError(400, 'BadRequest', `invalid resourceVersion ${q.resourceVersion}`);
      }
      if (want < this.compactedRv) throw new StatusError(410, 'Expired', `too old resource version: ${want}`);
      if (want > this.rv) throw new StatusError(504, 'Timeout', `too large resource version: ${want}`);
      // With a limit (or an explicit Exact match) the real server serves that exact snapshot.
      if (limit > 0 || q.resourceVersionMatch === 'Exact') snapshotRv = want;
    } else if (q.resourceVersion === '0' && !this.pageCachedLists) {
      limit = 0;
    }
    const state = snapshotRv === this.rv ? this.stores[r.kind] : this.stateAt(r.kind, snapshotRv);
    const keys = [...state.keys()].filter((k) => k > start).sort();
    const items: KubeObject[] = [];
    let cont: string | undefined;
    let remaining = 0;
    for (let i = 0; i < keys.length; i++) {
      const o = state.get(keys[i]!)!;
      if (r.namespace !== undefined && o.metadata?.namespace !== r.namespace) continue;
      if (!labelsMatch(labels, o) || !fieldsMatch(fields, o)) continue;
      if (limit > 0 && items.length === limit) {
        cont = encodeContinue({ rv: snapshotRv, start: keys[i - 1]! });
        remaining = keys.length - i;
        break;
      }
      items.push(o);
    }
    const metadata: Record<string, unknown> = { resourceVersion: String(snapshotRv) };
    if (cont) {
      metadata.continue = cont;
      metadata.remainingItemCount = remaining;
    }
    return { kind: KINDS[r.kind].listKind, apiVersion: KINDS[r.kind].apiVersion, metadata, items };
  }

  // Like the real server's watch cache, each stored object is serialized once, when it is
  // written, and its text reused by every list: serializing 10,000 slices anew for each list
  // took seconds, and at the first list took the CPU from the proxy it was feeding (a real API
  // server does that work on its own machine). Stored objects are never changed in place (a
  // write stores a new one), so the text stays right.
  serialize(o: KubeObject): string {
    let text = this.serialized.get(o);
    if (text === undefined) {
      // Items of a typed list carry no kind/apiVersion on the wire.
      const { kind: _k, apiVersion: _a, ...rest } = o;
      text = JSON.stringify(rest);
      this.serialized.set(o, text);
    }
    return text;
  }
}
