// `--proxy-mode userspace` end to end: the legacy proxy's redirect rules send service traffic to
// listeners in the proxy process, which opens its own connection to an endpoint. The shared
// scenarios run with what a proxy process cannot do (keep the client's address) left out.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { requestMany } from '../support/netclient.js';
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
  },
  USERSPACE,
);
