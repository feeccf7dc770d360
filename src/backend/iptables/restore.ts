// Pure: turns fragment-store operations into `iptables-restore --noflush` input (a whole
// ruleset is written by toRestoreInput in syntax.ts). Each table is one block, committed atomically by the kernel. Within a block, every
// chain we write is declared first (which creates or flushes it), rules follow, and chains that
// go away are deleted last, once nothing jumps to them any more.
import type { StoreOp } from '../common/fragment.js';
import { TABLE_ORDER, type IptChain, type IptTable } from './syntax.js';


interface TableBlock {
  declare: Set<string>;
  /** `-D` of rules in shared chains: before anything else changes, so a chain to delete is no longer referenced. */
  deletes: string[];
  appends: string[];
  inserts: string[];
  removeChains: string[];
}

function block(blocks: Map<IptTable, TableBlock>, t: IptTable): TableBlock {
  let b = blocks.get(t);
  if (!b) blocks.set(t, (b = { declare: new Set(), deletes: [], appends: [], inserts: [], removeChains: [] }));
  return b;
}

/** `nat/KUBE-SERVICES` → table and chain. */
export function splitCollection(c: string): { table: IptTable; chain: string } {
  const slash = c.indexOf('/');
  return { table: c.slice(0, slash) as IptTable, chain: c.slice(slash + 1) };
}

function render(blocks: Map<IptTable, TableBlock>): string {
  const out: string[] = [];
  for (const t of TABLE_ORDER) {
    const b = blocks.get(t);
    if (!b) continue;
    if (b.declare.size + b.deletes.length + b.appends.length + b.inserts.length + b.removeChains.length === 0) continue;
    out.push(`*${t}`);
    for (const c of b.declare) out.push(`:${c} - [0:0]`);
    out.push(...b.deletes, ...b.appends, ...b.inserts);
    for (const c of b.removeChains) out.push(`-X ${c}`);
    out.push('COMMIT');
  }
  return out.length > 0 ? out.join('\n') + '\n' : '';
}

/**
 * The restore input for a partial sync. Rules added to a shared chain are inserted at its top,
 * so the chain's fixed tail (KUBE-SERVICES' jump to KUBE-NODEPORTS) stays last; rules in shared
 * chains never depend on their order among themselves. Removed rules are deleted by their text.
 * The work the kernel does is proportional to the change, not to the number of services.
 */
export function opsToRestore(ops: Array<StoreOp<IptChain>>): string {
  const blocks = new Map<IptTable, TableBlock>();
  for (const op of ops) {
    switch (op.kind) {
      case 'add-item': {
        const { table, chain } = splitCollection(op.collection);
        block(blocks, table).inserts.push(`-I ${chain} 1 ${op.key}`);
        break;
      }
      case 'delete-item': {
        const { table, chain } = splitCollection(op.collection);
        block(blocks, table).deletes.push(`-D ${chain} ${op.key}`);
        break;
      }
      case 'replace-item':
        // Rules carry no value: a changed rule is a different key.
        break;
      case 'add-object':
      case 'replace-object': {
        const c = op.object;
        const b = block(blocks, c.table);
        b.declare.add(c.name);
        for (const r of c.rules) b.appends.push(`-A ${c.name} ${r}`);
        break;
      }
      case 'delete-object': {
        const c = op.object;
        const b = block(blocks, c.table);
        b.declare.add(c.name);
        b.removeChains.push(c.name);
        break;
      }
      case 'add-ref':
      case 'drop-ref':
        break;
    }
  }
  return render(blocks);
}

/** The chains a rule sends packets to (`-j`/`-g` targets that are not built-in verdicts or extensions). */
function targets(rule: string): string[] {
  const out: string[] = [];
  for (const m of rule.matchAll(/(?:^| )-[jg] (KUBE-\S+)/g)) out.push(m[1]!);
  return out;
}

/**
 * The same change as opsToRestore, as several inputs of about `budget` lines each when it is
 * larger (iptables-nft's restore time grows much faster than one input's size: a partial sync
 * of 500 services × 50 endpoints, ~100,000 lines, did not finish in 180 s). Each input can be
 * committed on its own: chains are written before the chains that jump to them (new endpoint
 * chains before their service chain), then the rules of shared chains (deletions first), and
 * the chains that go away last, once nothing refers to them: flushed, then deleted.
 */
export function opsToRestoreChunks(ops: Array<StoreOp<IptChain>>, budget: number): string[] {
  let lines = 0;
  for (const op of ops) lines += op.kind === 'add-object' || op.kind === 'replace-object' ? 1 + op.object.rules.length : 1;
  if (lines <= budget) {
    const one = opsToRestore(ops);
    return one ? [one] : [];
  }
  const written = new Map<string, IptChain>();
  const items: Array<StoreOp<IptChain>> = [];
  const gone: IptChain[] = [];
  for (const op of ops) {
    if (op.kind === 'add-object' || op.kind === 'replace-object') written.set(`${op.object.table}/${op.object.name}`, op.object);
    else if (op.kind === 'delete-object') gone.push(op.object);
    else items.push(op);
  }
  // Level: 0 for a chain that jumps to no chain written here, else one more than its targets'.
  const level = new Map<string, number>();
  const levelOf = (id: string, path = new Set<string>()): number => {
    const known = level.get(id);
    if (known !== undefined) return known;
    const c = written.get(id)!;
    path.add(id);
    let l = 0;
    for (const r of c.rules) {
      for (const t of targets(r)) {
        const tid = `${c.table}/${t}`;
        if (written.has(tid) && !path.has(tid)) l = Math.max(l, levelOf(tid, path) + 1);
      }
    }
    path.delete(id);
    level.set(id, l);
    return l;
  };
  const ordered = [...written.keys()].sort((a, b) => levelOf(a) - levelOf(b));
  const out: string[] = [];
  let group: Array<StoreOp<IptChain>> = [];
  let size = 0;
  const flush = (): void => {
    const input = opsToRestore(group);
    if (input) out.push(input);
    group = [];
    size = 0;
  };
  const add = (op: StoreOp<IptChain>, n: number): void => {
    if (size > 0 && size + n > budget) flush();
    group.push(op);
    size += n;
  };
  // In level order, a chain's targets are in the same input or an earlier one.
  for (const id of ordered) {
    const c = written.get(id)!;
    add({ kind: 'add-object', object: c }, 1 + c.rules.length);
  }
  flush();
  for (const op of items.filter((o) => o.kind === 'delete-item')) add(op, 1);
  for (const op of items.filter((o) => o.kind !== 'delete-item')) add(op, 1);
  flush();
  // Chains that go: all flushed, then all deleted. Until it is flushed, a chain that goes may
  // still jump to another that goes, whose deletion would then fail.
  for (const phase of ['flush', 'delete'] as const) {
    let blocks = new Map<IptTable, TableBlock>();
    let n = 0;
    for (const c of gone) {
      if (n >= budget) {
        out.push(render(blocks));
        blocks = new Map();
        n = 0;
      }
      const b = block(blocks, c.table);
      if (phase === 'flush') b.declare.add(c.name);
      else b.removeChains.push(c.name);
      n++;
    }
    if (n > 0) out.push(render(blocks));
  }
  return out;
}
