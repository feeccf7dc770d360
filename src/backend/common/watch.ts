// Noticing changes to our kernel rules made by anyone else, at no cost while nothing changes: a
// long-lived monitor process (`nft monitor`, `xtables-monitor -e`) prints every committed
// ruleset change, then a line naming the generation and the process that committed it. How a
// monitor's lines read and how it tells our commits from foreign ones is its own; what is
// shared is here: the process, readiness and catch-up probes, the foreign changes each follower
// picks, and the decision whether a verification must read the kernel back (which costs seconds
// at 10,000 services, so it is done only when a monitor reports a change, and as a backstop).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { DIE_WITH_PARENT, keepAlive, type ExecOptions } from '../../node/exec.js';
import { log } from '../../log.js';

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

/** Foreign changes to one follower's objects since they were last taken. */
export interface ForeignChanges {
  /** Changed objects, e.g. `delete element service-ips`, with how many changes each. */
  objects: Map<string, number>;
  /** Chains whose rules were changed, added or deleted: their content is unknown now. */
  chains: Set<string>;
  /** The table itself was deleted. */
  tableDeleted: boolean;
}

/** Throwaway tables committed as markers are named `${MARK_PREFIX}${kind}-${id}`. */
export const MARK_PREFIX = 'kpts-write-mark-';
export type MarkerKind = 'begin' | 'end' | 'probe' | 'sync';

/** What one line of a monitor's output is. Change lines are kept raw and parsed only when foreign. */
export type MonitorLine =
  | { type: 'generation'; pid: number }
  | { type: 'marker'; kind: MarkerKind; id: number }
  | { type: 'change' }
  | undefined;

/**
 * Time a monitor gets to show that it is subscribed. `nft monitor` first loads the whole ruleset
 * (seconds at 10,000 services), and any commit meanwhile makes it start that load again: probes
 * come at growing intervals so that one load can finish.
 */
const READY_TIMEOUT_MS = 300_000;
const FIRST_PROBE_INTERVAL_MS = 500;
const MAX_PROBE_INTERVAL_MS = 16_000;

/** The process, its lines, the probes and the foreign changes; subclasses say whose a generation is. */
export abstract class GenerationMonitor {
  dead = false;
  /** Resolves true once the monitor has shown a probe transaction (it sees every commit from then on). */
  readonly ready: Promise<boolean>;
  /** True from the first probe the monitor shows; before, its events are not classified. */
  isReady = false;
  private readonly child: ChildProcessWithoutNullStreams;
  private buf = '';
  private lines: string[] = [];
  /** Who wants which foreign changes, by a name of the follower's choice. */
  private readonly followers = new Map<string, (e: MonitorEvent) => boolean>();
  private readonly foreign = new Map<string, ForeignChanges>();
  /** Probe and sync markers printed and not yet waited for. */
  private readonly seen = new Set<string>();
  private readonly waiters = new Map<string, () => void>();
  protected seq = 0;

  constructor(
    protected readonly wrap: string[],
    command: string[],
    /** The tool's name, for the log. */
    readonly label: string,
  ) {
    // It never reads its input, so it would not notice the proxy being killed: the kernel kills it.
    const argv = [...DIE_WITH_PARENT, ...wrap, ...command];
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => this.onData(d));
    let stderr = '';
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
    this.child.stdin.on('error', () => undefined);
    const die = (): void => {
      if (this.dead) return;
      this.dead = true;
      for (const w of this.waiters.values()) w();
      this.waiters.clear();
      log.warn(`${label} exited; foreign changes are found by reading the rules back`, { stderr: stderr.trim() });
    };
    this.child.on('error', die);
    this.child.on('exit', die);
    keepAlive(this.child, false);
    process.once('exit', () => this.child.kill('SIGKILL'));
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
  abstract ownWrite<T>(write: () => Promise<T>): Promise<T>;
  /** A marker was printed (subclasses that bracket writes with markers track them). */
  protected onMarker(_kind: MarkerKind, _id: number): void {}

  protected mark(kind: MarkerKind, id: number): Promise<void> {
    return this.commitMarker(`${MARK_PREFIX}${kind}-${id}`);
  }

  /**
   * Commits a marker and waits until the monitor prints it: every change committed before has
   * been seen by then. False when it does not show within `timeoutMs` (or the monitor died).
   */
  private async shown(kind: 'probe' | 'sync', timeoutMs: number, repeat = false): Promise<boolean> {
    if (this.dead) return false;
    const id = this.seq++;
    const key = `${kind}-${id}`;
    const shown = new Promise<void>((resolve) => this.waiters.set(key, resolve));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    let again: NodeJS.Timeout | undefined;
    let interval = FIRST_PROBE_INTERVAL_MS;
    const remark = (): void => {
      again = setTimeout(() => {
        void this.mark(kind, id).catch(() => undefined);
        interval = Math.min(interval * 2, MAX_PROBE_INTERVAL_MS);
        remark();
      }, interval);
      again.unref();
    };
    try {
      await this.mark(kind, id);
      if (repeat) remark();
      await Promise.race([shown, timeout]);
    } catch {
      // A marker that cannot be committed never shows.
    } finally {
      clearTimeout(again);
      clearTimeout(timer);
      this.waiters.delete(key);
    }
    const ok = this.seen.delete(key);
    return ok && !this.dead;
  }

  /**
   * Waits until the monitor has printed every change committed so far (it may lag behind a
   * large write). False when it has not within `timeoutMs`.
   */
  caughtUp(timeoutMs: number): Promise<boolean> {
    return this.shown('sync', timeoutMs);
  }

  private async probe(): Promise<boolean> {
    // A monitor may subscribe only after loading the ruleset: repeat the probe until it shows.
    const ok = await this.shown('probe', READY_TIMEOUT_MS, true);
    if (!ok) {
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
    this.child.kill('SIGKILL');
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.onLine(line);
    }
  }

