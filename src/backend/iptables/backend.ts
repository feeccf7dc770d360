// The iptables backend: upstream kube-proxy's rule layout, applied with iptables-restore
// --noflush into whichever iptables flavour (nft or legacy) the node already uses. A full sync
// rewrites every chain of ours; a partial sync writes only what the changed service ports
// contribute (see docs/iptables-layout.md).
import { availableParallelism } from 'node:os';
import type { Backend, BackendConfig, SyncResult, VerifyResult } from '../types.js';
import type { IPFamily, Snapshot } from '../../model/types.js';
import { log } from '../../log.js';
import { flushStale } from '../../node/conntrack.js';
import { collectGarbage, collectGarbageIfGrown, GARBAGE_WHILE_TOOL_WORKS_MIB } from '../../node/memory.js';
import { removeIptablesLeftovers } from '../common/leftovers.js';
import { IptablesRestoreError, canaryAlive, detectFlavour, ensureJumps, restore, restoreAlone, saveLines, type Flavour } from './apply.js';
import { RestoreLanes } from './lanes.js';
import { builtinTables, IPTABLES_MODE_TABLES, kernelChainsReader, keptWhole, type KernelChains } from './save.js';
import { compareWithSave, staleChains } from './compare.js';
import { contextDigest, isLargeCluster, jumpRules, renderContext, renderInputsDigest, renderServicePort, type IptChain, type IptRuleset, toRestoreInput } from './render.js';
import { IptState } from './state.js';
import { startUpFlavour, type StartUp } from './startup.js';
import { iptablesForeignWatch } from './monitor.js';
import type { ForeignWatch } from '../common/foreign-watch.js';
import { opsToRestore, opsToRestoreChunks } from './restore.js';
import { newToken } from '../common/checkpoint-file.js';
import { markerChain, writeIptablesCheckpoint } from './checkpoint.js';
import { KernelCheck, NOTHING_TO_REPAIR, type Finding } from '../common/verify.js';

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
  /** Transactions of services a full sync on iptables-nft writes side by side (default: the cores, at most 4). */
  restoresTogether?: number;
  /**
   * The start-up shared by every family (flavour, other modes' leftovers; the mode descriptor
   * supplies it). Its save of this family, when it has one, is what the first sync compares
   * with instead of saving again.
   */
  startUp?: () => Promise<StartUp>;
  /**
   * On the nft flavour, verify() reads the rules back at every this many calls even when the nft
   * monitor saw no foreign change (default 10). 1 reads them every time. Legacy always reads back.
   */
  fullReadEvery?: number;
  /**
   * Where a clean stop records what it last wrote, so that the next start need not read the
   * rules back (see checkpoint.ts). No checkpoint without it.
   */
  checkpointFile?: string;
}

/**
 * Lines per transaction of a chunked full sync. iptables-nft 1.8.9 restored 250 services × 10
 * endpoints (11,000 lines) in 0.6 s, 1,000 (44,000 lines) in 13 s and 2,000 in 92 s.
 */
const NFT_FULL_SYNC_BUDGET = 10_000;

const NO_CHAINS: KernelChains = { whole: new Map(), digests: new Map(), builtin: new Set() };

/**
 * Restore lines that change something (each a change notification) above which a partial sync is
 * written without xtables-monitor: it does not enlarge its socket's receive buffer, which
 * overflowed at ~400 notifications in one commit (150 new chains of 3 lines), and the monitor
 * exited ("No buffer space available").
 */
const MONITOR_MAX_LINES = 200;

