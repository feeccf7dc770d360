// The iptables backend: upstream kube-proxy's rule layout, applied with iptables-restore
// --noflush into whichever iptables flavour (nft or legacy) the node already uses. A full sync
// rewrites every chain of ours; a partial sync writes only what the changed service ports
// contribute (see docs/iptables-layout.md).
import type { Backend, BackendConfig, SyncResult } from '../types.js';
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

export interface IptablesBackendOptions {
  /** Print the restore input instead of applying it (no privileges needed). */
  dryRun?: boolean;
  /** Where dry-run output goes (default: stdout). */
  out?: (text: string) => void;
  /** Command prefix for the iptables tools and conntrack (tests run them in their own namespace). */
  wrap?: string[];
  /** The flavour to use; detected from the node's rules when absent. */
  flavour?: Flavour;
  /** Lines per transaction of a full sync on iptables-nft (legacy: always one transaction). */
  budget?: number;
  /** Start-up cleanup of the other modes' leftovers, once the flavour is known (the mode descriptor supplies it). */
  removeLeftovers?: (flavour: Flavour) => Promise<void>;
}

/**
 * Lines per transaction of a chunked full sync. iptables-nft 1.8.9 restored 250 services × 10
 * endpoints (11,000 lines) in 0.6 s, 1,000 (44,000 lines) in 13 s and 2,000 in 92 s.
 */
const NFT_FULL_SYNC_BUDGET = 10_000;

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

  /** The fixed chains, the shared ones holding the service rules before their fixed tail. */
  sharedChains(): IptChain[] {
    return this.base.map((c) => ({ ...c, rules: [...this.store.items(`${c.table}/${c.name}`).keys(), ...c.rules] }));
  }

  /** The whole ruleset. */
  chains(): IptChain[] {
    return [...this.sharedChains(), ...this.store.objects()];
  }

  /**
   * The full restore as several transactions: iptables-nft's restore time grows much faster
   * than linearly with the size of one transaction (measured in docs/iptables-layout.md). First
   * the fixed chains that hold no service rules (KUBE-MARK-MASQ, which service chains jump to,
   * and the like); then each service port's own chains in groups of about `budget` lines, every
   * group flushing and refilling whole services at once; last the dispatch chains, which make
   * services reachable, and the deletion of stale chains, in one transaction.
   */
  chunkedInput(family: IPFamily, stale: Array<{ table: IptChain['table']; name: string }>, budget: number): string[] {
    const shared = this.sharedChains();
    // Late: chains holding service rules, and chains that jump to a late chain.
    const late = new Set(shared.filter((c) => this.store.items(`${c.table}/${c.name}`).size > 0).map((c) => `${c.table}/${c.name}`));
    for (let grew = true; grew; ) {
      grew = false;
      for (const c of shared) {
        const id = `${c.table}/${c.name}`;
        if (!late.has(id) && c.rules.some((r) => [...late].some((l) => l.startsWith(`${c.table}/`) && r.endsWith(` -j ${l.slice(c.table.length + 1)}`)))) {
          late.add(id);
          grew = true;
        }
      }
    }
    const isLate = (c: IptChain): boolean => late.has(`${c.table}/${c.name}`);
    const out = [toRestoreInput({ family, chains: shared.filter((c) => !isLate(c)) })];
    let group: IptChain[] = [];
    let lines = 0;
    for (const own of this.store.ownedObjects()) {
      const cost = own.reduce((n, c) => n + 1 + c.rules.length, 0);
      if (group.length > 0 && lines + cost > budget) {
        out.push(toRestoreInput({ family, chains: group }));
        group = [];
        lines = 0;
      }
      group.push(...own);
      lines += cost;
    }
    if (group.length > 0) out.push(toRestoreInput({ family, chains: group }));
    out.push(toRestoreInput({ family, chains: shared.filter(isLate) }, stale));
    return out;
  }
}

export class IptablesBackend implements Backend {
  readonly mode = 'iptables';
  readonly family: IPFamily;
  /** Restores the kernel rejected. */
  syncFailures = 0;
  /** The restore inputs sent by the last sync, one per transaction (for debugging and tests). */
  lastInputs: string[] = [];
  flavour: Flavour | undefined;
  private state: IptState | undefined;
  private needFull = true;
  private startedUp = false;

