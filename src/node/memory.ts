// Gives memory back after the work that needs the most of it: rendering or reading back the
// whole table. What that work leaves behind is garbage at once, but V8 keeps the pages it grew
// into until its next major collection, which a quiet proxy may not run for minutes: RSS, what
// the node's memory limits see, stays at the peak. One collection at those moments costs tens
// of milliseconds and brought 10,000 services × 10 endpoints from 225 to 199 MiB at peak.
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

// The documented way to reach V8's collector without starting node with --expose-gc.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Heap in use after the last collection this module ran. */
let usedAfterCollection = 0;

/** A full garbage collection, now. */
export function collectGarbage(): void {
  gc();
  usedAfterCollection = getHeapStatistics().used_heap_size;
}

/** Growth of the heap (MiB) at which long work (a full sync's restores, reading a save) collects its garbage. */
export const GARBAGE_WHILE_TOOL_WORKS_MIB = 24;

/**
 * A full collection if the heap in use grew since the last one by `mib`, or by a quarter of what
 * that collection left when more: for long work that leaves garbage at a steady rate, which V8
 * would otherwise let pile up to the peak. A collection costs in proportion to what is alive
 * (~190 ms at 30,000 services, where a fixed 24 MiB ran 26 of them in one full sync). Between a
 * full sync's restores the kernel tool does the waiting; a save is read once its tool has
 * exited, and there each collection holds up the event loop.
 */
export function collectGarbageIfGrown(mib: number): boolean {
  const threshold = Math.max(mib * 2 ** 20, usedAfterCollection / 4);
  if (getHeapStatistics().used_heap_size - usedAfterCollection < threshold) return false;
  collectGarbage();
  return true;
}
