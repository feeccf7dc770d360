import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { SyncRunner, systemClock, type Clock, type SyncResult, type SyncRunnerOptions } from '../../src/runner/runner.js';
import { Readiness } from '../../src/runner/readiness.js';
import type { SourceEvent } from '../../src/source/types.js';

/** Settles pending promise callbacks and I/O callbacks. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** A manual clock: timers fire only inside advance(), in due order. */
class FakeClock implements Clock {
  t = 1_000_000;
  private nextId = 1;
  private timers: Array<{ id: number; due: number; fn: () => void }> = [];

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ id, due: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== handle);
  }
  get pendingTimers(): number {
    return this.timers.length;
  }
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    await flush();
    for (;;) {
      const due = this.timers.filter((x) => x.due <= target).sort((a, b) => a.due - b.due || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = Math.max(this.t, due.due);
      due.fn();
      await flush();
    }
    this.t = target;
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

interface Harness {
  clock: FakeClock;
  runner: SyncRunner;
  /** Start times of syncs, relative to the clock's initial time. */
  starts: number[];
  results: SyncResult[];
  t0: number;
}

function harness(
  opts: Partial<SyncRunnerOptions> & { body?: (n: number) => Promise<void> } = {},
): Harness {
  const clock = new FakeClock();
  const t0 = clock.t;
  const starts: number[] = [];
  const results: SyncResult[] = [];
  const { body, ...rest } = opts;
  const runner = new SyncRunner({
    name: 'test',
    minIntervalMs: 1000,
    maxIntervalMs: 30_000,
    clock,
    sync: async () => {
      starts.push(clock.now() - t0);
      if (body) await body(starts.length);
    },
    ...rest,
  });
  runner.onSync((r) => results.push(r));
  return { clock, runner, starts, results, t0 };
}

describe('SyncRunner', () => {
  test('a burst of requests becomes one sync, run at once', async () => {
    const h = harness();
    for (let i = 0; i < 50; i++) h.runner.run();
    await h.clock.advance(0);
    assert.deepEqual(h.starts, [0]);
    assert.equal(h.results[0]!.reason, 'requested');
    assert.equal(h.runner.syncs, 1);
    await h.clock.advance(60_000);
    assert.deepEqual(h.starts, [0], 'no periodic sync before start()');
  });

  test('requests within minInterval of the last sync wait for it, coalesced', async () => {
    const h = harness({ minIntervalMs: 1000 });
    h.runner.run();
    await h.clock.advance(100);
    assert.deepEqual(h.starts, [0]);
    h.runner.run();
    await h.clock.advance(400);
    h.runner.run();
    h.runner.run();
    await h.clock.advance(499); // t = 999
    assert.deepEqual(h.starts, [0]);
    await h.clock.advance(1); // t = 1000
    assert.deepEqual(h.starts, [0, 1000]);
    // Long after the last sync, a request runs at once again.
    await h.clock.advance(5000);
    h.runner.run();
    await h.clock.advance(0);
    assert.deepEqual(h.starts, [0, 1000, 6000]);
  });

  test('after start(), syncs at least every maxInterval, counted from the last sync', async () => {
    const h = harness({ minIntervalMs: 1000, maxIntervalMs: 10_000 });
    h.runner.start();
    await h.clock.advance(25_000);
    assert.deepEqual(h.starts, [10_000, 20_000]);
    assert.ok(h.results.every((r) => r.reason === 'periodic'));
    h.runner.run(); // at 25 000
    await h.clock.advance(0);
    await h.clock.advance(14_000); // to 39 000: next periodic is due 35 000
    assert.deepEqual(h.starts, [10_000, 20_000, 25_000, 35_000]);
  });

  test('never runs two syncs at once; requests during a sync cause exactly one more', async () => {
    const gates: Array<ReturnType<typeof deferred>> = [];
    let active = 0;
    let maxActive = 0;
    const h = harness({
      minIntervalMs: 100,
      body: async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        const d = deferred();
        gates.push(d);
        await d.promise;
        active--;
      },
    });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(0);
    assert.equal(h.starts.length, 1);
    assert.ok(h.runner.busy);
    for (let i = 0; i < 5; i++) h.runner.run();
    await h.clock.advance(60_000); // even the periodic deadline passes: still one in flight
    assert.equal(h.starts.length, 1);
    gates[0]!.resolve();
    await h.clock.advance(0);
    assert.equal(h.starts.length, 2, 'one sync follows at once (minInterval already passed)');
    assert.equal(h.results[0]!.durationMs, 60_000);
    gates[1]!.resolve();
    await h.clock.advance(500);
    assert.equal(h.starts.length, 2, 'the burst was folded into that one sync');
    assert.equal(maxActive, 1);
  });

  test('a sync requested while one runs starts minInterval after the previous start', async () => {
    const d = deferred();
    const h = harness({ minIntervalMs: 1000, body: (n) => (n === 1 ? d.promise : Promise.resolve()) });
    h.runner.run();
    await h.clock.advance(200);
    h.runner.run();
    d.resolve();
    await h.clock.advance(0);
    assert.deepEqual(h.starts, [0]);
    await h.clock.advance(800);
    assert.deepEqual(h.starts, [0, 1000]);
  });

  test('a failing sync is retried with exponential backoff, capped, and reset by success', async () => {
    let failUntil = 4;
    const h = harness({
      minIntervalMs: 10,
      maxIntervalMs: 10_000,
      retryBackoffMs: { initial: 100, max: 400 },
      body: async (n) => {
        if (n <= failUntil) throw new Error(`boom ${n}`);
      },
    });
    h.runner.run();
    await h.clock.advance(5000);
    // Failures at 0, 100, 300, 700; backoff 100, 200, 400, 400 (capped); success at 1100.
    assert.deepEqual(h.starts, [0, 100, 300, 700, 1100]);
    assert.deepEqual(
      h.results.map((r) => r.reason),
      ['requested', 'retry', 'retry', 'retry', 'retry'],
    );
    assert.equal(h.runner.failures, 4);
    assert.equal(h.runner.syncs, 5);
    assert.equal((h.results[0]!.error as Error).message, 'boom 1');
    assert.equal(h.runner.lastSyncMs, h.t0 + 1100);

    // After a success the backoff starts again from the initial delay.
    failUntil = 6;
    h.runner.run(); // sync 6 fails
    await h.clock.advance(0);
    await h.clock.advance(99);
    assert.equal(h.starts.length, 6);
    await h.clock.advance(1);
    assert.equal(h.starts.length, 7);
    assert.equal(h.results.at(-1)!.ok, true);
  });

  test('retry backoff never exceeds maxInterval', async () => {
    const h = harness({
      minIntervalMs: 0,
      maxIntervalMs: 250,
      retryBackoffMs: { initial: 100 },
      body: async () => {
        throw new Error('always');
      },
    });
    h.runner.run();
    await h.clock.advance(1000);
    assert.deepEqual(h.starts, [0, 100, 300, 550, 800]);
  });

  test('stop() waits for the sync in flight and prevents any further sync', async () => {
    const d = deferred();
    const h = harness({ maxIntervalMs: 5000, body: (n) => (n === 1 ? d.promise : Promise.resolve()) });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(0);
    assert.ok(h.runner.busy);
    let stopped = false;
    const stopping = h.runner.stop().then(() => {
      stopped = true;
    });
    await flush();
    assert.equal(stopped, false);
    d.resolve();
    await stopping;
    assert.equal(h.runner.syncs, 1);
    h.runner.run();
    await h.clock.advance(60_000);
    assert.deepEqual(h.starts, [0]);
    assert.equal(h.clock.pendingTimers, 0);
  });

  test('queue and sync timestamps for metrics and health', async () => {
    const d = deferred();
    const h = harness({ minIntervalMs: 1000, body: (n) => (n === 1 ? d.promise : Promise.resolve()) });
    assert.equal(h.runner.lastSyncMs, 0);
    assert.equal(h.runner.pendingSinceMs, 0);
    h.runner.run();
    assert.equal(h.runner.lastQueuedMs, h.t0);
    assert.equal(h.runner.pendingSinceMs, h.t0);
    await h.clock.advance(300); // sync 1 in flight since t0
    h.runner.run(); // a change the running sync may not include
    d.resolve();
    await h.clock.advance(0);
    assert.equal(h.runner.lastSyncMs, h.t0);
    assert.equal(h.runner.pendingSinceMs, h.t0 + 300);
    assert.equal(h.runner.lastQueuedMs, h.t0 + 300);
    await h.clock.advance(700);
    assert.equal(h.runner.lastSyncMs, h.t0 + 1000);
    assert.equal(h.runner.pendingSinceMs, 0);
  });

  test('a closed gate holds syncs back until run() after it opens', async () => {
    const readiness = new Readiness();
    const h = harness({ gate: () => readiness.ready() });
    readiness.onReady(() => h.runner.run());
    h.runner.start();
    h.runner.run();
    await h.clock.advance(0);
    await h.clock.advance(31_000);
    assert.deepEqual(h.starts, []);
    const inner = { onEvent: (_e: SourceEvent) => {}, onSynced: () => {} };
    const handler = readiness.track(inner);
    handler.onSynced('Service');
    await h.clock.advance(0);
    assert.deepEqual(h.starts, []);
    handler.onSynced('EndpointSlice');
    await h.clock.advance(0);
    assert.deepEqual(h.starts, [31_000]);
  });

  test('works with the real clock', async () => {
    let n = 0;
    const runner = new SyncRunner({ name: 'real', minIntervalMs: 10, maxIntervalMs: 60_000, sync: async () => void n++ });
    const done = new Promise<SyncResult>((resolve) => runner.onSync(resolve));
    runner.run();
    const result = await done;
    assert.equal(result.ok, true);
    assert.equal(n, 1);
    await runner.stop();
  });

  test('with minInterval 1 s, the first change after a quiet second goes out at once', async () => {
    const h = harness({ minIntervalMs: 1000, maxIntervalMs: 10_000 });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(0);
    await h.clock.advance(1000); // quiet for a second
    h.runner.run();
    await h.clock.advance(0);
    assert.deepEqual(h.starts, [0, 1000]);
    // Right after a periodic sync a change waits out minInterval; a second later it does not.
    await h.clock.advance(10_000); // periodic sync at 11 000
    await h.clock.advance(1500);
    h.runner.run();
    await h.clock.advance(0);
    assert.deepEqual(h.starts, [0, 1000, 11_000, 12_500]);
  });

  test('the real clock runs a zero-delay sync within the same millisecond timer tick, and cancels it', async () => {
    // Node's setTimeout(0) waits for the next 1 ms timer; the runner must not.
    const order: string[] = [];
    await new Promise<void>((resolve) => {
      setTimeout(() => {
        setTimeout(() => {
          order.push('timer');
          resolve();
        }, 0);
        systemClock.setTimeout(() => order.push('zero-delay'), 0);
        const cancelled = systemClock.setTimeout(() => order.push('cancelled'), 0);
        systemClock.clearTimeout(cancelled);
      }, 0);
    });
    assert.deepEqual(order, ['zero-delay', 'timer']);
  });

  test('rejects nonsensical intervals with a clear error', () => {
    const sync = async (): Promise<void> => {};
    assert.throws(() => new SyncRunner({ name: 'x', minIntervalMs: -1, maxIntervalMs: 10, sync }), /minIntervalMs/);
    assert.throws(() => new SyncRunner({ name: 'x', minIntervalMs: 0, maxIntervalMs: 0, sync }), /maxIntervalMs/);
    assert.throws(
      () => new SyncRunner({ name: 'x', minIntervalMs: 0, maxIntervalMs: 10, sync, retryBackoffMs: { initial: 0 } }),
      /retryBackoffMs/,
    );
  });
});

describe('Readiness', () => {
  test('ready once Services and EndpointSlices have synced; the Node is optional', async () => {
    const r = new Readiness();
    let calls = 0;
    r.onReady(() => calls++);
    const waiting = r.whenReady();
    r.markSynced('Node');
    assert.equal(r.ready(), false);
    r.markSynced('EndpointSlice');
    assert.equal(r.ready(), false);
    assert.equal(calls, 0);
    r.markSynced('Service');
    assert.equal(r.ready(), true);
    await waiting;
    assert.equal(calls, 1);
    r.markSynced('Service');
    assert.equal(calls, 1, 'onReady fires once');
    assert.deepEqual(r.syncedKinds().sort(), ['EndpointSlice', 'Node', 'Service']);
    let late = 0;
    r.onReady(() => late++);
    assert.equal(late, 1, 'a callback registered when already ready runs at once');
  });

  test('the required kinds can be chosen, e.g. to also wait for the Node', () => {
    const r = new Readiness(['Service', 'EndpointSlice', 'Node']);
    r.markSynced('Service');
    r.markSynced('EndpointSlice');
    assert.equal(r.ready(), false);
    assert.equal(r.isSynced('Node'), false);
    r.markSynced('Node');
    assert.equal(r.ready(), true);
  });
});
