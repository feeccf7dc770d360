// What the kernel holds, compared with the wanted ruleset set by set as its elements are read:
// from a verification's read-back, or from the checkpoint a clean stop left (a restart). Neither
// the kernel's table nor the checkpoint is ever held whole beside the wanted one.
import type { IPFamily } from '../../model/types.js';
import { log } from '../../log.js';
import { listChainNames, type ExecOptions } from './apply.js';
import { SAME_ELEMENTS, elementsDigest, markerChain, takeCheckpoint, type ElementsSummary } from './checkpoint.js';
import { ElementComparer, orderOps, sameRules, type NftOp } from './diff.js';
import type { SetReading } from './readback.js';
import { TABLE, type NftRuleset, type NftSet } from './layout.js';

const SKIP_ELEMENTS: SetReading = { element() {}, end() {} };

/**
 * Compares a set's elements, as they are read, with the wanted set of that name, appending the
 * operations that repair them; none is kept. The set read is left holding the wanted elements:
 * what diff() then sees of it is only whether it exists.
 */
export function compareElements(set: NftSet, want: ReadonlyMap<string, NftSet>, ops: NftOp[]): SetReading {
  const w = want.get(set.name);
  set.elements = w ? w.elements : new Map();
  return w && !w.dynamic ? new ElementComparer(w, ops) : SKIP_ELEMENTS;
}

/** As compareElements, for a checkpoint's set: one whose summary matches the wanted set is skipped unread. */
function compareCheckpointElements(set: NftSet, summary: ElementsSummary | undefined, want: ReadonlyMap<string, NftSet>, ops: NftOp[]): SetReading | typeof SAME_ELEMENTS {
  const w = want.get(set.name);
  if (summary && w && !w.dynamic && summary.count === w.elements.size && summary.digest === elementsDigest(w.elements)) {
    set.elements = w.elements;
    return SAME_ELEMENTS;
  }
  return compareElements(set, want, ops);
}

/** A diff's operations with the element operations found while reading, all in safe order. */
export function withElements(ops: NftOp[], elementOps: NftOp[], prev: NftRuleset, next: NftRuleset): NftOp[] {
  // As diff() looks them up: the wanted chain, else the one read back.
  const chains = new Map([...prev.chains, ...next.chains].map((c) => [c.name, c]));
  return orderOps([...ops, ...elementOps], (n) => chains.get(n));
}

/**
 * Takes the checkpoint at `path` (it is removed) and gives the kernel's content as it says, when
 * its marker chain is in the kernel (the marker is in the kernel view, so the diff deletes it),
 * with the element operations already found; undefined otherwise, saying why.
 */
export async function kernelFromCheckpoint(
  path: string,
  want: NftRuleset,
  family: IPFamily,
  exec: ExecOptions,
): Promise<{ kernel: NftRuleset; elementOps: NftOp[] } | undefined> {
  const wantSets = new Map(want.sets.map((s) => [s.name, s]));
  const elementOps: NftOp[] = [];
  // The diff does not change a set's type: a set declared otherwise needs a full rewrite.
  let otherType = false;
  const wantChains = new Map(want.chains.map((c) => [c.name, c]));
  const cp = takeCheckpoint(
    path,
    (set, summary) => {
      const w = wantSets.get(set.name);
      if (w && w.decl !== set.decl) otherType = true;
      const reading = compareCheckpointElements(set, summary, wantSets, elementOps);
      return otherType ? SKIP_ELEMENTS : reading;
    },
    // A chain as wanted is kept as the wanted one: the checkpoint's copy goes at once.
    (chain) => {
      const w = wantChains.get(chain.name);
      return w && sameRules(w, chain) ? w : chain;
    },
  );
  if (cp && 'error' in cp) {
    log.warn('ignoring the restart checkpoint; reading the table back instead', { family, file: path, error: cp.error });
    return undefined;
  }
  if (!cp || cp.ruleset.family !== want.family || cp.ruleset.table !== TABLE) return undefined;
  if (otherType) {
    log.info('the restart checkpoint has sets of another type; rewriting the table', { family });
    return undefined;
  }
  const marker = markerChain(cp.token);
  if (!(await listChainNames(want.family, exec)).includes(marker)) {
    log.info('the restart checkpoint does not match the kernel; reading the table back', { family });
    return undefined;
  }
  log.info('restarting from the checkpoint of the previous clean stop; the table is read back at the first verification', { family });
  return { kernel: { ...cp.ruleset, chains: [...cp.ruleset.chains, { name: marker, rules: [] }] }, elementOps };
}
