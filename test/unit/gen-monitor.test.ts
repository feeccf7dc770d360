// Whether a write made without the monitor is proven free of foreign commits by generation
// numbers: a fake kernel numbers each committed transaction and prints it, as `nft monitor`
// does, to the monitors subscribed at that moment. A wrong "proven" would leave a foreign change
// unrepaired; a wrong "not proven" only costs a read-back.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ForeignWatch, type CommitCount } from '../../src/backend/common/foreign-watch.js';
import { GenerationMonitor, MARK_PREFIX, type MarkerKind, type MonitorEvent, type MonitorLine } from '../../src/backend/common/watch.js';
import { parseEvent } from '../../src/backend/nftables/monitor.js';

const GENERATION = /^# new generation (\d+) by process (\d+) \(nft\)$/;
const MARKER = new RegExp(`^add table ip ${MARK_PREFIX}(begin|end|probe|sync)-(\\d+)(?:-(\\d+))?$`);

/** Transactions numbered one by one; a monitor hears them once subscribed. */
class FakeKernel {
  gen = 100;
  /** The next monitor subscribes only after missing this many of its probes. */
  missProbes = 0;
  readonly subscribed = new Set<FakeMonitor>();
  readonly monitors: FakeMonitor[] = [];

  commit(lines: string[], pid: number): void {
    const text = [...lines, `# new generation ${++this.gen} by process ${pid} (nft)`].map((l) => `${l}\n`).join('');
    // A pipe: the monitor reads the lines later.
    for (const m of this.subscribed) setImmediate(() => m.hear(text));
  }
}

let kernel = new FakeKernel();

class FakeMonitor extends GenerationMonitor {
  constructor() {
    // A process that prints nothing: the fake kernel feeds the lines.
    super([], ['sleep', '120'], 'fake monitor');
    kernel.monitors.push(this);
  }

  hear(text: string): void {
    if (!this.dead) this.onData(text);
  }

  protected commitMarker(name: string): Promise<void> {
    if (!kernel.subscribed.has(this) && !this.dead) {
      if (kernel.missProbes > 0) kernel.missProbes--;
      else kernel.subscribed.add(this);
    }
    kernel.commit([`add table ip ${name}`, `delete table ip ${name}`], process.pid);
    return Promise.resolve();
  }

  protected classify(line: string): MonitorLine {
    const g = GENERATION.exec(line);
    if (g) return { type: 'generation', gen: Number(g[1]), pid: Number(g[2]) };
    const m = MARKER.exec(line);
    if (m) return { type: 'marker', kind: m[1] as MarkerKind, id: Number(m[2]), rep: Number(m[3] ?? 0) };
    if (line.includes(MARK_PREFIX)) return undefined;
    return parseEvent(line) ? { type: 'change' } : undefined;
  }

  protected parseChange(line: string): MonitorEvent | undefined {
    return parseEvent(line);
  }

  protected onGeneration(_pid: number, lines: string[]): void {
    this.recordForeign(lines);
  }

  /** Writes run as watched ones (the fake does not bracket them: their changes look foreign). */
  ownWrites = 0;

  ownWrite<T>(write: () => Promise<T>): Promise<T> {
    this.ownWrites++;
    return write();
  }

  override stop(): void {
    kernel.subscribed.delete(this);
    super.stop();
  }
}

const OUR_TABLE = ['delete table ip kube-proxy', 'add table ip kube-proxy', 'add element ip kube-proxy service-ips { 10.96.0.1 }'];
const FOREIGN = ['delete element ip kube-proxy service-ips { 10.96.0.1 }'];

/** A watch over the fake kernel, its monitor ready. */
async function readyWatch(): Promise<ForeignWatch> {
  let mon: FakeMonitor | undefined;
  const watch = new ForeignWatch(() => (mon && !mon.dead ? mon : (mon = new FakeMonitor())), 'nftables ip', (e) => e.table === 'kube-proxy', 1000);
  watch.forget();
  assert.equal(await mon!.ready, true);
  // Nothing unseen yet once the monitor is subscribed from the start.
  return watch;
}

