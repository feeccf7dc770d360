import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FragmentStore } from '../../src/backend/common/fragment-store.js';
import type { Fragment, StoreOp } from '../../src/backend/common/fragment.js';

const KIND = { id: (o: string) => o, same: (a: string, b: string) => a === b };

function frag(items: Array<[string, string, string | undefined]>): Fragment<string> {
  return { items: items.flat(), objects: [], refs: [] };
}

function apply(store: FragmentStore<string>, frags: Record<string, Fragment<string> | undefined>): Array<StoreOp<string>> {
  return store.update(Object.keys(frags), (k) => frags[k]);
}

describe('fragment store', () => {
  test('an item two keys claim holds the smaller key’s value until that key lets go', () => {
    const store = new FragmentStore(KIND, ['vips']);
    store.update(['b', 'a'], (k) => frag([['vips', '10.0.0.1', `goto ${k}`]]), false);
    assert.equal(store.items('vips').get('10.0.0.1'), 'goto a');

    // The loser changes its value: nothing visible changes.
    assert.deepEqual(apply(store, { b: frag([['vips', '10.0.0.1', 'goto b2']]) }), []);
    // The winner goes: the other claimant's latest value takes over.
    assert.deepEqual(apply(store, { a: undefined }), [
      { kind: 'replace-item', collection: 'vips', key: '10.0.0.1', value: 'goto b2', before: 'goto a' },
    ]);
    // The last claimant goes: the item is deleted.
    assert.deepEqual(apply(store, { b: undefined }), [{ kind: 'delete-item', collection: 'vips', key: '10.0.0.1', value: 'goto b2' }]);
    assert.equal(store.itemCount(), 0);
  });

  test('a re-rendered key gives up the items it no longer has and keeps the others', () => {
    const store = new FragmentStore(KIND);
    store.update(['a'], () => frag([['eps', 'x . 0', '1.1.1.1'], ['eps', 'x . 1', '1.1.1.2'], ['ips', 'x', undefined]]), false);
    const ops = apply(store, { a: frag([['eps', 'x . 0', '1.1.1.3'], ['ips', 'x', undefined]]) });
    assert.deepEqual(ops, [
      { kind: 'replace-item', collection: 'eps', key: 'x . 0', value: '1.1.1.3', before: '1.1.1.1' },
      { kind: 'delete-item', collection: 'eps', key: 'x . 1', value: '1.1.1.2' },
    ]);
    assert.deepEqual([...store.items('eps')], [['x . 0', '1.1.1.3']]);
    assert.deepEqual([...store.items('ips')], [['x', undefined]]);
  });

  test('after any sequence of updates the items equal a fresh resolution, and the ops lead there', () => {
    // Few keys and values, so items are shared between keys (and repeated within one): a
    // collection starts tracking owners at its first shared item.
    let seed = 11;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return Math.floor((seed / 2147483648) * n);
    };
    const collections = ['eps', 'ips', 'hairpin'];
    for (let round = 0; round < 30; round++) {
      // Items are first each key's own (repeated within a fragment at most), shared from a random step on.
      const sharedFrom = next(40);
      const store = new FragmentStore(KIND, collections);
      const current = new Map<string, Fragment<string>>();
      const seen = new Map<string, Map<string, string | undefined>>(collections.map((c) => [c, new Map()]));
      for (let step = 0; step < 60; step++) {
        const changes: Record<string, Fragment<string> | undefined> = {};
        for (let n = 1 + next(3); n > 0; n--) {
          const key = `svc-${next(6)}`;
          if (next(5) === 0) changes[key] = undefined;
          else {
            const items: Array<[string, string, string | undefined]> = [];
            for (let i = next(5); i > 0; i--) {
              const c = collections[next(collections.length)]!;
              const item = step < sharedFrom ? `${c}-${key}-${next(4)}` : `${c}-${next(round % 2 === 0 ? 4 : 12)}`;
              // hairpin is a plain set (no values, shared items counted); the others mix.
              items.push([c, item, c === 'hairpin' || next(3) === 0 ? undefined : `v${next(3)}`]);
            }
            changes[key] = frag(items);
          }
        }
        const ops = apply(store, changes);
        for (const [k, f] of Object.entries(changes)) {
          if (f === undefined) current.delete(k);
          else current.set(k, f);
        }
        // From scratch: each item's value is the smallest claiming key's last value for it.
        const want = new Map<string, Map<string, string | undefined>>(collections.map((c) => [c, new Map()]));
        for (const k of [...current.keys()].sort().reverse()) {
          const own = new Map<string, [string, string | undefined]>();
          const it = current.get(k)!.items;
          for (let i = 0; i < it.length; i += 3) own.set(`${it[i]}\u0000${it[i + 1]}`, [it[i]!, it[i + 2]]);
          for (const [ck, [c, v]] of own) want.get(c)!.set(ck.slice(c.length + 1), v);
        }
        for (const c of collections) {
          assert.deepEqual(new Map(store.items(c)), want.get(c), `round ${round} step ${step} ${c}`);
          // The ops take what was there to what is there now.
          const was = seen.get(c)!;
          for (const op of ops) {
            if (op.kind === 'add-item' || op.kind === 'replace-item') {
              if (op.collection === c) was.set(op.key, op.value);
            } else if (op.kind === 'delete-item' && op.collection === c) was.delete(op.key);
          }
          assert.deepEqual(was, want.get(c), `ops, round ${round} step ${step} ${c}`);
        }
      }
    }
  });

  test('objects: after any sequence of updates each id holds its smallest claimant’s object, and the ops lead there', () => {
    // An object is `id=content`; a re-rendered key often keeps an id with new content, or hands it to another key.
    const kind = { id: (o: string) => o.split('=')[0]!, same: (a: string, b: string) => a === b };
    let seed = 7;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return Math.floor((seed / 2147483648) * n);
    };
    for (let round = 0; round < 30; round++) {
      const store = new FragmentStore(kind);
      const current = new Map<string, string[]>();
      const seen = new Map<string, string>();
      for (let step = 0; step < 60; step++) {
        const changes: Record<string, Fragment<string> | undefined> = {};
        for (let n = 1 + next(3); n > 0; n--) {
          const key = `svc-${next(6)}`;
          if (next(5) === 0) {
            changes[key] = undefined;
            continue;
          }
          const ids = new Set<string>();
          for (let i = next(4); i > 0; i--) ids.add(`chain-${next(round % 2 === 0 ? 3 : 8)}`);
          changes[key] = { items: [], objects: [...ids].map((id) => `${id}=${next(3)}`), refs: [] };
        }
        const ops = store.update(Object.keys(changes), (k) => changes[k]);
        for (const [k, f] of Object.entries(changes)) {
          if (f === undefined) current.delete(k);
          else current.set(k, f.objects);
        }
        const want = new Map<string, string>();
        for (const k of [...current.keys()].sort().reverse()) for (const o of current.get(k)!) want.set(kind.id(o), o);
        assert.deepEqual(new Map(store.objects().map((o) => [kind.id(o), o])), want, `round ${round} step ${step}`);
        for (const op of ops) {
          if (op.kind === 'add-object' || op.kind === 'replace-object') seen.set(kind.id(op.object), op.object);
          else if (op.kind === 'delete-object') seen.delete(kind.id(op.object));
        }
        assert.deepEqual(seen, want, `ops, round ${round} step ${step}`);
      }
    }
  });

  test('a render that throws leaves no item without a claimant', () => {
    const store = new FragmentStore(KIND);
    store.update(['a', 'b'], (k) => frag([['eps', `${k} . 0`, '1.1.1.1']]), false);
    assert.throws(() =>
      store.update(['a', 'b'], (k) => {
        if (k === 'b') throw new Error('bad object');
        return frag([['eps', 'a . 1', '1.1.1.2']]);
      }),
    );
    // a's old item went, its new one came; b is as before.
    assert.deepEqual(new Map(store.items('eps')), new Map([['a . 1', '1.1.1.2'], ['b . 0', '1.1.1.1']]));
  });
});

