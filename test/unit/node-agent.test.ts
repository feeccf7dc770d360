// Node-agent pieces without a kernel: sysctl values and rules, start-up checks, conntrack
// entry parsing and staleness, node events, the JSON log format, debug views and reload diffs.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { nodeSettingsOf } from '../../src/cli/agent.js';
import { configChanges } from '../../src/cli/config-watch.js';
import { applyDefaults, effectiveMode } from '../../src/config/index.js';
import { log, setLogFormat, setLogWriter, setVerbosity } from '../../src/log.js';
import { startupProblems, type CheckEnvironment } from '../../src/node/checks.js';
import { applyOomScoreAdj } from '../../src/node/oom.js';
import { deleteArgs, frontendsOf, mayLeaveStaleFlows, parseConntrackList, staleFlows } from '../../src/node/conntrack-reconcile.js';
import { EventRecorder, SERIES_WINDOW_MS, type EventApi } from '../../src/node/events.js';
import { applySysctls, conntrackMax, CONNTRACK_MAX, desiredSysctls } from '../../src/node/sysctl.js';
import { servicePortViews, SyncHistory } from '../../src/server/debug.js';
import { endpoint, localEndpoint, servicePort, snapshot } from '../support/snapshots.js';
import { tempFiles } from '../support/tempfiles.js';

describe('sysctls', () => {
  test('conntrack max is maxPerCore × cores, at least min; maxPerCore 0 leaves it alone', () => {
    assert.equal(conntrackMax(32768, 131072, 2), 131072);
    assert.equal(conntrackMax(32768, 131072, 8), 262144);
    assert.equal(conntrackMax(0, 131072, 8), 0);
  });

  test('the configuration gives timeouts in seconds, tcpBeLiberal, and route_localnet only for iptables localhost NodePorts', () => {
    const config = applyDefaults({
      mode: 'nftables',
      conntrack: { tcpBeLiberal: true, udpTimeout: '45s', udpStreamTimeout: '2m' },
    });
    const byName = new Map(desiredSysctls(nodeSettingsOf(config), 4).map((s) => [s.name, s.value]));
    assert.deepEqual(Object.fromEntries(byName), {
      [CONNTRACK_MAX]: 131072,
      'net/netfilter/nf_conntrack_tcp_timeout_established': 86400,
      'net/netfilter/nf_conntrack_tcp_timeout_close_wait': 3600,
      'net/netfilter/nf_conntrack_tcp_be_liberal': 1,
      'net/netfilter/nf_conntrack_udp_timeout': 45,
      'net/netfilter/nf_conntrack_udp_timeout_stream': 120,
    });
    const iptables = desiredSysctls(nodeSettingsOf(applyDefaults({ mode: 'iptables' })), 4);
    assert.ok(iptables.some((s) => s.name === 'net/ipv4/conf/all/route_localnet' && s.value === 1));
    const noLocalhost = desiredSysctls(nodeSettingsOf(applyDefaults({ mode: 'iptables', iptables: { localhostNodePorts: false } })), 4);
    assert.ok(!noLocalhost.some((s) => s.name.includes('route_localnet')));
  });

  test('writes only what differs; the global table size is only raised, and only from the initial namespace', () => {
    const files = tempFiles('kpt-sysctl-');
    const nf = join(files.dir, 'net/netfilter');
    mkdirSync(nf, { recursive: true });
    const put = (name: string, v: number): void => writeFileSync(join(files.dir, name), `${v}\n`);
    const get = (name: string): number => Number(readFileSync(join(files.dir, name), 'utf8'));
    put(CONNTRACK_MAX, 65536);
    put('net/netfilter/nf_conntrack_tcp_timeout_established', 432000);
    put('net/netfilter/nf_conntrack_tcp_timeout_close_wait', 3600);
    const settings = desiredSysctls(nodeSettingsOf(applyDefaults({ mode: 'nftables' })), 2);

    const inOwnNetns = applySysctls(settings, { procSys: files.dir, initialNetns: false });
    assert.equal(inOwnNetns.get(CONNTRACK_MAX), 'skipped-global');
    assert.equal(get(CONNTRACK_MAX), 65536);
    assert.equal(inOwnNetns.get('net/netfilter/nf_conntrack_tcp_timeout_established'), 'set');
    assert.equal(get('net/netfilter/nf_conntrack_tcp_timeout_established'), 86400);
    assert.equal(inOwnNetns.get('net/netfilter/nf_conntrack_tcp_timeout_close_wait'), 'unchanged');

    assert.equal(applySysctls(settings, { procSys: files.dir, initialNetns: true }).get(CONNTRACK_MAX), 'set');
    assert.equal(get(CONNTRACK_MAX), 131072);
    put(CONNTRACK_MAX, 1_000_000);
    assert.equal(applySysctls(settings, { procSys: files.dir, initialNetns: true }).get(CONNTRACK_MAX), 'kept-higher');
    assert.equal(get(CONNTRACK_MAX), 1_000_000);
  });

  test('a sysctl the kernel does not have is reported, not thrown', () => {
    const files = tempFiles('kpt-sysctl-');
    const out = applySysctls([{ name: 'net/netfilter/nf_conntrack_udp_timeout', value: 30 }], { procSys: files.dir, initialNetns: false });
    assert.equal(out.get('net/netfilter/nf_conntrack_udp_timeout'), 'failed');
  });
});

