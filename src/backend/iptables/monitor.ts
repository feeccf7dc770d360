// Foreign changes to our iptables rules on the nft flavour, whose tables (ip nat, ip filter,
// ip6 mangle, …) are nftables tables. `xtables-monitor -e` prints each committed change in
// iptables syntax, then the generation with the committing process's PID; every commit of ours
// comes from an iptables-restore whose PID the backend knows (./own-tools.ts), so no marker
// transactions bracket our writes. Unlike `nft monitor` it does not re-read the ruleset at each
// generation, which at 110,000 chains cost seconds of CPU per commit.
import { helperFor, type ExecOptions } from '../../node/exec.js';
import type { IPFamily } from '../../model/types.js';
import { ForeignWatch } from '../common/foreign-watch.js';
import { GenerationMonitor, MARK_PREFIX, type MarkerKind, type MonitorEvent, type MonitorLine } from '../common/watch.js';
import { restore } from './apply.js';
import { isOwnTool, onOwnTool } from './own-tools.js';

const TABLES = new Set(['nat', 'filter', 'mangle']);
const BUILTIN_CHAINS = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

// `NEWGEN: GENID=37 PID=27954 NAME=iptables-nft-re`
const GENERATION = /^NEWGEN: GENID=(\d+) PID=(\d+)/;
// ` EVENT: -4 -t mangle -N kpts-write-mark-probe-3-1` (and its `-X`, which is ignored)
const MARKER = new RegExp(`^\\s*EVENT: -4 -t mangle -([NX]) ${MARK_PREFIX}(begin|end|probe|sync)-(\\d+)(?:-(\\d+))?$`);
// ` EVENT: -4 -t nat -A KUBE-SEP-X -p tcp -m tcp -j DNAT --to-destination 10.0.0.1:80`
const RULE_EVENT = /^\s*EVENT: -([46]) -t (\S+) -([A-Z]) (\S+)(.*)$/;
// ` EVENT: nft: DEL table: table nat ip flags 0 use 3 handle 1`
const TABLE_EVENT = /^\s*EVENT: nft: (NEW|DEL) table: table (\S+) (\S+)/;
const VERBS: Record<string, [verb: string, kind: string]> = {
  A: ['add', 'rule'],
  I: ['insert', 'rule'],
  R: ['replace', 'rule'],
  D: ['delete', 'rule'],
  N: ['add', 'chain'],
  X: ['delete', 'chain'],
  F: ['flush', 'chain'],
  P: ['policy', 'chain'],
};

/** A change line of `xtables-monitor -e` as an event, or undefined (generation lines, nft-only objects). */
export function parseXtablesEvent(line: string): MonitorEvent | undefined {
  const r = RULE_EVENT.exec(line);
  if (r) {
    const [verb, kind] = VERBS[r[3]!] ?? ['change', 'chain'];
    return { verb, kind, family: r[1] === '6' ? 'ip6' : 'ip', table: r[2]!, name: r[4], rest: r[5]! };
  }
  const t = TABLE_EVENT.exec(line);
  if (t) return { verb: t[1] === 'DEL' ? 'delete' : 'add', kind: 'table', family: t[3]!, table: t[2]!, name: undefined, rest: '' };
  return undefined;
}

/** The generation number and committing process's PID of a generation line, or undefined. */
export function generationLine(line: string): { gen: number; pid: number } | undefined {
  const g = GENERATION.exec(line);
  return g ? { gen: Number(g[1]), pid: Number(g[2]) } : undefined;
}

/**
 * Tells generations committed by our tools from foreign ones by the committing PID. A tool's PID
 * is known only once it has run, and the monitor may print its commit before or after that: a
 * generation from an unknown PID seen while a write of ours runs is held until the write ends.
 */
export class OwnCommits {
  /** Writes of ours running. */
  private running = 0;
  private held: Array<{ pid: number; lines: string[] }> = [];

  constructor(
    private readonly isOwn: (pid: number) => boolean,
    /** Receives the change lines of each foreign generation. */
    private readonly foreign: (lines: string[]) => void,
  ) {}

