import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SnapshotView } from '../../src/model/snapshot-map.js';

/** A live map with snapshots taken the way the model takes them. */
class Owner {
  readonly live = new Map<string, number>();
  private view: SnapshotView<number> | null = null;

  set(k: string, v: number): void {
    this.view?.save(k);
    this.live.set(k, v);
  }

  delete(k: string): void {
    this.view?.save(k);
    this.live.delete(k);
  }

  snapshot(): SnapshotView<number> {
    const v = new SnapshotView(this.live, this.live.size);
    this.view?.follow(v);
    this.view = v;
    return v;
  }
}

const sorted = (m: ReadonlyMap<string, number>): Array<[string, number]> => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1));

test('every snapshot keeps showing the map as it was, through later changes and snapshots', () => {
  const o = new Owner();
  o.set('a', 1);
  o.set('b', 2);
  const s1 = o.snapshot();
  o.set('a', 10);
  o.delete('b');
  o.set('c', 3);
  const s2 = o.snapshot();
  o.delete('a');
  o.set('b', 20);
  o.set('c', 30);
  const s3 = o.snapshot();
  o.set('d', 4);

  assert.deepEqual(sorted(s1), [['a', 1], ['b', 2]]);
  assert.equal(s1.size, 2);
  assert.equal(s1.get('c'), undefined);
  assert.equal(s1.has('b'), true);
  assert.deepEqual(sorted(s2), [['a', 10], ['c', 3]]);
  assert.equal(s2.has('b'), false);
  assert.deepEqual(sorted(s3), [['b', 20], ['c', 30]]);
  assert.equal(s3.size, 2);
  assert.equal(s3.has('d'), false);
  assert.deepEqual([...s3.keys()].sort(), ['b', 'c']);
  assert.deepEqual([...s1.values()].sort(), [1, 2]);
});

test('a key changed twice between snapshots keeps its value from the snapshot time', () => {
  const o = new Owner();
  o.set('a', 1);
  const s1 = o.snapshot();
  o.set('a', 2);
  o.set('a', 3);
  o.delete('a');
  assert.equal(s1.get('a'), 1);
  assert.deepEqual(sorted(s1), [['a', 1]]);
});
