// The proxy schedules kernel verifications so that a slow one (a read-back of a large table) does
// not sit on the path of every change.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, SyncResult, VerifyResult } from '../../src/backend/types.js';
import { applyDefaults } from '../../src/config/index.js';
import type { KubeObject, ObjectKind } from '../../src/model/k8s.js';
import type { IPFamily, Snapshot } from '../../src/model/types.js';
import { Proxy } from '../../src/proxy.js';
import type { Source, SourceEvent, SourceHandler } from '../../src/source/types.js';

class PushSource implements Source {
  private handler: SourceHandler | null = null;
  async start(handler: SourceHandler): Promise<void> {
    this.handler = handler;
    for (const kind of ['Service', 'EndpointSlice', 'Node'] as ObjectKind[]) handler.onSynced(kind);
  }
  async stop(): Promise<void> {
    this.handler = null;
  }
  push(e: SourceEvent): void {
    this.handler!.onEvent(e);
  }
}

/** A backend whose verification is slow, as a read-back of a large table is. */
class SlowVerifyBackend implements Backend {
  readonly mode = 'nftables';
  syncs = 0;
  verifications = 0;
  constructor(
    readonly family: IPFamily,
    private readonly verifyMs: number,
  ) {}
  async sync(_snapshot: Snapshot): Promise<SyncResult> {
    return { operations: 1, full: this.syncs++ === 0 };
  }
  async verify(): Promise<VerifyResult> {
    await new Promise((r) => setTimeout(r, this.verifyMs));
    this.verifications++;
    return { repaired: 0 } as VerifyResult;
  }
  async cleanup(): Promise<void> {}
}

/** Resolves after the proxy's next sync attempt. */
function nextSync(proxy: Proxy): Promise<void> {
  return new Promise((resolve) => {
    const off = proxy.runner.onSync(() => {
      off();
      resolve();
    });
  });
}

/** Pushes one change and resolves after the sync it causes. */
async function change(proxy: Proxy, source: PushSource, i: number): Promise<void> {
  const next = nextSync(proxy);
  source.push(service(i));
  await next;
}

function service(i: number): SourceEvent {
  const object = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'ns', name: `s${i}`, resourceVersion: String(i) },
    spec: { type: 'ClusterIP', clusterIP: `10.96.0.${10 + i}`, ports: [{ port: 80, protocol: 'TCP' }] },
  } as KubeObject;
  return { kind: 'Service', type: 'ADDED', object };
}

test('a verification longer than syncPeriod is not repeated at every change', async () => {
  const source = new PushSource();
  let backend: SlowVerifyBackend | undefined;
  const proxy = new Proxy({
    config: applyDefaults({ mode: 'nftables', nftables: { minSyncPeriod: '1ms', syncPeriod: '200ms' } }),
    nodeName: 'node-1',
    source,
    createBackend: (cfg) => (backend = new SlowVerifyBackend(cfg.family, 300)),
  });
  try {
    const first = nextSync(proxy);
    await proxy.start();
    await first;
    assert.equal(backend!.verifications, 1, 'the first sync verifies');
    // Each change right after the last sync: a verification that just ended is not due again,
    // though the last one started longer than a period ago.
    for (let i = 0; i < 3; i++) await change(proxy, source, i);
    assert.equal(backend!.syncs, 4);
    assert.equal(backend!.verifications, 1);
  } finally {
    await proxy.stop();
  }
});

test('a verification shorter than syncPeriod runs at every period, counted from its start', async () => {
  const source = new PushSource();
  const backends: SlowVerifyBackend[] = [];
  // 100 ms per family: 200 ms of a 500 ms period, far more than the timer's slack.
  const proxy = new Proxy({
    config: applyDefaults({ mode: 'nftables', nftables: { minSyncPeriod: '1ms', syncPeriod: '500ms' } }),
    nodeName: 'node-1',
    source,
    createBackend: (cfg) => {
      const b = new SlowVerifyBackend(cfg.family, 100);
      backends.push(b);
      return b;
    },
  });
  try {
    await proxy.start();
    await new Promise((r) => setTimeout(r, 2600));
    // Periodic syncs at about 0, 0.5, 1.0 … 2.5 s: each verifies (counted from the end of the
    // last one, only every other did).
    for (const b of backends) assert.ok(b.verifications >= 5, `${b.family}: ${b.verifications} verifications in 2.6 s`);
  } finally {
    await proxy.stop();
  }
});