  constructor(
    private readonly config: BackendConfig,
    private readonly opts: IptablesBackendOptions = {},
  ) {
    this.family = config.family;
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
    // Unknown: what the kernel holds is not known to be what we last wrote (start-up, a failed
    // restore, rules removed behind our back); it is then read back, and the jumps checked.
    let kernelUnknown = this.needFull || !this.state;
    if (!kernelUnknown && !this.opts.dryRun && !(await canaryAlive(this.family, this.flavour!, this.exec))) {
      log.warn('iptables canary chains are gone or flushed (rules removed behind our back); doing a full sync', { family: this.family });
      kernelUnknown = true;
    }
    const full = kernelUnknown || snapshot.changes.full || large !== this.state?.ctx.largeCluster;
    let inputs: string[];
    let operations: number;
    let next: IptState;
    if (full) {
      next = new IptState(renderContext(this.config, { largeCluster: large }));
      const keys = [...snapshot.services.keys()].sort();
      next.store.update(keys, (k) => renderServicePort(snapshot.services.get(k)!, next.ctx), false);
      const chains = next.chains();
      const stale = this.opts.dryRun ? [] : kernelUnknown ? await this.staleChains(chains) : this.goneChains(chains);
      // Legacy rewrites the whole table at every commit: one transaction. nft: chunks.
      const chunked = this.flavour === 'nft';
      inputs = chunked
        ? next.chunkedInput(this.family, stale, this.opts.budget ?? NFT_FULL_SYNC_BUDGET)
        : [toRestoreInput({ family: this.family, chains }, stale)];
      operations = chains.reduce((n, c) => n + 1 + c.rules.length, 0) + stale.length;
    } else {
      next = this.state!;
      const keys = new Set([...snapshot.changes.changed, ...snapshot.changes.deleted]);
      // The state mutates in place: if the restore fails it is dropped and the next sync is full.
      const ops = next.store.update(keys, (k) => {
        const st = snapshot.services.get(k);
        return st ? renderServicePort(st, next.ctx) : undefined;
      });
      const input = opsToRestore(ops);
      inputs = input ? [input] : [];
      operations = ops.length;
    }
    this.lastInputs = inputs;
    try {
      if (this.opts.dryRun) {
        for (const input of inputs) this.print(input);
      } else {
        for (const input of inputs) await restore(input, this.family, this.flavour!, this.exec);
        if (kernelUnknown) await ensureJumps(jumpRules(next.ctx), this.family, this.flavour!, this.exec);
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
    log.v(2, 'iptables sync done', { family: this.family, full, operations, transactions: inputs.length });
    if (!this.opts.dryRun && (snapshot.changes.staleEndpoints.length > 0 || snapshot.changes.staleServiceIPs.length > 0)) {
      await flushStale(this.family, snapshot.changes, this.exec);
    }
    return { operations, full };
  }

  /** Chains we wrote last time that the new ruleset does not have. */
  private goneChains(chains: IptChain[]): Array<{ table: IptChain['table']; name: string }> {
    const want = new Set(chains.map((c) => `${c.table}/${c.name}`));
    return (this.state?.chains() ?? []).filter((c) => !want.has(`${c.table}/${c.name}`)).map((c) => ({ table: c.table, name: c.name }));
  }

  /** Chains of ours the kernel holds that the new ruleset does not. */
  private async staleChains(chains: IptChain[]): Promise<Array<{ table: IptChain['table']; name: string }>> {
    const want = new Set(chains.map((c) => `${c.table}/${c.name}`));
    const saved = parseSave(await saveTables(this.family, this.flavour!, this.exec, ['nat', 'filter', 'mangle']));
    const stale: Array<{ table: IptChain['table']; name: string }> = [];
    for (const [table, t] of saved) {
      for (const name of t.chains.keys()) {
        if (!t.builtin.has(name) && isKubeProxyChain(table, name) && !want.has(`${table}/${name}`)) stale.push({ table: table as IptChain['table'], name });
      }
    }
    return stale;
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
