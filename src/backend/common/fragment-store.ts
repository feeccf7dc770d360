// The bookkeeping behind partial syncs, shared by every backend. The store keeps each service
// port's fragment (see fragment.ts), so a sync re-renders only the changed service ports and
// yields exactly the operations that take the previous ruleset to the new one. What the store
// holds always equals a fresh render of the last snapshot.
import { flat, type Fragment, type ObjectKind, type StoreOp } from './fragment.js';

/** Claims on one id by service port keys; the smallest key wins. */
type Claims<T> = Map<string, T>;

function winner<T>(claims: Claims<T> | undefined): T | undefined {
  if (!claims || claims.size === 0) return undefined;
  let best: string | undefined;
  for (const k of claims.keys()) if (best === undefined || k < best) best = k;
  return claims.get(best!);
}

/**
 * Claims on one object id: its sole claimant, as almost every object has (a map per id cost
 * ~230 bytes: 25 MiB for the 110,000 chains of 10,000 iptables services), or all by key.
 */
type ObjectClaims<O> = { key: string; object: O } | Claims<O>;

function objectWinner<O>(claims: ObjectClaims<O> | undefined): O | undefined {
  return claims instanceof Map ? winner(claims) : claims?.object;
}

/** Owner of one item: the service port key, or each claimant with its value when several produce it. */
type Owner = string | Map<string, string | undefined>;

const NONE = Symbol('none');
type Before = string | undefined | typeof NONE;

/**
 * What the store keeps of a fragment: an item's value is in its collection, so only the
 * collection and key of each item, as flat pairs in an array of exactly their size (a rendered
 * fragment's array keeps the spare room it grew by).
 */
interface Kept<O> {
  items: string[];
  objects: O[];
  refs: string[];
}

/**
 * One collection: its items and, once two service ports have produced one key, who claims
 * each. Until then every item has exactly one claimant, the fragment that holds it, and the
 * largest collections (endpoint maps, one key per endpoint slot) never need the second map.
 * A collection whose items have no values (a plain set: hairpin pairs, cluster IPs) needs no
 * claimants at all: an item stays while any claim does, so a count of the extra claims of each
 * shared item is enough (a claimant map of the hairpin set took ~0.2 s to build at 5,000 × 50).
 */
interface Collection {
  items: Map<string, string | undefined>;
  owners: Map<string, Owner> | undefined;
  /** Some item was claimed with a value: claims are then tracked by claimant. */
  valued: boolean;
  /** Plain sets: claims beyond the first of each shared item. */
  extraClaims: Map<string, number> | undefined;
}

export class FragmentStore<O> {
  private readonly frags = new Map<string, Kept<O>>();
  private readonly collections = new Map<string, Collection>();
  // A fragment's items come in runs of one collection: the last one looked up is kept.
  private last: Collection | undefined;
  private lastName: string | undefined;
  private readonly objectClaims = new Map<string, ObjectClaims<O>>();
  private readonly refCounts = new Map<string, number>();
  /**
   * Items whose last claim went during the update in progress, still in their collection. One
   * claimed again in the same update (an endpoint slot whose endpoint changed) keeps its entry
   * and takes its new value in place; the others are deleted when the update ends. A JS Map
   * keeps a deleted entry's slot until it rehashes, and one near its capacity then doubles
   * rather than compacts: 2,000 endpoint changes at 5,000 × 50 grew the endpoint map by ~7 MiB.
   * Each is kept as the string the collection holds, which the new fragment then keeps too (a
   * Map keeps its first key string: the fragment's own would be a second copy of the text).
   */
  private readonly vacated = new Map<Collection, Map<string, string>>();
  /** The same for objects (a service's chain whose rules changed keeps its entry). */
  private readonly vacatedObjects = new Set<string>();

  constructor(
    private readonly kind: ObjectKind<O>,
    /** Collections that exist even when empty, in this order. */
    collections: string[] = [],
  ) {
    for (const c of collections) this.ensure(c);
  }

  private ensure(c: string): Collection {
    if (c === this.lastName) return this.last!;
    let col = this.collections.get(c);
    if (!col) this.collections.set(c, (col = { items: new Map(), owners: undefined, valued: false, extraClaims: undefined }));
    this.lastName = c;
    this.last = col;
    return col;
  }

