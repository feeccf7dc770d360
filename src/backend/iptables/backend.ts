// The iptables backend: upstream kube-proxy's rule layout, applied with iptables-restore
// --noflush into whichever iptables flavour (nft or legacy) the node already uses. A full sync
// rewrites every chain of ours; a partial sync writes only what the changed service ports
// contribute (see docs/iptables-layout.md).
import type { Backend, BackendConfig, SyncResult, VerifyResult } from '../types.js';
import type { IPFamily, Snapshot } from '../../model/types.js';
import { log } from '../../log.js';
import { flushStale } from '../../node/conntrack.js';
import { FragmentStore, type ObjectKind } from '../common/fragments.js';
import { isKubeProxyChain, removeIptablesLeftovers } from '../common/leftovers.js';
import { IptablesRestoreError, canaryAlive, detectFlavour, ensureJumps, parseSave, restore, saveTables, type Flavour } from './apply.js';
import {
  baseChains,
  isLargeCluster,
  jumpRules,
  renderContext,
  renderServicePort,
  type IptChain,
  type IptContext,
  type IptRuleset,
  toRestoreInput,
} from './render.js';
import { opsToRestore } from './restore.js';
import { KernelCheck, NOTHING_TO_REPAIR, sameMultiset, tally, tallyNamed, type Difference, type Finding } from '../common/verify.js';
import type { SavedTables } from './save.js';

export interface IptablesBackendOptions {
  /** Print the restore input instead of applying it (no privileges needed). */
  dryRun?: boolean;
  /** Where dry-run output goes (default: stdout). */
  out?: (text: string) => void;
  /** Command prefix for the iptables tools and conntrack (tests run them in their own namespace). */
  wrap?: string[];
  /** The flavour to use; detected from the node's rules when absent. */
  flavour?: Flavour;
  /** Start-up cleanup of the other modes' leftovers, once the flavour is known (the mode descriptor supplies it). */
  removeLeftovers?: (flavour: Flavour) => Promise<void>;
}

const IPT_CHAINS: ObjectKind<IptChain> = {
  id: (c) => `${c.table}/${c.name}`,
  same: (a, b) => a.rules.length === b.rules.length && a.rules.every((r, i) => r === b.rules[i]),
};

/** Each service port's contribution, and the fixed chains they are assembled into. */
class IptState {
  readonly store: FragmentStore<IptChain>;
  readonly base: IptChain[];

  constructor(readonly ctx: IptContext) {
    this.base = baseChains(ctx);
    this.store = new FragmentStore(IPT_CHAINS, this.base.map((c) => `${c.table}/${c.name}`));
  }

  /** The whole ruleset: shared chains hold the service rules, then their fixed tail. */
  chains(): IptChain[] {
    const shared = this.base.map((c) => ({ ...c, rules: [...this.store.items(`${c.table}/${c.name}`).keys(), ...c.rules] }));
    return [...shared, ...this.store.objects()];
  }
}

export class IptablesBackend implements Backend {
  readonly mode = 'iptables';
  readonly family: IPFamily;
  /** Restores the kernel rejected. */
  syncFailures = 0;
  /** The restore input sent by the last sync (for debugging and tests). */
  lastInput = '';
  flavour: Flavour | undefined;
  private state: IptState | undefined;
  private needFull = true;
  private startedUp = false;
  private readonly check: KernelCheck;

  constructor(
    private readonly config: BackendConfig,
    private readonly opts: IptablesBackendOptions = {},
  ) {
    this.family = config.family;
    this.check = new KernelCheck(this.mode, this.family);
    if (opts.flavour) this.flavour = opts.flavour;
  }

  private get exec(): { wrap?: string[] } {
    return this.opts.wrap ? { wrap: this.opts.wrap } : {};
  }

  private print(text: string): void {
    (this.opts.out ?? ((t: string) => process.stdout.write(t)))(text);
  }

