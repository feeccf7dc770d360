import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BackendConfig } from '../../src/backend/types.js';
import type { KubeObject } from '../../src/model/k8s.js';
import { ProxyModel } from '../../src/model/tracker.js';
import type { Snapshot } from '../../src/model/types.js';
import {
  healthCheckHosts,
  nodeEligible,
  ProxierHealth,
  ServiceHealthServers,
  startHealthServer,
  TO_BE_DELETED_TAINT,
} from '../../src/server/health.js';
import { parseBindAddress, type RunningServer } from '../../src/server/http.js';
import { ProxyMetrics } from '../../src/server/metrics.js';

const NODE = 'node-1';
const TIMEOUT_MS = 60_000;

async function get(port: number, path: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

/** A port nothing listens on right now. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function occupy(port = 0): Promise<Server> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(port, '127.0.0.1', r));
  return s;
}

function portOf(s: Server): number {
  return (s.address() as AddressInfo).port;
}

async function waitFor(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A fake clock and runner state: health is judged on these alone. */
function fixture() {
  const state = { pendingSinceMs: 0, lastSyncMs: 0 };
  const clock = { ms: Date.parse('2024-05-01T10:00:00Z') };
  const health = new ProxierHealth({ state, healthTimeoutMs: TIMEOUT_MS, nodeName: NODE, now: () => clock.ms });
  return { state, clock, health };
}

function nodeEvent(obj: Record<string, unknown>, name = NODE, type: 'ADDED' | 'MODIFIED' | 'DELETED' = 'MODIFIED') {
  return { kind: 'Node' as const, type, object: { apiVersion: 'v1', kind: 'Node', ...obj, metadata: { name, ...(obj.metadata as object) } } as KubeObject };
}

describe('proxier health server', () => {
  const servers: RunningServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  async function start(health: ProxierHealth, metrics?: ProxyMetrics): Promise<number> {
    const s = await startHealthServer('127.0.0.1:0', { health, hardFail: true, ...(metrics ? { counters: metrics } : {}) });
    servers.push(s);
    assert.ok(s.port !== null && s.port > 0);
    return s.port;
  }

  test('a reloaded sync period moves the health timeout', () => {
    const { state, clock, health } = fixture();
    state.lastSyncMs = clock.ms;
    state.pendingSinceMs = clock.ms;
    clock.ms += TIMEOUT_MS - 1;
    assert.equal(health.isHealthy(), true);
    health.setHealthTimeout(TIMEOUT_MS / 2);
    assert.equal(health.isHealthy(), false);
    health.setHealthTimeout(TIMEOUT_MS * 2);
    assert.equal(health.isHealthy(), true);
    assert.throws(() => health.setHealthTimeout(0), /must be > 0/);
  });

  test('/healthz 503 until the first sync (/livez 200), then unhealthy once a queued update waits the timeout', async () => {
    const { state, clock, health } = fixture();
    const port = await start(health);

    let r = await get(port, '/healthz');
    assert.equal(r.status, 503);
    assert.equal(JSON.parse(r.body).lastUpdated, '0001-01-01T00:00:00.000Z');
    assert.equal((await get(port, '/livez')).status, 200);
    state.lastSyncMs = clock.ms;
    const firstSync = clock.ms;

    r = await get(port, '/healthz');
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/json');
    const body = JSON.parse(r.body);
    assert.deepEqual(body, { lastUpdated: '2024-05-01T10:00:00.000Z', currentTime: '2024-05-01T10:00:00.000Z', nodeEligible: true });

    // A sync was queued and nothing synced: still healthy just before the timeout...
    state.pendingSinceMs = clock.ms;
    clock.ms += TIMEOUT_MS - 1;
    assert.equal((await get(port, '/healthz')).status, 200);
    assert.equal((await get(port, '/livez')).status, 200);

    // ...and unhealthy at it; lastUpdated then tells when the last sync happened.
    clock.ms += 1;
    r = await get(port, '/healthz');
    assert.equal(r.status, 503);
    assert.equal(JSON.parse(r.body).lastUpdated, new Date(firstSync).toISOString());
    assert.equal((await get(port, '/livez')).status, 503);

    // A successful sync clears the pending request.
    state.lastSyncMs = clock.ms;
    state.pendingSinceMs = 0;
    clock.ms += 5000;
    r = await get(port, '/livez');
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { lastUpdated: '2024-05-01T10:01:05.000Z', currentTime: '2024-05-01T10:01:05.000Z' });

    // A request queued later and stuck again reports the last successful sync.
    const lastSync = state.lastSyncMs;
    state.pendingSinceMs = clock.ms;
    clock.ms += TIMEOUT_MS * 2;
    r = await get(port, '/healthz');
    assert.equal(r.status, 503);
    assert.equal(JSON.parse(r.body).lastUpdated, new Date(lastSync).toISOString());
  });

  test('a kernel known to hold wrong rules fails both /healthz and /livez until repaired', async () => {
    const state = { pendingSinceMs: 0, lastSyncMs: 1 };
    let inSync = true;
    const health = new ProxierHealth({ state, healthTimeoutMs: TIMEOUT_MS, nodeName: NODE, kernelInSync: () => inSync });
    const port = await start(health);
    assert.equal((await get(port, '/healthz')).status, 200);
    inSync = false;
    assert.equal((await get(port, '/healthz')).status, 503);
    assert.equal((await get(port, '/livez')).status, 503);
    inSync = true;
    assert.equal((await get(port, '/healthz')).status, 200);
  });

  test('a node being deleted or tainted for deletion fails /healthz but not /livez', async () => {
    const { state, health } = fixture();
    state.lastSyncMs = 1;
    const port = await start(health);

    health.event(nodeEvent({ metadata: { deletionTimestamp: '2024-05-01T09:00:00Z' } }));
    let r = await get(port, '/healthz');
    assert.equal(r.status, 503);
    assert.equal(JSON.parse(r.body).nodeEligible, false);
    assert.equal((await get(port, '/livez')).status, 200);

    health.event(nodeEvent({ spec: { taints: [{ key: 'other', effect: 'NoSchedule' }] } }));
    assert.equal((await get(port, '/healthz')).status, 200);

    health.event(nodeEvent({ spec: { taints: [{ key: TO_BE_DELETED_TAINT, value: '1700000000', effect: 'NoSchedule' }] } }));
    r = await get(port, '/healthz');
    assert.equal(r.status, 503);
    assert.equal(JSON.parse(r.body).nodeEligible, false);

    // Another node's events change nothing.
    health.event(nodeEvent({}, 'node-2'));
    assert.equal((await get(port, '/healthz')).status, 503);

    health.event(nodeEvent({ spec: {} }));
    assert.equal((await get(port, '/healthz')).status, 200);
  });

  test('responses are counted by code; other paths are 404', async () => {
    const { state, clock, health } = fixture();
    state.lastSyncMs = 1;
    const metrics = new ProxyMetrics({ mode: 'nftables', processMetrics: false });
    const port = await start(health, metrics);
    await get(port, '/healthz');
    await get(port, '/healthz');
    await get(port, '/livez');
    state.pendingSinceMs = clock.ms - TIMEOUT_MS;
    await get(port, '/healthz');
    assert.equal((await get(port, '/metrics')).status, 404);
    const text = await metrics.text();
    assert.match(text, /^kubeproxy_proxy_healthz_total\{code="200"\} 2$/m);
    assert.match(text, /^kubeproxy_proxy_healthz_total\{code="503"\} 1$/m);
    assert.match(text, /^kubeproxy_proxy_livez_total\{code="200"\} 1$/m);
  });

  test('nodeEligible reads deletionTimestamp and the autoscaler taint; odd input is eligible', () => {
    assert.equal(nodeEligible({ metadata: { deletionTimestamp: '2024-01-01T00:00:00Z' } }), false);
    assert.equal(nodeEligible({ spec: { taints: [null, 'x', { key: TO_BE_DELETED_TAINT }] } }), false);
    assert.equal(nodeEligible({ spec: { taints: 'nope' } }), true);
    assert.equal(nodeEligible(null), true);
  });
});

