// The proxy as a node agent, end to end: it runs in node1's network namespace with a config file
// laid out like a ConfigMap volume, against the fake API server, and the tests look at what an
// operator would see: the process's OOM score and the namespace's sysctls, the Event on its
// Node, the local debug pages, configuration changes under running traffic, a restart under a
// client loop, stale UDP conntrack entries, the API calls it makes (against deploy/rbac.yaml),
// and the start-up checks.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { E2ECluster } from '../support/e2e-cluster.js';
import { COMMAND } from '../support/command.js';
import { requestMany, tcpRequest, udpRequest, type ManyResult } from '../support/netclient.js';
import type { PodSpec } from '../support/topology.js';

const PODS: PodSpec[] = [
  { name: 'a-1', node: 1, ip: '10.244.1.10', ip6: 'fd00:244:1::10' },
  { name: 'b-1', node: 2, ip: '10.244.2.10', ip6: 'fd00:244:2::10' },
  { name: 'c-1', node: 1, ip: '10.244.1.20', ip6: 'fd00:244:1::20' },
];
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLIENT_IP = '10.244.1.20';

const config = (extra = ''): string =>
  [
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
    'kind: KubeProxyConfiguration',
    'clusterCIDR: 10.244.0.0/16,fd00:244::/32',
    extra.includes('metricsBindAddress:') ? '' : 'metricsBindAddress: 127.0.0.1:10249',
    // Lowering it (upstream's -999) needs CAP_SYS_RESOURCE, which test machines may lack; any
    // process may raise its own, so the test asks for a raise it can check.
    'oomScoreAdj: 321',
    'conntrack:',
    '  maxPerCore: 4000000',
    '  tcpBeLiberal: true',
    '  udpTimeout: 45s',
    'iptables: {minSyncPeriod: 0s}',
    extra.includes('nftables:') ? '' : 'nftables: {minSyncPeriod: 0s}',
    extra.includes('mode:') ? '' : 'mode: nftables',
    extra,
  ].join('\n') + '\n';

