// The nftables backend: renders snapshots (pure) and applies the difference to the kernel.
import type { Backend, BackendConfig, SyncResult } from '../types.js';
import type { IPFamily, Snapshot } from '../../model/types.js';
import { log } from '../../log.js';
import { flushStale } from '../../node/conntrack.js';
import { NftError, applyScript, deleteTables, readTable } from './apply.js';
import { diff, opsToScripts, type NftOp } from './diff.js';
import { removeLeftovers } from '../common/leftovers.js';
import { TABLE, describeRuleset, toNftScript, type NftRuleset } from './render.js';
import { RulesetState } from './state.js';

export interface NftablesBackendOptions {
  /** Print the rules instead of applying them (no privileges needed). */
  dryRun?: boolean;
  /** Where dry-run output goes (default: stdout). */
  out?: (text: string) => void;
  /** Command prefix for nft / conntrack / iptables (tests run them in their own namespace). */
  wrap?: string[];
  /** Elements and rules per transaction. */
  budget?: number;
  /** Remove iptables / ipvs mode leftovers before the first sync (default: true unless dry-run). */
  removeLeftovers?: boolean;
}

export class NftablesBackend implements Backend {
  readonly mode = 'nftables';
  readonly family: IPFamily;
  /** Transactions the kernel rejected. */
  syncFailures = 0;
  /** Scripts sent by the last sync (for debugging and tests). */
  lastScripts: string[] = [];
  private state: RulesetState | undefined;
  private needFull = true;
  private startedUp = false;
  private readonly opts: Required<Pick<NftablesBackendOptions, 'dryRun' | 'budget' | 'removeLeftovers'>> & NftablesBackendOptions;

  constructor(
    private readonly config: BackendConfig,
    opts: NftablesBackendOptions = {},
  ) {
    this.family = config.family;
    this.opts = {
      ...opts,
      dryRun: opts.dryRun ?? false,
      budget: opts.budget ?? 20000,
      removeLeftovers: opts.removeLeftovers ?? !opts.dryRun,
    };
  }

  private get exec(): { wrap?: string[] } {
    return this.opts.wrap ? { wrap: this.opts.wrap } : {};
  }

  private print(text: string): void {
    (this.opts.out ?? ((t: string) => process.stdout.write(t)))(text);
  }

  async sync(snapshot: Snapshot): Promise<SyncResult> {
    if (!this.startedUp) {
      this.startedUp = true;
      if (this.opts.removeLeftovers && !this.opts.dryRun) await removeLeftovers(this.exec);
    }
    const full = this.needFull || !this.state || snapshot.changes.full;
    let scripts: string[];
    let operations: number;
    let next: RulesetState;
    if (full) {
      next = new RulesetState(this.config);
      next.load(snapshot);
      ({ scripts, operations } = await this.fullScripts(next.ruleset(), next.elementCount()));
    } else {
      next = this.state!;
      const keys = new Set([...snapshot.changes.changed, ...snapshot.changes.deleted]);
      // The state mutates in place: if applying fails it is dropped and the next sync is full.
      const ops = next.update(snapshot, keys);
      operations = ops.length;
      scripts = ops.length > 0 ? opsToScripts(ops, this.opts.budget, { family: next.ctx.f, table: TABLE }) : [];
    }
    this.lastScripts = scripts;
    try {
      if (this.opts.dryRun) {
        if (full) this.print(describeRuleset(next.ruleset()));
        else for (const s of scripts) this.print(s);
      } else {
        for (const s of scripts) await applyScript(s, this.exec);
      }
    } catch (e) {
      this.syncFailures++;
      this.needFull = true;
      this.state = undefined;
      if (e instanceof NftError) {
        log.error('nftables sync failed', { family: this.family, error: e.nftMessage, line: e.line, text: e.lineText.trim() });
      } else {
        log.error('nftables sync failed', { family: this.family, error: String(e) });
      }
      throw e;
    }
    this.state = next;
    this.needFull = false;
    log.v(2, 'nftables sync done', { family: this.family, full, operations, transactions: scripts.length });
    if (!this.opts.dryRun && (snapshot.changes.staleEndpoints.length > 0 || snapshot.changes.staleServiceIPs.length > 0)) {
      await flushStale(this.family, snapshot.changes, this.exec);
    }
    return { operations, full };
  }

  /**
   * A full sync: one atomic replacement when the table fits the budget; otherwise the kernel's
   * current table is read and only the difference is sent, in chunks, so that a restart never
   * flushes working rules.
   */
  private async fullScripts(rs: NftRuleset, elements: number): Promise<{ scripts: string[]; operations: number }> {
    const target = { family: rs.family, table: rs.table };
    const fromScratch = (): NftOp[] => diff({ family: rs.family, table: rs.table, sets: [], chains: [] }, rs);
    if (this.opts.dryRun || elements <= this.opts.budget) {
      return { scripts: [toNftScript(rs)], operations: fromScratch().length };
    }
    const kernel = await readTable(rs.family, this.exec);
    if (!kernel) {
      const ops = fromScratch();
      const scripts = opsToScripts(ops, this.opts.budget, target);
      scripts[0] = `add table ${rs.family} ${rs.table}\n` + scripts[0];
      return { scripts, operations: ops.length };
    }
    const ops = diff(kernel, rs, { replaceAllChains: true });
    return { scripts: ops.length > 0 ? opsToScripts(ops, this.opts.budget, target) : [], operations: ops.length };
  }

  async cleanup(): Promise<void> {
    this.state = undefined;
    this.needFull = true;
    if (!this.opts.dryRun) await deleteTables(this.exec);
  }

  describe(): string {
    return this.state ? describeRuleset(this.state.ruleset()) : '';
  }

  /** The ruleset last applied successfully, for explain and debugging. */
  ruleset(): NftRuleset | undefined {
    return this.state?.ruleset();
  }
}