describe('bind addresses and bindAddressHardFail', () => {
  test('a taken port is fatal with hardFail, and retried without it', async () => {
    const blocker = await occupy();
    const port = portOf(blocker);
    const { health } = fixture();

    await assert.rejects(
      startHealthServer(`127.0.0.1:${port}`, { health, hardFail: true }),
      new RegExp(`failed to start healthz server on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`),
    );

    const soft = await startHealthServer(`127.0.0.1:${port}`, { health, hardFail: false, retryMs: 30 });
    try {
      assert.equal(soft.port, null);
      await new Promise<void>((r) => blocker.close(() => r()));
      await waitFor(() => soft.port === port, 'the retried bind');
      assert.equal((await get(port, '/livez')).status, 200);
    } finally {
      await soft.close();
    }
  });

  test('closing stops a pending retry', async () => {
    const blocker = await occupy();
    const port = portOf(blocker);
    const { health } = fixture();
    const soft = await startHealthServer(`127.0.0.1:${port}`, { health, hardFail: false, retryMs: 30 });
    await soft.close();
    await new Promise<void>((r) => blocker.close(() => r()));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(soft.port, null);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/livez`));
  });

  test('parseBindAddress takes host:port and [v6]:port only', () => {
    assert.deepEqual(parseBindAddress('0.0.0.0:10256'), { host: '0.0.0.0', port: 10256 });
    assert.deepEqual(parseBindAddress('[::1]:10249'), { host: '::1', port: 10249 });
    assert.deepEqual(parseBindAddress(':10256'), { host: undefined, port: 10256 });
    for (const bad of ['10256', '1.2.3.4', '1.2.3.4:x', '1.2.3.4:70000', '::1:80']) {
      assert.throws(() => parseBindAddress(bad), /invalid bind address/, bad);
    }
  });
});

function lbService(name: string, hcPort: number, ports: Array<{ name: string; port: number }>): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'ns', name, resourceVersion: '1' },
    spec: {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.10',
      clusterIPs: ['10.96.0.10'],
      ipFamilies: ['IPv4'],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: hcPort,
      ports: ports.map((p, i) => ({ ...p, protocol: 'TCP', targetPort: p.port, nodePort: 30100 + i })),
    },
  } as KubeObject;
}

function slice(service: string, endpoints: Array<{ ip: string; node: string; ready?: boolean }>, ports: Array<{ name: string; port: number }>): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: 'ns', name: `${service}-abc`, labels: { 'kubernetes.io/service-name': service }, resourceVersion: '1' },
    addressType: 'IPv4',
    endpoints: endpoints.map((e) => ({ addresses: [e.ip], nodeName: e.node, conditions: { ready: e.ready ?? true } })),
    ports: ports.map((p) => ({ ...p, protocol: 'TCP' })),
  } as KubeObject;
}

describe('service health-check node ports', () => {
  const model = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
  const { state, clock, health } = fixture();
  const checks = new ServiceHealthServers(health);
  const snap = (): Snapshot[] => [model.snapshot('IPv4')];
  const HOSTS = ['127.0.0.1'];
  after(() => checks.close());

  test('one server per service answering with its local ready endpoint count', async () => {
    const port = await freePort();
    const ports = [{ name: 'http', port: 80 }, { name: 'https', port: 443 }];
    model.apply({ kind: 'Service', type: 'ADDED', object: lbService('web', port, ports) });
    model.apply({
      kind: 'EndpointSlice',
      type: 'ADDED',
      object: slice('web', [{ ip: '10.244.1.5', node: NODE }, { ip: '10.244.1.6', node: NODE }, { ip: '10.244.1.7', node: NODE, ready: false }, { ip: '10.244.2.5', node: 'node-2' }], ports),
    });
    await checks.update(snap(), HOSTS);
    assert.deepEqual(checks.ports(), new Map([['ns/web', port]]));

    const r = await get(port, '/');
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/json');
    assert.deepEqual(JSON.parse(r.body), { service: { namespace: 'ns', name: 'web' }, localEndpoints: 2, serviceProxyHealthy: true });
    // Any path answers, as upstream's handler does.
    assert.equal((await get(port, '/healthz')).status, 200);
  });

  test('503 without local ready endpoints, and while the proxy is unhealthy', async () => {
    const port = checks.ports().get('ns/web')!;
    const ports = [{ name: 'http', port: 80 }, { name: 'https', port: 443 }];
    model.apply({ kind: 'EndpointSlice', type: 'MODIFIED', object: slice('web', [{ ip: '10.244.2.5', node: 'node-2' }, { ip: '10.244.1.7', node: NODE, ready: false }], ports) });
    await checks.update(snap(), HOSTS);
    let r = await get(port, '/');
    assert.equal(r.status, 503);
    assert.deepEqual(JSON.parse(r.body), { service: { namespace: 'ns', name: 'web' }, localEndpoints: 0, serviceProxyHealthy: true });

    model.apply({ kind: 'EndpointSlice', type: 'MODIFIED', object: slice('web', [{ ip: '10.244.1.8', node: NODE }], ports) });
    await checks.update(snap(), HOSTS);
    assert.equal((await get(port, '/')).status, 200);

    state.pendingSinceMs = clock.ms - TIMEOUT_MS;
    r = await get(port, '/');
    assert.equal(r.status, 503);
    assert.deepEqual(JSON.parse(r.body), { service: { namespace: 'ns', name: 'web' }, localEndpoints: 1, serviceProxyHealthy: false });
    state.pendingSinceMs = 0;
  });

  test('a changed port moves the server; a deleted or Cluster-policy service closes it', async () => {
    const oldPort = checks.ports().get('ns/web')!;
    const newPort = await freePort();
    const ports = [{ name: 'http', port: 80 }, { name: 'https', port: 443 }];
    model.apply({ kind: 'Service', type: 'MODIFIED', object: lbService('web', newPort, ports) });
    await checks.update(snap(), HOSTS);
    assert.deepEqual(checks.ports(), new Map([['ns/web', newPort]]));
    await assert.rejects(fetch(`http://127.0.0.1:${oldPort}/`));
    assert.equal((await get(newPort, '/')).status, 200);

    const cluster = lbService('web', newPort, ports);
    (cluster as unknown as { spec: Record<string, unknown> }).spec.externalTrafficPolicy = 'Cluster';
    model.apply({ kind: 'Service', type: 'MODIFIED', object: cluster });
    await checks.update(snap(), HOSTS);
    assert.equal(checks.ports().size, 0);
    await assert.rejects(fetch(`http://127.0.0.1:${newPort}/`));

    model.apply({ kind: 'Service', type: 'MODIFIED', object: lbService('web', newPort, ports) });
    await checks.update(snap(), HOSTS);
    assert.equal((await get(newPort, '/')).status, 200);
    model.apply({ kind: 'Service', type: 'DELETED', object: lbService('web', newPort, ports) });
    await checks.update(snap(), HOSTS);
    assert.equal(checks.ports().size, 0);
    await assert.rejects(fetch(`http://127.0.0.1:${newPort}/`));
  });

  test('a port in use is logged and retried on the next update', async () => {
    const blocker = await occupy();
    const port = portOf(blocker);
    const ports = [{ name: 'http', port: 80 }];
    model.apply({ kind: 'Service', type: 'ADDED', object: lbService('busy', port, ports) });
    model.apply({ kind: 'EndpointSlice', type: 'ADDED', object: slice('busy', [{ ip: '10.244.1.9', node: NODE }], ports) });
    await checks.update(snap(), HOSTS);
    assert.equal(checks.ports().has('ns/busy'), false);
    await new Promise<void>((r) => blocker.close(() => r()));
    await checks.update(snap(), HOSTS);
    assert.equal(checks.ports().get('ns/busy'), port);
    assert.equal((await get(port, '/')).status, 200);
  });

  test('opening many ports gives the event loop back now and then (a sync waiting on I/O is not held up)', async () => {
    const many = new ServiceHealthServers(health);
    const own = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    const COUNT = 100;
    const ports = [{ name: 'http', port: 80 }];
    // Distinct free ports: all taken at once, then let go.
    const held = await Promise.all(Array.from({ length: COUNT }, () => occupy()));
    const free = held.map(portOf);
    await Promise.all(held.map((h) => new Promise<void>((r) => h.close(() => r()))));
    for (let i = 0; i < COUNT; i++) {
      const svc = lbService(`lb${i}`, free[i]!, ports) as unknown as { spec: { clusterIP: string; clusterIPs: string[]; ports: Array<{ nodePort: number }> } };
      svc.spec.clusterIP = `10.96.1.${i + 1}`;
      svc.spec.clusterIPs = [svc.spec.clusterIP];
      svc.spec.ports[0]!.nodePort = 31000 + i;
      own.apply({ kind: 'Service', type: 'ADDED', object: svc as unknown as KubeObject });
      own.apply({ kind: 'EndpointSlice', type: 'ADDED', object: slice(`lb${i}`, [{ ip: `10.244.3.${i + 1}`, node: NODE }], ports) });
    }
    try {
      let openWhenLoopTurned = -1;
      setImmediate(() => (openWhenLoopTurned = many.ports().size));
      await many.update([own.snapshot('IPv4')], HOSTS);
      assert.equal(many.ports().size, COUNT);
      assert.ok(openWhenLoopTurned >= 0 && openWhenLoopTurned < COUNT, `the loop turned only after ${openWhenLoopTurned} of ${COUNT} ports were open`);
    } finally {
      await many.close();
    }
  });
});

