// What the kernel holds against what the state says it should (pure): a verification's save read
// a chain at a time, and the chains a restart finds in the kernel (read or from a checkpoint) that
// the state does not have.
import { isKubeProxyChain } from '../common/leftovers.js';
import { tally, tallyNamed, type Difference } from '../common/verify.js';
import type { JumpRule } from './apply.js';
import { jumpRules, type IptChain } from './render.js';
import { SaveReader, type KernelChains } from './save.js';
import type { IptState } from './state.js';

type ChainId = { table: IptChain['table']; name: string };

/** What a save differs in from the state, and what a repair writes. */
export interface SaveDifferences {
  differences: Difference[];
  /** Chains to write whole: missing, changed, or whose rules came in several runs. */
  rewrite: IptChain[];
  /** Chains of ours the state does not have. */
  stale: ChainId[];
  /** The jumps from the built-in chains, and how many of them are missing or doubled. */
  jumps: JumpRule[];
  wrongJumps: number;
}

/**
 * Compares save lines, fed to `line` as they are read, with the state: the save is never held
 * whole (34 MB at 10,000 services × 10 endpoints; holding it with its parse set the iptables
 * mode's peak memory at the first verification). `end` gives the differences.
 */
export function compareWithSave(state: IptState): { line(line: string): void; end(): SaveDifferences } {
  const chains = state.chains();
  const wanted = chainsByTable(chains);
  const seen = new Set<IptChain>();
  const changed = new Set<IptChain>();
  const stale = new Map<string, ChainId>();
  const builtinRules = new Map<string, string[]>();
  const reader = new SaveReader((k) => {
    if (k.builtin) {
      const id = `${k.table}/${k.name}`;
      builtinRules.set(id, [...(builtinRules.get(id) ?? []), ...k.rules]);
    }
    const c = wanted.get(k.table)?.get(k.name);
    if (c) {
      // A chain whose rules came in several runs is rewritten.
      if (seen.has(c) || !state.heldAs(c, k.rules)) changed.add(c);
      seen.add(c);
    } else if (!k.builtin && isKubeProxyChain(k.table, k.name)) {
      stale.set(`${k.table}/${k.name}`, { table: k.table as IptChain['table'], name: k.name });
    }
  });
  return {
    line: (line) => reader.line(line),
    end: () => {
      reader.end();
      const differences: Difference[] = [];
      const idOf = (c: IptChain): string => `${c.table}/${c.name}`;
      const missing = chains.filter((c) => !seen.has(c));
      tallyNamed(differences, 'missing chain', missing.map(idOf));
      tallyNamed(differences, 'changed chain', [...changed].map(idOf));
      tallyNamed(differences, 'unexpected chain', [...stale.keys()]);
      const jumps = jumpRules(state.ctx);
      const wrongJumps = jumps.filter((j) => (builtinRules.get(`${j.table}/${j.chain}`) ?? []).filter((r) => r === j.rule).length !== 1).length;
      tally(differences, 'missing or doubled jump from a built-in chain', wrongJumps);
      const rewrite = chains.filter((c) => changed.has(c) || !seen.has(c));
      return { differences, rewrite, stale: [...stale.values()], jumps, wrongJumps };
    },
  };
}

/** The chains by table, then name: keyed by their own strings, not 110,000 new `table/name` ones. */
function chainsByTable(chains: readonly IptChain[]): Map<string, Map<string, IptChain>> {
  const byTable = new Map<string, Map<string, IptChain>>();
  for (const c of chains) {
    let byName = byTable.get(c.table);
    if (!byName) byTable.set(c.table, (byName = new Map()));
    byName.set(c.name, c);
  }
  return byTable;
}

/** Chains of ours the kernel holds that the state does not. */
export function staleChains(kernel: KernelChains, state: IptState): ChainId[] {
  const stale: ChainId[] = [];
  const check = (id: string): void => {
    const slash = id.indexOf('/');
    const table = id.slice(0, slash);
    const name = id.slice(slash + 1);
    if (!kernel.builtin.has(id) && isKubeProxyChain(table, name) && !state.has(table, name)) stale.push({ table: table as IptChain['table'], name });
  };
  for (const id of kernel.whole.keys()) check(id);
  for (const id of kernel.digests.keys()) check(id);
  return stale;
}