describe('oom score', () => {
  test("upstream's default -999 is written to the process's oom_score_adj", () => {
    const files = tempFiles('kpt-oom-');
    const path = files.write('0\n', 'txt');
    assert.equal(applyOomScoreAdj(applyDefaults({}).oomScoreAdj, path), true);
    assert.equal(readFileSync(path, 'utf8'), '-999\n');
    assert.equal(applyOomScoreAdj(-999, join(files.dir, 'missing/oom_score_adj')), false, 'a failure is reported, not thrown');
  });
});

describe('start-up checks', () => {
  const env = (over: Partial<CheckEnvironment> = {}): CheckEnvironment => ({
    uid: 0,
    hasTool: () => true,
    exists: () => true,
    nftablesWorks: async () => true,
    ...over,
  });

  test('a complete node has no problems', async () => {
    assert.deepEqual(await startupProblems('nftables', env()), []);
  });

  test('one clear message per problem: not root, each missing tool, missing kernel support', async () => {
    assert.deepEqual(await startupProblems('nftables', env({ uid: 1000 })), [
      'kube-proxy-ts must run as root to program the kernel (running as uid 1000); use --dry-run to only print the rules',
    ]);
    const missing = await startupProblems('ipvs', env({ hasTool: (t) => t !== 'ipset' && t !== 'ipvsadm', exists: (p) => p !== '/proc/net/ip_vs' }));
    assert.equal(missing.length, 3);
    assert.match(missing[0]!, /^ipvsadm is not installed/);
    assert.match(missing[1]!, /^ipset is not installed/);
    assert.match(missing[2]!, /no IPVS support .*modprobe ip_vs/);
    assert.deepEqual(await startupProblems('nftables', env({ nftablesWorks: async () => false })), [
      'the kernel has no nf_tables support (`nft list flowtables` fails; modprobe nf_tables); nftables mode needs it',
    ]);
  });
});

