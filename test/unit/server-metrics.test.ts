import type { CarriedTraffic } from '../../src/backend/types.js';
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, BackendConfig, SyncResult } from '../../src/backend/types.js';
import { applyDefaults } from '../../src/config/index.js';
import type { KubeObject, ObjectKind } from '../../src/model/k8s.js';
import type { IPFamily, Snapshot } from '../../src/model/types.js';
import { Proxy } from '../../src/proxy.js';
import type { RunningServer } from '../../src/server/http.js';
import { LAST_CHANGE_TRIGGER_TIME, ProxyMetrics, startMetricsServer } from '../../src/server/metrics.js';
import type { Source, SourceEvent, SourceHandler } from '../../src/source/types.js';

const NODE = 'node-1';

/** Value of one sample line, e.g. `kubeproxy_x{code="200"}`; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Delivers a fixed initial list, then whatever the test pushes. */
class FakeSource implements Source {
  private handler: SourceHandler | null = null;
  constructor(private readonly initial: SourceEvent[]) {}
  async start(handler: SourceHandler): Promise<void> {
    this.handler = handler;
    for (const e of this.initial) handler.onEvent(e);
    for (const kind of ['Service', 'EndpointSlice', 'Node'] as ObjectKind[]) handler.onSynced(kind);
  }
  async stop(): Promise<void> {
    this.handler = null;
  }
  push(e: SourceEvent): void {
    this.handler!.onEvent(e);
  }
}

/** Records snapshots; fails while `fail` is set; the first sync is full, later ones partial. */
class FakeBackend implements Backend {
  readonly mode = 'nftables';
  fail = false;
  syncs = 0;
  constructor(readonly family: BackendConfig['family']) {}
  async sync(_snapshot: Snapshot): Promise<SyncResult> {
    if (this.fail) throw new Error('nft: rejected');
    return { operations: 1, full: this.syncs++ === 0 };
  }
  async cleanup(): Promise<void> {}
}

function service(name: string, internalPolicy: 'Local' | 'Cluster', rv: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'ns', name, resourceVersion: rv },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.20',
      clusterIPs: ['10.96.0.20'],
      ipFamilies: ['IPv4'],
      internalTrafficPolicy: internalPolicy,
      ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }],
    },
  } as KubeObject;
}

function slice(rv: string, node: string, triggerTime?: string): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: 'ns',
      name: 'web-1',
      resourceVersion: rv,
      labels: { 'kubernetes.io/service-name': 'web' },
      ...(triggerTime ? { annotations: { [LAST_CHANGE_TRIGGER_TIME]: triggerTime } } : {}),
    },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['10.244.2.5'], nodeName: node, conditions: { ready: true } }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  } as KubeObject;
}

const nodeObj = {
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: NODE, resourceVersion: '1' },
  status: { addresses: [{ type: 'InternalIP', address: '192.168.1.10' }] },
} as KubeObject;

