// The shared part of kernel verification: every backend finds, in its own way, where the kernel
// differs from the rules it last wrote; this file decides what is logged, what kernelInSync()
// reports meanwhile, and what a repair counts as. Only the `find` and `apply` callbacks touch
// the kernel.
import type { IPFamily } from '../../model/types.js';
import type { VerifyResult } from '../types.js';
import { log } from '../../log.js';

/** One kind of difference found, e.g. `{ what: 'missing element in service-ips', count: 1 }`. */
export interface Difference {
  what: string;
  count: number;
}

/** What a check found: the differences, and how to write them back (absent when there are none). */
export interface Finding {
  differences: Difference[];
  apply?: () => Promise<void>;
}

export const NOTHING_TO_REPAIR: VerifyResult = { repaired: 0, differences: [] };

/** Counts differences of one kind into a list, skipping zero counts. */
export function tally(into: Difference[], what: string, count: number): void {
  if (count > 0) into.push({ what, count });
}

/** Counts named differences of one kind, naming the first few (`changed chain (nat/KUBE-SERVICES, …)`). */
export function tallyNamed(into: Difference[], what: string, names: readonly string[]): void {
  if (names.length === 0) return;
  const shown = names.slice(0, 3).join(', ') + (names.length > 3 ? ', …' : '');
  into.push({ what: `${what} (${shown})`, count: names.length });
}

/** Whether two lists hold the same strings as often each, in any order. */
export function sameMultiset(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const counts = new Map<string, number>();
  for (const x of a) counts.set(x, (counts.get(x) ?? 0) + 1);
  for (const x of b) {
    const n = counts.get(x);
    if (!n) return false;
    counts.set(x, n - 1);
  }
  return true;
}

/** Verification state of one backend (one mode, one family). */
export class KernelCheck {
  /** True from the moment a difference is known until its repair has succeeded. */
  private differs = false;
  /** Successful repairs, for tests and debugging. */
  repairs = 0;

  constructor(
    private readonly mode: string,
    private readonly family: IPFamily,
  ) {}

  /** False while a known difference is not repaired yet. */
  inSync(): boolean {
    return !this.differs;
  }

  /**
   * Runs `find`; when it reports differences, logs them, applies the repair and counts it. A
   * failed repair leaves the check out of sync and throws, so the caller retries. Once
   * `stopping` is aborted, what was found is left to the next start, which reads back.
   */
  async run(find: () => Promise<Finding>, stopping?: AbortSignal): Promise<VerifyResult> {
    const found = await find();
    if (stopping?.aborted) return NOTHING_TO_REPAIR;
    const total = found.differences.reduce((n, d) => n + d.count, 0);
    if (total === 0 || !found.apply) {
      this.differs = false;
      return NOTHING_TO_REPAIR;
    }
    this.differs = true;
    const differences = found.differences.map((d) => `${d.what}: ${d.count}`);
    log.warn('kernel rules differ from the rules last written; repairing', { mode: this.mode, family: this.family, items: total, differences });
    try {
      await found.apply();
    } catch (e) {
      log.error('repairing kernel rules failed; will retry', { mode: this.mode, family: this.family, error: String(e) });
      throw e;
    }
    this.differs = false;
    this.repairs++;
    log.info('repaired kernel rules', { mode: this.mode, family: this.family, items: total, differences });
    return { repaired: total, differences };
  }
}