  private onLine(line: string): void {
    const l = this.classify(line);
    if (!l) return;
    if (l.type === 'change') {
      this.lines.push(line);
      return;
    }
    if (l.type === 'generation') {
      const lines = this.lines;
      this.lines = [];
      // Before the first probe whose changes these are is unknown: the backend reads the kernel
      // back for that time instead.
      if (this.isReady && lines.length > 0) this.onGeneration(l.pid, lines);
      return;
    }
    if (l.kind === 'probe') this.isReady = true;
    this.onMarker(l.kind, l.id);
    const key = `${l.kind}-${l.id}`;
    if (this.waiters.has(key)) {
      this.seen.add(key);
      this.waiters.get(key)!();
    }
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

/** How long verify() waits for the monitor to show every change committed so far. */
const CATCH_UP_MS = 10000;
/**
 * The backstop read-back may take at most this share of the time: at 10,000 services the
 * iptables-nft one takes over a minute, which every 10 periods would be a third of a core.
 */
const BACKSTOP_TIME_SHARE = 0.05;

/**
 * One backend's use of a monitor: its writes kept apart from foreign ones, the foreign changes to
 * its objects collected, and the decision whether a verification must read the kernel back.
 */
export class ForeignWatch {
  private monitor: GenerationMonitor | undefined;
  private restarted = false;
  /** Verifications since the last read-back. */
  private verifications = 0;
  private lastReadBack = { endedAt: 0, ms: 0 };

  /**
   * @param monitorFor the monitor process (started on first use, replaced when it died)
   * @param scope names this backend's foreign changes (one per backend and family)
   * @param relevant picks the changes to this backend's objects
   * @param fullReadEvery read back after this many verifications without one even when nothing
   *   was seen, once the time since the last read-back is 20 times what it cost
   */
  constructor(
    private readonly monitorFor: () => GenerationMonitor,
    private readonly scope: string,
    private readonly relevant: (e: MonitorEvent) => boolean,
    private readonly fullReadEvery: number,
  ) {}

  /**
   * The monitor when it is subscribed, else undefined (it is started on first use). Nothing waits
   * for it: whatever happened before it is subscribed is checked by reading the kernel back at
   * the next verification.
   */
  private watch(): GenerationMonitor | undefined {
    const mon = this.running();
    if (mon?.isReady) return mon;
    this.restarted = true;
    return undefined;
  }

  /** The monitor process, subscribed or still loading; undefined when it has died. */
  private running(): GenerationMonitor | undefined {
    const mon = this.monitorFor();
    if (mon !== this.monitor) {
      // A new monitor means changes may have gone unseen in between.
      if (this.monitor) this.restarted = true;
      this.monitor = mon;
      mon.follow(this.scope, this.relevant);
    }
    return mon.dead ? undefined : mon;
  }

  /** Runs a write of ours so that the monitor does not take it for a foreign change. */
  async write<T>(write: () => Promise<T>): Promise<T> {
    const mon = this.running();
    // A write the monitor may not see: the next verification reads the kernel back.
    if (!mon?.isReady) this.restarted = true;
    return mon ? mon.ownWrite(write) : write();
  }

  /**
   * Runs a write too large to be watched: the kernel notifies a monitor of every element, which
   * doubled the cost of a 10,000-service full sync. The monitor is stopped for it (a new one
   * starts on next use) and the next verification reads the kernel back.
   */
  async unwatchedWrite<T>(write: () => Promise<T>): Promise<T> {
    this.monitor?.stop();
    this.restarted = true;
    return write();
  }

  /**
   * Takes the foreign changes seen so far and says why the kernel must be read back: a foreign
   * change, no monitor (or one behind or restarted), a check still out of sync, or the backstop;
   * undefined when the monitor proves nothing of ours changed.
   */
  async readBackReason(inSync: boolean): Promise<{ reason: string | undefined; foreign: ForeignChanges | undefined }> {
    const mon = this.watch();
    const current = mon ? await mon.caughtUp(CATCH_UP_MS) : false;
    if (mon && !current) log.warn(`${mon.label} is behind; reading the rules back instead`, { scope: this.scope });
    const foreign = mon?.take(this.scope);
    const sinceReadBack = Date.now() - this.lastReadBack.endedAt;
    const backstop = ++this.verifications >= this.fullReadEvery && sinceReadBack * BACKSTOP_TIME_SHARE >= this.lastReadBack.ms;
    const restarted = this.restarted;
    this.restarted = false;
    const reasons: Array<[boolean, string]> = [
      [foreign !== undefined, 'foreign change'],
      [!mon, 'no monitor'],
      [!current, 'monitor behind'],
      [restarted, 'monitor restarted'],
      [!inSync, 'not repaired yet'],
      [backstop, 'backstop'],
    ];
    const reason = reasons.find(([applies]) => applies)?.[1];
    if (!reason && mon) log.v(2, `kernel rules not read back: the ${mon.label} saw no foreign change`, { scope: this.scope });
    return { reason, foreign };
  }

  /** Runs a read-back, timed: the backstop waits long enough that read-backs stay a small share of the time. */
  async readBack<T>(read: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    try {
      return await read();
    } finally {
      this.lastReadBack = { endedAt: Date.now(), ms: Date.now() - t0 };
      this.verifications = 0;
    }
  }

  /** Drops the foreign changes seen so far (a full rewrite is about to replace what they touched). */
  forget(): void {
    this.watch()?.take(this.scope);
  }

  /** Whether foreign changes are waiting for the next verification. */
  pending(): boolean {
    return this.monitor?.hasForeign(this.scope) ?? false;
  }
}