describe('metrics follow the syncs of a proxy', () => {
  const source = new FakeSource([
    { kind: 'Node', type: 'ADDED', object: nodeObj },
    { kind: 'Service', type: 'ADDED', object: service('web', 'Local', '1') },
    // No name: skipped by the model as invalid.
    { kind: 'Service', type: 'ADDED', object: { apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'ns' }, spec: {} } as KubeObject },
    { kind: 'EndpointSlice', type: 'ADDED', object: slice('1', 'node-2') },
  ]);
  let backend: FakeBackend | null = null;
  const proxy = new Proxy({
    config: applyDefaults({ mode: 'nftables', nftables: { minSyncPeriod: '0s', syncPeriod: '1h' } }),
    nodeName: NODE,
    source,
    createBackend: (cfg) => (backend = new FakeBackend(cfg.family)),
  });
  const metrics = new ProxyMetrics({
    mode: 'nftables',
    processMetrics: false,
    sources: {
      runner: proxy.runner,
      model: { pendingChanges: () => proxy.pendingChanges(), invalidObjects: proxy.model.invalidObjects },
      snapshots: () => proxy.lastSnapshots.values(),
      families: () => proxy.backends?.keys() ?? [],
    },
  });
  proxy.observe(metrics);
  after(() => proxy.stop());

  /** Resolves with the outcome of the next sync attempt. */
  function nextSync(): Promise<boolean> {
    return new Promise((resolve) => {
      const off = proxy.runner.onSync((r) => {
        off();
        resolve(r.ok);
      });
    });
  }

  test('first sync: durations, change counters, timestamps, Local-policy services, invalid objects', async () => {
    const synced = nextSync();
    await proxy.start();
    assert.equal(await synced, true);
    const text = await metrics.text();
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), undefined, 'no partial sync yet');
    // Every Service and EndpointSlice event counts, as upstream's change trackers do.
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_service_changes_total'), 2);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_service_changes_pending'), 0);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
    const last = sample(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}')!;
    assert.ok(Math.abs(last - Date.now() / 1000) < 60, `last sync timestamp ${last}`);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"}'), proxy.runner.lastQueuedMs / 1000);
    // The only endpoint is on another node and internalTrafficPolicy is Local.
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"}'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"}'), 0);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"}'), 0);
    assert.match(text, /^kubeproxy_invalid_objects_total\{kind="Service",reason="[a-z-]+"\} 1$/m);
    assert.match(text, /^# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram$/m);
    assert.match(text, /^kubeproxy_sync_proxy_rules_duration_seconds_bucket\{le="16.384",ip_family="IPv4"\} 1$/m);
  });

  test('a failed sync counts as an nftables failure; the retry programs the pending change', async () => {
    backend!.fail = true;
    // After the proxy started: earlier trigger times belong to the initial list and are not counted.
    const trigger = new Date().toISOString();
    let synced = nextSync();
    source.push({ kind: 'EndpointSlice', type: 'MODIFIED', object: slice('2', NODE, trigger) });
    assert.equal(await synced, false);
    let text = await metrics.text();
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}'), undefined, 'nothing programmed yet');
    // Failed attempts are timed too, but are neither full nor partial.
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 2);
    assert.equal(sample(text, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 1);

    backend!.fail = false;
    synced = nextSync();
    source.push({ kind: 'Service', type: 'MODIFIED', object: service('web', 'Local', '2') });
    assert.equal(await synced, true);
    text = await metrics.text();
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 3);
    assert.equal(sample(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 2);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_service_changes_total'), 3);
    // The change failed once and was programmed by the retry: one observation, not two.
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_bucket{le="60",ip_family="IPv4"}'), 1);
    // The endpoint is now local.
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"}'), 0);
  });
});

