// Bounded-frequency sync runner: requests are coalesced, syncs start at most once per
// minInterval and at least once per maxInterval, never overlap, and a failed sync is
// retried with exponential backoff. Same contract as upstream's BoundedFrequencyRunner
// (without its burst allowance).
import { log } from '../log.js';

/** Time and timers, injectable so tests can drive the runner deterministically. */
export interface Clock {
  /** Milliseconds; must not go backwards. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * Epoch milliseconds from the monotonic clock, so wall-clock steps cannot stall syncs. A zero
 * delay runs on the next turn of the event loop (setImmediate): Node's setTimeout never fires
 * sooner than 1 ms, which would sit on every change's path.
 */
export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimeout: (fn, ms) => (ms <= 0 ? { immediate: setImmediate(fn) } : setTimeout(fn, ms)),
  clearTimeout: (handle) => {
    if (typeof handle === 'object' && handle !== null && 'immediate' in handle) clearImmediate((handle as { immediate: NodeJS.Immediate }).immediate);
    else clearTimeout(handle as NodeJS.Timeout);
  },
};

export type SyncReason = 'requested' | 'retry' | 'periodic';

export interface SyncResult {
  reason: SyncReason;
  startedMs: number;
  durationMs: number;
  ok: boolean;
  /** What the sync threw, when ok is false. */
  error?: unknown;
}

export interface SyncRunnerOptions {
  /** Used in logs. */
  name: string;
  /** Minimum time between the starts of two syncs. */
  minIntervalMs: number;
  /** Maximum time between the starts of two syncs once start() was called. */
  maxIntervalMs: number;
  sync: () => Promise<void>;
  /** Delay before retrying a failed sync, doubled on each further failure; capped by maxIntervalMs. */
  retryBackoffMs?: { initial: number; max?: number };
  clock?: Clock;
  /**
   * While this returns false, due syncs are held back instead of run (no sync before the
   * sources have synced). Call run() once it turns true.
   */
  gate?: () => boolean;
}

const DEFAULT_RETRY_INITIAL_MS = 1000;

export class SyncRunner {
  /** Completed sync attempts, failed ones included. */
  syncs = 0;
  /** Sync attempts that threw. */
  failures = 0;
  /** Start time of the last successful sync; 0 before the first one. */
  lastSyncMs = 0;
  /** Time of the last run() request; 0 before the first one. */
  lastQueuedMs = 0;
  /** Time of the oldest request not yet covered by a successful sync; 0 when none is pending. */
  pendingSinceMs = 0;

  private readonly name: string;
  private minIntervalMs: number;
  private maxIntervalMs: number;
  private readonly syncFn: () => Promise<void>;
  private readonly clock: Clock;
  private readonly gate: (() => boolean) | undefined;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private backoffMs: number;
  private requested = false;
  private retryAtMs: number | null = null;
  private lastStartMs: number | null = null;
  private periodFromMs = 0;
  private started = false;
  private stopped = false;
  private running: Promise<void> | null = null;
  private firstRequestDuringSyncMs = 0;
  private timer: unknown = null;
  private readonly listeners = new Set<(result: SyncResult) => void>();

  constructor(opts: SyncRunnerOptions) {
    if (!(opts.minIntervalMs >= 0)) throw new Error(`${opts.name}: minIntervalMs must be >= 0`);
    if (!(opts.maxIntervalMs > 0)) throw new Error(`${opts.name}: maxIntervalMs must be > 0`);
    const retry = opts.retryBackoffMs;
    if (retry && !(retry.initial > 0)) throw new Error(`${opts.name}: retryBackoffMs.initial must be > 0`);
    this.name = opts.name;
    this.minIntervalMs = opts.minIntervalMs;
    this.maxIntervalMs = opts.maxIntervalMs;
    this.syncFn = opts.sync;
    this.clock = opts.clock ?? systemClock;
    this.gate = opts.gate;
    this.retryMaxMs = Math.min(retry?.max ?? opts.maxIntervalMs, opts.maxIntervalMs);
    this.retryInitialMs = Math.min(retry?.initial ?? DEFAULT_RETRY_INITIAL_MS, this.retryMaxMs);
    this.backoffMs = this.retryInitialMs;
  }

