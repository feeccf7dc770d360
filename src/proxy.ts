// The proxy: source events feed the model; a bounded-frequency runner turns the model into
// per-family snapshots and hands them to the backends (a mode without a kernel backend logs them).
import { networkInterfaces } from 'node:os';
import type { Backend, BackendConfig } from './backend/types.js';
import { resolveBackendConfigs, syncPeriodsMs } from './config/index.js';
import type { KubeProxyConfiguration } from './config/types.js';
import { log } from './log.js';
import { describeChanges, type UndescribedChanges } from './model/describe.js';
import type { KubeObject } from './model/k8s.js';
import { ProxyModel, type ObjectWarning } from './model/tracker.js';
import type { IPFamily, Snapshot } from './model/types.js';
import { Readiness } from './runner/readiness.js';
import { SyncRunner } from './runner/runner.js';
import type { Source, SourceEvent } from './source/types.js';
import { collectGarbage } from './node/memory.js';

/**
 * Operations of partial syncs within BURST_WINDOW_MS after which a garbage collection runs (see
 * node/memory.ts): a burst of changes leaves its operations and scripts behind, whether it came
 * as one large sync or as many small ones. Changes further apart never add up to a collection.
 */
const LARGE_SYNC_OPERATIONS = 2000;
const BURST_WINDOW_MS = 2000;

/** Watches the proxy's work (metrics, health); every hook is optional. */
export interface ProxyObserver {
  /** A source event, before the model applies it. */
  event?(e: SourceEvent): void;
  /** A sync is about to take its snapshots; the returned callback gets its outcome. */
  syncStarted?(): (ok: boolean) => void;
  /**
   * One family's sync attempt took `seconds`; `full` says whether the backend replaced
   * everything, null when it failed.
   */
  familySynced?(family: IPFamily, full: boolean | null, seconds: number): void;
  /** A backend's sync threw. */
  backendFailed?(mode: string, family: IPFamily): void;
  /** A backend's verification found the kernel differing from its rules and repaired `items` of them. */
  kernelRepaired?(mode: string, family: IPFamily, items: number): void;
}

/**
 * A verification is due once per syncPeriod, counted from the start of the last one, as the
 * periodic syncs are: counted from its end, a read-back longer than the slack (half a second at
 * a 5 s period on a busy node) pushed every other check a whole period later. The slack keeps a
 * timer that fires a little early from skipping a period.
 */
const VERIFY_SLACK = 0.9;
/**
 * A due verification waits while a change is queued behind the sync (a read-back can take
 * seconds, and the change would wait for it), but not past this many periods.
 */
const VERIFY_MAX_DEFER_PERIODS = 2;

export interface ProxyOptions {
  config: KubeProxyConfiguration;
  nodeName: string;
  source: Source;
  /** Returns the backend for one family. */
  createBackend: (cfg: BackendConfig) => Backend;
  /** Where warnings about objects go (Events on the API server); logging happens anyway. */
  onObjectWarning?: (w: ObjectWarning) => void;
}

function objectName(o: KubeObject): string {
  const m = o.metadata ?? {};
  return m.namespace ? `${m.namespace}/${m.name}` : String(m.name);
}

/** Node IPs when the Node object has none: the host's own non-loopback addresses. */
function hostIPs(): string[] {
  const ips: string[] = [];
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (!a.internal && !(a.family === 'IPv6' && a.address.startsWith('fe80'))) ips.push(a.address);
    }
  }
  return ips;
}

export class Proxy {
  readonly model: ProxyModel;
  /**
   * The Node's list is awaited too (it completes even when the Node does not exist), so the
   * backends are built from the Node's own addresses rather than a guess.
   */
  readonly readiness = new Readiness(['Service', 'EndpointSlice', 'Node']);
  readonly runner: SyncRunner;
  /** Backends by family, created at the first sync once the node's IPs are known. */
  backends: Map<IPFamily, Backend> | null = null;
  /** The configurations the backends were built from (empty before the first sync). */
  backendConfigs: BackendConfig[] = [];
  readonly lastSnapshots = new Map<IPFamily, Snapshot>();
  /** Families that have synced once: their first sync is always logged. */
  private readonly syncedFamilies = new Set<IPFamily>();
  private readonly observers: ProxyObserver[] = [];
  private config: KubeProxyConfiguration;
  private createBackend: (cfg: BackendConfig) => Backend;
  /**
   * Changes of a family's failed syncs: the next description of that family includes them, so a
   * reader who follows the descriptions (the `-v 2` log) never misses one.
   */
  private readonly undescribed = new Map<IPFamily, { changed: Set<string>; deleted: Set<string> }>();
  /** performance.now() at the start of the latest sync. */
  private syncStartedAt = 0;
  /** performance.now() at the start and end of the last verification of every family; null before the first. */
  private verified: { start: number; end: number } | null = null;
  /** Set by stop(): the sync in flight finishes its writes but verifies nothing (a read-back would hold the stop). */
  private stopping = false;
  /** While a verification runs: aborted by stop(), which then does not wait for it. */
  private verifying: AbortController | null = null;
  /** Operations of the partial syncs since `burstStartedAt` (performance.now()). */
  private burstOperations = 0;
  private burstStartedAt = 0;

