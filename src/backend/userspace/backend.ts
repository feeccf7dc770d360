// The userspace (legacy) mode: an in-process proxy listens on one port per service port and
// policy, and nat rules redirect service traffic to it. Its data plane is this process, so
// stopping removes the rules (traffic could not flow without it anyway).
import { setImmediate } from 'node:timers/promises';
import type { Backend, BackendConfig, CarriedTraffic, SyncResult, VerifyResult } from '../types.js';
import type { Snapshot } from '../../model/types.js';
import { log } from '../../log.js';
import type { ExecOptions } from '../../node/exec.js';
import { FragmentStore } from '../common/fragment-store.js';
import type { Fragment, ObjectKind } from '../common/fragment.js';
import { removeIptablesLeftovers } from '../common/leftovers.js';
import { collectGarbage } from '../../node/memory.js';
import { sameMultiset } from '../common/verify.js';
import { ensureJumps, parseSave, restore, saveTables, type Flavour } from '../iptables/apply.js';
import { startUpFlavour, type StartUp } from '../iptables/startup.js';
import { renderContext } from '../iptables/render.js';
import { opsToRestore } from '../iptables/restore.js';
import { toRestoreInput, type IptChain } from '../iptables/syntax.js';
import { isUserspaceChain, USERSPACE_CHAINS } from './names.js';
import { planServicePort, planUserspace, type ListenerSpec, type ServicePortPlan } from './plan.js';
import { redirectJumps, renderRedirects, type LocalPods } from './render.js';

/** The store's collection of each chain: one string, not one per rule kept. */
const COLLECTIONS = new Map(USERSPACE_CHAINS.map((c) => [c, `nat/${c}`]));

/** The in-process proxy as the backend drives it. */
export interface ListenerPool {
  /** Opens, updates and closes listeners to match the whole set; returns the port of each listener it serves. */
  update(listeners: ListenerSpec[]): Promise<Map<string, number>>;
  /** The same for these listeners only: `removed` keys close, the others are left alone. */
  change(listeners: ListenerSpec[], removed: Iterable<string>): Promise<Map<string, number>>;
  close(): Promise<void>;
  stats(): Omit<CarriedTraffic, 'purpose'>;
}

/** The pool's counters as a backend reports them. */
export function carried(pool: ListenerPool | undefined, purpose: CarriedTraffic['purpose']): CarriedTraffic | undefined {
  if (!pool) return undefined;
  const s = pool.stats();
  return { purpose, accepted: s.accepted, refused: s.refused, activeConnections: s.activeConnections, udpSessions: s.udpSessions, bytesIn: s.bytesIn, bytesOut: s.bytesOut };
}

export interface UserspaceBackendOptions extends ExecOptions {
  dryRun?: boolean;
  out?: (text: string) => void;
  /** Makes the proxy for this family (not called in a dry run: nothing is bound). */
  createPool: () => ListenerPool;
  /** NodePort addresses of this family; null means every local address. */
  nodePortIPs: string[] | null;
  /** The flavour to use; detected from the node's rules when absent. */
  flavour?: Flavour;
  /** The start-up shared by every family: the node's flavour, the other modes' leftovers removed. */
  startUp?: () => Promise<StartUp>;
}

/**
 * The first sync goes in about ten steps of at least 50 service ports: each step's listeners open
 * while the last step's rules load (1,000 per step at 10,000 service ports: 0.95 s instead of 1.2).
 */
function coldStartStep(servicePorts: number): number {
  return Math.max(50, Math.ceil(servicePorts / 10));
}

// The redirect rules are items of the four shared chains; a service port owns no chain.
const NO_OBJECTS: ObjectKind<IptChain> = { id: (c) => `${c.table}/${c.name}`, same: () => true };

