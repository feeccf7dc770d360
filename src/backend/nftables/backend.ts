// The nftables backend: renders snapshots (pure) and applies the difference to the kernel.
import type { Backend, BackendConfig, SyncResult, VerifyResult } from '../types.js';
import type { IPFamily, Snapshot } from '../../model/types.js';
import { log } from '../../log.js';
import { flushStale } from '../../node/conntrack.js';
import { NftError, applyScript, applyScriptsTogether, ourTableFamilies, type NftScript } from './apply.js';
import { readBack, readTable } from './readback.js';
import { collectGarbage } from '../../node/memory.js';
import { dropCheckpointFile, newToken } from '../common/checkpoint-file.js';
import { markerChain, writeCheckpoint } from './checkpoint.js';
import { compareElements, kernelFromCheckpoint, withElements } from './compare.js';
import { diff, opsToScripts, type NftOp } from './diff.js';
import { fullSyncScripts, transactionsIn, type CheckpointedKernel, type FullSyncPlan, type NftStep } from './full-sync.js';
import { removeLeftovers } from '../common/leftovers.js';
import { KernelCheck, NOTHING_TO_REPAIR, tally, type Difference, type Finding } from '../common/verify.js';
import { ForeignWatch, type ForeignChanges } from './monitor.js';
import type { CommitCount, WriteBracket } from '../common/watch.js';
import { TABLE, type NftFamily, type NftRuleset } from './layout.js';
import { describeRuleset } from './script.js';
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
  /**
   * verify() reads the whole table back at every this many calls even when the monitor saw no
   * foreign change (default 10: every 5 minutes with a 30 s syncPeriod). 1 reads it every time.
   */
  fullReadEvery?: number;
  /**
   * Where a clean stop leaves what it last wrote, so that the next start diffs against it
   * instead of reading the table back (see checkpoint.ts). No checkpoint without it.
   */
  checkpointFile?: string;
  /**
   * A large table that is not in the kernel is loaded as its structure, then its elements in this
   * many parts sent together (default: the cores, at most 4; 1: one transaction).
   */
  newTableParts?: number;
}

/** Incremental writes larger than this run without the monitor too (a monitor would print every element). */
const UNWATCHED_WRITE_BYTES = 2_000_000;

/** What a repair of each operation kind says it fixed. */
const REPAIR_WORDS: Record<NftOp['kind'], string> = {
  'add-set': 'missing set',
  'delete-set': 'unexpected set',
  'add-chain': 'missing chain',
  'replace-chain': 'changed chain',
  'delete-chain': 'unexpected chain',
  'add-element': 'missing element in',
  'replace-element': 'wrong element value in',
  'delete-element': 'unexpected element in',
};

export class NftablesBackend implements Backend {
  readonly mode = 'nftables';
  readonly family: IPFamily;
  /** Transactions the kernel rejected. */
  syncFailures = 0;
  /** Transactions sent by the last sync (for tests and benchmarks). */
  lastTransactions = 0;
  private state: RulesetState | undefined;
  private needFull = true;
  private startedUp = false;
  private readonly opts: Required<Pick<NftablesBackendOptions, 'dryRun' | 'budget' | 'removeLeftovers' | 'fullReadEvery'>> & NftablesBackendOptions;
  private readonly nftFamily: NftFamily;
  private readonly check: KernelCheck;
  /** Foreign changes to our table, as the event listener reports them. */
  private readonly foreignWatch: ForeignWatch;
  /** A checkpoint file may describe the kernel: read (and removed) by the first sync. */
  private checkpointPending: boolean;
  /** The kernel's content came from a checkpoint: the next verification reads the table back. */
  private unreadSinceStart = false;

  constructor(
    private readonly config: BackendConfig,
    opts: NftablesBackendOptions = {},
  ) {
    this.family = config.family;
    this.checkpointPending = opts.checkpointFile !== undefined && !opts.dryRun;
    this.nftFamily = config.family === 'IPv6' ? 'ip6' : 'ip';
    this.check = new KernelCheck(this.mode, this.family);
    this.opts = {
      ...opts,
      dryRun: opts.dryRun ?? false,
      budget: opts.budget ?? 20000,
      removeLeftovers: opts.removeLeftovers ?? !opts.dryRun,
      fullReadEvery: Math.max(1, opts.fullReadEvery ?? 10),
    };
    const fam = this.nftFamily;
    this.foreignWatch = new ForeignWatch(this.exec, `nftables ${fam}`, (e) => e.family === fam && e.table === TABLE, this.opts.fullReadEvery);
  }