describe('ProxyMetrics', () => {
  test('network programming latency: from the trigger time to the successful sync; older changes ignored', async () => {
    const clock = { ms: Date.parse('2024-05-01T10:00:00Z') };
    const m = new ProxyMetrics({ mode: 'nftables', processMetrics: false, now: () => clock.ms });
    const ev = (t: string): SourceEvent => ({ kind: 'EndpointSlice', type: 'MODIFIED', object: slice('1', NODE, t) });
    m.event(ev('2024-05-01T09:59:00Z')); // before the proxy started: the initial list
    m.event(ev('2024-05-01T10:00:01Z'));
    m.event(ev('not a time'));
    clock.ms += 4_500;
    const done = m.syncStarted();
    m.familySynced('IPv4', false, 0.01);
    done(true);
    const text = await m.text();
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"}'), 3.5);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_bucket{le="3",ip_family="IPv4"}'), 0);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_bucket{le="4",ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_bucket{le="0",ip_family="IPv4"}'), 0);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'), clock.ms / 1000);
  });

  test('changes seen during a sync wait for the next one', async () => {
    const clock = { ms: 1_000_000 };
    const m = new ProxyMetrics({ mode: 'nftables', processMetrics: false, now: () => clock.ms });
    const ev = (ms: number): SourceEvent => ({ kind: 'EndpointSlice', type: 'MODIFIED', object: slice('1', NODE, new Date(ms).toISOString()) });
    m.event(ev(1_001_000));
    const first = m.syncStarted();
    m.event(ev(1_002_000));
    clock.ms = 1_003_000;
    first(true);
    let text = await m.text();
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"}'), 2);
    clock.ms = 1_005_000;
    m.syncStarted()(true);
    text = await m.text();
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}'), 2);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"}'), 5);
  });

  test('each mode counts its failed syncs under its own upstream name, by IP family', async () => {
    const families = (): IPFamily[] => ['IPv4', 'IPv6'];
    const nft = new ProxyMetrics({ mode: 'nftables', processMetrics: false, sources: { families } });
    assert.equal(sample(await nft.text(), 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"}'), 0);
    nft.backendFailed('nftables', 'IPv6');
    const nftText = await nft.text();
    assert.equal(sample(nftText, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv6"}'), 1);
    assert.equal(sample(nftText, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"}'), 0);
    assert.doesNotMatch(nftText, /kubeproxy_sync_proxy_rules_iptables_restore_failures_total/);

    const ipt = new ProxyMetrics({ mode: 'iptables', processMetrics: false, sources: { families } });
    ipt.backendFailed('iptables', 'IPv4');
    ipt.backendFailed('iptables', 'IPv4');
    ipt.backendFailed('iptables', 'IPv6');
    const iptText = await ipt.text();
    assert.equal(sample(iptText, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}'), 2);
    assert.equal(sample(iptText, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv6"}'), 1);
    assert.doesNotMatch(iptText, /kubeproxy_sync_proxy_rules_nftables_sync_failures_total/);
  });

  test('dual stack: durations, last sync, latency, Local-policy services and conntrack figures per IP family', async () => {
    const clock = { ms: 2_000_000 };
    const v6Slice = { ...slice('1', NODE, new Date(2_001_000).toISOString()), addressType: 'IPv6' } as KubeObject;
    const snap = (family: IPFamily, localPolicyServices: number): Snapshot =>
      ({
        family,
        services: new Map(
          Array.from({ length: localPolicyServices }, (_, i) => [
            `s${i}`,
            { hasAnyEndpoints: true, localEndpoints: [], info: { internalPolicyLocal: false, externalPolicyLocal: true } },
          ]),
        ),
      }) as unknown as Snapshot;
    const m = new ProxyMetrics({
      mode: 'nftables',
      processMetrics: false,
      now: () => clock.ms,
      sources: { families: () => ['IPv4', 'IPv6'], runner: { lastQueuedMs: 1_999_000 }, snapshots: () => [snap('IPv4', 0), snap('IPv6', 2)] },
    });
    m.event({ kind: 'EndpointSlice', type: 'MODIFIED', object: v6Slice });
    // FQDN slices have no family: no latency is recorded for them.
    m.event({ kind: 'EndpointSlice', type: 'MODIFIED', object: { ...v6Slice, addressType: 'FQDN' } as KubeObject });
    clock.ms = 2_003_000;
    let done = m.syncStarted();
    m.familySynced('IPv4', true, 0.004);
    m.familySynced('IPv6', true, 0.3);
    done(true);
    clock.ms = 2_010_000;
    done = m.syncStarted();
    m.familySynced('IPv4', false, 0.002);
    m.backendFailed('nftables', 'IPv6');
    m.familySynced('IPv6', null, 0.1);
    done(false);
    m.conntrackReconciled('IPv4', 3, 0.05);
    m.conntrackReconciled('IPv4', 1, 0.05);
    const text = await m.text();
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 2);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv6"}'), 2);
    assert.equal(sample(text, 'kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family="IPv6"}'), 0.3);
    assert.equal(sample(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv6"}'), undefined);
    // IPv4 synced again; IPv6's second attempt failed, so its last success is the first sync.
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'), 2010);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"}'), 2003);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv6"}'), 1999);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv6"}'), 1);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv6"}'), 1);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv6"}'), 2);
    assert.equal(sample(text, 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}'), undefined);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv6",traffic_policy="external"}'), 2);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"}'), 0);
    assert.equal(sample(text, 'kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv4"}'), 4);
    assert.equal(sample(text, 'kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv6"}'), 0);
    assert.equal(sample(text, 'kubeproxy_conntrack_reconciler_sync_duration_seconds_count{ip_family="IPv4"}'), 2);
  });

  test('after a reload to another mode, /proxyMode and the failure counters follow the new mode', async () => {
    const m = new ProxyMetrics({ mode: 'nftables', processMetrics: false, sources: { families: () => ['IPv4'] } });
    m.backendFailed('nftables', 'IPv4');
    m.setMode('iptables');
    assert.equal(m.mode, 'iptables');
    // The old mode's backends, still being removed, no longer count.
    m.backendFailed('nftables', 'IPv4');
    m.backendFailed('iptables', 'IPv4');
    let text = await m.text();
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}'), 1);
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_repairs_total{mode="iptables"}'), 0);
    m.setMode('nftables');
    m.backendFailed('nftables', 'IPv4');
    text = await m.text();
    assert.equal(sample(text, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"}'), 2);
  });

  test("what the proxy process carried itself is served per family and purpose, read at scrape time", async () => {
    let accepted = 3;
    const traffic = (): CarriedTraffic => ({ purpose: 'userspace', accepted, refused: 1, activeConnections: 2, udpSessions: 1, bytesIn: 100, bytesOut: 4000 });
    const m = new ProxyMetrics({ mode: 'userspace', processMetrics: false, sources: { carriedTraffic: () => [{ family: 'IPv6', traffic: traffic() }] } });
    let text = await m.text();
    const labels = '{ip_family="IPv6",purpose="userspace"}';
    assert.equal(sample(text, `kubeproxy_inprocess_proxy_connections_total${labels}`), 3);
    assert.equal(sample(text, `kubeproxy_inprocess_proxy_refused_total${labels}`), 1);
    assert.equal(sample(text, `kubeproxy_inprocess_proxy_active_connections${labels}`), 2);
    assert.equal(sample(text, `kubeproxy_inprocess_proxy_udp_sessions${labels}`), 1);
    assert.equal(sample(text, 'kubeproxy_inprocess_proxy_bytes_total{ip_family="IPv6",purpose="userspace",direction="out"}'), 4000);
    accepted = 10;
    text = await m.text();
    assert.equal(sample(text, `kubeproxy_inprocess_proxy_connections_total${labels}`), 10);
  });
});

describe('metrics server', () => {
  let server: RunningServer | null = null;
  after(() => server?.close());

  test('/metrics, /healthz and /proxyMode as upstream; anything else 404', async () => {
    const m = new ProxyMetrics({ mode: 'nftables' });
    server = await startMetricsServer('127.0.0.1:0', m, { hardFail: true });
    const base = `http://127.0.0.1:${server.port}`;
    let res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.match(text, /^# TYPE kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds gauge$/m);
    assert.match(text, /^# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total counter$/m);
    // Node.js process metrics come along.
    assert.match(text, /^process_cpu_user_seconds_total /m);
    res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'ok');
    res = await fetch(`${base}/proxyMode`);
    assert.equal(await res.text(), 'nftables');
    res = await fetch(`${base}/configz`);
    assert.equal(res.status, 404);
    await res.text();
  });

  test('a taken port is fatal only with hardFail', async () => {
    const taken = await startMetricsServer('127.0.0.1:0', new ProxyMetrics({ mode: 'nftables', processMetrics: false }), { hardFail: true });
    try {
      const address = `127.0.0.1:${taken.port}`;
      const m = new ProxyMetrics({ mode: 'nftables', processMetrics: false });
      await assert.rejects(startMetricsServer(address, m, { hardFail: true }), /failed to start metrics server on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
      const soft = await startMetricsServer(address, m, { hardFail: false, retryMs: 60_000 });
      assert.equal(soft.port, null);
      await soft.close();
    } finally {
      await taken.close();
    }
  });
});