describe('conntrack reconciler', () => {
  const LIST = [
    'udp      17 29 src=10.244.1.20 dst=10.96.0.53 sport=40000 dport=53 src=10.244.1.10 dst=10.244.1.20 sport=5353 dport=40000 [ASSURED] mark=0 use=1',
    'udp      17 25 src=10.244.1.20 dst=10.96.0.53 sport=40001 dport=53 src=10.244.2.10 dst=10.244.1.20 sport=5353 dport=40001 mark=0 use=1',
    'udp      17 20 src=10.244.1.20 dst=10.96.0.54 sport=40002 dport=53 [UNREPLIED] src=10.96.0.54 dst=10.244.1.20 sport=53 dport=40002 mark=0 use=1',
    'udp      17 20 src=10.0.0.100 dst=10.0.0.1 sport=40003 dport=30053 src=10.244.1.10 dst=10.0.0.1 sport=5353 dport=40003 mark=0 use=1',
    'udp      17 20 src=10.0.0.100 dst=10.0.0.9 sport=40004 dport=30053 src=10.0.0.9 dst=10.0.0.100 sport=30053 dport=40004 mark=0 use=1',
    'udp      17 20 src=10.244.1.20 dst=8.8.8.8 sport=40005 dport=53 src=8.8.8.8 dst=10.244.1.20 sport=53 dport=40005 mark=0 use=1',
    'conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.',
  ].join('\n');

  test('parses the original tuple and the reply source of each entry', () => {
    const flows = parseConntrackList(LIST);
    assert.equal(flows.length, 6);
    assert.deepEqual(flows[0], {
      protocol: 'udp',
      origSrc: '10.244.1.20',
      origDst: '10.96.0.53',
      origSport: 40000,
      origDport: 53,
      replySrc: '10.244.1.10',
      replySport: 5353,
    });
  });

  test('stale: replies from a former endpoint, and never-NATed flows to a service IP or NodePort; other traffic is left alone', () => {
    const dns = servicePort({
      namespace: 'default',
      serviceName: 'dns',
      protocol: 'UDP',
      clusterIP: '10.96.0.53',
      port: 53,
      nodePort: 30053,
      endpoints: [endpoint('10.244.2.10', 5353)],
    });
    const recreated = servicePort({ namespace: 'default', serviceName: 'again', protocol: 'UDP', clusterIP: '10.96.0.54', port: 53, endpoints: [endpoint('10.244.2.11', 53)] });
    const stale = staleFlows(parseConntrackList(LIST), frontendsOf(snapshot([dns, recreated])), ['10.0.0.1']);
    assert.deepEqual(
      stale.map((f) => f.origSport),
      [40000, 40002, 40003],
      'a-1 was removed (40000), 10.96.0.54 was recreated (40002), the NodePort went to the removed endpoint (40003)',
    );
    assert.deepEqual(deleteArgs('IPv4', stale[0]!), [
      '-D', '-p', 'udp', '--orig-src', '10.244.1.20', '--orig-dst', '10.96.0.53', '--orig-port-src', '40000', '--orig-port-dst', '53',
    ]);
  });

  test("userspace mode: a flow redirected to the proxy's current listener is not stale; one to an old listener port is", () => {
    const dns = servicePort({ namespace: 'default', serviceName: 'dns', protocol: 'UDP', clusterIP: '10.96.0.53', port: 53, endpoints: [endpoint('10.244.2.10', 5353)] });
    const redirected = [
      'udp      17 25 src=10.244.1.20 dst=10.96.0.53 sport=41000 dport=53 src=10.0.0.1 dst=10.244.1.20 sport=36001 dport=41000 mark=0 use=1',
      'udp      17 25 src=10.244.1.21 dst=10.96.0.53 sport=41001 dport=53 src=10.244.1.1 dst=10.244.1.21 sport=36001 dport=41001 mark=0 use=1',
      'udp      17 25 src=10.244.1.22 dst=10.96.0.53 sport=41002 dport=53 src=10.0.0.1 dst=10.244.1.22 sport=36999 dport=41002 mark=0 use=1',
    ].join('\n');
    const snap = snapshot([dns]);
    const key = [...snap.services.keys()][0]!;
    const stale = staleFlows(parseConntrackList(redirected), frontendsOf(snap, new Map([[key, [36001]]])), ['10.0.0.1']);
    assert.deepEqual(stale.map((f) => f.origSport), [41002]);
    // Without the listener ports every redirected flow would look stale (its reply is not from an endpoint).
    assert.equal(staleFlows(parseConntrackList(redirected), frontendsOf(snap), ['10.0.0.1']).length, 3);
  });

  test('only a full sync or a change to a UDP/SCTP service port calls for a pass', () => {
    const changes = (changed: string[], deleted: string[] = [], full = false) => ({ full, changed: new Set(changed), deleted: new Set(deleted), staleEndpoints: [], staleServiceIPs: [] });
    assert.equal(mayLeaveStaleFlows(changes(['default/web:http/TCP', 'default/api/TCP'])), false);
    assert.equal(mayLeaveStaleFlows(changes([], [], true)), true);
    assert.equal(mayLeaveStaleFlows(changes(['default/web:http/TCP', 'kube-system/dns:dns/UDP'])), true);
    assert.equal(mayLeaveStaleFlows(changes([], ['default/sig/SCTP'])), true);
  });

  test('a service scaled to zero makes every entry to it stale; TCP services are never touched', () => {
    const zero = servicePort({ namespace: 'default', serviceName: 'dns', protocol: 'UDP', clusterIP: '10.96.0.53', port: 53 });
    const tcp = servicePort({ namespace: 'default', serviceName: 'dns', protocol: 'TCP', clusterIP: '10.96.0.54', port: 53 });
    const stale = staleFlows(parseConntrackList(LIST), frontendsOf(snapshot([zero, tcp])), []);
    assert.deepEqual(stale.map((f) => f.origSport), [40000, 40001]);
  });
});

