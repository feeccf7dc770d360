// Partial and full restore inputs built from fragment-store operations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FragmentStore } from '../../src/backend/common/fragment-store.js';
import type { Fragment, StoreOp } from '../../src/backend/common/fragment.js';
import type { IptChain } from '../../src/backend/iptables/render.js';
import { opsToRestore, opsToRestoreChunks } from '../../src/backend/iptables/restore.js';

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

/** Applies restore inputs to a model of the nat table (chain → rules), failing as iptables-restore would. */
function applyInputs(table: Map<string, string[]>, inputs: string[]): void {
  for (const input of inputs) {
    const next = new Map([...table].map(([k, v]) => [k, [...v]]));
    const target = (rule: string): string | undefined => / -j (KUBE-\S+)/.exec(` ${rule}`)?.[1];
    for (const line of input.split('\n')) {
      if (line.startsWith(':')) next.set(line.slice(1).split(' ')[0]!, []);
      else if (line.startsWith('-A ') || line.startsWith('-I ')) {
        const [, chain, ...rest] = line.split(' ');
        const rule = (line.startsWith('-I ') ? rest.slice(1) : rest).join(' ');
        const t = target(rule);
        assert.ok(t === undefined || next.has(t), `${line}: jump to ${t}, which does not exist yet`);
        next.get(chain!)!.push(rule);
      } else if (line.startsWith('-D ')) {
        const [, chain, ...rest] = line.split(' ');
        const rules = next.get(chain!)!;
        assert.ok(rules.includes(rest.join(' ')), `${line}: no such rule`);
        rules.splice(rules.indexOf(rest.join(' ')), 1);
      } else if (line.startsWith('-X ')) {
        const chain = line.slice(3);
        for (const [name, rules] of next) assert.ok(!rules.some((r) => target(r) === chain), `${line}: still referenced from ${name}`);
        next.delete(chain);
      }
    }
    // Each input is a transaction: it lands whole or not at all.
    table.clear();
    for (const [k, v] of next) table.set(k, v);
  }
}

test('a large partial change comes in pieces, each valid on its own: endpoint chains before the service chains that jump to them, removals last', () => {
  const store = new FragmentStore(chains, ['nat/KUBE-SERVICES']);
  const before = new Map(['a', 'b', 'c'].map((k, i) => [k, frag(k.toUpperCase(), [`${i}0`, `${i}1`])]));
  store.update(before.keys(), (k) => before.get(k), false);
  const kernel = new Map<string, string[]>([['KUBE-SERVICES', []]]);
  applyInputs(kernel, [opsToRestore(store.update([], () => undefined))].filter((i) => i));
  for (const c of store.objects()) kernel.set(c.name, [...c.rules]);
  for (const r of store.items('nat/KUBE-SERVICES').keys()) kernel.get('KUBE-SERVICES')!.push(r);
  // Every service gets new endpoints, one goes, one comes.
  const after = new Map([
    ['a', frag('A', ['a1', 'a2', 'a3'])],
    ['b', undefined],
    ['c', frag('C', ['c1'])],
    ['d', frag('D', ['d1', 'd2'])],
  ]);
  const ops = store.update(after.keys(), (k) => after.get(k));
  const pieces = opsToRestoreChunks(ops, 4);
  assert.ok(pieces.length > 3, `${pieces.length} pieces`);
  applyInputs(kernel, pieces);
  const want = new Map<string, string[]>([['KUBE-SERVICES', [...store.items('nat/KUBE-SERVICES').keys()]]]);
  for (const c of store.objects()) want.set(c.name, c.rules);
  assert.deepEqual(new Map([...kernel].map(([k, v]) => [k, [...v].sort()])), new Map([...want].map(([k, v]) => [k, [...v].sort()])));
  // Under the budget: the one input opsToRestore makes.
  const small = store.update(['c'], () => frag('C', ['c2']));
  assert.deepEqual(opsToRestoreChunks(small, 1000), [opsToRestore(small)]);
});

test('chains that go are all flushed before any is deleted, in whatever order they come', () => {
  const dnat = '-p tcp -m tcp -j DNAT --to-destination 1';
  const kernel = new Map([
    ['KUBE-SERVICES', ['-d A/32 -j KUBE-SVC-A']],
    ['KUBE-SVC-A', ['-j KUBE-SEP-1']],
    ['KUBE-SEP-1', [dnat]],
  ]);
  // The endpoint chain first: deleted before its service chain is flushed, it would still be in use.
  const ops: Array<StoreOp<IptChain>> = [
    { kind: 'delete-object', object: { table: 'nat', name: 'KUBE-SEP-1', rules: [dnat] } },
    { kind: 'delete-object', object: { table: 'nat', name: 'KUBE-SVC-A', rules: ['-j KUBE-SEP-1'] } },
    { kind: 'delete-item', collection: 'nat/KUBE-SERVICES', key: '-d A/32 -j KUBE-SVC-A', value: undefined },
  ];
  const pieces = opsToRestoreChunks(ops, 1);
  assert.equal(pieces.length, 5);
  applyInputs(kernel, pieces);
  assert.deepEqual([...kernel], [['KUBE-SERVICES', []]]);
});
