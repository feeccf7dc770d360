// Typo hints for the command line: the nearest known name to what was typed.
import { showValue } from '../config/index.js';

/** Levenshtein distance, for suggesting the name a typo meant. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next.push(Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    row = next;
  }
  return row[b.length]!;
}

/** `; did you mean "X"?` for the nearest candidate within a few edits, else ''. */
export function didYouMean(typed: string, candidates: string[], prefix = ''): string {
  let best = '';
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = distance(typed.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= Math.max(1, Math.floor(typed.length / 3)) ? `; did you mean ${showValue(prefix + best)}?` : '';
}