  generation(pid: number, lines: string[]): void {
    if (this.isOwn(pid)) return;
    if (this.running > 0) this.held.push({ pid, lines });
    else this.foreign(lines);
  }

  /** A tool of ours reported its PID: what it committed is not foreign. */
  noted(pid: number): void {
    if (this.held.some((h) => h.pid === pid)) this.held = this.held.filter((h) => h.pid !== pid);
  }

  async write<T>(write: () => Promise<T>): Promise<T> {
    this.running++;
    try {
      return await write();
    } finally {
      if (--this.running === 0) {
        // What is still held came from processes that are not ours.
        const held = this.held;
        this.held = [];
        for (const h of held) if (!this.isOwn(h.pid)) this.foreign(h.lines);
      }
    }
  }
}

export class XtablesMonitor extends GenerationMonitor {
  private readonly own = new OwnCommits(isOwnTool, (lines) => this.recordForeign(lines));
  private readonly unsubscribe = onOwnTool((pid) => this.own.noted(pid));

  constructor(wrap: string[]) {
    // Its output goes to a pipe: line-buffered, so that each change is seen as it is committed.
    super(wrap, ['stdbuf', '-oL', 'xtables-monitor', '-e'], 'xtables-monitor');
  }

  /**
   * A chain added and deleted in one iptables-restore transaction of mangle (which holds our
   * canary). An `nft` marker would cost ~1 s at 110,000 chains: nft reads the whole ruleset first.
   */
  protected commitMarker(name: string): Promise<void> {
    return restore(`*mangle\n:${name} - [0:0]\n-X ${name}\nCOMMIT\n`, 'IPv4', 'nft', this.exec);
  }

  protected classify(line: string): MonitorLine {
    const gen = generationLine(line);
    if (gen) return { type: 'generation', ...gen };
    const marker = MARKER.exec(line);
    if (marker) return marker[1] === 'N' ? { type: 'marker', kind: marker[2] as MarkerKind, id: Number(marker[3]), rep: Number(marker[4] ?? 0) } : undefined;
    return RULE_EVENT.test(line) || TABLE_EVENT.test(line) ? { type: 'change' } : undefined;
  }

  protected parseChange(line: string): MonitorEvent | undefined {
    return parseXtablesEvent(line);
  }

  protected onGeneration(pid: number, lines: string[]): void {
    this.own.generation(pid, lines);
  }

  /** Runs one of our writes; the PIDs of its tools are noted as they finish. */
  ownWrite<T>(write: () => Promise<T>): Promise<T> {
    return this.own.write(write);
  }

  override stop(): void {
    this.unsubscribe();
    super.stop();
  }
}

const monitors = new Map<string, XtablesMonitor>();

/** The monitor for a command prefix, started on first use and restarted when it has died. */
export function xtablesMonitorFor(opts: ExecOptions): XtablesMonitor {
  return helperFor(monitors, opts, (wrap) => new XtablesMonitor(wrap));
}

/**
 * A change to one of our chains, or to a built-in chain naming one of ours (a jump of ours added
 * or deleted), or the table itself deleted. Other tools' chains are not ours.
 */
export function touchesOurRules(family: IPFamily, e: MonitorEvent): boolean {
  if (e.family !== (family === 'IPv6' ? 'ip6' : 'ip') || !TABLES.has(e.table)) return false;
  if (e.kind === 'table') return e.verb === 'delete';
  if ((e.kind !== 'rule' && e.kind !== 'chain') || !e.name) return false;
  if (e.name.startsWith('KUBE-')) return true;
  if (!BUILTIN_CHAINS.has(e.name)) return false;
  return e.kind === 'chain' ? e.verb === 'delete' || e.verb === 'flush' : /\bKUBE-/.test(e.rest);
}

/** The monitor's view of one family's iptables-nft rules. */
export function iptablesForeignWatch(family: IPFamily, exec: ExecOptions, fullReadEvery: number): ForeignWatch {
  return new ForeignWatch(() => xtablesMonitorFor(exec), `iptables ${family}`, (e) => touchesOurRules(family, e), fullReadEvery);
}