export class UserspaceBackend implements Backend {
  readonly mode = 'userspace';
  readonly family;
  private pool: ListenerPool | undefined;
  private flavour: Flavour | undefined;
  /** Each service port's redirect rules, as last written. */
  private store = new FragmentStore(NO_OBJECTS, [...COLLECTIONS.values()]);
  /** Service key → its listeners and portals, as of the last sync. */
  private planned = new Map<string, ServicePortPlan>();
  /** Listener key → the port it listens on. */
  private ports = new Map<string, number>();
  /** Service ports with a listener that got no port (no free port, a bind error): tried again at each sync. */
  private retry = new Set<string>();
  /** Nothing is planned or written yet: the first sync opens listeners and loads rules side by side. */
  private coldStart = true;
  /** Whether the kernel may not hold what the store says (start-up, a failed restore). */
  private needFull = true;
  /** The repair of a verification, while it writes (see stop()). */
  private repairing: Promise<void> | undefined;
  /** Traffic from this node's pods and the rest, as the iptables mode detects it (absent: not detectable). */
  private readonly localPods: LocalPods | undefined;

  constructor(
    cfg: BackendConfig,
    private readonly opts: UserspaceBackendOptions,
  ) {
    this.family = cfg.family;
    const ctx = renderContext(cfg);
    this.localPods = ctx.ifLocal && ctx.ifNotLocal ? { ifLocal: ctx.ifLocal, ifNotLocal: ctx.ifNotLocal } : undefined;
  }

  /**
   * A full sync plans every service port and sets the whole listener set; a partial one only the
   * changed service ports, and writes only their rules: a change costs the same at any size.
   */
  async sync(snapshot: Snapshot): Promise<SyncResult> {
    if (this.opts.dryRun) {
      // Ports are chosen when the proxy listens; a dry run binds nothing and shows them as 0.
      const plan = planUserspace(snapshot);
      const ports = new Map(plan.listeners.map((l) => [l.key, 0]));
      const chains = renderRedirects(plan, ports, this.opts.nodePortIPs, this.localPods);
      const note = '# proxy ports are chosen when the proxy listens: a dry run binds nothing and shows them as 0\n';
      (this.opts.out ?? ((t) => process.stdout.write(t)))(note + toRestoreInput({ family: this.family, chains }));
      return { operations: 0, full: true };
    }
    this.pool ??= this.opts.createPool();
    const flavour = await this.ensureFlavour();
    const full = this.needFull || snapshot.changes.full;
    const keys = full ? [...snapshot.services.keys()].sort() : [...new Set([...snapshot.changes.changed, ...snapshot.changes.deleted, ...this.retry])];
    if (this.coldStart) return { operations: await this.startCold(keys, snapshot, flavour), full: true };
    const listenerChanges = await this.updateListeners(snapshot, keys, full);
    const render = (k: string): Fragment<IptChain> | undefined => this.fragment(k);
    let operations = 0;
    try {
      if (full) {
        const before = this.chains();
        this.store = new FragmentStore(NO_OBJECTS, [...COLLECTIONS.values()]);
        this.store.update(keys, render, false);
        const chains = this.chains();
        // Planning every service port left its garbage; freed before the restore holds its text.
        collectGarbage();
        if (this.needFull || !sameRules(before, chains)) {
          await restore(toRestoreInput({ family: this.family, chains }), this.family, flavour, this.opts);
          operations += chains.reduce((n, c) => n + c.rules.length, 0);
        }
        operations += await ensureJumps(redirectJumps(this.opts.nodePortIPs), this.family, flavour, this.opts);
      } else {
        // The store changes in place: if the restore fails, the next sync is full.
        const ops = this.store.update(keys, render);
        const input = opsToRestore(ops);
        if (input) await restore(input, this.family, flavour, this.opts);
        operations += ops.length;
      }
    } catch (e) {
      this.needFull = true;
      throw e;
    }
    this.needFull = false;
    return { operations: operations + listenerChanges, full };
  }