  constructor(private readonly opts: ProxyOptions) {
    this.config = opts.config;
    this.createBackend = opts.createBackend;
    this.model = new ProxyModel({ nodeName: opts.nodeName, ...(opts.onObjectWarning ? { onWarning: opts.onObjectWarning } : {}) });
    const periods = syncPeriodsMs(opts.config);
    this.runner = new SyncRunner({
      name: 'sync-proxy-rules',
      minIntervalMs: periods.minSyncPeriodMs,
      maxIntervalMs: periods.syncPeriodMs,
      sync: () => this.sync(),
      gate: () => this.readiness.ready(),
    });
  }

  /** The model's pending changes, over the families this proxy syncs once it knows them. */
  pendingChanges(): { services: number; endpoints: number } {
    return this.model.pendingChanges(this.backends ? [...this.backends.keys()] : undefined);
  }

  /** The configuration the proxy runs with now. */
  get configuration(): KubeProxyConfiguration {
    return this.config;
  }

  /**
   * Runs with a new configuration: new sync periods at once. With `backends`, new backends
   * (built from the new configuration) program the next sync, and only once that sync
   * succeeded are the old backends' rules removed (`removeOld`, for a mode change), so traffic
   * always has a working ruleset. Resolves after that sync.
   */
  async reconfigure(
    config: KubeProxyConfiguration,
    backends?: { create: (cfg: BackendConfig) => Backend; removeOld: boolean },
  ): Promise<void> {
    const periods = syncPeriodsMs(config);
    this.runner.setIntervals(periods.minSyncPeriodMs, periods.syncPeriodMs);
    this.config = config;
    if (!backends) return;
    const old = this.backends;
    this.createBackend = backends.create;
    this.backends = null;
    if (!this.readiness.ready()) return;
    await this.syncedFromNow();
    if (!old) return;
    if (!backends.removeOld) {
      for (const b of old.values()) await b.stop?.(false);
      return;
    }
    for (const b of old.values()) {
      try {
        await b.cleanup();
        log.info("removed the previous mode's rules", { mode: b.mode, family: b.family });
      } catch (e) {
        log.warn("removing the previous mode's rules failed", { mode: b.mode, family: b.family, error: String(e) });
      }
    }
  }

  /** Requests a sync and resolves after the first successful sync that starts from now on. */
  private syncedFromNow(): Promise<void> {
    const from = performance.now();
    return new Promise((resolve) => {
      const off = this.runner.onSync((r) => {
        if (r.ok && this.syncStartedAt >= from) {
          off();
          resolve();
        }
      });
      this.runner.run();
    });
  }

  /** False while any backend knows the kernel holds wrong rules (see Backend.kernelInSync). */
  kernelInSync(): boolean {
    for (const b of this.backends?.values() ?? []) {
      if (b.kernelInSync?.() === false) return false;
    }
    return true;
  }

  /** Adds an observer; its hooks run from the next event or sync on. */
  observe(o: ProxyObserver): void {
    this.observers.push(o);
  }