describe('node events', () => {
  class RecordingApi implements EventApi {
    calls: Array<{ path: string; method: string; body: unknown; contentType?: string }> = [];
    async request(path: string, opts: { method: string; body: unknown; contentType?: string }) {
      this.calls.push({ path, ...opts });
      return { status: opts.method === 'POST' ? 201 : 200, body: { text: async () => '{}' } };
    }
  }

  test('an event regards the own Node, in the default namespace, from kube-proxy; a repeat patches its series', async () => {
    const api = new RecordingApi();
    let now = Date.parse('2026-01-02T03:04:05.678Z');
    const rec = new EventRecorder(api, 'node-1', () => now);
    await rec.record('Normal', 'Starting', 'StartKubeProxy', 'Starting kube-proxy-ts');
    const first = api.calls[0]!;
    assert.equal(first.method, 'POST');
    assert.equal(first.path, '/apis/events.k8s.io/v1/namespaces/default/events');
    const body = first.body as Record<string, unknown>;
    assert.deepEqual(body.regarding, { kind: 'Node', apiVersion: 'v1', name: 'node-1', uid: 'node-1' });
    assert.equal(body.reportingController, 'kube-proxy');
    assert.equal(body.note, 'Starting kube-proxy-ts');
    assert.equal(body.eventTime, '2026-01-02T03:04:05.678000Z');
    const name = (body.metadata as { name: string }).name;
    assert.match(name, /^node-1\.[0-9a-f]+$/);

    now += 1000;
    await rec.record('Normal', 'Starting', 'StartKubeProxy', 'Starting kube-proxy-ts');
    assert.deepEqual(api.calls[1], {
      path: `/apis/events.k8s.io/v1/namespaces/default/events/${name}`,
      method: 'PATCH',
      body: { series: { count: 2, lastObservedTime: '2026-01-02T03:04:06.678000Z' } },
      contentType: 'application/merge-patch+json',
    });
    now += SERIES_WINDOW_MS;
    await rec.record('Normal', 'Starting', 'StartKubeProxy', 'Starting kube-proxy-ts');
    assert.equal(api.calls[2]!.method, 'POST', 'past the series window a new event is created');
  });

  test('an API failure is logged, not thrown', async () => {
    const lines: string[] = [];
    const prev = setLogWriter((l) => lines.push(l));
    try {
      const api: EventApi = { request: async () => ({ status: 403, body: { text: async () => 'forbidden' } }) };
      await new EventRecorder(api, 'node-1').record('Normal', 'Starting', 'StartKubeProxy', 'x');
    } finally {
      setLogWriter(prev);
    }
    assert.match(lines.join(''), /recording an event failed.*HTTP 403/);
  });
});

describe('logging', () => {
  test('json format: one object per line with ts, msg, v and the fields; errors carry no v', () => {
    const lines: string[] = [];
    const prev = setLogWriter((l) => lines.push(l));
    try {
      setLogFormat('json');
      setVerbosity(2);
      log.v(2, 'synced proxy rules', { family: 'IPv4', ms: 3 });
      log.error('sync failed', { error: 'boom' });
      log.v(3, 'hidden');
    } finally {
      setLogFormat('text');
      setVerbosity(0);
      setLogWriter(prev);
    }
    assert.equal(lines.length, 2);
    const [a, b] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(typeof a!.ts, 'number');
    assert.deepEqual({ ...a, ts: 0 }, { ts: 0, msg: 'synced proxy rules', v: 2, family: 'IPv4', ms: 3 });
    assert.deepEqual({ ...b, ts: 0 }, { ts: 0, msg: 'sync failed', severity: 'error', error: 'boom' });
  });
});