/** A backend whose verification cannot decide until `ready` settles (a monitor still loading). */
class PutOffBackend implements Backend {
  readonly mode = 'nftables';
  syncs = 0;
  /** Verifications that decided (did not put themselves off). */
  decided = 0;
  putOff = 0;
  constructor(
    readonly family: IPFamily,
    private readonly ready: { done: boolean; promise: Promise<void> },
  ) {}
  async sync(_snapshot: Snapshot): Promise<SyncResult> {
    return { operations: 1, full: this.syncs++ === 0 };
  }
  async verify(): Promise<VerifyResult> {
    if (!this.ready.done) {
      this.putOff++;
      return { repaired: 0, differences: [], retry: this.ready.promise };
    }
    this.decided++;
    return { repaired: 0, differences: [] };
  }
  async cleanup(): Promise<void> {}
}

test('a verification put off by the backend holds no change, and runs once what it waits for is ready', async () => {
  const source = new PushSource();
  let backend: PutOffBackend | undefined;
  let markReady = (): void => undefined;
  const ready = { done: false, promise: new Promise<void>((r) => (markReady = r)) };
  const proxy = new Proxy({
    config: applyDefaults({ mode: 'nftables', nftables: { minSyncPeriod: '0s', syncPeriod: '1h' } }),
    nodeName: 'node-1',
    source,
    createBackend: (cfg) => (backend = new PutOffBackend(cfg.family, ready)),
  });
  const synced = (): Promise<void> => nextSync(proxy);
  try {
    let next = synced();
    await proxy.start();
    await next;
    assert.equal(backend!.putOff, 1, 'the first sync asks, and is put off');
    // Changes go out while the verification waits; each sync asks again (it is still due).
    for (let i = 0; i < 2; i++) await change(proxy, source, i);
    assert.equal(backend!.syncs, 3);
    assert.equal(backend!.decided, 0);
    // Ready: a sync is requested by itself, and it verifies; later ones do not (syncPeriod 1h).
    next = synced();
    ready.done = true;
    markReady();
    await next;
    assert.equal(backend!.decided, 1);
    await change(proxy, source, 5);
    assert.equal(backend!.decided, 1);
  } finally {
    await proxy.stop();
  }
});

test('a sync in flight when the proxy stops does not verify: the stop waits for no read-back', async () => {
  const source = new PushSource();
  let backend: SlowVerifyBackend | undefined;
  const proxy = new Proxy({
    config: applyDefaults({ mode: 'nftables', nftables: { minSyncPeriod: '0s', syncPeriod: '1h' } }),
    nodeName: 'node-1',
    // Its first sync is slow (the write), and its verification slower (a read-back).
    createBackend: (cfg) => {
      backend = new SlowVerifyBackend(cfg.family, 2000);
      const sync = backend.sync.bind(backend);
      backend.sync = async (snap) => {
        await new Promise((r) => setTimeout(r, 300));
        return sync(snap);
      };
      return backend;
    },
    source,
  });
  await proxy.start();
  await new Promise((r) => setTimeout(r, 100));
  const t0 = performance.now();
  await proxy.stop();
  assert.ok(performance.now() - t0 < 1500, 'stopped without waiting for the verification');
  assert.equal(backend!.syncs, 1, 'the write in flight finished');
  assert.equal(backend!.verifications, 0);
});

test('a stop during a read-back does not wait for it, and what the read-back found is not repaired', async () => {
  const source = new PushSource();
  const reads: Array<() => void> = [];
  let repairs = 0;
  let stopped = false;
  let signal: AbortSignal | undefined;
  const proxy = new Proxy({
    config: applyDefaults({ mode: 'nftables', nftables: { minSyncPeriod: '0s', syncPeriod: '1h' } }),
    nodeName: 'node-1',
    // Its first verification reads back until released, then repairs unless the proxy stops.
    createBackend: (cfg) => ({
      mode: 'nftables',
      family: cfg.family,
      sync: async () => ({ operations: 1, full: true }),
      cleanup: async () => {},
      stop: async () => void (stopped = true),
      verify: async (stopping?: AbortSignal) => {
        signal = stopping;
        // A read-back of a large table: seconds.
        await new Promise<void>((r) => {
          reads.push(r);
          setTimeout(r, 3000);
        });
        if (!stopping?.aborted) repairs++;
        return { repaired: 0, differences: [] };
      },
    }),
    source,
  });
  await proxy.start();
  for (let waited = 0; reads.length === 0; waited += 10) {
    assert.ok(waited < 2000, 'the first sync verifies');
    await new Promise((r) => setTimeout(r, 10));
  }
  const t0 = performance.now();
  await proxy.stop();
  assert.ok(performance.now() - t0 < 1000, 'stopped without waiting for the read-back');
  assert.ok(stopped, 'the backends were stopped (their checkpoints written)');
  assert.equal(signal?.aborted, true);
  for (const release of reads) release();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(repairs, 0, 'nothing repaired after the stop');
});
