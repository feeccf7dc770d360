import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { ViewRecorder, versions } from '../support/view-recorder.js';
import { waitFor } from '../support/wait-for.js';
import { kubeconfigFor } from '../support/kubeconfig.js';
import { ApiServerSource, type ApiServerSourceOptions } from '../../src/source/apiserver.js';
import { Credentials } from '../../src/source/credentials.js';
import { KubeClient, loadKubeConfig, type ApiRequester, type KubeRequestOptions, type KubeResponse } from '../../src/source/kubeclient.js';
import { Readable } from 'node:stream';
import type { KubeObject, ObjectKind } from '../../src/model/k8s.js';

const TOKEN = 'reflector-token';
const NODE = 'node-1';
const KINDS: ObjectKind[] = ['Service', 'EndpointSlice', 'Node'];
const EXCLUDING = ['service.kubernetes.io/service-proxy-name', 'service.kubernetes.io/headless'];

interface Harness {
  server: FakeApiServer;
  client: KubeClient;
  source: ApiServerSource;
  rec: ViewRecorder;
}

const open: Harness[] = [];
// For tests that count requests: a loaded machine must not trip the inactivity timer.
const QUIET = { watchStallTimeoutMs: 5000, requestTimeoutMs: 5000 };

async function startHarness(
  populate: (s: FakeApiServer) => void = () => undefined,
  sourceOpts: Partial<ApiServerSourceOptions> = {},
  token = TOKEN,
  serverOpts: { pageCachedLists?: boolean } = {},
): Promise<Harness> {
  const server = await FakeApiServer.start({ token: TOKEN, bookmarkIntervalMs: 50, ...serverOpts });
  populate(server);
  const client = KubeClient.load({ kubeconfig: kubeconfigFor(server, { token }) });
  const source = new ApiServerSource({
    client,
    nodeName: NODE,
    minWatchTimeoutSeconds: 2,
    backoffInitialMs: 20,
    backoffMaxMs: 200,
    watchStallTimeoutMs: 1000,
    requestTimeoutMs: 1000,
    ...sourceOpts,
  });
  const rec = new ViewRecorder();
  const h = { server, client, source, rec };
  open.push(h);
  await source.start(rec);
  return h;
}

async function stopHarnesses(): Promise<void> {
  for (const h of open.splice(0)) {
    await h.source.stop();
    await h.client.close();
    await h.server.stop();
  }
}

/** What the proxy should see: objects passing its selectors. */
function expected(server: FakeApiServer, kind: ObjectKind): Record<string, string> {
  let objs = server.list(kind);
  if (kind === 'Node') objs = objs.filter((o) => o.metadata?.name === NODE);
  else objs = objs.filter((o) => !EXCLUDING.some((l) => l in (o.metadata?.labels ?? {})));
  return versions(objs);
}

/** Waits until the consumer's view equals the server's objects for every kind. */
async function converged(h: Harness, what: string): Promise<void> {
  const same = (): boolean => KINDS.every((k) => isDeepStrictEqual(h.rec.view(k), expected(h.server, k)));
  try {
    await waitFor(same, what);
  } finally {
    for (const k of KINDS) assert.deepEqual(h.rec.view(k), expected(h.server, k), `${what}: ${k} view`);
    assert.deepEqual(h.rec.problems, []);
  }
}

const TRIGGER = 'endpoints.kubernetes.io/last-change-trigger-time';

function svc(ns: string, name: string, extra: Partial<KubeObject> & Record<string, unknown> = {}): KubeObject {
  return { metadata: { namespace: ns, name }, spec: { clusterIP: '10.96.0.10' }, ...extra } as KubeObject;
}

function populateSmall(s: FakeApiServer): void {
  for (let i = 0; i < 5; i++) s.create('Service', svc('default', `svc-${i}`));
  for (let i = 0; i < 5; i++) {
    const annotations = { [TRIGGER]: '2026-01-01T00:00:00Z', note: 'x'.repeat(100) };
    s.create('EndpointSlice', svc('default', `svc-${i}-abc`, { addressType: 'IPv4', metadata: { namespace: 'default', name: `svc-${i}-abc`, annotations } }));
  }
  s.create('Node', { metadata: { name: NODE } });
  s.create('Node', { metadata: { name: 'node-2' } });
}

