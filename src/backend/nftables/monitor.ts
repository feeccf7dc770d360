// The nftables mode's change monitor: a long-lived `xtables-monitor -e` prints every committed
// ruleset change (chains, rules and tables; nothing for set elements), then a `NEWGEN: GENID=N
// PID=P` line. `nft monitor` would print elements too, but at 30,000 Services it spent ~100 ms of
// CPU on each element it printed; this one costs nothing measurable. Our own writes are bracketed
// by two markers (adding and deleting a throwaway table) carried as the first and last commands of
// the write's own transactions, and changes are printed in commit order: every change seen outside
// a bracket is someone else's, and so is a commit that printed nothing (elements changed). The
// shared part (process, probes, foreign changes, read-back decisions) is in ../common/watch.ts.
import { helperFor, type ExecOptions } from '../../node/exec.js';
import { ForeignWatch as Watch } from '../common/foreign-watch.js';
import { GenerationMonitor, MARK_PREFIX, markerName, type MarkerKind, type MonitorEvent, type MonitorLine, type WriteBracket } from '../common/watch.js';
import { RULE_EVENT, TABLE_EVENT, generationLine, parseXtablesEvent } from '../common/xtables-events.js';
import { applyScript } from './apply.js';

export type { ForeignChanges, MonitorEvent } from '../common/watch.js';

// ` EVENT: nft: NEW table: table kpts-write-mark-probe-3-1 ip flags 0 use 0 handle 7` (its DEL is ignored)
const MARKER_EVENT = new RegExp(`^\\s*EVENT: nft: (NEW|DEL) table: table ${MARK_PREFIX}(begin|end|probe|sync)-(\\d+)(?:-(\\d+))? ip `);

/** The commands of the marker `name`: a throwaway table added and deleted at once. */
const markerScript = (name: string): string => `add table ip ${name}\ndelete table ip ${name}\n`;

/** Commits the marker table `name` as a transaction of its own. */
export function commitNftMarker(name: string, exec: ExecOptions): Promise<void> {
  return applyScript(markerScript(name), exec);
}

export class NftMonitor extends GenerationMonitor {
  private readonly openWrites = new Set<number>();
  /** A begin or end marker was seen since the last generation line. */
  private bracketInGeneration = false;
  /** Any marker of ours was seen since the last generation line. */
  private markerInGeneration = false;

  constructor(wrap: string[]) {
    // Its output goes to a pipe: line-buffered, so that each change is seen as it is committed.
    super(wrap, ['stdbuf', '-oL', 'xtables-monitor', '-e'], 'xtables-monitor');
  }

  protected commitMarker(name: string): Promise<void> {
    return commitNftMarker(name, this.exec);
  }

  protected classify(line: string): MonitorLine {
    const gen = generationLine(line);
    if (gen) return { type: 'generation', ...gen };
    const marker = MARKER_EVENT.exec(line);
    if (marker) return marker[1] === 'NEW' ? { type: 'marker', kind: marker[2] as MarkerKind, id: Number(marker[3]), rep: Number(marker[4] ?? 0) } : undefined;
    return RULE_EVENT.test(line) || TABLE_EVENT.test(line) ? { type: 'change' } : undefined;
  }

  protected parseChange(line: string): MonitorEvent | undefined {
    return parseXtablesEvent(line);
  }

  protected override onMarker(kind: MarkerKind, id: number): void {
    if (kind === 'begin') this.openWrites.add(id);
    else if (kind === 'end') this.openWrites.delete(id);
    if (kind === 'begin' || kind === 'end') this.bracketInGeneration = true;
    this.markerInGeneration = true;
  }

  /**
   * A generation's changes are ours when a write of ours was open while it was committed, or
   * when the generation holds one of our write markers (a transaction is all one writer's).
   */
  protected onGeneration(_pid: number, lines: string[]): void {
    if (this.openWrites.size > 0 || this.bracketInGeneration) return;
    this.recordForeign(lines);
  }

  /**
   * A commit that printed nothing at all changed what the monitor does not print: set elements,
   * maybe ours. Ours always print a marker; outside a write of ours, it is someone else's.
   */
  protected override generationDone(changeLines: number, counted: boolean): void {
    if (counted && changeLines === 0 && !this.markerInGeneration && this.openWrites.size === 0) {
      this.recordUnknownForeign('change to set elements');
    }
    this.bracketInGeneration = false;
    this.markerInGeneration = false;
  }

  /**
   * Runs one of our writes between two markers, so that its changes are not taken for foreign
   * ones. The write carries the markers in its own first and last transaction; only when it did
   * not send its last one (it failed) is the end marker committed on its own.
   */
  async ownWrite<T>(write: (bracket?: WriteBracket) => Promise<T>): Promise<T> {
    const id = this.seq++;
    let ended = false;
    try {
      return await write({ begin: markerScript(markerName('begin', id)), end: markerScript(markerName('end', id)), ended: () => (ended = true) });
    } finally {
      if (!ended) await this.mark('end', id);
    }
  }
}

const monitors = new Map<string, NftMonitor>();

/** The monitor for a command prefix, started on first use and restarted when it has died. */
export function monitorFor(opts: ExecOptions): NftMonitor {
  return helperFor(monitors, opts, (wrap) => new NftMonitor(wrap));
}

/** The nftables mode's watch over its table of one family, through `nft monitor`. */
export class ForeignWatch extends Watch {
  constructor(exec: ExecOptions, scope: string, relevant: (e: MonitorEvent) => boolean, fullReadEvery: number) {
    super(() => monitorFor(exec), scope, relevant, fullReadEvery);
  }
}
