import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FragmentStore, type Fragment, type StoreOp } from '../../src/backend/common/fragments.js';

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
});