describe('healthCheckHosts', () => {
  const cfg = (nodePortAddresses: string[], nodeIPs: string[]): BackendConfig => ({
    family: 'IPv4',
    masqueradeAll: false,
    masqueradeBit: 14,
    detectLocalMode: 'ClusterCIDR',
    localCIDRs: [],
    bridgeInterface: '',
    interfaceNamePrefix: '',
    nodePortAddresses,
    nodeIPs,
  });

  test('follows nodePortAddresses like the NodePort rules', () => {
    const ips = ['192.168.1.10', '10.0.0.10'];
    // nftables mode: nothing given means the primary IP.
    assert.deepEqual(healthCheckHosts([cfg([], ips)], 'nftables'), ['192.168.1.10']);
    assert.deepEqual(healthCheckHosts([cfg(['primary'], ips)], 'iptables'), ['192.168.1.10']);
    assert.deepEqual(healthCheckHosts([cfg(['10.0.0.0/8'], ips)], 'nftables'), ['10.0.0.10']);
    // nftables mode: a zero CIDR selects every node IP, as the NodePort rules do.
    assert.deepEqual(healthCheckHosts([cfg(['0.0.0.0/0'], ips)], 'nftables'), ips);
    // Other modes: nothing given means every address; so does a zero CIDR.
    assert.equal(healthCheckHosts([cfg([], ips)], 'iptables'), null);
    assert.equal(healthCheckHosts([cfg([], ips)], 'ipvs'), null);
    assert.equal(healthCheckHosts([cfg(['0.0.0.0/0'], ips)], 'iptables'), null);
    assert.deepEqual(healthCheckHosts([cfg(['10.0.0.0/8'], ips)], 'iptables'), ['10.0.0.10']);
    // Nothing matches: every address rather than no health check at all.
    assert.equal(healthCheckHosts([cfg(['172.16.0.0/12'], ips)], 'nftables'), null);
  });
});
