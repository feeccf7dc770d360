// Pure: turns fragment-store operations into `iptables-restore --noflush` input (a whole
// ruleset is written by toRestoreInput in syntax.ts). Each table is one block, committed atomically by the kernel. Within a block, every
// chain we write is declared first (which creates or flushes it), rules follow, and chains that
// go away are deleted last, once nothing jumps to them any more.
import type { StoreOp } from '../common/fragments.js';
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