export class IptablesBackend implements Backend {
  readonly mode = 'iptables';
  readonly family: IPFamily;
  /** Restores the kernel rejected. */
  syncFailures = 0;
  /** Restore transactions and their bytes in the last sync (counts only: a full sync's inputs are 34 MB at 10,000 × 10). */
  lastTransactions = 0;
  lastInputBytes = 0;
  flavour: Flavour | undefined;
  private state: IptState | undefined;
  /** The snapshot `state` was last brought to (a stop's checkpoint records what it rendered from). */
  private synced: Snapshot | undefined;
  private needFull = true;
  private startedUp = false;
  private readonly check: KernelCheck;
  /** On the nft flavour: foreign changes to our rules, as xtables-monitor reports them. */
  private foreignWatch: ForeignWatch | undefined;
  /** Our tables as the start-up cleanup read them, until the first sync takes them. */
  private startupKernel: KernelChains | undefined;

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
    const { flavour, save } = await startUpFlavour(this.family, this.flavour, this.exec, this.opts.startUp);
    this.flavour = flavour;
    this.startupKernel = save;
    if (this.flavour === 'nft') this.foreignWatch = iptablesForeignWatch(this.family, this.exec, Math.max(1, this.opts.fullReadEvery ?? 10));
  }

  /** Restores a full sync writes side by side: iptables-nft's service groups, never legacy's whole table. */
  private restoresTogether(): number {
    return this.flavour === 'nft' ? Math.max(1, this.opts.restoresTogether ?? Math.min(4, availableParallelism())) : 1;
  }

  /** Runs a write of ours; on the nft flavour bracketed so that the monitor does not take it for a foreign change. */
  private write<T>(write: () => Promise<T>): Promise<T> {
    return this.foreignWatch ? this.foreignWatch.write(write) : write();
  }

  async sync(snapshot: Snapshot): Promise<SyncResult> {
    const startingUp = this.startUp();
    const large = isLargeCluster(snapshot);
    // Unknown: what the kernel holds is not known to be what we last wrote (start-up, a failed
    // restore); it is then read back, and the jumps checked. Rules removed behind our back are
    // found by the canary at the periodic verify(), as upstream checks it on a timer: checking
    // it here would cost three processes per partial sync.
    const kernelUnknown = this.needFull || !this.state;
    const full = kernelUnknown || snapshot.changes.full || large !== this.state?.ctx.largeCluster;
    // An array: inputs written side by side.
    let inputs: AsyncIterable<string | string[]>;
    let operations: () => number;
    // A partial sync too large for the monitor to follow (or written in pieces).
    let tooLarge = false;
    // Lines of a full sync's inputs that create, fill or delete a chain.
    let written = 0;
    let next: IptState;
    const fresh = full ? new IptState(renderContext(this.config, { largeCluster: large })) : undefined;
    if (fresh && kernelUnknown) await fresh.renderAhead(snapshot, startingUp);
    await startingUp;
    // What reading the start-up's save left (a 10k×10 save: ~30 MiB in the old generation),
    // before the comparison with it adds its own.
    if (fresh && kernelUnknown) collectGarbageIfGrown(GARBAGE_WHILE_TOOL_WORKS_MIB);
    // What the kernel holds, read before writing anything (cheap on a fresh node): stale chains
    // of ours and the jumps from the built-in chains are found in it.
    const saved = fresh && kernelUnknown && !this.opts.dryRun ? await this.readKernel() : undefined;
    if (fresh) {
      const state = (next = fresh);
      const stale = async (): Promise<Array<{ table: IptChain['table']; name: string }>> =>
        this.opts.dryRun ? [] : saved ? staleChains(saved, state) : this.goneChains(state);
      // Legacy rewrites the whole table at every commit: one transaction. nft: chunks.
      // Over rules already there (a restart), only the chains that differ are written.
      if (this.flavour === 'nft') {
        // A dry run prints what an empty kernel would be sent.
        const kernel = saved ?? (this.opts.dryRun ? NO_CHAINS : undefined);
        inputs = state.chunkedInputs(this.family, snapshot, this.opts.budget ?? NFT_FULL_SYNC_BUDGET, stale, kernel, this.restoresTogether());
      } else {
        inputs = (async function* () {
          state.renderRest(snapshot, [...snapshot.services.keys()].sort());
          const gone = await stale();
          const write = saved ? state.chainsToWrite(snapshot, saved) : state.chains();
          if (write.length + gone.length > 0) yield toRestoreInput({ family: snapshot.family, chains: write }, gone);
        })();
      }
      operations = () => written;
    } else {
      next = this.state!;
      const keys = new Set([...snapshot.changes.changed, ...snapshot.changes.deleted]);
      // The state mutates in place: if the restore fails it is dropped and the next sync is full.
      const ops = next.store.update(keys, (k) => {
        const st = snapshot.services.get(k);
        return st ? renderServicePort(st, next.ctx) : undefined;
      });
      // Legacy replaces the whole table at every commit: one input. nft: pieces when large.
      const chunks = this.flavour === 'legacy' ? [opsToRestore(ops)].filter((i) => i !== '') : opsToRestoreChunks(ops, this.opts.budget ?? NFT_FULL_SYNC_BUDGET);
      tooLarge = chunks.length > 1 || chunks.reduce((n, c) => n + countOperations(c), 0) > MONITOR_MAX_LINES;
      inputs = (async function* () {
        yield* chunks;
      })();
      operations = () => ops.length;
    }
    this.lastTransactions = 0;
    this.lastInputBytes = 0;
    try {
      // Read back and rewritten: what foreign changes touched is replaced.
      if (saved) await this.foreignWatch?.forget();
      const sendAll = async (): Promise<void> => {
        // Each transaction is restored while the next one renders.
        const lanes = new RestoreLanes(this.restoresTogether(), (input, lane) => restore(input, this.family, this.flavour!, this.exec, lane));
        for await (const step of inputs) {
          const together = typeof step === 'string' ? [step] : step;
          for (const input of together) {
            this.lastTransactions++;
            this.lastInputBytes += input.length;
            // A partial sync counts its store operations, and counted its lines before writing.
            if (full) written += countOperations(input);
            if (this.opts.dryRun) this.print(input);
          }
          if (this.opts.dryRun) continue;
          if (typeof step === 'string') await lanes.alone(step);
          else for (const input of step) await lanes.beside(input);
          // The next group renders synchronously as soon as it is asked for, which would hold
          // back the start of this restore (its process is started from a queued callback):
          // ask for it only once the event loop has turned.
          await new Promise((resolve) => setImmediate(resolve));
          collectGarbageIfGrown(GARBAGE_WHILE_TOOL_WORKS_MIB);
        }
        await lanes.drain();
        if (saved) await ensureJumps(jumpRules(next.ctx), this.family, this.flavour!, this.exec, builtinTables(saved));
      };
      // A full sync's hundreds of thousands of change notifications overrun the monitor's socket
      // (xtables-monitor exits on it), and so do a large partial one's: it is written unwatched,
      // and the next verification reads back.
      await ((full || tooLarge) && this.foreignWatch ? this.foreignWatch.unwatchedWrite(sendAll) : this.write(sendAll));
    } catch (e) {
      this.syncFailures++;
      this.needFull = true;
      this.state = undefined;
      this.synced = undefined;
      if (e instanceof IptablesRestoreError) {
        log.error('iptables-restore failed', { family: this.family, error: e.toolMessage, line: e.line, text: e.lineText.trim() });
      } else {
        log.error('iptables sync failed', { family: this.family, error: String(e) });
      }
      throw e;
    }
    this.state = next;
    this.synced = snapshot;
    this.needFull = false;
    log.v(2, 'iptables sync done', { family: this.family, full, operations: operations(), transactions: this.lastTransactions });
    if (!this.opts.dryRun && (snapshot.changes.staleEndpoints.length > 0 || snapshot.changes.staleServiceIPs.length > 0)) {
      await flushStale(this.family, snapshot.changes, this.exec);
    }
    return { operations: operations(), full };
  }

  /** Our tables as the first sync compares with them: from the start-up cleanup's save the first time. */
  private async readKernel(): Promise<KernelChains> {
    const read = this.startupKernel;
    this.startupKernel = undefined;
    if (read) return read;
    const reader = kernelChainsReader(keptWhole);
    await saveLines(this.family, this.flavour!, this.exec, IPTABLES_MODE_TABLES, reader.line);
    return reader.done();
  }

  /** Chains we wrote last time that the new ruleset does not have. */
  private goneChains(next: IptState): Array<{ table: IptChain['table']; name: string }> {
    return (this.state?.chains() ?? []).filter((c) => !next.has(c.table, c.name)).map((c) => ({ table: c.table, name: c.name }));
  }

  /**
   * Compares our chains and the jumps into them with what iptables-save prints (rules are
   * written in its canonical form, so texts compare) and rewrites only the chains that differ,
   * deletes chains of ours that should not exist and re-inserts missing jumps. Reading back
   * costs seconds at 10,000 services; on the nft flavour xtables-monitor makes it rare: it is
   * done only when the monitor saw a foreign change to our rules, cannot vouch for them, or at
   * every `fullReadEvery`-th call.
   */
  async verify(stopping?: AbortSignal): Promise<VerifyResult> {
    if (this.opts.dryRun || !this.state || !this.flavour) return NOTHING_TO_REPAIR;
    let reason = 'no change notifications';
    if (!(await canaryAlive(this.family, this.flavour, this.exec))) {
      // Read back whatever the monitor says: the repair rewrites every chain that is gone.
      log.warn('iptables canary chains are gone or flushed (rules removed behind our back); restoring them', { family: this.family });
      reason = 'canary gone';
      this.foreignWatch?.forget();
    } else if (this.foreignWatch) {
      const seen = await this.foreignWatch.readBackReason(this.check.inSync());
      if (seen.retry) return { ...NOTHING_TO_REPAIR, retry: seen.retry };
      if (!seen.reason) return NOTHING_TO_REPAIR;
      reason = seen.reason;
      if (seen.foreign) {
        const kinds = [...seen.foreign.objects.keys()];
        log.info('foreign change to our iptables rules seen; reading them back', {
          family: this.family,
          changes: [...seen.foreign.objects.values()].reduce((n, c) => n + c, 0),
          kinds: kinds.length > 8 ? [...kinds.slice(0, 8), `…${kinds.length - 8} more`] : kinds,
        });
      }
    }
    log.v(1, 'reading the kernel rules back', { mode: this.mode, family: this.family, reason });
    const read = (): Promise<VerifyResult> => this.check.run(() => this.findDifferences(this.state!, this.flavour!, stopping), stopping);
    return this.foreignWatch ? this.foreignWatch.readBack(read) : read();
  }

  kernelInSync(): boolean {
    return this.check.inSync() && !(this.foreignWatch?.pending() ?? false);
  }

  /**
   * Reads our tables back a chain at a time and compares each with the state as it comes: the
   * save is never held whole (at 10,000 services × 10 endpoints it is 34 MB, and holding it with
   * its parse set the iptables mode's peak memory at the first verification).
   */
  private async findDifferences(state: IptState, flavour: Flavour, stopping?: AbortSignal): Promise<Finding> {
    // V8 may not collect for minutes, and RSS is what a node's memory limit sees: what the last
    // full sync left (its render, the start-up's save) goes before the read-back adds its own,
    // and the read-back's own goes after it (restarted proxy at 10k×10: RSS held 315 MiB before
    // the read and 365 during it).
    collectGarbage();
    const comparison = compareWithSave(state);
    // Abandoned by a stop, the rest of the save is let through unread: the stop's checkpoint
    // needs the CPU (4.3 s instead of 1.4 at 5k×50 while the read-back went on).
    await saveLines(this.family, flavour, this.exec, IPTABLES_MODE_TABLES, (line) => {
      if (!stopping?.aborted) comparison.line(line);
    });
    const { differences, rewrite, stale, jumps, wrongJumps } = comparison.end();
    collectGarbage();
    if (differences.length === 0) return { differences };
    return {
      differences,
      apply: () =>
        this.write(async () => {
          if (rewrite.length > 0 || stale.length > 0) await restore(toRestoreInput({ family: this.family, chains: rewrite }, stale), this.family, flavour, this.exec);
          if (wrongJumps > 0) await ensureJumps(jumps, this.family, flavour, this.exec);
        }),
    };
  }

  /**
   * A clean stop leaves the rules serving and records what they are (file first, then the
   * marker, so that a marker always has its file). The next start's first sync is full, written
   * unwatched, so its first verification reads the rules back.
   */
  async stop(proxyStops: boolean): Promise<void> {
    const path = this.opts.checkpointFile;
    const flavour = this.flavour;
    if (!proxyStops || !path || this.opts.dryRun || !this.state || !this.synced || !flavour || !this.kernelInSync()) return;
    const token = newToken();
    const t0 = Date.now();
    const renderedFrom = [...this.synced.services].map(([key, s]): [string, number] => [key, renderInputsDigest(s)]);
    writeIptablesCheckpoint(path, { token, family: this.family, flavour, context: contextDigest(this.state.ctx) }, this.state.chains(), renderedFrom);
    await restoreAlone(toRestoreInput({ family: this.family, chains: [markerChain(token)] }), this.family, flavour, this.exec);
    log.info('wrote a restart checkpoint', { family: this.family, file: path, ms: Date.now() - t0 });
  }

  /** Removes our chains (and the jumps to them) from this family in the flavour in use. */
  async cleanup(): Promise<void> {
    this.state = undefined;
    this.synced = undefined;
    this.needFull = true;
    if (this.opts.dryRun) return;
    if (!this.flavour) this.flavour = (await detectFlavour(this.exec)).flavour;
    await this.write(() => removeIptablesLeftovers([{ family: this.family, flavour: this.flavour! }], this.exec));
  }

  /** The ruleset last applied, as restore input (dry-run, explain, debugging). */
  describe(): string {
    return this.state ? toRestoreInput({ family: this.family, chains: this.state.chains() }) : '';
  }

  ruleset(): IptRuleset | undefined {
    return this.state ? { family: this.family, chains: this.state.chains() } : undefined;
  }
}

/** Lines of restore input that change something: chain declarations, rules, deletions. */
function countOperations(input: string): number {
  let n = 0;
  for (let i = 0; i < input.length; i = input.indexOf('\n', i) + 1 || input.length) {
    const c = input[i];
    if (c === ':' || c === '-') n++;
  }
  return n;
}