  async start(): Promise<void> {
    this.readiness.onReady(() => {
      log.info('services, endpoint slices and the node synced; starting rule syncs');
      this.runner.run();
    });
    this.runner.start();
    await this.opts.source.start({
      onEvent: (e) => this.onEvent(e),
      onSynced: (kind) => {
        log.info('initial list delivered', { kind });
        this.readiness.markSynced(kind);
      },
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.verifying?.abort();
    await this.opts.source.stop();
    // A verification in flight reads the rules back (seconds at 10,000 services, 14 s at 5,000 ×
    // 50): the stop does not wait for it, and it repairs nothing (what it would have found, the
    // next start's first verification finds). A sync's writes are waited for.
    const ended = this.runner.stop();
    if (!this.verifying) await ended;
    for (const b of this.backends?.values() ?? []) {
      try {
        await b.stop?.(true);
      } catch (e) {
        log.warn('stopping a backend failed', { mode: b.mode, family: b.family, error: String(e) });
      }
    }
  }

  private onEvent(e: SourceEvent): void {
    for (const o of this.observers) o.event?.(e);
    log.v(4, 'change received', () => ({
      kind: e.kind,
      type: e.type,
      object: objectName(e.object),
      resourceVersion: e.object.metadata?.resourceVersion,
    }));
    this.model.apply(e);
    if (this.readiness.ready()) this.runner.run();
  }

  private afterPartialSync(operations: number): void {
    const now = performance.now();
    if (now - this.burstStartedAt > BURST_WINDOW_MS) {
      this.burstStartedAt = now;
      this.burstOperations = 0;
    }
    this.burstOperations += operations;
    if (this.burstOperations < LARGE_SYNC_OPERATIONS) return;
    collectGarbage();
    this.burstOperations = 0;
    this.burstStartedAt = performance.now();
  }

  private ensureBackends(): Map<IPFamily, Backend> {
    if (this.backends) return this.backends;
    const node = this.model.node();
    let ips = node.addresses;
    if (ips.length === 0) {
      ips = hostIPs();
      log.warn('own Node has no addresses (or is unknown); using the host interface addresses', {
        node: this.opts.nodeName,
        ips,
      });
    }
    const configs = resolveBackendConfigs(this.config, { ips, podCIDRs: node.podCIDRs });
    this.backendConfigs = configs;
    this.backends = new Map(configs.map((c) => [c.family, this.createBackend(c)]));
    return this.backends;
  }

  private async sync(): Promise<void> {
    this.syncStartedAt = performance.now();
    const done = this.observers.map((o) => o.syncStarted?.());
    let ok = false;
    try {
      await this.syncFamilies();
      ok = true;
    } finally {
      for (const d of done) d?.(ok);
    }
  }

  private async syncFamilies(): Promise<void> {
    const backends = this.ensureBackends();
    for (const [family, backend] of backends) {
      const snap = this.model.snapshot(family);
      this.lastSnapshots.set(family, snap);
      const started = performance.now();
      let res;
      try {
        res = await backend.sync(snap);
      } catch (err) {
        this.carryUndescribed(snap);
        const seconds = (performance.now() - started) / 1000;
        for (const o of this.observers) {
          o.backendFailed?.(backend.mode, family);
          o.familySynced?.(family, null, seconds);
        }
        throw err;
      }
      // As upstream: a sync that changed nothing is logged only from -v=2; the first one always
      // (a restart over rules already in place writes nothing, and says when it is in sync).
      const first = !this.syncedFamilies.has(family);
      this.syncedFamilies.add(family);
      log.v(res.operations > 0 || first ? 0 : 2, 'synced proxy rules', {
        mode: backend.mode,
        family,
        servicePorts: snap.services.size,
        full: res.full,
        operations: res.operations,
        ms: Math.round(performance.now() - started),
      });
      const carried: UndescribedChanges | undefined = this.undescribed.get(family);
      this.undescribed.delete(family);
      log.v(2, () => describeChanges(snap, carried));
      const seconds = (performance.now() - started) / 1000;
      for (const o of this.observers) o.familySynced?.(family, res.full, seconds);
      if (!res.full) this.afterPartialSync(res.operations);
    }
    // After every family's rules are written, so that a verification delays no family's change.
    if (this.stopping || !this.verifyDue()) return;
    const start = performance.now();
    const putOff: Array<Promise<unknown>> = [];
    const verifying = (this.verifying = new AbortController());
    try {
      for (const [family, backend] of backends) {
        if (!backend.verify) continue;
        const v = await backend.verify(verifying.signal);
        if (verifying.signal.aborted) return;
        if (v.retry) putOff.push(v.retry);
        if (v.repaired > 0) for (const o of this.observers) o.kernelRepaired?.(backend.mode, family, v.repaired);
      }
    } finally {
      this.verifying = null;
    }
    if (putOff.length > 0) {
      // Still due: the sync requested once it can go on verifies.
      const again = (): void => this.runner.run();
      void Promise.all(putOff).then(again, again);
      return;
    }
    // Only a sync that verified every family counts: a failed one is verified again at its retry.
    this.verified = { start, end: performance.now() };
  }

  /**
   * Whether this sync also verifies the kernel: at the first sync, then once per syncPeriod,
   * deferred (within limits) while a change waits for the next sync.
   */
  private verifyDue(): boolean {
    if (this.verified === null) return true;
    const period = syncPeriodsMs(this.config).syncPeriodMs;
    const now = performance.now();
    const since = now - this.verified.start;
    if (since < VERIFY_SLACK * period) return false;
    // A read-back longer than the period is not repeated at every sync: the proxy spends at most
    // about half its time verifying.
    if (now - this.verified.end < this.verified.end - this.verified.start) return false;
    return !this.runner.requestWaiting || since >= VERIFY_MAX_DEFER_PERIODS * period;
  }

  private carryUndescribed(snap: Snapshot): void {
    if (snap.changes.full) return;
    let c = this.undescribed.get(snap.family);
    if (c === undefined) {
      c = { changed: new Set(), deleted: new Set() };
      this.undescribed.set(snap.family, c);
    }
    for (const k of snap.changes.changed) c.changed.add(k);
    for (const k of snap.changes.deleted) c.deleted.add(k);
  }
}