/** The decision of a verification, asked again while it is put off for the monitor to load. */
async function decide(watch: ForeignWatch): Promise<{ reason: string | undefined }> {
  let r = await watch.readBackReason(true);
  while (r.retry) {
    await r.retry;
    r = await watch.readBackReason(true);
  }
  return r;
}

/** A full table written in `transactions` transactions, counted when `counted`. */
function fullWrite(transactions: number, counted = true, during?: () => void) {
  return async (count: CommitCount): Promise<void> => {
    for (let i = 0; i < transactions; i++) {
      kernel.commit(OUR_TABLE, process.pid);
      if (i === 0) during?.();
    }
    if (counted) count.transactions = transactions;
  };
}

describe('an unwatched full write proven by generation numbers', () => {
  afterEach(() => {
    for (const m of kernel.monitors) m.stop();
    kernel = new FakeKernel();
  });

  it('only our transactions in the window: no read-back', async () => {
    const watch = await readyWatch();
    await watch.unwatchedWrite(fullWrite(3), true);
    assert.equal(kernel.monitors[0]!.dead, true, 'the monitor is stopped for the write');
    assert.equal(kernel.monitors.length, 2, 'a new monitor starts right after it');
    const { reason } = await decide(watch);
    assert.equal(reason, undefined);
    // The next verification relies on the new monitor as usual.
    kernel.commit(FOREIGN, 4242);
    assert.equal((await decide(watch)).reason, 'foreign change');
  });

  it('a foreign commit during the write: read back', async () => {
    const watch = await readyWatch();
    await watch.unwatchedWrite(
      fullWrite(2, true, () => kernel.commit(FOREIGN, 4242)),
      true,
    );
    assert.equal((await decide(watch)).reason, 'monitor restarted');
  });

  it('a foreign commit after the write, before the new monitor subscribed: read back', async () => {
    const watch = await readyWatch();
    kernel.missProbes = 1;
    await watch.unwatchedWrite(async (count) => {
      await fullWrite(1)(count);
      kernel.commit(FOREIGN, 4242);
    }, true);
    assert.equal((await decide(watch)).reason, 'monitor restarted');
  });

  it('probes the new monitor missed are counted as ours', async () => {
    const watch = await readyWatch();
    kernel.missProbes = 2;
    await watch.unwatchedWrite(fullWrite(1), true);
    assert.equal((await decide(watch)).reason, undefined);
    const fresh = kernel.monitors[1]!;
    assert.equal(fresh.firstProbe?.earlier, 2);
  });

  it('a write that failed, did not count its transactions or did not replace the table: read back', async () => {
    const watch = await readyWatch();
    await assert.rejects(
      watch.unwatchedWrite(async () => {
        kernel.commit(OUR_TABLE, process.pid);
        throw new Error('nft -f failed');
      }, true),
    );
    // No monitor was started after the failed write.
    assert.equal((await decide(watch)).reason, 'no monitor');
    await kernel.monitors.at(-1)!.ready;
    assert.equal((await decide(watch)).reason, undefined, 'after that read-back, back to normal');
    // Without a proof pending, the new monitor is not waited for.
    await watch.unwatchedWrite(fullWrite(1, false), true);
    assert.equal((await decide(watch)).reason, 'no monitor');
    await kernel.monitors.at(-1)!.ready;
    assert.equal((await decide(watch)).reason, undefined);
    await watch.unwatchedWrite(fullWrite(1), false);
    assert.equal((await decide(watch)).reason, 'no monitor');
  });

  it('a count larger than the commits made (a transaction thought committed): read back', async () => {
    const watch = await readyWatch();
    await watch.unwatchedWrite(async (count) => {
      kernel.commit(OUR_TABLE, process.pid);
      count.transactions = 2;
    }, true);
    assert.equal((await decide(watch)).reason, 'monitor restarted');
  });

  it('a verification asked while the new monitor loads is put off, holding nothing, and decided once it is ready', async () => {
    const watch = await readyWatch();
    kernel.missProbes = 2;
    await watch.unwatchedWrite(fullWrite(1), true);
    const t0 = performance.now();
    const first = await watch.readBackReason(true);
    assert.ok(performance.now() - t0 < 200, 'answered at once');
    assert.ok(first.retry, 'put off');
    assert.equal(first.reason, undefined);
    assert.equal(kernel.monitors.at(-1)!.isReady, false);
    await first.retry;
    assert.equal((await watch.readBackReason(true)).reason, undefined, 'proven once the monitor is ready');
  });

  it('our writes while the new monitor loads count among our commits: still proven', async () => {
    const watch = await readyWatch();
    // Ready after ~1.5 s: each write gives up waiting for it first.
    kernel.missProbes = 4;
    await watch.unwatchedWrite(fullWrite(2), true);
    await watch.write(fullWrite(1));
    await watch.write(fullWrite(2));
    assert.equal((await decide(watch)).reason, undefined);
    assert.equal(kernel.monitors.at(-1)!.firstProbe?.earlier, 4 + 3, 'four missed probes and three transactions of ours');
  });

  it('a foreign commit beside our writes while the monitor loads: read back', async () => {
    const watch = await readyWatch();
    kernel.missProbes = 4;
    await watch.unwatchedWrite(fullWrite(1), true);
    await watch.write(fullWrite(1));
    kernel.commit(FOREIGN, 4242);
    await watch.write(fullWrite(1));
    assert.equal((await decide(watch)).reason, 'monitor restarted');
  });

  it('a write while the monitor loads that does not count its transactions: read back', async () => {
    const watch = await readyWatch();
    kernel.missProbes = 4;
    await watch.unwatchedWrite(fullWrite(1), true);
    await watch.write(fullWrite(1, false));
    assert.equal((await decide(watch)).reason, 'monitor restarted');
  });

  it('a change just after an unwatched write waits for the new monitor\'s first probe and is watched', async () => {
    const watch = await readyWatch();
    kernel.missProbes = 1;
    await watch.unwatchedWrite(fullWrite(1), true);
    const mon = kernel.monitors.at(-1)!;
    assert.equal(mon.isReady, false);
    await watch.write(fullWrite(1));
    assert.equal(mon.isReady, true);
    assert.equal(mon.ownWrites, 1, 'bracketed, not a write while loading');
    // The fake does not bracket, so the change itself shows as foreign; the proof still holds.
    assert.equal(kernel.monitors.at(-1)!.firstProbe?.earlier, 1, 'one missed probe, no write of ours before the first probe');
  });

  it('a whole-table write at start waits briefly for the monitor just started, then is proven ours without a read-back', async () => {
    let mon: FakeMonitor | undefined;
    const watch = new ForeignWatch(() => (mon && !mon.dead ? mon : (mon = new FakeMonitor())), 'nftables ip', (e) => e.table === 'kube-proxy', 1000);
    kernel.missProbes = 1;
    watch.start();
    const first = mon!;
    assert.equal(first.isReady, false);
    await watch.unwatchedWrite(fullWrite(1), true);
    assert.equal(first.dead, true, 'the write waited for the first monitor to learn the generation, then stopped it');
    assert.notEqual(mon, first, 'a new monitor follows');
    assert.equal((await decide(watch)).reason, undefined);
  });
});

it('monitors stopped or dead leave no exit listener behind (one per restart warned after ten)', async () => {
  const before = process.listenerCount('exit');
  for (let i = 0; i < 12; i++) new FakeMonitor().stop();
  const died = new FakeMonitor();
  const exited = new Promise((resolve) => died['child'].once('exit', resolve));
  // The monitor's process does not keep the event loop alive; waiting for its exit must.
  died['child'].ref();
  died['child'].kill('SIGKILL');
  await exited;
  assert.equal(process.listenerCount('exit'), before);
});