  private async startUp(): Promise<void> {
    if (this.startedUp) return;
    this.startedUp = true;
    if (this.opts.dryRun) return;
    if (!this.flavour) {
      const d = await detectFlavour(this.exec);
      this.flavour = d.flavour;
      log.info('using iptables flavour', { family: this.family, flavour: d.flavour, reason: d.reason });
    }
    await this.opts.removeLeftovers?.(this.flavour);
  }

  async sync(snapshot: Snapshot): Promise<SyncResult> {
    await this.startUp();
    const large = isLargeCluster(snapshot);
    let full = this.needFull || !this.state || snapshot.changes.full || large !== this.state.ctx.largeCluster;
    if (!full && !this.opts.dryRun && !(await canaryAlive(this.family, this.flavour!, this.exec))) {
      log.warn('iptables canary chains are gone or flushed (rules removed behind our back); doing a full sync', { family: this.family });
      full = true;
    }
    let input: string;
    let operations: number;
    let next: IptState;
    if (full) {
      next = new IptState(renderContext(this.config, { largeCluster: large }));
      const keys = [...snapshot.services.keys()].sort();
      next.store.update(keys, (k) => renderServicePort(snapshot.services.get(k)!, next.ctx), false);
      const chains = next.chains();
      const stale = this.opts.dryRun ? [] : await this.staleChains(chains);
      input = toRestoreInput({ family: this.family, chains }, stale);
      operations = chains.reduce((n, c) => n + 1 + c.rules.length, 0) + stale.length;
    } else {
      next = this.state!;
      const keys = new Set([...snapshot.changes.changed, ...snapshot.changes.deleted]);
      // The state mutates in place: if the restore fails it is dropped and the next sync is full.
      const ops = next.store.update(keys, (k) => {
        const st = snapshot.services.get(k);
        return st ? renderServicePort(st, next.ctx) : undefined;
      });
      input = opsToRestore(ops);
      operations = ops.length;
    }
    this.lastInput = input;
    try {
      if (this.opts.dryRun) {
        if (input) this.print(input);
      } else {
        if (input) await restore(input, this.family, this.flavour!, this.exec);
        if (full) await ensureJumps(jumpRules(next.ctx), this.family, this.flavour!, this.exec);
      }
    } catch (e) {
      this.syncFailures++;
      this.needFull = true;
      this.state = undefined;
      if (e instanceof IptablesRestoreError) {
        log.error('iptables-restore failed', { family: this.family, error: e.toolMessage, line: e.line, text: e.lineText.trim() });
      } else {
        log.error('iptables sync failed', { family: this.family, error: String(e) });
      }
      throw e;
    }
    this.state = next;
    this.needFull = false;
    log.v(2, 'iptables sync done', { family: this.family, full, operations, bytes: input.length });
    if (!this.opts.dryRun && (snapshot.changes.staleEndpoints.length > 0 || snapshot.changes.staleServiceIPs.length > 0)) {
      await flushStale(this.family, snapshot.changes, this.exec);
    }
    return { operations, full };
  }

  /** Chains of ours the kernel holds that the new ruleset does not. */
  private async staleChains(chains: IptChain[]): Promise<Array<{ table: IptChain['table']; name: string }>> {
    const saved = parseSave(await saveTables(this.family, this.flavour!, this.exec, ['nat', 'filter', 'mangle']));
    return staleChains(saved, new Set(chains.map((c) => `${c.table}/${c.name}`)));
  }

  /**
   * Compares our chains and the jumps into them with what iptables-save prints (rules are
   * written in its canonical form, so texts compare) and rewrites only the chains that differ,
   * deletes chains of ours that should not exist and re-inserts missing jumps.
   */
  async verify(): Promise<VerifyResult> {
    if (this.opts.dryRun || !this.state || !this.flavour) return NOTHING_TO_REPAIR;
    return this.check.run(() => this.findDifferences(this.state!, this.flavour!));
  }

  kernelInSync(): boolean {
    return this.check.inSync();
  }

