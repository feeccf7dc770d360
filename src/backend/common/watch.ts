// Noticing changes to our kernel rules made by anyone else, at no cost while nothing changes: a
// long-lived monitor process (nftables: a netlink listener; iptables-nft: `xtables-monitor -e`) prints every committed
// ruleset change, then a line naming the generation and the process that committed it. How a
// monitor's lines read and how it tells our commits from foreign ones is its own; what is
// shared is here: the process, readiness and catch-up probes, the generation numbers of the
// markers, and the foreign changes each follower picks. Whether a verification must read the
// kernel back is decided in ./foreign-watch.ts.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { keepAlive, spawnTool, type ExecOptions } from '../../node/exec.js';
import { log } from '../../log.js';
import { LineSplitter } from '../../lines.js';

/** One change a monitor printed, e.g. a rule deleted from a chain of a table. */
export interface MonitorEvent {
  /** add, delete, create, insert… */
  verb: string;
  /** rule, chain, table, set, element… */
  kind: string;
  /** `ip` or `ip6` (nftables family names). */
  family: string;
  table: string;
  /** The chain, set or map changed (absent for a table). */
  name: string | undefined;
  /** The rest of the line: a rule's text when the monitor prints it. */
  rest: string;
}

/** What a write reports: how many transactions it committed (left undefined when unknown). */
export interface CommitCount {
  transactions?: number;
}

/**
 * Marker commands a write puts at the start of its first transaction and at the end of its last,
 * instead of the monitor committing them as transactions of their own: one commit per write
 * instead of three, and none for a write with nothing to send.
 */
export interface WriteBracket {
  begin: string;
  end: string;
  /** Called by the write once its last transaction, the one with `end`, is committed. */
  ended(): void;
}

/** Foreign changes to one follower's objects since they were last taken. */
export interface ForeignChanges {
  /** Changed objects, e.g. `delete element service-ips`, with how many changes each. */
  objects: Map<string, number>;
  /** Chains whose rules were changed, added or deleted: their content is unknown now. */
  chains: Set<string>;
  /** The table itself was deleted. */
  tableDeleted: boolean;
}

/**
 * Throwaway tables committed as markers are named `${MARK_PREFIX}${kind}-${id}`, and repeated
 * probes `${MARK_PREFIX}probe-${id}-${rep}`: each repetition is a commit of its own, which the
 * generation count of an unwatched write must account for.
 */
export const MARK_PREFIX = 'kpts-write-mark-';
export type MarkerKind = 'begin' | 'end' | 'probe' | 'sync';

export function markerName(kind: MarkerKind, id: number, rep?: number): string {
  return `${MARK_PREFIX}${kind}-${id}${rep === undefined ? '' : `-${rep}`}`;
}

/** What one line of a monitor's output is. Change lines are kept raw and parsed only when foreign. */
export type MonitorLine =
  | { type: 'generation'; pid: number; gen: number }
  | { type: 'marker'; kind: MarkerKind; id: number; rep: number }
  | { type: 'change' }
  /** The monitor says it has just subscribed (only monitors that announce it). */
  | { type: 'subscribed' }
  | undefined;

/**
 * Time a monitor gets to show that it is subscribed. A monitor may load the whole ruleset first
 * (seconds at 10,000 services), and any commit meanwhile may make it start that load again:
 * probes come at growing intervals so that one load can finish.
 */
const READY_TIMEOUT_MS = 300_000;
const FIRST_PROBE_INTERVAL_MS = 100;
/** How long the first probe waits for a monitor that announces its subscription to do so. */
const ANNOUNCE_WAIT_MS = 2000;
const MAX_PROBE_INTERVAL_MS = 16_000;

/** `p`'s value, or undefined once `ms` have passed. */
export const waitAtMost = <T>(p: Promise<T>, ms: number): Promise<T | undefined> => {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
};