  /**
   * Requests a sync. Requests are coalesced: the sync runs at once when the last one
   * started at least minIntervalMs ago, otherwise as soon as that much time has passed;
   * a request during a sync causes exactly one more sync after it.
   */
  run(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    this.lastQueuedMs = now;
    if (this.pendingSinceMs === 0) this.pendingSinceMs = now;
    if (this.running && this.firstRequestDuringSyncMs === 0) this.firstRequestDuringSyncMs = now;
    this.requested = true;
    this.schedule();
  }

  /** Starts the periodic sync: one at least every maxIntervalMs from now on. */
  start(): void {
    if (this.stopped || this.started) return;
    this.started = true;
    this.periodFromMs = this.clock.now();
    this.schedule();
  }

  /** Stops all future syncs; resolves once an in-flight sync has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await this.running;
  }

  /** New sync periods (a reloaded configuration), effective at once. */
  setIntervals(minIntervalMs: number, maxIntervalMs: number): void {
    if (!(minIntervalMs >= 0) || !(maxIntervalMs > 0)) throw new Error(`${this.name}: invalid sync periods`);
    this.minIntervalMs = minIntervalMs;
    this.maxIntervalMs = maxIntervalMs;
    this.schedule();
  }

  /** Registers a listener called after every sync attempt; returns its removal. */
  onSync(listener: (result: SyncResult) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** True when a request is waiting for a sync (made during the sync in flight, or not yet run). */
  get requestWaiting(): boolean {
    return this.requested;
  }

  /** True while a sync is executing. */
  get busy(): boolean {
    return this.running !== null;
  }

  private clearTimer(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.stopped || this.running) return;
    this.clearTimer();
    const now = this.clock.now();
    const earliest = this.lastStartMs === null ? now : this.lastStartMs + this.minIntervalMs;
    let due = Infinity;
    if (this.requested) due = earliest;
    if (this.retryAtMs !== null) due = Math.min(due, Math.max(this.retryAtMs, earliest));
    if (this.started) {
      const periodic = (this.lastStartMs ?? this.periodFromMs) + this.maxIntervalMs;
      due = Math.min(due, Math.max(periodic, earliest));
    }
    if (due === Infinity) return;
    // A zero delay still goes through the timer, so a burst of requests made in one
    // turn of the event loop becomes one sync.
    this.timer = this.clock.setTimeout(() => this.fire(), Math.max(0, due - now));
  }

  private fire(): void {
    this.timer = null;
    if (this.stopped || this.running) return;
    if (this.gate && !this.gate()) {
      // Held until the next run(); remembered so that request is not lost.
      this.requested = true;
      log.v(4, 'sync held back until sources have synced', { runner: this.name });
      return;
    }
    const now = this.clock.now();
    const reason: SyncReason = this.requested
      ? 'requested'
      : this.retryAtMs !== null && this.retryAtMs <= now
        ? 'retry'
        : 'periodic';
    this.requested = false;
    this.retryAtMs = null;
    this.lastStartMs = now;
    this.firstRequestDuringSyncMs = 0;
    this.running = this.execute(reason, now);
  }

  private async execute(reason: SyncReason, startedMs: number): Promise<void> {
    let ok = true;
    let error: unknown;
    try {
      await this.syncFn();
    } catch (err) {
      ok = false;
      error = err;
    }
    const end = this.clock.now();
    this.syncs++;
    if (ok) {
      this.lastSyncMs = startedMs;
      this.pendingSinceMs = this.firstRequestDuringSyncMs;
      this.backoffMs = this.retryInitialMs;
      log.v(4, 'sync done', { runner: this.name, reason, durationMs: end - startedMs });
    } else {
      this.failures++;
      this.retryAtMs = end + this.backoffMs;
      log.error('sync failed; will retry', {
        runner: this.name,
        reason,
        retryInMs: this.backoffMs,
        error: error instanceof Error ? error.message : String(error),
      });
      this.backoffMs = Math.min(this.backoffMs * 2, this.retryMaxMs);
    }
    this.running = null;
    const result: SyncResult = { reason, startedMs, durationMs: end - startedMs, ok };
    if (!ok) result.error = error;
    for (const listener of this.listeners) {
      try {
        listener(result);
      } catch (err) {
        log.error('sync listener failed', { runner: this.name, error: String(err) });
      }
    }
    this.schedule();
  }
}