  private async findDifferences(state: IptState, flavour: Flavour): Promise<Finding> {
    const saved = parseSave(await saveTables(this.family, flavour, this.exec, ['nat', 'filter', 'mangle']));
    const differences: Difference[] = [];
    const rewrite: IptChain[] = [];
    const missing: string[] = [];
    const changed: string[] = [];
    for (const c of chainsToCompare(state)) {
      const kernel = saved.get(c.table)?.chains.get(c.name);
      if (kernel && sameChain(kernel, c)) continue;
      (kernel ? changed : missing).push(`${c.table}/${c.name}`);
      rewrite.push(c.chain);
    }
    tallyNamed(differences, 'missing chain', missing);
    tallyNamed(differences, 'changed chain', changed);
    const stale = staleChains(saved, new Set(state.chains().map((c) => `${c.table}/${c.name}`)));
    tallyNamed(differences, 'unexpected chain', stale.map((c) => `${c.table}/${c.name}`));
    const jumps = jumpRules(state.ctx);
    const wrongJumps = jumps.filter((j) => (saved.get(j.table)?.chains.get(j.chain) ?? []).filter((r) => r === j.rule).length !== 1).length;
    tally(differences, 'missing or doubled jump from a built-in chain', wrongJumps);
    if (differences.length === 0) return { differences };
    return {
      differences,
      apply: async () => {
        if (rewrite.length > 0 || stale.length > 0) await restore(toRestoreInput({ family: this.family, chains: rewrite }, stale), this.family, flavour, this.exec);
        if (wrongJumps > 0) await ensureJumps(jumps, this.family, flavour, this.exec);
      },
    };
  }

  /** Removes our chains (and the jumps to them) from this family in the flavour in use. */
  async cleanup(): Promise<void> {
    this.state = undefined;
    this.needFull = true;
    if (this.opts.dryRun) return;
    if (!this.flavour) this.flavour = (await detectFlavour(this.exec)).flavour;
    await removeIptablesLeftovers([{ family: this.family, flavour: this.flavour }], this.exec);
  }

  /** The ruleset last applied, as restore input (dry-run, explain, debugging). */
  describe(): string {
    return this.state ? toRestoreInput({ family: this.family, chains: this.state.chains() }) : '';
  }

  ruleset(): IptRuleset | undefined {
    return this.state ? { family: this.family, chains: this.state.chains() } : undefined;
  }
}

interface ComparedChain {
  table: IptChain['table'];
  name: string;
  chain: IptChain;
  /** Rules of service ports in a shared chain, in no particular order (undefined: the whole chain is ordered). */
  unordered?: string[];
  /** The shared chain's fixed rules, which come last in this order. */
  tail?: string[];
}

/** Every chain we wrote; a shared chain's service rules compare in any order, its fixed tail exactly. */
function chainsToCompare(state: IptState): ComparedChain[] {
  const shared = state.base.map((c) => {
    const unordered = [...state.store.items(`${c.table}/${c.name}`).keys()];
    return { table: c.table, name: c.name, chain: { ...c, rules: [...unordered, ...c.rules] }, unordered, tail: c.rules };
  });
  return [...shared, ...state.store.objects().map((c) => ({ table: c.table, name: c.name, chain: c }))];
}

function sameChain(kernel: string[], c: ComparedChain): boolean {
  if (!c.unordered) return kernel.length === c.chain.rules.length && kernel.every((r, i) => r === c.chain.rules[i]);
  const tail = c.tail!;
  const head = kernel.length - tail.length;
  return head >= 0 && tail.every((r, i) => kernel[head + i] === r) && sameMultiset(kernel.slice(0, head), c.unordered);
}

/** Chains of ours the kernel holds that the ruleset does not. */
function staleChains(saved: SavedTables, want: Set<string>): Array<{ table: IptChain['table']; name: string }> {
  const stale: Array<{ table: IptChain['table']; name: string }> = [];
  for (const [table, t] of saved) {
    for (const name of t.chains.keys()) {
      if (!t.builtin.has(name) && isKubeProxyChain(table, name) && !want.has(`${table}/${name}`)) stale.push({ table: table as IptChain['table'], name });
    }
  }
  return stale;
}