/** The process, its lines, the probes and the foreign changes; subclasses say whose a generation is. */
export abstract class GenerationMonitor {
  dead = false;
  /** Resolves true once the monitor has shown a probe transaction (it sees every commit from then on). */
  readonly ready: Promise<boolean>;
  /** True from the first probe the monitor shows; before, its events are not classified. */
  isReady = false;
  /** When the process was started (performance.now()). */
  readonly startedAt = performance.now();
  /** The generation number of the last generation line printed. */
  lastGen: number | undefined;
  /**
   * The first probe shown: its generation, and how many probe commits of this monitor came
   * before it (undefined when one had not yet answered, so its commit is unknown).
   */
  firstProbe: { gen: number; earlier: number | undefined } | undefined;
  /**
   * Each probe commit (by repetition) and each write of ours made while loading, with its outcome
   * or count and ticks of a counter taken when it started and ended: what ended before the first
   * shown probe started committed before it.
   */
  private tick = 0;
  private readonly probeCommits: Array<{ outcome: 'pending' | 'ok' | 'failed'; start: number; end?: number }> = [];
  private readonly loadingWrites: Array<{ start: number; end?: number; transactions?: number }> = [];
  /** A waited-for marker was printed: the next generation line is its transaction's. */
  private markerShown: { key: string; kind: MarkerKind; rep: number } | undefined;
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lineSplitter = new LineSplitter((line) => this.onLine(line));
  /** Removed when the tool dies or is stopped: a monitor restarted after every unwatched write would otherwise leave one listener each. */
  private readonly killAtExit = (): void => void this.child.kill('SIGKILL');
  private lines: string[] = [];
  /** Who wants which foreign changes, by a name of the follower's choice. */
  private readonly followers = new Map<string, (e: MonitorEvent) => boolean>();
  private readonly foreign = new Map<string, ForeignChanges>();
  /** Generations of probe and sync markers printed and not yet waited for. */
  private readonly seen = new Map<string, number>();
  private readonly waiters = new Map<string, () => void>();
  protected seq = 0;
  /** Resolves when the tool has said it subscribed (at once for a tool that does not say). */
  private readonly announced: Promise<void>;
  private onAnnounced: () => void = () => undefined;

