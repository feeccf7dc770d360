// `--proxy-mode userspace` end to end: the legacy proxy's redirect rules send service traffic to
// listeners in the proxy process, which opens its own connection to an endpoint. The shared
// scenarios run with what a proxy process cannot do (keep the client's address) left out.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { requestMany } from '../support/netclient.js';
import { useNetns } from '../support/netns.js';
import { ALL, modeSuite, sorted, type ModeTraits } from './scenarios.js';

const USERSPACE: ModeTraits = {
  clientIP: false,
  refusesUnknownPorts: false,
  noLocalEndpoints: 'refused',
  stopRemovesRules: true,
  outsideSourceRanges: 'unreachable',
};

modeSuite(
  'userspace mode on a real kernel',
  { mode: 'userspace', extraArgs: ['--iptables-sync-period', '5s'] },
  (c) => {
    it("runbooks find upstream's userspace chains, redirecting to the proxy's own ports", async () => {
      const saved = await c().iptablesSave('IPv4');
      for (const chain of ['KUBE-PORTALS-CONTAINER', 'KUBE-PORTALS-HOST', 'KUBE-NODEPORT-CONTAINER', 'KUBE-NODEPORT-HOST']) {
        assert.match(saved, new RegExp(`^:${chain} `, 'm'), chain);
      }
      assert.match(saved, /^-A KUBE-PORTALS-CONTAINER -d 10\.96\.0\.10\/32 -p tcp .*--dport 80 -j REDIRECT --to-ports \d+$/m);
      assert.match(saved, /^-A PREROUTING .*-j KUBE-PORTALS-CONTAINER$/m);
      assert.match(saved, /^-A OUTPUT .*-j KUBE-PORTALS-HOST$/m);
      // The node itself reaches a ClusterIP through the same proxy.
      assert.deepEqual(sorted((await requestMany(c().topo, 'node1', '10.96.0.10', 80, 30)).pods), ALL);
    });

    it("the conntrack reconciler keeps a UDP flow redirected to the proxy's listener (its reply is not from an endpoint)", async () => {
      await c().addService({ name: 'udp-kept', clusterIPs: ['10.96.0.33'], ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 }] });
      await c().setEndpoints('udp-kept', ['a-1']);
      const flow = { proto: 'udp' as const, sourcePort: 40153 };
      assert.deepEqual((await requestMany(c().topo, 'c-1', '10.96.0.33', 53, 1, flow)).pods, { 'a-1': 1 });
      const passes = async (): Promise<number> => {
        const r = await c().topo.exec('node1', 'curl', ['-s', '--max-time', '2', 'http://127.0.0.1:10249/metrics'], { check: false });
        return Number(/^kubeproxy_conntrack_reconciler_sync_duration_seconds_count\{ip_family="IPv4"\} (\d+)$/m.exec(r.stdout)?.[1] ?? 0);
      };
      // A sync (this change) starts a reconciler pass; wait until one has run after the flow began.
      const before = await passes();
      await c().setEndpoints('udp-kept', ['a-1', 'b-1']);
      const deadline = Date.now() + 10000;
      while ((await passes()) < before + 1) {
        assert.ok(Date.now() < deadline, 'a reconciler pass ran');
        await new Promise((r) => setTimeout(r, 100));
      }
      const list = await c().topo.exec('node1', 'conntrack', ['-L', '-p', 'udp', '--orig-port-src', '40153'], { check: false });
      assert.match(list.stdout, /dst=10\.96\.0\.33 sport=40153 dport=53/, 'the redirected flow is still tracked');
    });

    it('a start with 120 service ports opens and redirects every one (listeners and rules go in overlapping steps)', async () => {
      const names = Array.from({ length: 120 }, (_, i) => `many-${i}`);
      const vip = (i: number): string => `10.96.7.${i + 1}`;
      await c().restartProxy(async () => {
        for (const [i, name] of names.entries()) {
          await c().addService({ name, clusterIPs: [vip(i)], ports: [{ name: 'http', port: 80, targetPort: 8080 }] }, { expectRules: false });
          await c().setEndpoints(name, ['a-1'], { expectRules: false });
        }
      });
      const saved = await c().iptablesSave('IPv4');
      const redirected = names.filter((_, i) => new RegExp(`^-A KUBE-PORTALS-CONTAINER -d ${vip(i).replaceAll('.', '\\.')}/32 .*-j REDIRECT --to-ports \\d+$`, 'm').test(saved));
      assert.equal(redirected.length, names.length, 'every service port has its redirect rule');
      for (const i of [0, 59, 119]) assert.deepEqual((await requestMany(c().topo, 'c-1', vip(i), 80, 3)).pods, { 'a-1': 3 }, vip(i));
      for (const name of names) await c().remove('Service', name);
      await c().barrier();
    });
  },
  USERSPACE,
);

describe('userspace backend, first sync in steps (a proxy process in a namespace of its own)', () => {
  const ns = useNetns(`kptus-${process.pid}`);

  it('134 service ports: every step writes its redirects and each rule leads to an open listener', () => {
    // The backend runs in a child inside the namespace, so its listeners bind there; it prints
    // the nat table and the listening ports after its first sync, before it stops.
    const modes = new URL('../../src/backend/modes.js', import.meta.url).href;
    const snapshots = new URL('../support/snapshots.js', import.meta.url).href;
    const script = `
      const { MODES } = await import(${JSON.stringify(modes)});
      const { snapshot, syntheticCluster, backendConfig } = await import(${JSON.stringify(snapshots)});
      const { execFileSync } = await import('node:child_process');
      const be = MODES.userspace.createBackend(backendConfig(), { dryRun: false });
      await be.sync(snapshot(syntheticCluster(134, 2)));
      const nat = execFileSync('iptables-save', ['-t', 'nat'], { encoding: 'utf8' });
      const listening = execFileSync('ss', ['-Hltn'], { encoding: 'utf8' });
      process.stdout.write(JSON.stringify({ nat, listening }));
      await be.stop(true);
      process.exit(0);
    `;
    const out = execFileSync(ns.wrap[0]!, [...ns.wrap.slice(1), process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const { nat, listening } = JSON.parse(out) as { nat: string; listening: string };
    const redirects = [...nat.matchAll(/^-A KUBE-PORTALS-CONTAINER -d (\S+)\/32 .*-j REDIRECT --to-ports (\d+)$/gm)];
    assert.equal(new Set(redirects.map((m) => m[1])).size, 134, 'one redirect per service port');
    const open = new Set([...listening.matchAll(/:(\d+)\s/g)].map((m) => m[1]));
    assert.deepEqual(redirects.filter((m) => !open.has(m[2])).map((m) => m[0]), [], 'every redirect goes to a listening port');
    assert.equal(nat.match(/^-A KUBE-PORTALS-HOST /gm)?.length, 134);
  });
});