  /**
   * Re-renders the given keys (`render` returns undefined for a key that no longer exists) and
   * returns the operations that take the previous content to the new one (none when `collect`
   * is false, e.g. when loading from scratch).
   */
  update(keys: Iterable<string>, render: (key: string) => Fragment<O> | undefined, collect = true): Array<StoreOp<O>> {
    const itemBefore = new Map<string, Map<string, Before>>();
    const objBefore = new Map<string, O | undefined>();
    const refBefore = new Map<string, boolean>();
    const touch = (c: string, k: string): void => {
      let m = itemBefore.get(c);
      if (!m) itemBefore.set(c, (m = new Map()));
      if (!m.has(k)) {
        const items = this.ensure(c).items;
        m.set(k, items.has(k) ? items.get(k) : NONE);
      }
    };
    const seen = new Set<string>();
    try {
      for (const key of keys) {
        if (seen.has(key)) continue;
        seen.add(key);
        const old = this.frags.get(key);
        const next = render(key);
        if (old) {
          const it = old.items;
          for (let i = 0; i < it.length; i += 2) {
            if (collect) touch(it[i]!, it[i + 1]!);
            this.unclaim(it[i]!, it[i + 1]!, key);
          }
          for (const o of old.objects) {
            const id = this.kind.id(o);
            if (!objBefore.has(id)) objBefore.set(id, objectWinner(this.objectClaims.get(id)));
            this.unclaimObject(id, key);
          }
          for (const r of old.refs) {
            if (!refBefore.has(r)) refBefore.set(r, (this.refCounts.get(r) ?? 0) > 0);
            this.refCounts.set(r, (this.refCounts.get(r) ?? 0) - 1);
          }
        }
        if (next) {
          const it = next.items;
          const kept = new Array<string>((it.length / 3) * 2);
          for (let i = 0, j = 0; i < it.length; i += 3, j += 2) {
            if (collect) touch(it[i]!, it[i + 1]!);
            kept[j] = it[i]!;
            kept[j + 1] = this.claim(it[i]!, it[i + 1]!, key, it[i + 2], kept, j);
          }
          for (const o of next.objects) {
            const id = this.kind.id(o);
            if (!objBefore.has(id)) objBefore.set(id, objectWinner(this.objectClaims.get(id)));
            this.claimObject(id, key, o);
          }
          for (const r of next.refs) {
            if (!refBefore.has(r)) refBefore.set(r, (this.refCounts.get(r) ?? 0) > 0);
            this.refCounts.set(r, (this.refCounts.get(r) ?? 0) + 1);
          }
          this.frags.set(key, { items: kept, objects: next.objects, refs: next.refs });
        } else {
          this.frags.delete(key);
        }
      }
    } finally {
      // Deleted only now: see `vacated`.
      for (const [col, vacated] of this.vacated) for (const k of vacated.keys()) col.items.delete(k);
      this.vacated.clear();
      for (const id of this.vacatedObjects) this.objectClaims.delete(id);
      this.vacatedObjects.clear();
    }

    const ops: Array<StoreOp<O>> = [];
    for (const [c, m] of itemBefore) {
      const items = this.ensure(c).items;
      for (const [k, before] of m) {
        if (!items.has(k)) {
          if (before !== NONE) ops.push({ kind: 'delete-item', collection: c, key: k, value: before });
          continue;
        }
        const after = items.get(k);
        if (before === NONE) ops.push({ kind: 'add-item', collection: c, key: k, value: after });
        else if (before !== after) ops.push({ kind: 'replace-item', collection: c, key: k, value: after, before });
      }
    }
    for (const [id, before] of objBefore) {
      const after = objectWinner(this.objectClaims.get(id));
      if (!before && after) ops.push({ kind: 'add-object', object: after });
      else if (before && !after) ops.push({ kind: 'delete-object', object: before });
      else if (before && after && !this.kind.same(before, after)) ops.push({ kind: 'replace-object', object: after, before });
    }
    for (const [name, before] of refBefore) {
      const after = (this.refCounts.get(name) ?? 0) > 0;
      if (!after) this.refCounts.delete(name);
      if (!before && after) ops.push({ kind: 'add-ref', name });
      else if (before && !after) ops.push({ kind: 'drop-ref', name });
    }
    return collect ? ops : [];
  }

  /**
   * Claims one item; returns its key, flattened, for the fragment to keep. `kept` holds the
   * owner's items claimed so far (`filled` entries), which are not yet in its stored fragment.
   */
  private claim(c: string, k: string, owner: string, v: string | undefined, kept: string[], filled: number): string {
    k = flat(k);
    if (v !== undefined) v = flat(v);
    const col = this.ensure(c);
    const items = col.items;
    if (this.vacated.size > 0) {
      const held = this.reclaim(col, k, owner, v);
      if (held !== undefined) return held;
    }
    if (col.owners === undefined) {
      if (v === undefined && !col.valued) {
        // Every value is undefined: setting one again changes nothing, and the size tells
        // whether the item is new.
        const size = items.size;
        items.set(k, undefined);
        if (items.size === size) (col.extraClaims ??= new Map()).set(k, (col.extraClaims.get(k) ?? 0) + 1);
        return k;
      }
      col.valued = true;
      if (col.extraClaims === undefined && !items.has(k)) {
        items.set(k, v);
        return k;
      }
      col.owners = this.ownersOf(c, owner, kept, filled);
      col.extraClaims = undefined;
    }
    const byKey = col.owners;
    const cur = byKey.get(k);
    if (cur === undefined || cur === owner) {
      byKey.set(k, owner);
      items.set(k, v);
      return k;
    }
    let m: Map<string, string | undefined>;
    if (typeof cur === 'string') {
      m = new Map([[cur, items.get(k)]]);
      byKey.set(k, m);
    } else {
      m = cur;
    }
    m.set(owner, v);
    items.set(k, winner(m));
    return k;
  }