  /**
   * The first sync: listeners open and their rules load in steps, each step's restore running
   * while the next step's listeners open. At 10,000 service ports opening the listeners and
   * loading their 20,000 rules take ~0.5 s each; one after the other they made the start 1 s.
   * The first step declares the chains (emptying what a crashed instance left); a failure
   * leaves the next sync full, as any failed write does.
   */
  private async startCold(keys: readonly string[], snapshot: Snapshot, flavour: Flavour): Promise<number> {
    const render = (k: string): Fragment<IptChain> | undefined => this.fragment(k);
    let operations = 0;
    let loading: Promise<void> = Promise.resolve();
    const step = coldStartStep(keys.length);
    try {
      for (let i = 0; i < keys.length || i === 0; i += step) {
        const part = keys.slice(i, i + step);
        await this.updateListeners(snapshot, part, false);
        const ops = this.store.update(part, render);
        const input = i === 0 ? toRestoreInput({ family: this.family, chains: this.chains() }) : opsToRestore(ops);
        operations += ops.length;
        // One restore at a time, in order; a failure is seen at the next await, not lost.
        const previous = loading;
        loading = previous.then(() => (input ? restore(input, this.family, flavour, this.opts) : undefined));
        loading.catch(() => {});
        // Opening listeners never waits for I/O: without a turn of the event loop here, a
        // finished restore is noticed (and the next one started) only after the last step.
        await setImmediate();
      }
      // Planning left its garbage: collected while the kernel loads the last rules.
      collectGarbage();
      await loading;
      operations += await ensureJumps(redirectJumps(this.opts.nodePortIPs), this.family, flavour, this.opts);
    } catch (e) {
      await loading.catch(() => {});
      // Which steps reached the kernel is unknown: the next sync is an ordinary full one.
      this.coldStart = false;
      this.needFull = true;
      throw e;
    }
    this.needFull = false;
    this.coldStart = false;
    return operations;
  }

  /**
   * Plans `keys` and brings their listeners up to date; returns how many listeners a partial sync
   * changed (a full one sets them all and reports its rule changes only).
   */
  private async updateListeners(snapshot: Snapshot, keys: readonly string[], full: boolean): Promise<number> {
    const listeners: ListenerSpec[] = [];
    const removed: string[] = [];
    if (full) this.planned = new Map();
    for (const key of keys) {
      const s = snapshot.services.get(key);
      const plan = s && planServicePort(s, key, this.family);
      const wanted = new Set(plan?.listeners.map((l) => l.key));
      for (const l of this.planned.get(key)?.listeners ?? []) if (!wanted.has(l.key)) removed.push(l.key);
      if (plan) {
        this.planned.set(key, plan);
        listeners.push(...plan.listeners);
      } else this.planned.delete(key);
    }
    const got = full ? await this.pool!.update(listeners) : await this.pool!.change(listeners, removed);
    if (full) this.ports = new Map();
    for (const k of removed) this.ports.delete(k);
    this.retry = full ? new Set() : new Set([...this.retry].filter((k) => !keys.includes(k)));
    for (const l of listeners) {
      const port = got.get(l.key);
      if (port === undefined) {
        this.ports.delete(l.key);
        // A protocol the proxy cannot serve will not get a port by trying again.
        if (l.protocol !== 'SCTP') this.retry.add(l.service);
      } else this.ports.set(l.key, port);
    }
    return full ? 0 : listeners.length + removed.length;
  }

  /** One service port's redirect rules, as items of the shared chains. */
  private fragment(key: string): Fragment<IptChain> | undefined {
    const plan = this.planned.get(key);
    if (!plan) return undefined;
    const items: Array<string | undefined> = [];
    for (const c of renderRedirects({ family: this.family, portals: plan.portals }, this.ports, this.opts.nodePortIPs, this.localPods)) {
      const collection = COLLECTIONS.get(c.name) ?? `nat/${c.name}`;
      for (const r of c.rules) items.push(collection, r, undefined);
    }
    return { items, objects: [], refs: [] };
  }

