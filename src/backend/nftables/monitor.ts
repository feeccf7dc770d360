// Notices changes to our tables made by anyone else, at no cost while nothing changes: a
// long-lived `nft monitor` prints every committed ruleset change, then a
// `# new generation N by process PID (comm)` line. Our own writes are bracketed by two marker
// transactions (adding and deleting a throwaway table, sent through the nft session and so
// committed before and after the write), and the monitor prints changes in commit order: every
// change to our tables seen outside a bracket is someone else's. Reading the whole table back
// costs seconds at 10,000 services, so it is done only when this reports a change (and, as a
// backstop, at a longer interval).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { DIE_WITH_PARENT, helperFor, keepAlive, type ExecOptions } from '../../node/exec.js';
import { log } from '../../log.js';
import { applyScript } from './apply.js';
import { TABLE, type NftFamily } from './render.js';

/** Foreign changes to one family's table since they were last taken. */
export interface ForeignChanges {
  /** Changed objects, e.g. `delete element service-ips`, with how many changes each. */
  objects: Map<string, number>;
  /** Chains whose rules were changed, added or deleted: their content is unknown now. */
  chains: Set<string>;
  /** The table itself was deleted. */
  tableDeleted: boolean;
}

const MARK_PREFIX = 'kpts-write-mark-';
const GENERATION = /^# new generation \d+ by process (\d+) \(([^)]*)\)$/;
const MARKER_EVENT = new RegExp(`^(add|delete) table ip ${MARK_PREFIX}(begin|end|probe|sync)-(\\d+)$`);
// `add element ip kube-proxy service-ips { … }`, `delete rule ip kube-proxy services handle 6`,
// `delete table ip kube-proxy`, `add chain ip6 kube-proxy nat-output { … }`
const OUR_EVENT = new RegExp(`^(\\w+) (\\w+) (ip6?) ${TABLE}(?: ([^\\s{]+))?`);
/**
 * Time the monitor gets to show that it is subscribed. It first loads the whole ruleset (seconds
 * at 10,000 services), and any commit meanwhile makes it start that load again: probes come at
 * growing intervals so that one load can finish.
 */
const READY_TIMEOUT_MS = 300_000;
const FIRST_PROBE_INTERVAL_MS = 500;
const MAX_PROBE_INTERVAL_MS = 16_000;

interface PendingEvent {
  family: NftFamily;
  verb: string;
  kind: string;
  name: string | undefined;
}

export class NftMonitor {
  dead = false;
  /** Resolves true once the monitor has shown a probe transaction (it sees every commit from then on). */
  readonly ready: Promise<boolean>;
  /** True from the first probe the monitor shows; before, its events are not classified. */
  isReady = false;
  /** Writes of ours begun before the monitor was subscribed: their begin marker went unseen. */
  private earlyWrites = 0;
  private readonly child: ChildProcessWithoutNullStreams;
  private buf = '';
  private events: PendingEvent[] = [];
  private readonly openWrites = new Set<number>();
  private readonly foreign = new Map<NftFamily, ForeignChanges>();
  /** Probe and sync markers printed and not yet waited for. */
  private readonly seen = new Set<string>();
  private readonly waiters = new Map<string, () => void>();
  private seq = 0;