  /**
   * Sends scripts as one write of ours, so the monitor does not take it for a foreign change.
   * `replacesTable`: the scripts replace the whole table, whatever it held before.
   */
  private async write(steps: NftStep[], replacesTable = false): Promise<void> {
    // Nothing to commit: the monitor need not hear of it (a write while it loads would spoil
    // the generation proof of the write before).
    if (steps.length === 0) return;
    const send = async (count?: CommitCount, bracket?: WriteBracket): Promise<void> => {
      let transactions = 0;
      // Each script is one transaction (one `nft -f`, or one line of the nft session); the
      // monitor's markers ride in the first and the last, so a watched write sends them in order.
      const scripts = bracket ? steps.flat() : steps;
      for (let i = 0; i < scripts.length; i++) {
        let s = scripts[i]!;
        if (Array.isArray(s)) {
          await applyScriptsTogether(s, this.exec);
          transactions += s.length;
          continue;
        }
        if (bracket && i === 0) s = joinScripts(bracket.begin, s);
        if (bracket && i === scripts.length - 1) s = joinScripts(s, bracket.end);
        await applyScript(s, this.exec);
        transactions++;
      }
      bracket?.ended();
      if (count) count.transactions = transactions;
    };
    // A whole table is written unwatched whatever its size: watched, its start-up write made the
    // first verification wait for the monitor to print every element (1.2 s at 1,000 services),
    // and a change waited behind it; unwatched, generation numbers prove it ours.
    const bytes = steps.reduce((n, s) => n + (typeof s === 'string' ? s.length : Infinity), 0);
    await (replacesTable || bytes > UNWATCHED_WRITE_BYTES ? this.foreignWatch.unwatchedWrite(send, replacesTable) : this.foreignWatch.write(send));
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
      // It loads the (empty or old) ruleset while leftovers are removed and the first sync renders.
      if (!this.opts.dryRun) this.foreignWatch.start();
      if (this.opts.removeLeftovers && !this.opts.dryRun) await removeLeftovers(this.exec);
    }
    const full = this.needFull || !this.state || snapshot.changes.full;
    let scripts: NftStep[];
    let operations: number;
    let replacesTable = false;
    let next: RulesetState;
    if (full) {
      next = new RulesetState(this.config);
      next.load(snapshot);
      ({ scripts, operations, replacesTable } = await this.fullScripts(next.ruleset(), next.elementCount()));
    } else {
      next = this.state!;
      const keys = new Set([...snapshot.changes.changed, ...snapshot.changes.deleted]);
      // The state mutates in place: if applying fails it is dropped and the next sync is full.
      const ops = next.update(snapshot, keys);
      operations = ops.length;
      scripts = ops.length > 0 ? opsToScripts(ops, this.opts.budget, { family: next.ctx.f, table: TABLE }) : [];
    }
    this.lastTransactions = transactionsIn(scripts);
    // A checkpoint describes the kernel at start only.
    if (this.checkpointPending) {
      this.checkpointPending = false;
      dropCheckpointFile(this.opts.checkpointFile!);
    }
    try {
      if (this.opts.dryRun) {
        if (full) this.print(describeRuleset(next.ruleset()));
        else for (const s of scripts.flat()) this.print(typeof s === 'string' ? s : [...s.parts()].join(''));
      } else {
        // A full sync rewrites what a foreign change may have touched.
        if (full) this.foreignWatch.forget();
        await this.write(scripts, replacesTable);
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
    log.v(2, 'nftables sync done', { family: this.family, full, operations, transactions: this.lastTransactions });
    if (!this.opts.dryRun && (snapshot.changes.staleEndpoints.length > 0 || snapshot.changes.staleServiceIPs.length > 0)) {
      await flushStale(this.family, snapshot.changes, this.exec);
    }
    return { operations, full };
  }

  /** A full sync (see fullSyncScripts). */
  private fullScripts(rs: NftRuleset, elements: number): Promise<FullSyncPlan> {
    return fullSyncScripts(rs, elements, {
      dryRun: this.opts.dryRun,
      budget: this.opts.budget,
      newTableParts: this.opts.newTableParts,
      checkpointedKernel: () => this.checkpointedKernel(rs),
      readKernel: () => readTable(rs.family, this.exec),
    });
  }

  /** The kernel's content as the checkpoint of the last clean stop says, once, at the first full sync. */
  private async checkpointedKernel(want: NftRuleset): Promise<CheckpointedKernel | undefined> {
    if (!this.checkpointPending) return undefined;
    this.checkpointPending = false;
    const found = await kernelFromCheckpoint(this.opts.checkpointFile!, want, this.family, this.exec);
    if (found) this.unreadSinceStart = true;
    return found;
  }

  /**
   * A clean stop leaves the rules serving and records what they are (file first, then the
   * marker, so a marker always has its file).
   */
  async stop(proxyStops: boolean): Promise<void> {
    const path = this.opts.checkpointFile;
    if (!proxyStops || !path || this.opts.dryRun || !this.state || !this.kernelInSync()) return;
    const token = newToken();
    const t0 = Date.now();
    writeCheckpoint(path, { token, ruleset: this.state.ruleset() });
    await this.write([`add chain ${this.nftFamily} ${TABLE} ${markerChain(token)}\n`]);
    log.info('wrote a restart checkpoint', { family: this.family, file: path, ms: Date.now() - t0 });
  }

  async cleanup(): Promise<void> {
    this.state = undefined;
    this.needFull = true;
    if (this.opts.dryRun) return;
    // As one write of ours, bracketed, so that the monitor does not take it for a foreign change.
    await this.write((await ourTableFamilies(this.exec)).map((family) => `delete table ${family} ${TABLE}\n`));
  }

  /**
   * Proves the kernel holds the table last written and repairs what differs. The monitor makes
   * this free while nobody else touches the table: the table is read back (seconds at 10,000
   * services) only after a foreign change, when the monitor is unavailable or was restarted,
   * after a failed repair, and at every `fullReadEvery`-th call.
   */
  async verify(stopping?: AbortSignal): Promise<VerifyResult> {
    if (this.opts.dryRun || !this.state) return NOTHING_TO_REPAIR;
    const watched = await this.foreignWatch.readBackReason(this.check.inSync());
    if (watched.retry) return { ...NOTHING_TO_REPAIR, retry: watched.retry };
    const reason = watched.reason ?? (this.unreadSinceStart ? 'started from a checkpoint' : undefined);
    const foreign = watched.foreign;
    // What the checkpoint's read left behind goes before the read-back adds its own (here, not
    // in the restart's sync, which it would delay).
    if (this.unreadSinceStart) collectGarbage();
    this.unreadSinceStart = false;
    if (!reason) return NOTHING_TO_REPAIR;
    log.v(1, 'reading the kernel rules back', { mode: this.mode, family: this.family, reason });
    if (foreign) {
      const kinds = [...foreign.objects.keys()];
      log.info('foreign change to our nftables table seen; reading it back', {
        family: this.family,
        tableDeleted: foreign.tableDeleted,
        changes: [...foreign.objects.values()].reduce((n, c) => n + c, 0),
        kinds: kinds.length > 8 ? [...kinds.slice(0, 8), `…${kinds.length - 8} more`] : kinds,
      });
    }
    return this.foreignWatch.readBack(() => this.check.run(() => this.findDifferences(foreign), stopping));
  }

  kernelInSync(): boolean {
    return this.check.inSync() && !this.foreignWatch.pending();
  }

  /** Reads the table back and compares it with the state; rules are compared by count unless a foreign change touched their chain. */
  private async findDifferences(foreign: ForeignChanges | undefined): Promise<Finding> {
    const state = this.state!;
    const want = state.ruleset();
    const wantSets = new Map(want.sets.map((s) => [s.name, s]));
    // Each set's elements are compared as soon as they are read and then dropped: holding the
    // whole table read back costs more memory than anything else the proxy does.
    const elementOps: NftOp[] = [];
    const kernel = await readBack(this.nftFamily, this.exec, (set) => compareElements(set, wantSets, elementOps));
    if (!kernel) {
      return {
        differences: [{ what: 'table missing, rebuilt', count: 1 }],
        apply: async () => {
          const { scripts, replacesTable } = await this.fullScripts(want, state.elementCount());
          await this.write(scripts, replacesTable);
        },
      };
    }
    const wanted = new Map(want.chains.map((c) => [c.name, c]));
    const touched = foreign?.chains ?? new Set<string>();
    const seen: NftRuleset = {
      ...kernel.ruleset,
      chains: kernel.ruleset.chains.map((c) => {
        const w = wanted.get(c.name);
        const count = kernel.ruleCounts.get(c.name) ?? 0;
        if (w && count === w.rules.length && !touched.has(c.name)) return w;
        // Unknown content: a placeholder that never equals a rendered chain.
        return { name: c.name, rules: [`${count} rules read back`] };
      }),
    };
    const ops = elementOps.length === 0 ? diff(seen, want) : withElements(diff(seen, want), elementOps, seen, want);
    const counts = new Map<string, number>();
    for (const op of ops) {
      const what = `${REPAIR_WORDS[op.kind]} ${opTarget(op)}`;
      counts.set(what, (counts.get(what) ?? 0) + 1);
    }
    const differences: Difference[] = [];
    for (const [what, n] of counts) tally(differences, what, n);
    if (ops.length === 0) return { differences };
    return { differences, apply: () => this.write(opsToScripts(ops, this.opts.budget, { family: want.family, table: want.table })) };
  }

  describe(): string {
    return this.state ? describeRuleset(this.state.ruleset()) : '';
  }

  /** The ruleset last applied successfully, for explain and debugging. */
  ruleset(): NftRuleset | undefined {
    return this.state?.ruleset();
  }
}

/** The set or chain an operation is about. */
function opTarget(op: NftOp): string {
  switch (op.kind) {
    case 'add-set':
      return op.set.name;
    case 'delete-set':
    case 'delete-chain':
      return op.name;
    case 'add-chain':
    case 'replace-chain':
      return op.chain.name;
    default:
      return op.set;
  }
}

/** Two scripts as one transaction. */
function joinScripts(a: NftScript, b: NftScript): NftScript {
  if (typeof a === 'string' && typeof b === 'string') return a + b;
  return {
    *parts() {
      yield* typeof a === 'string' ? [a] : a.parts();
      yield* typeof b === 'string' ? [b] : b.parts();
    },
  };
}
