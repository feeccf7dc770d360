// Whether a verification must read the kernel back (seconds at 10,000 services): only when a
// monitor reports a foreign change, when changes may have gone unseen, and as a backstop. A write
// too large to be watched is proven free of foreign commits by generation numbers: nf_tables
// counts committed transactions per network namespace, one by one, so when the monitor started
// after the write first shows a probe, the generations since a marker committed just before the
// write are either exactly ours (the write's transactions and the new monitor's earlier probes)
// or some came from someone else.
import { log } from '../../log.js';
import { waitAtMost, type CommitCount, type ForeignChanges, type GenerationMonitor, type MonitorEvent, type WriteBracket } from './watch.js';
import { collectGarbage } from '../../node/memory.js';

export type { CommitCount, WriteBracket } from './watch.js';

/** How long verify() waits for the monitor to show every change committed so far. */
const CATCH_UP_MS = 10000;
/**
 * How long after an unwatched write its proof is waited for while the new monitor loads the
 * ruleset (a verification is put off meanwhile, holding no change); then the kernel is read back.
 */
const PROOF_WAIT_MS = 60_000;
/**
 * The backstop read-back may take at most this share of the time: at 10,000 services the
 * iptables-nft one takes over a minute, which every 10 periods would be a third of a core.
 */
const BACKSTOP_TIME_SHARE = 0.05;
/**
 * How long an unwatched write waits for a monitor still starting, to learn the generation before
 * it (at process start: on an empty kernel it is ready within a probe interval).
 */
const READY_BEFORE_WRITE_MS = 1500;
/**
 * How long a change waits for a monitor that has just been started to show its first probe (a
 * listener subscribes at once: one probe's round trip). Written while the monitor loads, a write
 * that overlaps that probe leaves the proof of the unwatched write before it unknown, and the
 * kernel is read back (seconds at 30,000 services).
 */
const READY_BEFORE_CHANGE_MS = 250;

/** A write of ours made unwatched, to be proven alone in its window of generations. */
interface UnwatchedWindow {
  /** Generation of the marker committed just before the write. */
  before: number;
  /** Transactions the write committed. */
  transactions: number;
  /** When the write ended: the monitor giving the proof must have started after it. */
  endedAt: number;
}


/**
 * One backend's use of a monitor: its writes kept apart from foreign ones, the foreign changes to
 * its objects collected, and the decision whether a verification must read the kernel back.
 */
export class ForeignWatch {
  private monitor: GenerationMonitor | undefined;
  private restarted = false;
  /** The last unwatched write, while its proof is pending. */
  private unwatched: UnwatchedWindow | undefined;
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

  /**
   * Runs a write of ours so that the monitor does not take it for a foreign change. While the
   * monitor is loading it cannot tell, so the next verification reads the kernel back, unless
   * the write (counting its transactions in `count`) ends up proven ours with an unwatched one.
   */
  async write<T>(write: (count: CommitCount, bracket?: WriteBracket) => Promise<T>): Promise<T> {
    let mon = this.running();
    if (mon && !mon.isReady) {
      await waitAtMost(mon.ready, READY_BEFORE_CHANGE_MS);
      mon = this.running();
    }
    if (mon?.isReady) return mon.ownWrite((bracket) => write({}, bracket));
    this.restarted = true;
    return mon ? mon.loadingWrite(write) : write({});
  }

  /**
   * Runs a write too large to be watched: the kernel notifies a monitor of every element, which
   * doubled the cost of a 10,000-service full sync. The monitor is stopped for it and a new one
   * started after it; the next verification reads the kernel back unless generation numbers
   * prove that nobody else committed meanwhile. That proof needs `replacesAll` (the write
   * replaces every object this watch follows, so what happened before it does not matter) and
   * the write's count of its transactions.
   */
  async unwatchedWrite<T>(write: (count: CommitCount) => Promise<T>, replacesAll = false): Promise<T> {
    const mon = this.running();
    let before: number | undefined;
    if (mon && replacesAll) {
      if (!mon.isReady) await waitAtMost(mon.ready, READY_BEFORE_WRITE_MS);
      if (mon.isReady) before = await mon.syncedGeneration(CATCH_UP_MS);
    }
    this.monitor?.stop();
    this.restarted = true;
    this.unwatched = undefined;
    const count: CommitCount = {};
    const result = await write(count);
    const endedAt = performance.now();
    // Started now, the monitor loads the ruleset while the caller goes on.
    this.running();
    if (before !== undefined && count.transactions !== undefined) this.unwatched = { before, transactions: count.transactions, endedAt };
    return result;
  }

  /**
   * Whether the generations between the marker before the last unwatched write and the first
   * probe `mon` showed are all ours. A monitor that did not start after the write, a probe not
   * yet shown, an unknown probe commit or any other count: not proven.
   */
  private provenOurs(mon: GenerationMonitor | undefined): boolean {
    const w = this.unwatched;
    const probe = mon?.firstProbe;
    if (!w || !mon || mon.startedAt < w.endedAt || !probe || probe.earlier === undefined) return false;
    const between = probe.gen - w.before - 1;
    const ours = w.transactions + probe.earlier;
    const proven = between === ours;
    log.v(2, proven ? `kernel rules not read back: generations ${w.before}..${probe.gen} are ours` : 'someone else committed during our unwatched write', {
      scope: this.scope,
      generations: between,
      ours,
    });
    return proven;
  }

  /**
   * Takes the foreign changes seen so far and says why the kernel must be read back: a foreign
   * change, no monitor (or one behind or restarted), a check still out of sync, or the backstop;
   * undefined when the monitor proves nothing of ours changed. With `retry`, nothing is decided
   * yet: ask again once it settles.
   */
  async readBackReason(inSync: boolean): Promise<{ reason: string | undefined; foreign: ForeignChanges | undefined; retry?: Promise<unknown> }> {
    // The monitor started after an unwatched write loads the whole ruleset before it is
    // subscribed: far cheaper than reading the table back, so the verification is put off
    // until it is ready (`retry`), rather than waited for while changes queue behind it.
    const starting = this.unwatched ? this.running() : undefined;
    if (starting && !starting.isReady) {
      const left = this.unwatched!.endedAt + PROOF_WAIT_MS - performance.now();
      if (left > 0) return { reason: undefined, foreign: undefined, retry: waitAtMost(starting.ready, left) };
    }
    const mon = this.watch();
    const current = mon ? await mon.caughtUp(CATCH_UP_MS) : false;
    if (mon && !current) log.warn(`${mon.label} is behind; reading the rules back instead`, { scope: this.scope });
    const foreign = mon?.take(this.scope);
    const sinceReadBack = Date.now() - this.lastReadBack.endedAt;
    const backstop = ++this.verifications >= this.fullReadEvery && sinceReadBack * BACKSTOP_TIME_SHARE >= this.lastReadBack.ms;
    // Every moment no monitor saw lies between the marker before the write and the new monitor's first probe.
    const restarted = this.restarted && !this.provenOurs(mon);
    this.restarted = false;
    this.unwatched = undefined;
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
      collectGarbage();
    }
  }

  /** Starts the monitor (if not running), so that it is ready by the first write. */
  start(): void {
    this.running();
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