  constructor(
    protected readonly wrap: string[],
    command: string[],
    /** The tool's name, for the log. */
    readonly label: string,
    /**
     * The tool prints a line as soon as it has subscribed: the first probe is committed then,
     * not before (a probe committed before is missed, and the next comes 100 ms later).
     */
    announcesSubscription = false,
  ) {
    // It never reads its input, so it would not notice the proxy being killed: the kernel kills it.
    this.child = spawnTool(command, wrap);
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => this.onData(d));
    let stderr = '';
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
    this.child.stdin.on('error', () => undefined);
    const die = (): void => {
      if (this.dead) return;
      this.dead = true;
      process.off('exit', this.killAtExit);
      for (const w of this.waiters.values()) w();
      this.waiters.clear();
      log.warn(`${label} exited; foreign changes are found by reading the rules back`, { stderr: stderr.trim() });
    };
    this.child.on('error', die);
    this.child.on('exit', die);
    keepAlive(this.child, false);
    process.once('exit', this.killAtExit);
    this.announced = announcesSubscription ? new Promise((resolve) => (this.onAnnounced = resolve)) : Promise.resolve();
    this.ready = this.probe();
  }

  protected get exec(): ExecOptions {
    return this.wrap.length > 0 ? { wrap: this.wrap } : {};
  }

  /** Commits a transaction that adds and deletes the table `name`, leaving no trace. */
  protected abstract commitMarker(name: string): Promise<void>;
  /** What a line of output is. */
  protected abstract classify(line: string): MonitorLine;
  /** Parses a change line into an event (undefined: not one a follower can care about). */
  protected abstract parseChange(line: string): MonitorEvent | undefined;
  /** A generation was committed by `pid` with these change lines: decide whose it is. */
  protected abstract onGeneration(pid: number, lines: string[]): void;
  /** Runs one of our writes so that its changes are not taken for foreign ones. */
  abstract ownWrite<T>(write: (bracket?: WriteBracket) => Promise<T>): Promise<T>;
  /** Every generation line ends here, after onGeneration (called only for one with changes). */
  protected generationDone(): void {}
  /** A marker was printed (subclasses that bracket writes with markers track them). */
  protected onMarker(_kind: MarkerKind, _id: number): void {}

  protected mark(kind: MarkerKind, id: number, rep?: number): Promise<void> {
    return this.commitMarker(markerName(kind, id, rep));
  }

  /** Commits a probe marker, recording whether the commit happened. */
  private async markProbe(id: number): Promise<void> {
    const rep = this.probeCommits.length;
    const commit: (typeof this.probeCommits)[number] = { outcome: 'pending', start: this.tick++ };
    this.probeCommits.push(commit);
    try {
      await this.mark('probe', id, rep);
      commit.outcome = 'ok';
    } catch (e) {
      commit.outcome = 'failed';
      throw e;
    } finally {
      commit.end = this.tick++;
    }
  }

  /**
   * Runs a write of ours while the monitor still loads the ruleset: it cannot be told from a
   * foreign one by the monitor, but its transactions (counted by the write) are among the
   * commits before the first probe when it ended before that probe was committed, so that an
   * unwatched write's proof still holds.
   */
  async loadingWrite<T>(write: (count: CommitCount) => Promise<T>): Promise<T> {
    const w: { start: number; end?: number; transactions?: number } = { start: this.tick++ };
    this.loadingWrites.push(w);
    const count: CommitCount = {};
    try {
      return await write(count);
    } finally {
      w.transactions = count.transactions;
      w.end = this.tick++;
    }
  }

  /**
   * Commits a marker and waits until the monitor prints it and its generation: every change
   * committed before has been seen by then. Gives that generation number, undefined when it
   * does not show within `timeoutMs` (or the monitor died).
   */
  private async shown(kind: 'probe' | 'sync', timeoutMs: number): Promise<number | undefined> {
    if (this.dead) return undefined;
    const id = this.seq++;
    const key = `${kind}-${id}`;
    const shown = new Promise<void>((resolve) => this.waiters.set(key, resolve));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    let again: NodeJS.Timeout | undefined;
    let interval = FIRST_PROBE_INTERVAL_MS;
    const commit = (): Promise<void> => (kind === 'probe' ? this.markProbe(id) : this.mark(kind, id));
    // A monitor may subscribe only after loading the ruleset: a probe is repeated until it shows.
    const remark = (): void => {
      again = setTimeout(() => {
        void commit().catch(() => undefined);
        interval = Math.min(interval * 2, MAX_PROBE_INTERVAL_MS);
        remark();
      }, interval);
      again.unref();
    };
    try {
      await commit();
      if (kind === 'probe') remark();
      await Promise.race([shown, timeout]);
    } catch {
      // A marker that cannot be committed never shows.
    } finally {
      clearTimeout(again);
      clearTimeout(timer);
      this.waiters.delete(key);
    }
    const gen = this.seen.get(key);
    this.seen.delete(key);
    return this.dead ? undefined : gen;
  }

  /**
   * Waits until the monitor has printed every change committed so far (it may lag behind a
   * large write). False when it has not within `timeoutMs`.
   */
  async caughtUp(timeoutMs: number): Promise<boolean> {
    return (await this.shown('sync', timeoutMs)) !== undefined;
  }

  /** Like caughtUp(), giving the generation number of the marker committed to check (undefined: not caught up). */
  syncedGeneration(timeoutMs: number): Promise<number | undefined> {
    return this.shown('sync', timeoutMs);
  }

  private async probe(): Promise<boolean> {
    // Bounded: a tool that never says so is probed all the same.
    await waitAtMost(this.announced, ANNOUNCE_WAIT_MS);
    const ok = (await this.shown('probe', READY_TIMEOUT_MS)) !== undefined;
    if (ok) log.v(2, `${this.label} subscribed`, { ms: Math.round(performance.now() - this.startedAt), probes: this.probeCommits.length });
    // A monitor stopped on purpose is no failure.
    if (!ok && !this.dead) {
      log.warn(`${this.label} did not start; foreign changes are found by reading the rules back`, {});
      this.stop();
    }
    return ok;
  }

  /** Records, under `scope`, the foreign changes `relevant` picks (changes seen before are not). */
  follow(scope: string, relevant: (e: MonitorEvent) => boolean): void {
    this.followers.set(scope, relevant);
  }

  /** Foreign changes a follower picked so far (undefined when none); taking them clears them. */
  take(scope: string): ForeignChanges | undefined {
    const f = this.foreign.get(scope);
    this.foreign.delete(scope);
    return f;
  }

  /** Whether foreign changes a follower picked are waiting to be taken. */
  hasForeign(scope: string): boolean {
    return this.foreign.has(scope);
  }

  stop(): void {
    this.dead = true;
    process.off('exit', this.killAtExit);
    // Nothing will show any more: probes and catch-ups waiting give up now.
    for (const w of this.waiters.values()) w();
    this.waiters.clear();
    this.child.kill('SIGKILL');
  }

  protected onData(d: string): void {
    this.lineSplitter.push(d);
  }

  private onLine(line: string): void {
    const l = this.classify(line);
    if (!l) return;
    if (l.type === 'subscribed') {
      this.onAnnounced();
      return;
    }
    if (l.type === 'change') {
      this.lines.push(line);
      return;
    }
    if (l.type === 'generation') {
      this.lastGen = l.gen;
      const lines = this.lines;
      this.lines = [];
      if (this.markerShown) this.markerGeneration(this.markerShown, l.gen);
      this.markerShown = undefined;
      // Before the first probe whose changes these are is unknown: the backend reads the kernel
      // back for that time instead.
      // Nor are they known while a write of ours begun during loading still runs.
      const writing = this.loadingWrites.some((w) => w.end === undefined);
      if (this.isReady && !writing && lines.length > 0) this.onGeneration(l.pid, lines);
      this.generationDone();
      return;
    }
    if (l.kind === 'probe') this.isReady = true;
    this.onMarker(l.kind, l.id);
    const key = `${l.kind}-${l.id}`;
    if (this.waiters.has(key)) this.markerShown = { key, kind: l.kind, rep: l.rep };
  }

  /** The generation line of a waited-for marker's transaction. */
  private markerGeneration(m: { key: string; kind: MarkerKind; rep: number }, gen: number): void {
    if (m.kind === 'probe' && !this.firstProbe) this.firstProbe = { gen, earlier: this.commitsBeforeProbe(m.rep) };
    this.seen.set(m.key, gen);
    this.waiters.get(m.key)?.();
  }

  /**
   * Our commits before probe repetition `rep`: the probes before it and the writes made while
   * loading that ended before it started. Undefined when that is unknown: a probe not yet
   * answered, a write of unknown count, or a write overlapping the probe.
   */
  private commitsBeforeProbe(rep: number): number | undefined {
    const before = this.probeCommits.slice(0, rep);
    if (before.some((c) => c.outcome === 'pending')) return undefined;
    let n = before.filter((c) => c.outcome === 'ok').length;
    const probe = this.probeCommits[rep]!;
    for (const w of this.loadingWrites) {
      if (w.end !== undefined && w.end < probe.start) {
        if (w.transactions === undefined) return undefined;
        n += w.transactions;
      } else if (probe.end === undefined || w.start < probe.end) {
        return undefined;
      }
    }
    return n;
  }

  /** Records a generation's changes as foreign, for every follower they are relevant to. */
  protected recordForeign(lines: readonly string[]): void {
    const events = lines.flatMap((l) => this.parseChange(l) ?? []);
    let picked = 0;
    for (const [scope, relevant] of this.followers) {
      for (const e of events) {
        if (!relevant(e)) continue;
        picked++;
        let f = this.foreign.get(scope);
        if (!f) this.foreign.set(scope, (f = { objects: new Map(), chains: new Set(), tableDeleted: false }));
        const what = `${e.verb} ${e.kind}${e.name && e.kind !== 'table' ? ` ${e.name}` : ''}`;
        f.objects.set(what, (f.objects.get(what) ?? 0) + 1);
        if ((e.kind === 'rule' || e.kind === 'chain') && e.name) f.chains.add(e.name);
        if (e.kind === 'table' && e.verb === 'delete') f.tableDeleted = true;
      }
    }
    if (picked > 0) log.v(2, 'foreign change to our rules seen', { monitor: this.label, changes: picked });
  }
}
