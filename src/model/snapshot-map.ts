// Snapshots of a map that keeps changing, each taken in constant time: a snapshot reads through
// to the live map, and the live map, before changing a key, saves the key's value into the latest
// snapshot. An older snapshot reads its own saved values, then the next newer snapshot's view.
// Taking a snapshot never copies the map, so a sync costs time for what changed, not the cluster.

const ABSENT = Symbol('absent');
type Saved<V> = V | typeof ABSENT;

/** The map at the time a snapshot was taken; read-only. */
export class SnapshotView<V> implements ReadonlyMap<string, V> {
  /** Values this snapshot had for keys changed after it (and before the next snapshot). */
  private readonly saved = new Map<string, Saved<V>>();
  /** The next newer snapshot, once there is one; until then the live map is the next layer. */
  private newer: SnapshotView<V> | null = null;

  constructor(
    private readonly live: ReadonlyMap<string, V>,
    readonly size: number,
  ) {}

  /** Called by the owner before it changes `key` in the live map. */
  save(key: string): void {
    if (this.saved.has(key)) return;
    this.saved.set(key, this.live.has(key) ? this.live.get(key)! : ABSENT);
  }

  /** Called by the owner when it takes the next snapshot. */
  follow(next: SnapshotView<V>): void {
    this.newer = next;
  }

  private lookup(key: string): Saved<V> {
    const own = this.saved.get(key);
    if (own !== undefined || this.saved.has(key)) return own as Saved<V>;
    if (this.newer !== null) return this.newer.lookup(key);
    return this.live.has(key) ? this.live.get(key)! : ABSENT;
  }

  get(key: string): V | undefined {
    const v = this.lookup(key);
    return v === ABSENT ? undefined : v;
  }

  has(key: string): boolean {
    return this.lookup(key) !== ABSENT;
  }

  *keys(): MapIterator<string> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  /** The newer layer's keys, then keys only this snapshot still has. */
  *entries(): MapIterator<[string, V]> {
    const next: Iterable<string> = this.newer !== null ? this.newer.allKeys() : this.live.keys();
    for (const k of next) {
      const v = this.lookup(k);
      if (v !== ABSENT) yield [k, v];
    }
    for (const [k, v] of this.saved) {
      if (v !== ABSENT && !(this.newer !== null ? this.newer.allKeys(k) : this.live.has(k))) yield [k, v];
    }
  }

  /** Keys in this layer or any newer one, possibly absent here; with `probe`, whether it is one. */
  private allKeys(): Iterable<string>;
  private allKeys(probe: string): boolean;
  private allKeys(probe?: string): Iterable<string> | boolean {
    if (probe !== undefined) {
      return this.saved.has(probe) || (this.newer !== null ? this.newer.allKeys(probe) : this.live.has(probe));
    }
    const own = this.saved;
    const next: Iterable<string> = this.newer !== null ? this.newer.allKeys() : this.live.keys();
    const nextHas = (k: string): boolean => (this.newer !== null ? this.newer.allKeys(k) : this.live.has(k));
    return (function* () {
      yield* next;
      for (const k of own.keys()) if (!nextHas(k)) yield k;
    })();
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  forEach(cb: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) cb.call(thisArg, v, k, this);
  }
}