/** A directory laid out as the kubelet mounts a ConfigMap: files behind a `..data` symlink that is swapped atomically. */
class ConfigMapVolume {
  readonly dir = mkdtempSync(join(tmpdir(), 'kpt-cm-'));
  private version = 0;
  constructor(text: string) {
    this.write(text);
    symlinkSync('..data/config.conf', join(this.dir, 'config.conf'));
  }
  get path(): string {
    return join(this.dir, 'config.conf');
  }
  write(text: string): void {
    const v = `..v${++this.version}`;
    mkdirSync(join(this.dir, v));
    writeFileSync(join(this.dir, v, 'config.conf'), text);
    symlinkSync(v, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
  }
  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const SYSCTLS = {
  'net/netfilter/nf_conntrack_tcp_timeout_established': '86400',
  'net/netfilter/nf_conntrack_tcp_timeout_close_wait': '3600',
  'net/netfilter/nf_conntrack_tcp_be_liberal': '1',
  'net/netfilter/nf_conntrack_udp_timeout': '45',
};
const CONNTRACK_MAX = 'net/netfilter/nf_conntrack_max';
const readRoot = (name: string): string => readFileSync(`/proc/sys/${name}`, 'utf8').trim();

describe('the proxy as a node agent', () => {
  let c: E2ECluster;
  let volume: ConfigMapVolume;
  const rootBefore = new Map<string, string>();

  before(async () => {
    for (const name of [...Object.keys(SYSCTLS), CONNTRACK_MAX]) rootBefore.set(name, readRoot(name));
    volume = new ConfigMapVolume(config());
    c = await E2ECluster.start({ pods: PODS, configFile: volume.path });
    await c.addService({ name: 'web', type: 'NodePort', externalTrafficPolicy: 'Local', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
    await c.setEndpoints('web', ['a-1', 'b-1']);
  });

  after(async () => {
    await c?.destroy();
    volume?.remove();
  });

  const log = (): string => c.proxy.stderr();
  /** The proxy's own PID: `ip netns exec` runs it as a child. */
  const proxyPid = (): number => {
    const kids = (pid: number): number[] =>
      readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    const queue = [c.proxy.pid];
    while (queue.length > 0) {
      const pid = queue.shift()!;
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(COMMAND)) {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(process.execPath)) return pid;
      }
      queue.push(...kids(pid));
    }
    throw new Error('the proxy process was not found');
  };
  /** Waits for a proxy log line matching re that was written after `since` characters of log. */
  const waitLog = async (re: RegExp, since: number, what: string, timeoutMs = 15000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(log().slice(since));
      if (m) return m[0];
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log:\n${log().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  /** GET from inside node1 (the debug pages are local-only). */
  const get = async (url: string): Promise<{ status?: number; body?: string; error?: string }> => {
    const script =
      'fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })),' +
      ' (e) => process.stdout.write(JSON.stringify({ error: String(e.cause?.code ?? e) })))';
    const res = await c.topo.exec('node1', process.execPath, ['-e', script, url]);
    return JSON.parse(res.stdout) as { status?: number; body?: string; error?: string };
  };
  const getJSON = async <T>(url: string): Promise<T> => {
    const r = await get(url);
    assert.equal(r.status, 200, `${url}: ${JSON.stringify(r)}`);
    return JSON.parse(r.body!) as T;
  };
  /** Applies a new config file and waits until the proxy says it applied it. */
  const reconfigure = async (text: string): Promise<void> => {
    const since = log().length;
    volume.write(text);
    await waitLog(/new configuration applied.*/, since, 'the new configuration');
  };
  /** Requests through `web` until `during` settles, then returns everything that was answered. */
  const trafficDuring = async (during: Promise<unknown>): Promise<ManyResult[]> => {
    let done = false;
    const results: ManyResult[] = [];
    const loop = (async () => {
      while (!done) results.push(await requestMany(c.topo, 'c-1', '10.96.0.10', 80, 20, { concurrency: 4 }));
      results.push(await requestMany(c.topo, 'c-1', '10.96.0.10', 80, 20, { concurrency: 4 }));
    })();
    try {
      await during;
    } finally {
      done = true;
      await loop;
    }
    return results;
  };
  const errorsOf = (rs: ManyResult[]): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const r of rs) for (const [k, v] of Object.entries(r.errors)) out[k] = (out[k] ?? 0) + v;
    return out;
  };

  it('sets its oom_score_adj and the conntrack sysctls of its own namespace, logging each; the root namespace is untouched', async () => {
    assert.equal(readFileSync(`/proc/${proxyPid()}/oom_score_adj`, 'utf8').trim(), '321');
    assert.match(log(), /set oom_score_adj value=321/);
    for (const [name, value] of Object.entries(SYSCTLS)) {
      const res = await c.topo.exec('node1', 'cat', [`/proc/sys/${name}`]);
      assert.equal(res.stdout.trim(), value, name);
      assert.match(log(), new RegExp(`sysctl="${name.replace(/\//g, '\\.')}"`), `${name} is logged`);
      assert.equal(readRoot(name), rootBefore.get(name), `root namespace ${name} unchanged`);
    }
    // nf_conntrack_max is one value for the whole kernel: not written from a test namespace.
    assert.match(log(), /sysctl not set: it is global to the kernel.*sysctl="net\.netfilter\.nf_conntrack_max"/);
    assert.equal(readRoot(CONNTRACK_MAX), rootBefore.get(CONNTRACK_MAX));
  });

  it('a new oomScoreAdj applies at once; the default -999 (and -500) where the kernel lets it lower the score', async () => {
    const pid = proxyPid();
    const score = (): string => readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim();
    // Lowering the score below what it was needs CAP_SYS_RESOURCE (bit 24), which a container
    // running the tests may lack; the proxy then says so and keeps its current score and running.
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!;
    const canLower = ((BigInt(`0x${capEff}`) >> 24n) & 1n) === 1n;
    const apply = async (text: string, value: number, previous: string): Promise<void> => {
      const since = log().length;
      await reconfigure(text);
      if (value >= Number(previous) || canLower) {
        assert.equal(score(), String(value));
        assert.match(log().slice(since), new RegExp(`set oom_score_adj value=${value}`));
      } else {
        assert.equal(score(), previous, 'the score stays');
        assert.match(log().slice(since), new RegExp(`setting oom_score_adj failed value=${value}`));
      }
    };
    try {
      await apply(config().replace('oomScoreAdj: 321', 'oomScoreAdj: 500'), 500, '321');
      // No oomScoreAdj in the file: upstream's default, -999.
      await apply(config().replace('oomScoreAdj: 321\n', ''), -999, '500');
      await apply(config().replace('oomScoreAdj: 321', 'oomScoreAdj: -500'), -500, score());
      // Still serving.
      assert.equal((await tcpRequest(c.topo, 'c-1', '10.96.0.10', 80)).ok, true);
    } finally {
      await reconfigure(config());
    }
  });

  it('records a "Starting kube-proxy-ts" Event on its own Node', async () => {
    const res = await c.api.send({ op: 'events' });
    const events = res.objects as Array<Record<string, unknown>>;
    const starting = events.filter((e) => e.reason === 'Starting');
    assert.equal(starting.length, 1);
    assert.deepEqual(starting[0]!.regarding, { kind: 'Node', apiVersion: 'v1', name: 'node-1', uid: 'node-1' });
    assert.equal(starting[0]!.note, 'Starting kube-proxy-ts');
    assert.equal(starting[0]!.type, 'Normal');
    assert.equal(starting[0]!.reportingController, 'kube-proxy');
  });

  it('serves /debug/services, /debug/rules, /debug/syncs and /configz on the local metrics address only', async () => {
    type View = { name: string; family: string; clusterEndpoints: string[]; localEndpoints: string[]; notLocal: Array<{ endpoint: string; reason: string }> };
    const services = await getJSON<View[]>('http://127.0.0.1:10249/debug/services');
    const web = services.find((s) => s.name === 'default/web:http' && s.family === 'IPv4')!;
    assert.deepEqual(web.clusterEndpoints.sort(), ['10.244.1.10:80', '10.244.2.10:80']);
    assert.deepEqual(web.localEndpoints, ['10.244.1.10:80']);
    assert.deepEqual(web.notLocal, [{ endpoint: '10.244.2.10:80', reason: 'on node node-2, not this node' }]);

    const rules = await get('http://127.0.0.1:10249/debug/rules');
    assert.match(rules.body!, /^# IPv4 \(nftables\)\ntable ip kube-proxy \{/m);
    assert.match(rules.body!, /table ip6 kube-proxy \{/);
    assert.match(rules.body!, /10\.96\.0\.10/);

    type Sync = { ok: boolean; causes: string[]; families: Array<{ family: string; full: boolean | null }> };
    const syncs = await getJSON<Sync[]>('http://127.0.0.1:10249/debug/syncs');
    const web1 = syncs.find((s) => s.causes.includes('Service default/web (ADDED)'));
    assert.ok(web1, `a sync names the web Service as its cause: ${JSON.stringify(syncs.slice(0, 5))}`);
    assert.equal(web1.ok, true);
    assert.deepEqual(web1.families.map((f) => f.family), ['IPv4', 'IPv6']);

    const configz = await getJSON<Record<string, { mode: string; clusterCIDR: string }>>('http://127.0.0.1:10249/configz');
    assert.equal(configz['kubeproxy.config.k8s.io']!.mode, 'nftables');
    // Bound to 127.0.0.1 in node1: another host cannot reach it.
    assert.deepEqual(await tcpRequest(c.topo, 'ext', '10.0.0.1', 10249, { timeoutMs: 1000 }), { ok: false, error: 'refused' });
  });

  it('a new sync period applies at once', async () => {
    await reconfigure(config('nftables: {minSyncPeriod: 0s, syncPeriod: 1s}'));
    const before = (await getJSON<unknown[]>('http://127.0.0.1:10249/debug/syncs')).length;
    await new Promise((r) => setTimeout(r, 3500));
    const syncs = await getJSON<Array<{ causes: string[] }>>('http://127.0.0.1:10249/debug/syncs');
    assert.ok(syncs.length - before >= 2, `periodic syncs every second: ${syncs.length - before} in 3.5 s`);
    const configz = await getJSON<Record<string, { nftables: { syncPeriod: string } }>>('http://127.0.0.1:10249/configz');
    assert.equal(configz['kubeproxy.config.k8s.io']!.nftables.syncPeriod, '1s');
  });

  it('an invalid new file is logged with its error and the running configuration stays (a repeat patches the Warning event)', async () => {
    for (const comment of ['', '# again\n']) {
      const since = log().length;
      volume.write(config('nftables: {minSyncPeriod: 0s, syncPeriod: 1s}\ndetectLocalMode: Sideways') + comment);
      const line = await waitLog(/new configuration rejected; keeping the running one.*/, since, 'the rejection');
      assert.match(line, /detectLocalMode/);
    }
    const configz = await getJSON<Record<string, { detectLocalMode: string }>>('http://127.0.0.1:10249/configz');
    assert.equal(configz['kubeproxy.config.k8s.io']!.detectLocalMode, '');
    assert.deepEqual((await requestMany(c.topo, 'c-1', '10.96.0.10', 80, 10)).errors, {});
    const events = (await c.api.send({ op: 'events' })).objects as Array<Record<string, any>>;
    const invalid = events.filter((e) => e.reason === 'InvalidConfiguration');
    assert.equal(invalid.length, 1);
    assert.equal(invalid[0]!.type, 'Warning');
    assert.equal(invalid[0]!.series?.count, 2);
  });

  it('a new metrics address is re-bound: the old one is closed, the new one serves', async () => {
    await reconfigure(config('metricsBindAddress: 127.0.0.1:10250'));
    assert.equal((await get('http://127.0.0.1:10249/metrics')).error, 'ECONNREFUSED');
    assert.equal((await get('http://127.0.0.1:10250/proxyMode')).body, 'nftables');
    await reconfigure(config());
    assert.equal((await get('http://127.0.0.1:10249/proxyMode')).body, 'nftables');
  });

  it('changed rule settings are reprogrammed without a failed request', async () => {
    const results = await trafficDuring(reconfigure(config('nftables: {minSyncPeriod: 0s, masqueradeAll: true}')));
    assert.deepEqual(errorsOf(results), {});
    const after = await requestMany(c.topo, 'c-1', '10.96.0.10', 80, 20);
    assert.equal(after.sources[CLIENT_IP], undefined, `masqueradeAll hides the client address: ${JSON.stringify(after.sources)}`);
    await reconfigure(config());
    assert.equal((await requestMany(c.topo, 'c-1', '10.96.0.10', 80, 10)).sources[CLIENT_IP], 10);
  });

  it('a mode change programs the new mode first, then removes the old rules; and back', async () => {
    const since = log().length;
    await reconfigure(config('mode: iptables'));
    assert.match(log().slice(since), /switching proxy mode: new rules first, then the old ones go from="nftables" to="iptables"/);
    assert.match(log().slice(since), /removed the previous mode's rules mode="nftables" family="IPv4"/);
    assert.equal(await c.nftTable('ip'), null);
    assert.equal(await c.nftTable('ip6'), null);
    const configz = await getJSON<Record<string, { mode: string }>>('http://127.0.0.1:10249/configz');
    assert.equal(configz['kubeproxy.config.k8s.io']!.mode, 'iptables');
    assert.equal((await get('http://127.0.0.1:10249/proxyMode')).body, 'iptables');

    await reconfigure(config());
    assert.notEqual(await c.nftTable('ip'), null);
    assert.deepEqual((await requestMany(c.topo, 'c-1', '10.96.0.10', 80, 20)).errors, {});
  });

  it('makes exactly the API calls deploy/rbac.yaml grants', async () => {
    const requests = (await c.api.send({ op: 'requests' })).objects as Array<{ method: string; path: string; query: Record<string, string> }>;
    const used = new Set<string>();
    for (const r of requests) {
      const parts = r.path.split('/').filter((p) => p !== '');
      const group = parts[0] === 'api' ? '' : parts[1]!;
      let rest = parts.slice(parts[0] === 'api' ? 2 : 3);
      if (rest[0] === 'namespaces' && rest.length >= 3) rest = rest.slice(2);
      const named = rest.length > 1;
      const verb =
        r.method === 'GET' ? (r.query.watch === 'true' || r.query.watch === '1' ? 'watch' : named ? 'get' : 'list')
        : r.method === 'POST' ? 'create'
        : r.method === 'PATCH' ? 'patch'
        : r.method === 'PUT' ? 'update'
        : 'delete';
      used.add(`${group}|${rest[0]}|${verb}`);
    }
    const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/rbac.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
    const role = docs.find((d) => d.kind === 'ClusterRole')!;
    const granted = new Set<string>();
    for (const rule of role.rules as Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>) {
      for (const g of rule.apiGroups) for (const res of rule.resources) for (const v of rule.verbs) granted.add(`${g}|${res}|${v}`);
    }
    assert.deepEqual([...used].sort(), [...granted].sort());
  });

  it('SIGINT, like SIGTERM, leaves the rules in place', async () => {
    process.kill(proxyPid(), 'SIGINT');
    const exit = await c.proxy.exited;
    assert.equal(exit.code, 0);
    assert.match(log(), /stopping; kernel rules are left in place signal="SIGINT"/);
    assert.notEqual(await c.nftTable('ip'), null);
    assert.deepEqual((await requestMany(c.topo, 'c-1', '10.96.0.10', 80, 10)).errors, {}, 'services work without the proxy');
    await c.restartProxy();
  });

  it('a restart over its own rules fails no request of a client loop', async () => {
    const results = await trafficDuring(c.restartProxy());
    assert.ok(results.length >= 2);
    assert.deepEqual(errorsOf(results), {});
  });

  describe('stale UDP conntrack entries (a client that keeps one source port)', () => {
    const ask = async (sourcePort: number): Promise<string> => {
      const r = await udpRequest(c.topo, 'c-1', '10.96.0.53', 53, { sourcePort, timeoutMs: 1000 });
      return r.ok ? r.pod : `error:${r.error}`;
    };

    it('an endpoint removed, the service scaled to zero and back, deleted and recreated with the same IP', async () => {
      const svc = { name: 'dns', clusterIPs: ['10.96.0.53'], ports: [{ name: 'dns', protocol: 'UDP' as const, port: 53 }] };
      await c.addService(svc);
      await c.setEndpoints('dns', ['a-1']);
      assert.equal(await ask(40000), 'a-1');
      await c.setEndpoints('dns', ['b-1']);
      assert.equal(await ask(40000), 'b-1', 'the removed endpoint no longer answers this flow');
      await c.setEndpoints('dns', []);
      assert.match(await ask(40000), /^error:/);
      await c.setEndpoints('dns', ['a-1']);
      assert.equal(await ask(40000), 'a-1', 'scaled back up');
      await c.removeService('dns');
      assert.match(await ask(40000), /^error:/);
      await c.addService(svc);
      await c.setEndpoints('dns', ['b-1']);
      assert.equal(await ask(40000), 'b-1', 'recreated with the same IP');
    });

    it('an endpoint removed while the proxy was down: the entry goes after its first sync', async () => {
      assert.equal(await ask(40001), 'b-1');
      await c.proxy.stop();
      await c.setEndpoints('dns', ['a-1'], { expectRules: false });
      await c.restartProxy();
      const deadline = Date.now() + 10000;
      for (;;) {
        const list = await c.topo.exec('node1', 'conntrack', ['-L', '-p', 'udp', '--orig-port-src', '40001'], { check: false });
        if (!/src=10\.244\.2\.10/.test(list.stdout)) break;
        if (Date.now() > deadline) assert.fail(`the entry to the removed endpoint is still there:\n${list.stdout}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(await ask(40001), 'a-1');
      // The restarted process reports its reconciler passes per IP family.
      for (;;) {
        const body = (await get('http://127.0.0.1:10249/metrics')).body ?? '';
        const passes = /^kubeproxy_conntrack_reconciler_sync_duration_seconds_count\{ip_family="IPv4"\} (\d+)$/m.exec(body);
        const deleted = /^kubeproxy_conntrack_reconciler_deleted_entries_total\{ip_family="IPv4"\} \d+$/m.test(body);
        if (passes && Number(passes[1]) >= 1 && deleted) break;
        if (Date.now() > deadline) assert.fail(`no conntrack reconciler pass reported:\n${body.split('\n').filter((l) => l.includes('conntrack')).join('\n')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    });
  });

  describe('start-up checks', () => {
      /** Starts a proxy in node1 through a command prefix (the checks fail before it would do anything). */
    const start = (prefix: string[]) => {
      const argv = [...prefix, process.execPath, COMMAND, '--proxy-mode', 'nftables', '--hostname-override', 'node-1', '--healthz-bind-address=', '--metrics-bind-address='];
      return c.topo.exec('node1', argv[0]!, argv.slice(1), { check: false, timeoutMs: 15000 });
    };

    it('not root: one clear message and a non-zero exit', async () => {
      const res = await start(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']);
      assert.equal(res.code, 1);
      assert.match(res.stderr, /kube-proxy-ts must run as root to program the kernel \(running as uid 65534\)/);
    });

    it('a needed tool missing: one message per tool and a non-zero exit', async () => {
      const empty = mkdtempSync(join(tmpdir(), 'kpt-path-'));
      try {
        // The wrapper needs the real PATH to find env; the proxy gets the empty one.
        const res = await start(['env', `PATH=${empty}`]);
        assert.equal(res.code, 1);
        assert.match(res.stderr, /nft is not installed or not on PATH; nftables mode needs it/);
        assert.match(res.stderr, /conntrack is not installed or not on PATH; nftables mode needs it/);
      } finally {
        rmSync(empty, { recursive: true, force: true });
      }
    });
  });
});