describe('API server source', () => {
  afterEach(stopHarnesses);

  test('initial sync lists from the watch cache in one response per kind', async () => {
    const h = await startHarness((s) => {
      for (let i = 0; i < 1201; i++) s.create('Service', svc('bulk', `svc-${String(i).padStart(4, '0')}`));
      s.create('Node', { metadata: { name: NODE } });
    }, QUIET);
    await converged(h, 'initial list');
    assert.equal(Object.keys(h.rec.view('Service')).length, 1201);
    for (const kind of KINDS) {
      const lists = h.server.requestsMatching({ kind, verb: 'list' });
      assert.equal(lists.length, 1, `one ${kind} LIST`);
      assert.equal(lists[0]!.query.resourceVersion, '0');
    }
  });

  test('a refused watch-cache list falls back at once to a list of the latest state', async () => {
    const h = await startHarness((s) => {
      populateSmall(s);
      s.fail(504, { requests: 1, filter: { kind: 'Service', verb: 'list' } });
    }, QUIET);
    await converged(h, 'after the refused cached list');
    const lists = h.server.requestsMatching({ kind: 'Service', verb: 'list' });
    assert.equal(lists.length, 2);
    assert.equal(lists[0]!.query.resourceVersion, '0');
    assert.equal(lists[1]!.query.resourceVersion, undefined);
    assert.ok(lists[1]!.time - lists[0]!.time < 100, `fell back after ${lists[1]!.time - lists[0]!.time} ms`);
  });

  test('a server that pages cached lists: pages of 500 with the proxy selectors, then synced once per kind', async () => {
    const h = await startHarness((s) => {
      for (let i = 0; i < 1201; i++) s.create('Service', svc('bulk', `svc-${String(i).padStart(4, '0')}`));
      s.create('Service', svc('bulk', 'other-proxy', { metadata: { namespace: 'bulk', name: 'other-proxy', labels: { 'service.kubernetes.io/service-proxy-name': 'x' } } }));
      s.create('Service', svc('bulk', 'headless', { metadata: { namespace: 'bulk', name: 'headless', labels: { 'service.kubernetes.io/headless': '' } } }));
      s.create('EndpointSlice', svc('bulk', 'svc-0000-abc'));
      s.create('Node', { metadata: { name: NODE } });
      s.create('Node', { metadata: { name: 'node-2' } });
    }, QUIET, TOKEN, { pageCachedLists: true });
    await waitFor(() => h.rec.synced.length === 3, 'all kinds synced');
    await converged(h, 'initial list');
    assert.equal(Object.keys(h.rec.view('Service')).length, 1201);
    assert.deepEqual(Object.keys(h.rec.view('Node')), [`/${NODE}`]);
    const lists = h.server.requestsMatching({ kind: 'Service', verb: 'list' });
    assert.equal(lists.length, 3, 'three LIST pages for 1201 Services');
    for (const r of lists) {
      assert.equal(r.query.limit, '500');
      assert.equal(r.query.labelSelector, '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless');
    }
    assert.equal(lists[0]!.query.continue, undefined);
    assert.ok(lists[1]!.query.continue && lists[2]!.query.continue);
    const nodeList = h.server.requestsMatching({ kind: 'Node', verb: 'list' })[0]!;
    assert.equal(nodeList.query.fieldSelector, `metadata.name=${NODE}`);
    assert.equal(h.server.requestsMatching({ kind: 'EndpointSlice', verb: 'list' })[0]!.query.labelSelector, lists[0]!.query.labelSelector);
    // Events carry kind and apiVersion even though list items do not.
    const first = h.rec.events.find((e) => e.kind === 'EndpointSlice')!;
    assert.equal(first.object.kind, 'EndpointSlice');
    assert.equal(first.object.apiVersion, 'discovery.k8s.io/v1');
    assert.ok(h.rec.events.every((e) => e.type === 'ADDED'));
    // Every watch resumes from the version its list returned, with bookmarks asked for.
    await waitFor(() => h.server.count({ kind: 'Service', verb: 'watch' }) > 0, 'service watch');
    const w = h.server.requestsMatching({ kind: 'Service', verb: 'watch' })[0]!;
    assert.equal(w.query.allowWatchBookmarks, 'true');
    assert.equal(w.query.resourceVersion, h.server.resourceVersion);
    const t = Number(w.query.timeoutSeconds);
    assert.ok(t >= 2 && t <= 4, `jittered watch timeout ${t}`);
  });

  test('restarts the list when a continue token expires between pages', async () => {
    const h = await startHarness((s) => {
      for (let i = 0; i < 700; i++) s.create('Service', svc('bulk', `svc-${i}`));
      s.gone({ filter: { kind: 'Service', verb: 'list', continue: true } });
    }, QUIET, TOKEN, { pageCachedLists: true });
    await converged(h, 'list after expired continue token');
    const lists = h.server.requestsMatching({ kind: 'Service', verb: 'list' });
    // page 1, page 2 → 410, then a full new list of two pages.
    assert.equal(lists.length, 4);
    assert.equal(lists[2]!.query.continue, undefined);
    assert.equal(h.rec.synced.filter((k) => k === 'Service').length, 1);
  });

  test('delivers watch events in order, and selector changes as ADDED/DELETED', async () => {
    const h = await startHarness(populateSmall);
    await converged(h, 'initial');
    const mark = h.rec.events.length;
    const s = h.server;
    s.create('Service', svc('ns1', 'a'));
    s.update('Service', svc('ns1', 'a', { spec: { clusterIP: '10.96.0.11' } }));
    s.create('EndpointSlice', svc('ns1', 'a-xyz'));
    s.remove('Service', 'default', 'svc-0');
    s.update('Service', svc('default', 'svc-1', { metadata: { namespace: 'default', name: 'svc-1', labels: { 'service.kubernetes.io/headless': '' } } }));
    s.update('Service', svc('default', 'svc-1'));
    s.update('Node', { metadata: { name: NODE, labels: { zone: 'a' } } });
    s.update('Node', { metadata: { name: 'node-2', labels: { zone: 'b' } } });
    await converged(h, 'after changes');
    const got = h.rec.events.slice(mark).map((e) => `${e.type} ${e.kind} ${e.object.metadata!.name}`);
    const byKind = (k: string): string[] => got.filter((g) => g.split(' ')[1] === k);
    assert.deepEqual(byKind('Service'), [
      'ADDED Service a',
      'MODIFIED Service a',
      'DELETED Service svc-0',
      'DELETED Service svc-1',
      'ADDED Service svc-1',
    ]);
    assert.deepEqual(byKind('EndpointSlice'), ['ADDED EndpointSlice a-xyz']);
    assert.deepEqual(byKind('Node'), [`MODIFIED Node ${NODE}`]);
    const modified = h.rec.events.slice(mark).find((e) => e.type === 'MODIFIED' && e.kind === 'Service')!;
    assert.equal((modified.object as { spec?: { clusterIP?: string } }).spec?.clusterIP, '10.96.0.11');
  });

  test('bookmarks advance the version a new watch resumes from', async () => {
    const h = await startHarness(populateSmall);
    await converged(h, 'initial');
    await waitFor(() => h.server.openWatches === 3, 'three watches');
    const listRv = h.server.requestsMatching({ kind: 'Service', verb: 'watch' }).at(-1)!.query.resourceVersion;
    // Changes to other kinds move the global version; Service watches only see it in bookmarks.
    h.server.create('EndpointSlice', svc('default', 'bm-1'));
    h.server.create('EndpointSlice', svc('default', 'bm-2'));
    const rv = h.server.resourceVersion;
    assert.notEqual(rv, listRv);
    await new Promise((r) => setTimeout(r, 300));
    const before = h.server.count({ kind: 'Service', verb: 'watch' });
    h.server.dropConnections();
    await waitFor(() => h.server.count({ kind: 'Service', verb: 'watch' }) > before, 'service watch resumed');
    const resumed = h.server.requestsMatching({ kind: 'Service', verb: 'watch' })[before]!;
    assert.equal(resumed.query.resourceVersion, rv);
    assert.equal(h.server.count({ kind: 'Service', verb: 'list' }), 1, 'resumed without relisting');
    await converged(h, 'after resume');
  });

  test('keeps watching across the server-side watch timeout without relisting', async () => {
    const h = await startHarness(populateSmall, { minWatchTimeoutSeconds: 1 });
    await converged(h, 'initial');
    await waitFor(() => h.server.count({ kind: 'Node', verb: 'watch' }) >= 2, 'a second node watch', 8000);
    h.server.update('Node', { metadata: { name: NODE, labels: { later: 'yes' } } });
    await converged(h, 'after a change on a later watch');
    assert.equal(h.server.count({ kind: 'Node', verb: 'list' }), 1);
  });

  test('stop() ends all requests and no events follow', async () => {
    const h = await startHarness(populateSmall);
    await converged(h, 'initial');
    await h.source.stop();
    await waitFor(() => h.server.openWatches === 0, 'watch connections closed');
    const events = h.rec.events.length;
    const requests = h.server.requests.length;
    h.server.create('Service', svc('late', 'x'));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(h.rec.events.length, events);
    assert.equal(h.server.requests.length, requests);
  });

  test('a wrong token is retried with backoff and never reports synced', async () => {
    const h = await startHarness(populateSmall, {}, 'wrong-token');
    await waitFor(() => h.server.count({ kind: 'Service', verb: 'list' }) >= 3, 'repeated list attempts');
    assert.deepEqual(h.rec.synced, []);
    assert.deepEqual(h.rec.events, []);
  });

  test('rejects an empty node name', () => {
    assert.throws(() => new ApiServerSource({ client: {} as KubeClient, nodeName: '' }), /node name/);
  });
});