  /** Claims an item vacated earlier in this update, in place: returns the key string held, or undefined when it was not. */
  private reclaim(col: Collection, k: string, owner: string, v: string | undefined): string | undefined {
    const held = this.vacated.get(col)?.get(k);
    if (held === undefined) return undefined;
    this.vacated.get(col)!.delete(k);
    if (v !== undefined && !col.valued) {
      // A plain set's first value: the usual way starts tracking values.
      col.items.delete(k);
      return undefined;
    }
    col.owners?.set(held, owner);
    col.items.set(held, v);
    return held;
  }

  /** Marks an item without claims for deletion when the update ends. */
  private vacate(col: Collection, k: string): void {
    let vacated = this.vacated.get(col);
    if (vacated === undefined) this.vacated.set(col, (vacated = new Map()));
    vacated.set(k, k);
  }

  private claimObject(id: string, owner: string, object: O): void {
    const cur = this.objectClaims.get(id);
    // A vacated object's old claim is gone: whoever claims it now is its sole claimant.
    const vacated = this.vacatedObjects.delete(id);
    if (vacated || cur === undefined || (!(cur instanceof Map) && cur.key === owner)) this.objectClaims.set(flat(id), { key: owner, object });
    else if (cur instanceof Map) cur.set(owner, object);
    else this.objectClaims.set(id, new Map([[cur.key, cur.object], [owner, object]]));
  }

  private unclaimObject(id: string, owner: string): void {
    const cur = this.objectClaims.get(id);
    if (cur === undefined) return;
    if (!(cur instanceof Map)) {
      if (cur.key === owner) this.vacatedObjects.add(id);
      return;
    }
    cur.delete(owner);
    if (cur.size === 1) {
      const [key, object] = cur.entries().next().value as [string, O];
      this.objectClaims.set(id, { key, object });
    }
  }

  /** Who claims each item of a collection, from the stored fragments and the one being claimed. */
  private ownersOf(c: string, owner: string, kept: string[], filled: number): Map<string, Owner> {
    const owners = new Map<string, Owner>();
    for (const [key, frag] of this.frags) {
      if (key === owner) continue;
      const it = frag.items;
      for (let i = 0; i < it.length; i += 2) if (it[i] === c) owners.set(it[i + 1]!, key);
    }
    for (let i = 0; i < filled; i += 2) if (kept[i] === c) owners.set(kept[i + 1]!, owner);
    return owners;
  }

  private unclaim(c: string, k: string, owner: string): void {
    const col = this.ensure(c);
    const { items, owners: byKey } = col;
    if (byKey === undefined) {
      const extra = col.extraClaims?.get(k);
      if (extra === undefined) this.vacate(col, k);
      else if (extra === 1) col.extraClaims!.delete(k);
      else col.extraClaims!.set(k, extra - 1);
      return;
    }
    const cur = byKey.get(k);
    if (cur === undefined) return;
    if (typeof cur === 'string') {
      if (cur === owner) {
        byKey.delete(k);
        this.vacate(col, k);
      }
      return;
    }
    cur.delete(owner);
    if (cur.size === 1) {
      const [o, v] = cur.entries().next().value as [string, string | undefined];
      byKey.set(k, o);
      items.set(k, v);
    } else {
      items.set(k, winner(cur));
    }
  }

  /** The items of one collection (live: read, do not modify). */
  items(collection: string): Map<string, string | undefined> {
    return this.ensure(collection).items;
  }

  collectionNames(): string[] {
    return [...this.collections.keys()];
  }

  /** The winning object of each id. */
  objects(): O[] {
    const out: O[] = [];
    for (const cl of this.objectClaims.values()) {
      const o = objectWinner(cl);
      if (o) out.push(o);
    }
    return out;
  }

  /** The winning object with this id, if any. */
  object(id: string): O | undefined {
    return objectWinner(this.objectClaims.get(id));
  }

  /** Shared objects referred to by at least one service port. */
  refs(): string[] {
    return [...this.refCounts.keys()];
  }

  hasRef(name: string): boolean {
    return (this.refCounts.get(name) ?? 0) > 0;
  }

  /** Number of items over all collections. */
  itemCount(): number {
    let n = 0;
    for (const c of this.collections.values()) n += c.items.size;
    return n;
  }

  /**
   * Each service port's objects that are in force (the winners of their ids), for the given
   * keys or, in the order they were stored, all: what a chunked full sync writes one group at a time.
   */
  *ownedObjects(keys?: Iterable<string>): IterableIterator<O[]> {
    const frags = keys ? [...keys].map((k) => this.frags.get(k)).filter((f): f is Kept<O> => f !== undefined) : this.frags.values();
    for (const frag of frags) {
      const own = frag.objects.filter((o) => objectWinner(this.objectClaims.get(this.kind.id(o))) === o);
      if (own.length > 0) yield own;
    }
  }

  /** Keys of the service ports the store holds. */
  keys(): IterableIterator<string> {
    return this.frags.keys();
  }
}