describe('debug views', () => {
  test('/debug/services says why an endpoint carries no traffic, and which endpoints Local policy leaves out', () => {
    const web = servicePort({
      namespace: 'default',
      serviceName: 'web',
      clusterIP: '10.96.0.10',
      port: 80,
      nodePort: 30080,
      externalPolicyLocal: true,
      endpoints: [
        localEndpoint('10.244.1.10', 8080),
        endpoint('10.244.2.10', 8080),
        endpoint('10.244.2.11', 8080, { ready: false, serving: false }),
        endpoint('10.244.2.12', 8080, { ready: false, serving: true, terminating: true }),
      ],
    });
    const [view] = servicePortViews([snapshot([web])]);
    assert.deepEqual(view!.clusterEndpoints, ['10.244.1.10:8080', '10.244.2.10:8080']);
    assert.deepEqual(view!.localEndpoints, ['10.244.1.10:8080']);
    assert.deepEqual(
      view!.notChosen.map((e) => [e.endpoint, e.reason]),
      [
        ['10.244.2.11:8080', 'not ready'],
        ['10.244.2.12:8080', 'terminating: used only while no endpoint is ready'],
      ],
    );
    assert.deepEqual(view!.notLocal, [{ endpoint: '10.244.2.10:8080', reason: 'on node node-2, not this node' }]);
  });

  test('/debug/syncs keeps the causes of each sync; a failed sync passes them on to the next', () => {
    let now = 1000;
    const h = new SyncHistory(2, () => now);
    h.event({ kind: 'Service', type: 'ADDED', object: { metadata: { namespace: 'default', name: 'web' } } });
    const done = h.syncStarted();
    h.familySynced('IPv4', null, 0.004);
    now += 5;
    done(false);
    const next = h.syncStarted();
    h.familySynced('IPv4', true, 0.002);
    now += 2;
    next(true);
    const [latest, failed] = h.list();
    assert.deepEqual(latest, { at: new Date(1005).toISOString(), durationMs: 2, ok: true, families: [{ family: 'IPv4', full: true, ms: 2 }], causes: ['Service default/web (ADDED)'], moreCauses: 0 });
    assert.equal(failed!.ok, false);
    const third = h.syncStarted();
    third(true);
    assert.equal(h.list().length, 2, 'only the last syncs are kept');
  });

  test('/debug/syncs names the first 50 changes of a sync and counts the rest, across a failed sync', () => {
    const h = new SyncHistory();
    const svc = (i: number) => ({ kind: 'Service' as const, type: 'ADDED' as const, object: { metadata: { namespace: 'default', name: `web-${i}` } } });
    h.event(svc(0));
    h.event(svc(0));
    for (let i = 1; i < 60; i++) h.event(svc(i));
    h.syncStarted()(false);
    h.event(svc(60));
    h.syncStarted()(true);
    const [latest, failed] = h.list();
    assert.equal(failed!.causes.length, 50);
    assert.equal(failed!.causes[0], 'Service default/web-0 (ADDED)', 'a repeated change is listed once');
    assert.equal(failed!.moreCauses, 10);
    assert.deepEqual(latest!.causes, failed!.causes, 'the retry lists what the failed sync listed');
    assert.equal(latest!.moreCauses, 11, 'and counts what it counted, with the change since');
  });
});

describe('config reload', () => {
  test('classifies what a new configuration changes', () => {
    const base = applyDefaults({ mode: 'nftables' });
    const c = (p: Parameters<typeof applyDefaults>[0]) => configChanges(base, applyDefaults({ mode: 'nftables', ...p }), effectiveMode);
    assert.deepEqual(c({ nftables: { syncPeriod: '5s' } }), { needRestart: [], healthzAddress: false, metricsAddress: false, backends: 'none', nodeSettings: false, logging: false });
    assert.equal(c({ mode: 'iptables' }).backends, 'mode');
    assert.equal(c({ nftables: { masqueradeAll: true } }).backends, 'rebuild');
    assert.equal(c({ metricsBindAddress: '127.0.0.1:10250' }).metricsAddress, true);
    assert.deepEqual(c({ hostnameOverride: 'other' }).needRestart, ['hostnameOverride']);
    assert.equal(c({ conntrack: { udpTimeout: '10s' } }).nodeSettings, true);
  });
});