  constructor(private readonly wrap: string[]) {
    // It never reads its input, so it would not notice the proxy being killed: the kernel kills it.
    const argv = [...DIE_WITH_PARENT, ...wrap, 'nft', 'monitor'];
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => this.onData(d));
    this.child.stderr.resume();
    this.child.stdin.on('error', () => undefined);
    const die = (): void => {
      if (this.dead) return;
      this.dead = true;
      for (const w of this.waiters.values()) w();
      this.waiters.clear();
      log.warn('nft monitor exited; foreign changes are found by reading the table back', {});
    };
    this.child.on('error', die);
    this.child.on('exit', die);
    keepAlive(this.child, false);
    process.once('exit', () => this.child.kill('SIGKILL'));
    this.ready = this.probe();
  }

  private get exec(): ExecOptions {
    return this.wrap.length > 0 ? { wrap: this.wrap } : {};
  }

  /** Commits a marker transaction: its table is added and deleted at once, leaving no trace. */
  private async mark(kind: 'begin' | 'end' | 'probe' | 'sync', id: number): Promise<void> {
    const name = `${MARK_PREFIX}${kind}-${id}`;
    await applyScript(`add table ip ${name}\ndelete table ip ${name}\n`, this.exec);
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
    } finally {
      clearTimeout(again);
      clearTimeout(timer);
      this.waiters.delete(key);
    }
    const ok = this.seen.delete(key);
    return ok && !this.dead;
  }

  /**
   * Waits until the monitor has printed every change committed so far (it lags behind a large
   * write: tens of thousands of element lines). False when it has not within `timeoutMs`.
   */
  caughtUp(timeoutMs: number): Promise<boolean> {
    return this.shown('sync', timeoutMs);
  }

  private async probe(): Promise<boolean> {
    // The monitor subscribes only after loading the ruleset: repeat the probe until it shows.
    const ok = await this.shown('probe', READY_TIMEOUT_MS, true);
    if (!ok) {
      log.warn('nft monitor did not start; foreign changes are found by reading the table back', {});
      this.stop();
    }
    return ok;
  }

  /** Runs one of our writes between two markers, so that its changes are not taken for foreign ones. */
  async ownWrite<T>(write: () => Promise<T>): Promise<T> {
    const id = this.seq++;
    const early = !this.isReady;
    if (early) this.earlyWrites++;
    await this.mark('begin', id);
    try {
      return await write();
    } finally {
      await this.mark('end', id);
      if (early) this.earlyWrites--;
    }
  }

  /** Foreign changes to a family's table seen so far (undefined when none); taking them clears them. */
  take(family: NftFamily): ForeignChanges | undefined {
    const f = this.foreign.get(family);
    this.foreign.delete(family);
    return f;
  }

  /** Whether foreign changes to a family's table are waiting to be taken. */
  hasForeign(family: NftFamily): boolean {
    return this.foreign.has(family);
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
    if (GENERATION.test(line)) {
      this.endGeneration();
      return;
    }
    const marker = MARKER_EVENT.exec(line);
    if (marker) {
      if (marker[1] !== 'add') return;
      const id = Number(marker[3]);
      if (marker[2] === 'begin') this.openWrites.add(id);
      else if (marker[2] === 'end') this.openWrites.delete(id);
      if (marker[2] === 'probe') this.isReady = true;
      const key = `${marker[2]}-${id}`;
      if (this.waiters.has(key)) {
        this.seen.add(key);
        this.waiters.get(key)!();
      }
      return;
    }
    const ev = OUR_EVENT.exec(line);
    if (ev) this.events.push({ verb: ev[1]!, kind: ev[2]!, family: ev[3] as NftFamily, name: ev[4] });
  }

  /** A generation's changes are ours when a write of ours was open while it was committed. */
  private endGeneration(): void {
    const events = this.events;
    this.events = [];
    // Before the first probe (and during writes begun before it) whose changes these are is unknown:
    // the backend reads the table back for that time instead.
    if (!this.isReady || this.earlyWrites > 0 || this.openWrites.size > 0 || events.length === 0) return;
    for (const e of events) {
      let f = this.foreign.get(e.family);
      if (!f) this.foreign.set(e.family, (f = { objects: new Map(), chains: new Set(), tableDeleted: false }));
      const what = `${e.verb} ${e.kind}${e.name && e.kind !== 'table' ? ` ${e.name}` : ''}`;
      f.objects.set(what, (f.objects.get(what) ?? 0) + 1);
      if ((e.kind === 'rule' || e.kind === 'chain') && e.name) f.chains.add(e.name);
      if (e.kind === 'table' && e.verb === 'delete') f.tableDeleted = true;
    }
    log.v(2, 'foreign change to our nftables table seen', { changes: events.length });
  }
}

const monitors = new Map<string, NftMonitor>();

/** The monitor for a command prefix, started on first use and restarted when it has died. */
export function monitorFor(opts: ExecOptions): NftMonitor {
  return helperFor(monitors, opts, (wrap) => new NftMonitor(wrap));
}
