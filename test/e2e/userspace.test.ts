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
  },
  USERSPACE,
);
