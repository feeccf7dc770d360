// Partial and full restore inputs built from fragment-store operations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FragmentStore, type Fragment } from '../../src/backend/common/fragments.js';
import type { IptChain } from '../../src/backend/iptables/render.js';
import { opsToRestore } from '../../src/backend/iptables/restore.js';

const chains = {
  id: (c: IptChain) => `${c.table}/${c.name}`,
  same: (a: IptChain, b: IptChain) => a.rules.join('\n') === b.rules.join('\n'),
};

function frag(svc: string, eps: string[]): Fragment<IptChain> {
  const svcChain: IptChain = { table: 'nat', name: `KUBE-SVC-${svc}`, rules: eps.map((e) => `-j KUBE-SEP-${e}`) };
  const seps: IptChain[] = eps.map((e) => ({ table: 'nat', name: `KUBE-SEP-${e}`, rules: [`-p tcp -m tcp -j DNAT --to-destination ${e}`] }));
  return { items: ['nat/KUBE-SERVICES', `-d ${svc}/32 -j KUBE-SVC-${svc}`, undefined], objects: [svcChain, ...seps], refs: [] };
}

test('an endpoint change rewrites only its service chain, adds the new endpoint chain and deletes the old one', () => {
  const store = new FragmentStore(chains, ['nat/KUBE-SERVICES']);
  const v1 = new Map([['a', frag('A', ['1', '2'])], ['b', frag('B', ['3'])]]);
  store.update(v1.keys(), (k) => v1.get(k), false);
  const ops = store.update(['a'], () => frag('A', ['1', '4']));
  assert.equal(
    opsToRestore(ops),
    ['*nat', ':KUBE-SVC-A - [0:0]', ':KUBE-SEP-2 - [0:0]', ':KUBE-SEP-4 - [0:0]', '-A KUBE-SVC-A -j KUBE-SEP-1', '-A KUBE-SVC-A -j KUBE-SEP-4',
      '-A KUBE-SEP-4 -p tcp -m tcp -j DNAT --to-destination 4', '-X KUBE-SEP-2', 'COMMIT', ''].join('\n'),
  );
});

test('a new service is inserted at the top of the shared chain; a deleted one is removed by its rule, then its chains', () => {
  const store = new FragmentStore(chains, ['nat/KUBE-SERVICES']);
  store.update(['a'], () => frag('A', ['1']), false);
  assert.equal(
    opsToRestore(store.update(['b'], () => frag('B', ['3']))),
    ['*nat', ':KUBE-SVC-B - [0:0]', ':KUBE-SEP-3 - [0:0]', '-A KUBE-SVC-B -j KUBE-SEP-3', '-A KUBE-SEP-3 -p tcp -m tcp -j DNAT --to-destination 3',
      '-I KUBE-SERVICES 1 -d B/32 -j KUBE-SVC-B', 'COMMIT', ''].join('\n'),
  );
  assert.equal(
    opsToRestore(store.update(['a'], () => undefined)),
    ['*nat', ':KUBE-SVC-A - [0:0]', ':KUBE-SEP-1 - [0:0]', '-D KUBE-SERVICES -d A/32 -j KUBE-SVC-A', '-X KUBE-SVC-A', '-X KUBE-SEP-1', 'COMMIT', ''].join('\n'),
  );
});

test('nothing changed: no restore input at all', () => {
  const store = new FragmentStore(chains, ['nat/KUBE-SERVICES']);
  store.update(['a'], () => frag('A', ['1']), false);
  assert.equal(opsToRestore(store.update(['a'], () => frag('A', ['1']))), '');
});
