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