  /** The four chains as the store holds them. */
  private chains(): IptChain[] {
    return USERSPACE_CHAINS.map((name) => ({ table: 'nat', name, rules: [...this.store.items(COLLECTIONS.get(name)!).keys()] }));
  }

  kernelInSync(): boolean {
    return !this.needFull;
  }

  carriedTraffic(): CarriedTraffic | undefined {
    return carried(this.pool, 'userspace');
  }

  conntrackReplyPorts(): ReadonlyMap<string, readonly number[]> {
    const out = new Map<string, number[]>();
    for (const [service, plan] of this.planned) {
      const ports = plan.listeners.map((l) => this.ports.get(l.key)).filter((p): p is number => p !== undefined);
      if (ports.length > 0) out.set(service, ports);
    }
    return out;
  }

  /** Compares our four chains and their jumps with the kernel's, and rewrites them when they differ. */
  async verify(stopping?: AbortSignal): Promise<VerifyResult> {
    if (this.opts.dryRun || this.needFull || this.flavour === undefined) return { repaired: 0, differences: [] };
    const saved = parseSave(await saveTables(this.family, this.flavour, this.opts, ['nat'])).get('nat');
    // Stopping: the stop removes these rules; a repair now would leave them behind.
    if (stopping?.aborted) return { repaired: 0, differences: [] };
    const differences: string[] = [];
    const chains = this.chains();
    for (const c of chains) {
      const have = saved?.chains.get(c.name);
      // Rules are inserted where partial syncs put them: compared as a multiset.
      if (have === undefined) differences.push(`chain ${c.name} is missing`);
      else if (!sameMultiset(have, c.rules)) differences.push(`chain ${c.name} differs`);
    }
    const flavour = this.flavour;
    const repair = async (): Promise<void> => {
      if (differences.length > 0) {
        this.needFull = true;
        await restore(toRestoreInput({ family: this.family, chains }), this.family, flavour, this.opts);
      }
      const jumps = await ensureJumps(redirectJumps(this.opts.nodePortIPs), this.family, flavour, this.opts);
      if (jumps > 0) differences.push(`${jumps} jump rule(s) from PREROUTING/OUTPUT fixed`);
      this.needFull = false;
    };
    // A stop waits for a repair under way before it removes the rules.
    const repairing = (this.repairing = repair());
    try {
      await repairing;
    } finally {
      this.repairing = undefined;
    }
    return { repaired: differences.length, differences };
  }

  /** Stopping: the redirect rules go first (nothing would answer them), then the sockets. */
  async stop(removeRules: boolean): Promise<void> {
    await this.repairing?.catch(() => undefined);
    if (removeRules) await this.removeRules();
    await this.pool?.close();
    this.pool = undefined;
    this.needFull = true;
  }

  async cleanup(): Promise<void> {
    await this.stop(true);
  }

  describe(): string {
    return this.needFull ? '' : toRestoreInput({ family: this.family, chains: this.chains() });
  }

  private async removeRules(): Promise<void> {
    if (this.opts.dryRun || this.flavour === undefined) return;
    const removed = await removeIptablesLeftovers([{ family: this.family, flavour: this.flavour }], this.opts, (_t, chain) => isUserspaceChain(chain));
    this.needFull = true;
    log.info('removed the userspace proxy redirect rules', { family: this.family, chains: removed });
  }

  private async ensureFlavour(): Promise<Flavour> {
    this.flavour ??= (await startUpFlavour(this.family, this.opts.flavour, this.opts, this.opts.startUp)).flavour;
    return this.flavour;
  }
}

/** Whether two renders of the four chains hold the same rules, in any order. */
function sameRules(a: IptChain[], b: IptChain[]): boolean {
  return a.length === b.length && a.every((c, i) => c.name === b[i]!.name && sameMultiset(c.rules, b[i]!.rules));
}