describe('kube client configuration', () => {
  test('a missing kubeconfig file is a clear error', () => {
    assert.throws(() => loadKubeConfig({ kubeconfig: '/nonexistent/kubeconfig' }), /does not exist/);
  });

  test('--master overrides the kubeconfig server URL', async () => {
    const server = await FakeApiServer.start({ token: TOKEN });
    const client = KubeClient.load({
      kubeconfig: kubeconfigFor('http://127.0.0.1:1', { token: TOKEN }),
      master: server.url,
    });
    try {
      const res = await client.request('/api/v1/nodes');
      assert.equal(res.status, 200);
      assert.equal(((await res.body.json()) as { kind: string }).kind, 'NodeList');
    } finally {
      await client.close();
      await server.stop();
    }
  });

  test('KUBECONFIG is used when no path is given; an exec plugin supplies the token', async () => {
    const server = await FakeApiServer.start({ token: 'from-exec' });
    const dir = mkdtempSync(join(tmpdir(), 'kpts-exec-'));
    const plugin = join(dir, 'plugin.mjs');
    writeFileSync(
      plugin,
      `process.stdout.write(JSON.stringify({apiVersion:'client.authentication.k8s.io/v1',kind:'ExecCredential',status:{token:'from-exec'}}));\n`,
    );
    const path = kubeconfigFor(server, { exec: { command: process.execPath, args: [plugin] }, dir });
    const saved = process.env.KUBECONFIG;
    process.env.KUBECONFIG = path;
    const client = KubeClient.load({});
    try {
      const res = await client.request('/api/v1/services', { query: { limit: '1' } });
      assert.equal(res.status, 200);
      await res.body.text();
      assert.equal(server.requestsMatching({ verb: 'list' })[0]!.query.limit, '1');
    } finally {
      if (saved === undefined) delete process.env.KUBECONFIG;
      else process.env.KUBECONFIG = saved;
      await client.close();
      await server.stop();
    }
  });

  test('in-cluster: service account token and CA from the pod filesystem', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kpts-sa-'));
    const sa = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), 'sa-token');
    writeFileSync(join(sa, 'ca.crt'), 'not a real CA');
    writeFileSync(join(sa, 'namespace'), 'kube-system');
    const saved = { h: process.env.KUBERNETES_SERVICE_HOST, p: process.env.KUBERNETES_SERVICE_PORT, k: process.env.KUBECONFIG };
    process.env.KUBERNETES_SERVICE_HOST = '10.96.0.1';
    process.env.KUBERNETES_SERVICE_PORT = '443';
    delete process.env.KUBECONFIG;
    try {
      const kc = loadKubeConfig({ inClusterPathPrefix: root });
      assert.equal(kc.cluster.server, 'https://10.96.0.1:443');
      assert.equal(kc.namespace, 'kube-system');
      const auth = await new Credentials(kc).get();
      assert.equal(auth.headers.Authorization, 'Bearer sa-token');
      assert.equal(auth.tls.ca?.toString(), 'not a real CA');
      delete process.env.KUBERNETES_SERVICE_HOST;
      assert.throws(() => loadKubeConfig({}), /not running in a cluster/);
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', saved.h],
        ['KUBERNETES_SERVICE_PORT', saved.p],
        ['KUBECONFIG', saved.k],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('API server source under faults: the view always converges to the server objects', () => {
  afterEach(stopHarnesses);

  // Changes made while the source is cut off, touching every kind.
  function mutate(s: FakeApiServer, tag: string): void {
    s.create('Service', svc('faults', `svc-${tag}`));
    s.remove('Service', 'default', 'svc-0');
    s.update('Service', svc('default', 'svc-1', { spec: { clusterIP: `10.96.1.${tag.length}` } }));
    s.create('EndpointSlice', svc('faults', `svc-${tag}-abc`));
    s.remove('EndpointSlice', 'default', 'svc-0-abc');
    s.update('Node', { metadata: { name: NODE, labels: { fault: tag } } });
  }

  async function ready(opts: Partial<ApiServerSourceOptions> = {}): Promise<Harness> {
    const h = await startHarness(populateSmall, opts);
    await converged(h, 'initial');
    await waitFor(() => h.server.openWatches === 3, 'three watches');
    return h;
  }

  const lists = (h: Harness): number => h.server.count({ verb: 'list' });

  test('dropped connections: resumes every watch from its last version, no relist', async () => {
    const h = await ready();
    h.server.dropConnections();
    mutate(h.server, 'drop');
    await converged(h, 'after drop');
    assert.equal(lists(h), 3);
  });

  test('stalled watch (silent, never closed): replaced and relisted, changes made meanwhile land', async () => {
    const h = await ready();
    const watches = h.server.count({ verb: 'watch' });
    h.server.hangWatches();
    const stalledAt = Date.now();
    mutate(h.server, 'silent');
    await converged(h, 'after silent watches');
    // The stall timeout is 1 s here; bookmarks come every 50 ms, so only a real stall trips it.
    assert.ok(Date.now() - stalledAt < 3000, `healed after ${Date.now() - stalledAt} ms`);
    // The view converges on the relist; the replacement watches open right after it.
    await waitFor(() => h.server.count({ verb: 'watch' }) >= watches + 3, 'three replacement watches', 2000);
    assert.equal(lists(h), 6);
    const ages = h.source.lastActivity();
    assert.deepEqual([...ages.keys()].sort(), ['EndpointSlice', 'Node', 'Service']);
    for (const t of ages.values()) assert.ok(Date.now() - t < 1000);
  });

  test('a quiet watch that gets bookmarks is not mistaken for a stall', async () => {
    const h = await ready();
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(lists(h), 3);
  });

  test('Retry-After beyond the backoff cap waits only the cap', async () => {
    const h = await ready();
    const before = h.server.count({ kind: 'Service', verb: 'watch' });
    h.server.fail(429, { retryAfter: 600, filter: { kind: 'Service', verb: 'watch' } });
    h.server.dropConnections();
    mutate(h.server, 'throttled-long');
    await converged(h, 'after 429 with a long Retry-After');
    const ws = h.server.requestsMatching({ kind: 'Service', verb: 'watch' });
    const gap = ws[before + 1]!.time - ws[before]!.time;
    // backoffMaxMs is 200 here.
    assert.ok(gap < 1000, `retried after ${gap} ms`);
  });

  test('outage then 410: relists at once, whatever the failures before', async () => {
    const h = await ready();
    h.server.fail(503, { requests: 5, filter: { kind: 'Service', verb: 'watch' } });
    h.server.gone({ filter: { kind: 'Service', verb: 'watch' } });
    h.server.dropConnections();
    mutate(h.server, 'outage');
    await waitFor(() => h.server.count({ kind: 'Service', verb: 'list' }) === 2, 'relist after 410');
    const ws = h.server.requestsMatching({ kind: 'Service', verb: 'watch' });
    const gone = ws[ws.length - 1]!;
    const relist = h.server.requestsMatching({ kind: 'Service', verb: 'list' })[1]!;
    assert.ok(relist.time - gone.time < 100, `relisted ${relist.time - gone.time} ms after the 410`);
    // A relist reads the latest state: the watch cache could be older than what was seen.
    assert.equal(relist.query.resourceVersion, undefined);
    await converged(h, 'after outage and 410');
  });

  test('requests that are accepted and never answered (list and watch) are retried', async () => {
    const h = await startHarness((s) => {
      populateSmall(s);
      s.hang(1, { kind: 'Service', verb: 'list' });
    });
    await converged(h, 'initial after a hung list');
    assert.equal(h.server.count({ kind: 'Service', verb: 'list' }), 2);
    await waitFor(() => h.server.openWatches === 3, 'three watches');
    h.server.hang(3, { verb: 'watch' });
    h.server.dropConnections();
    mutate(h.server, 'hung');
    await converged(h, 'after hung watch requests');
  });

  test('HTTP 500 on lists and watches: retried with backoff', async () => {
    const h = await startHarness((s) => {
      populateSmall(s);
      s.fail(500, { requests: 4, filter: { verb: 'list' } });
    });
    await converged(h, 'initial after failed lists');
    await waitFor(() => h.server.openWatches === 3, 'three watches');
    const watches = h.server.count({ verb: 'watch' });
    h.server.fail(500, { requests: 6, filter: { verb: 'watch' } });
    h.server.dropConnections();
    mutate(h.server, 'five-hundred');
    await converged(h, 'after failed watches');
    assert.ok(h.server.count({ verb: 'watch' }) >= watches + 6 + 3);
    assert.equal(h.rec.synced.length, 3);
  });

  test('HTTP 429 with Retry-After: the next attempt waits as long as the server asked', async () => {
    const h = await ready({ backoffMaxMs: 5000 });
    const before = h.server.count({ kind: 'Service', verb: 'watch' });
    h.server.fail(429, { retryAfter: 1, filter: { kind: 'Service', verb: 'watch' } });
    h.server.dropConnections();
    mutate(h.server, 'throttled');
    await converged(h, 'after 429');
    const ws = h.server.requestsMatching({ kind: 'Service', verb: 'watch' });
    const refused = ws[before]!;
    const next = ws[before + 1]!;
    // Without Retry-After the backoff here is 20-40 ms.
    assert.ok(next.time - refused.time >= 950, `retried after ${next.time - refused.time} ms`);
  });

  test('410 on resume after compaction: relists and synthesizes exactly the missed changes', async () => {
    const h = await ready();
    h.server.hangWatches();
    const mark = h.rec.events.length;
    h.server.remove('Service', 'default', 'svc-0');
    h.server.remove('Service', 'default', 'svc-1');
    h.server.update('Service', svc('default', 'svc-2', { spec: { clusterIP: '10.96.2.2' } }));
    h.server.create('Service', svc('default', 'svc-new'));
    h.server.remove('EndpointSlice', 'default', 'svc-4-abc');
    h.server.compact();
    await converged(h, 'after 410');
    assert.equal(h.server.count({ kind: 'Service', verb: 'list' }), 2);
    const got = h.rec.events
      .slice(mark)
      .map((e) => `${e.type} ${e.kind} ${e.object.metadata!.name}`)
      .sort();
    assert.deepEqual(got, [
      'ADDED Service svc-new',
      'DELETED EndpointSlice svc-4-abc',
      'DELETED Service svc-0',
      'DELETED Service svc-1',
      'MODIFIED Service svc-2',
    ]);
    const deleted = h.rec.events.slice(mark).find((e) => e.type === 'DELETED' && e.object.metadata!.name === 'svc-0')!;
    assert.equal(deleted.object.kind, 'Service');
    // A deletion found by the relist tells consumers what they read: identity, family, trigger time.
    const slice = h.rec.events.slice(mark).find((e) => e.type === 'DELETED' && e.kind === 'EndpointSlice')!;
    assert.equal(slice.object.kind, 'EndpointSlice');
    assert.equal(slice.object.metadata!.namespace, 'default');
    assert.ok(slice.object.metadata!.resourceVersion);
    assert.equal((slice.object as { addressType?: string }).addressType, 'IPv4');
    assert.deepEqual(slice.object.metadata!.annotations, { [TRIGGER]: '2026-01-01T00:00:00Z' });
    assert.equal(h.rec.synced.length, 3);
  });

  test('410 ERROR event on an open watch: relists', async () => {
    const h = await ready();
    h.server.goneWatches();
    mutate(h.server, 'gone');
    await converged(h, 'after 410 event');
    await waitFor(() => lists(h) >= 6, 'every kind relisted');
    assert.deepEqual(h.rec.problems, []);
  });

  test('a garbage line in the watch stream: logged, watch resumed, state kept', async () => {
    const h = await ready();
    const watches = h.server.count({ verb: 'watch' });
    const events = h.rec.events.length;
    h.server.garbageLine();
    mutate(h.server, 'garbage');
    await converged(h, 'after garbage');
    assert.ok(h.server.count({ verb: 'watch' }) >= watches + 3);
    assert.equal(lists(h), 3);
    // Only the six changes were delivered: nothing was re-added.
    assert.equal(h.rec.events.length - events, 6);
  });

  test('API server restart on the same port: reconnects and catches up', async () => {
    const h = await ready();
    const restarting = h.server.restart(300);
    mutate(h.server, 'restart');
    await restarting;
    h.server.create('Service', svc('faults', 'after-restart'));
    await converged(h, 'after restart');
    assert.equal(lists(h), 3);
  });
});

describe('API server source with malformed input', () => {
  function response(status: number, chunks: string[]): KubeResponse {
    const body = Readable.from(chunks.map((c) => Buffer.from(c))) as unknown as KubeResponse['body'] & {
      text(): Promise<string>;
    };
    body.text = async () => chunks.join('');
    return { status, headers: {}, body };
  }

  // Serves canned lists and one canned watch stream per kind; later watches stay open until aborted.
  class CannedApi implements ApiRequester {
    watched = new Set<string>();
    watchCalls = 0;
    constructor(
      private readonly lists: Record<string, unknown>,
      private readonly watches: Record<string, string[]>,
    ) {}
    async request(path: string, opts: KubeRequestOptions = {}): Promise<KubeResponse> {
      if (opts.query?.watch === 'true' && path === '/api/v1/services') this.watchCalls++;
      if (opts.query?.watch !== 'true') return response(200, [JSON.stringify(this.lists[path] ?? { metadata: { resourceVersion: '1' }, items: [] })]);
      if (!this.watched.has(path) && this.watches[path]) {
        this.watched.add(path);
        return response(200, this.watches[path]!);
      }
      return new Promise((_, reject) => opts.signal?.addEventListener('abort', () => reject(new Error('aborted'))));
    }
  }

  test('skips nameless objects, non-objects and unknown event types; a throwing handler does not stop delivery', async () => {
    const api = new CannedApi(
      {
        '/api/v1/services': {
          metadata: { resourceVersion: '3' },
          items: [{ metadata: { namespace: 'x', name: 'a', resourceVersion: '2' } }, { metadata: {} }, 42],
        },
      },
      {
        '/api/v1/services': [
          '{"type":"WEIRD","object":{}}\n',
          '{"type":"ADDED","object":{"metadata":{"namespace":"x"}}}\n{"type":"ADD',
          'ED","object":{"metadata":{"namespace":"x","name":"b","resourceVersion":"5"}}}\n',
          '{"type":"DELETED","object":{"metadata":{"namespace":"x","name":"never-seen","resourceVersion":"6"}}}\n',
        ],
      },
    );
    const rec = new ViewRecorder();
    let calls = 0;
    const source = new ApiServerSource({ client: api, nodeName: NODE, backoffInitialMs: 10, watchStallTimeoutMs: 60_000 });
    await source.start({
      onEvent: (e) => {
        rec.onEvent(e);
        if (++calls === 1) throw new Error('consumer bug');
      },
      onSynced: (k) => rec.onSynced(k),
    });
    try {
      // The second Service watch means the first stream was read to its end.
      await waitFor(() => api.watchCalls === 2, 'the canned stream consumed');
      assert.deepEqual(rec.view('Service'), { 'x/a': '2', 'x/b': '5' });
      assert.deepEqual(
        rec.events.map((e) => `${e.type} ${e.object.metadata!.name}`),
        ['ADDED a', 'ADDED b'],
      );
      assert.deepEqual(rec.problems, []);
      assert.deepEqual([...rec.synced].sort(), ['EndpointSlice', 'Node', 'Service']);
    } finally {
      await source.stop();
    }
  });

  // Answers each Service list with the next of `bodies` (chunks, or a stream the test feeds);
  // other lists are empty and watches stay open until aborted.
  class ListSequence implements ApiRequester {
    serviceLists = 0;
    constructor(private readonly bodies: Array<string[] | Readable>) {}
    async request(path: string, opts: KubeRequestOptions = {}): Promise<KubeResponse> {
      if (opts.query?.watch === 'true') {
        return new Promise((_, reject) => opts.signal?.addEventListener('abort', () => reject(new Error('aborted'))));
      }
      if (path !== '/api/v1/services') return response(200, ['{"metadata":{"resourceVersion":"1"},"items":[]}']);
      const body = this.bodies[Math.min(this.serviceLists++, this.bodies.length - 1)]!;
      if (Array.isArray(body)) return response(200, body);
      return { status: 200, headers: {}, body: body as unknown as KubeResponse['body'] };
    }
  }

  const svc = (name: string, rv: string): string => JSON.stringify({ metadata: { namespace: 'x', name, resourceVersion: rv } });

  test('a truncated or garbled list body is retried; the relist delivers exactly the difference', async () => {
    const full = `{"metadata":{"resourceVersion":"9"},"items":[${svc('b', '4')},${svc('c', '5')}]}`;
    const api = new ListSequence([
      // Cut inside the second item, after the first was handed on.
      [`{"metadata":{"resourceVersion":"8"},"items":[${svc('a', '3')},${svc('b', '4').slice(0, 20)}`],
      ['{"metadata":{"resourceVersion":"8"},"items":[{"metadata":}]}'],
      ['<html>502 Bad Gateway</html>'],
      [full],
    ]);
    const rec = new ViewRecorder();
    const source = new ApiServerSource({ client: api, nodeName: NODE, backoffInitialMs: 5, backoffMaxMs: 20 });
    await source.start(rec);
    try {
      await waitFor(() => rec.synced.includes('Service'), 'Services synced');
      assert.equal(api.serviceLists, 4);
      assert.deepEqual(rec.view('Service'), { 'x/b': '4', 'x/c': '5' });
      assert.deepEqual(
        rec.events.filter((e) => e.kind === 'Service').map((e) => `${e.type} ${e.object.metadata!.name}`),
        ['ADDED a', 'DELETED a', 'ADDED b', 'ADDED c'],
      );
      assert.deepEqual(rec.problems, []);
    } finally {
      await source.stop();
    }
  });

  test('the first list hands each item on as it arrives, before the body ends', async () => {
    const body = new Readable({ read: () => undefined });
    const api = new ListSequence([body]);
    const rec = new ViewRecorder();
    const source = new ApiServerSource({ client: api, nodeName: NODE });
    await source.start(rec);
    try {
      body.push(Buffer.from(`{"metadata":{"resourceVersion":"9"},"items":[${svc('a', '3')},${svc('b', '4').slice(0, 9)}`));
      await waitFor(() => rec.events.length === 1, 'the first item delivered');
      assert.equal(rec.events[0]!.object.kind, 'Service');
      assert.ok(!rec.synced.includes('Service'));
      body.push(Buffer.from(`${svc('b', '4').slice(9)}]}`));
      body.push(null);
      await waitFor(() => rec.synced.includes('Service'), 'Services synced');
      assert.deepEqual(rec.view('Service'), { 'x/a': '3', 'x/b': '4' });
      assert.deepEqual(rec.problems, []);
    } finally {
      await source.stop();
    }
  });
});

test('kubeproxy_watch_seconds_since_last_event reports the age per resource', async () => {
  const { Registry } = await import('prom-client');
  const { registerWatchFreshness } = await import('../../src/server/watch-metrics.js');
  const registry = new Registry();
  const now = 1_000_000;
  registerWatchFreshness(registry, { lastActivity: () => new Map([['Service', now - 12_500], ['Node', now]]) }, () => now);
  const text = await registry.metrics();
  assert.match(text, /^kubeproxy_watch_seconds_since_last_event\{resource="Service"\} 12\.5$/m);
  assert.match(text, /^kubeproxy_watch_seconds_since_last_event\{resource="Node"\} 0$/m);
});
