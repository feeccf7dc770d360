// The nftables mode's change monitor: a long-lived listener (event-listener.ts) prints every
// committed ruleset change, then a `# new generation N by process PID (comm)` line. Our own writes are bracketed
// by two markers (adding and deleting a throwaway table) carried as the first and last commands
// of the write's own transactions, and the monitor prints changes in commit order: every change
// to our table seen outside a bracket is someone else's. The shared part (process, probes,
// foreign changes, read-back decisions) is in ../common/watch.ts.
import { helperFor, type ExecOptions } from '../../node/exec.js';
import { ForeignWatch as Watch } from '../common/foreign-watch.js';
import { GenerationMonitor, MARK_PREFIX, markerName, type MarkerKind, type MonitorEvent, type MonitorLine, type WriteBracket } from '../common/watch.js';
import { applyScript } from './apply.js';
import { LISTENING, NF_EVENT_LISTENER } from './event-listener.js';

export type { ForeignChanges, MonitorEvent } from '../common/watch.js';

const GENERATION = /^# new generation (\d+) by process (\d+) \(([^)]*)\)$/;
const MARKER_EVENT = new RegExp(`^(add|delete) table ip ${MARK_PREFIX}(begin|end|probe|sync)-(\\d+)(?:-(\\d+))?$`);
// `add element ip kube-proxy service-ips`, `delete rule ip kube-proxy services`,
// `delete table ip kube-proxy`, `add chain ip6 kube-proxy nat-output`
const EVENT = /^(\w+) (\w+) (ip6?) (\S+)(?: ([^\s{]+))?(.*)$/;

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

  constructor(wrap: string[]) {
    super(wrap, NF_EVENT_LISTENER, 'nftables event listener', true);
  }

  protected commitMarker(name: string): Promise<void> {
    return commitNftMarker(name, this.exec);
  }

  protected classify(line: string): MonitorLine {
    if (line === LISTENING) return { type: 'subscribed' };
    const gen = GENERATION.exec(line);
    if (gen) return { type: 'generation', gen: Number(gen[1]), pid: Number(gen[2]) };
    const marker = MARKER_EVENT.exec(line);
    if (marker) return marker[1] === 'add' ? { type: 'marker', kind: marker[2] as MarkerKind, id: Number(marker[3]), rep: Number(marker[4] ?? 0) } : undefined;
    return EVENT.test(line) ? { type: 'change' } : undefined;
  }

  protected parseChange(line: string): MonitorEvent | undefined {
    return parseEvent(line);
  }

  protected override onMarker(kind: MarkerKind, id: number): void {
    if (kind === 'begin') this.openWrites.add(id);
    else if (kind === 'end') this.openWrites.delete(id);
    if (kind === 'begin' || kind === 'end') this.bracketInGeneration = true;
  }

  /**
   * A generation's changes are ours when a write of ours was open while it was committed, or
   * when the generation holds one of our write markers (a transaction is all one writer's).
   */
  protected onGeneration(_pid: number, lines: string[]): void {
    if (this.openWrites.size > 0 || this.bracketInGeneration) return;
    this.recordForeign(lines);
  }

  protected override generationDone(): void {
    this.bracketInGeneration = false;
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

/** A change line the monitor prints (not a marker, not a generation line), or undefined. */
export function parseEvent(line: string): MonitorEvent | undefined {
  const ev = EVENT.exec(line);
  return ev ? { verb: ev[1]!, kind: ev[2]!, family: ev[3]!, table: ev[4]!, name: ev[5], rest: ev[6]! } : undefined;
}

const monitors = new Map<string, NftMonitor>();

/** The monitor for a command prefix, started on first use and restarted when it has died. */
export function monitorFor(opts: ExecOptions): NftMonitor {
  return helperFor(monitors, opts, (wrap) => new NftMonitor(wrap));
}

/** The nftables mode's watch over its table of one family, through the event listener. */
export class ForeignWatch extends Watch {
  constructor(exec: ExecOptions, scope: string, relevant: (e: MonitorEvent) => boolean, fullReadEvery: number) {
    super(() => monitorFor(exec), scope, relevant, fullReadEvery);
  }
}
