// How a full sync is written: the whole table in one transaction, a new table in parts sent
// together, or only the difference from a restart's checkpoint or from the table read back.
// The kernel is read by the caller's functions; nothing here runs a process.
import { availableParallelism } from 'node:os';
import { collectGarbage } from '../../node/memory.js';
import type { NftScript } from './apply.js';
import { withElements } from './compare.js';
import { diff, opCountFromScratch, opsToScripts, type NftOp } from './diff.js';
import type { NftRuleset } from './layout.js';
import { newTableSteps, nftScriptParts } from './script.js';

/** Transactions sent one after the other; a group of scripts in one step is sent together. */
export type NftStep = NftScript | NftScript[];

export const transactionsIn = (steps: NftStep[]): number => steps.reduce<number>((n, s) => n + (Array.isArray(s) ? s.length : 1), 0);

/** A restart's difference from its checkpoint this large is written long enough to collect the render's garbage first. */
const LONG_WRITE_OPERATIONS = 2000;

export interface FullSyncPlan {
  scripts: NftStep[];
  operations: number;
  /** The scripts replace the whole table, whatever it held before. */
  replacesTable: boolean;
}

/** What the kernel holds as a clean stop's checkpoint describes it (see compare.ts). */
export interface CheckpointedKernel {
  kernel: NftRuleset;
  elementOps: NftOp[];
}

export interface FullSyncOptions {
  dryRun: boolean;
  /** Elements and rules per transaction. */
  budget: number;
  /** Parts a new table's elements are sent in (default: the cores, at most 4). */
  newTableParts?: number;
  /** The kernel as the checkpoint says, if there is one to use (not asked in a dry run). */
  checkpointedKernel: () => Promise<CheckpointedKernel | undefined>;
  /** Reads our table back; undefined when the kernel has none. */
  readKernel: () => Promise<NftRuleset | undefined>;
}

/**
 * A full sync. After a clean stop, the difference from the checkpoint (which keeps affinity
 * entries and counters). Otherwise one atomic replacement when the table fits the budget or
 * there is no table yet; else the kernel's current table is read and only the difference is
 * sent, in chunks, so that a restart never flushes working rules.
 */
export async function fullSyncScripts(rs: NftRuleset, elements: number, opts: FullSyncOptions): Promise<FullSyncPlan> {
  const target = { family: rs.family, table: rs.table };
  const fromCheckpoint = opts.dryRun ? undefined : await opts.checkpointedKernel();
  // The render's transient goes before a write or a read-back that holds the state for
  // seconds; a restart its checkpoint shows in sync writes next to nothing and goes on at once.
  if (!fromCheckpoint) collectGarbage();
  if (!fromCheckpoint && (opts.dryRun || elements <= opts.budget)) {
    return { scripts: [wholeTable(rs)], operations: opCountFromScratch(rs), replacesTable: true };
  }
  let ops: NftOp[];
  if (fromCheckpoint) {
    ops = withElements(diff(fromCheckpoint.kernel, rs), fromCheckpoint.elementOps, fromCheckpoint.kernel, rs);
    if (ops.length >= LONG_WRITE_OPERATIONS) collectGarbage();
  } else {
    const kernel = await opts.readKernel();
    // Nothing to keep serving: a new table, its elements parsed on several cores.
    if (!kernel) return { scripts: newTable(rs, opts.newTableParts), operations: opCountFromScratch(rs), replacesTable: true };
    // Read back, the chains' rules are unknown, so each is rewritten.
    ops = diff(kernel, rs, { replaceAllChains: true });
    // The table read back is garbage now.
    collectGarbage();
  }
  return { scripts: ops.length > 0 ? opsToScripts(ops, opts.budget, target) : [], operations: ops.length, replacesTable: false };
}

/**
 * A table the kernel does not have. In one transaction nft spends seconds parsing a large
 * one on one core (2.0–2.5 s at 10,000 services × 10 endpoints); its structure first and then
 * its elements in parts sent together took 1.4 s on two cores. Data elements go before the
 * tuples that make a Service live, so none answers before its endpoints are in.
 */
function newTable(rs: NftRuleset, newTableParts: number | undefined): NftStep[] {
  const parts = newTableParts ?? Math.min(4, availableParallelism());
  if (parts < 2) return [wholeTable(rs)];
  const steps = newTableSteps(rs, parts);
  const scripts = (gens: Array<() => Iterable<string>>): NftScript[] => gens.map((gen) => ({ parts: gen }));
  return [{ parts: steps.structure }, scripts(steps.data), scripts(steps.dispatch)].filter((step) => !Array.isArray(step) || step.length > 0);
}

/** The whole-table transaction, produced piece by piece as it is written. */
function wholeTable(rs: NftRuleset): NftScript {
  return { parts: () => nftScriptParts(rs) };
}
