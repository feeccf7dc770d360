// The iptables mode (legacy flavour) inside a User-Mode Linux kernel: run there by uml.test.ts
// (`node --test` in the guest; the name has no `.test`, so the host's runner leaves it alone).
// The guest's nf_tables has no ip/ip6 family, so the proxy must find the legacy flavour by itself.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { E2ECluster } from '../support/e2e-cluster.js';
import { PODS, serviceScenarios } from './scenarios.js';

describe('iptables mode (legacy flavour) in User-Mode Linux', () => {
  let cluster: E2ECluster | undefined;
  const c = (): E2ECluster => {
    if (!cluster) throw new Error('the cluster did not start');
    return cluster;
  };
  before(async () => {
    cluster = await E2ECluster.start({ mode: 'iptables', iptablesFlavour: 'legacy', pods: PODS });
  });
  after(async () => {
    await cluster?.destroy();
  });

  it('the guest kernel has no nf_tables ip family, and the proxy picked iptables-legacy by itself', async () => {
    const nft = await c().topo.exec('node1', 'iptables-nft-save', ['-t', 'mangle'], { check: false });
    assert.notEqual(nft.code, 0, `iptables-nft works in this kernel: ${nft.stdout}`);
    for (const family of ['IPv4', 'IPv6']) {
      assert.match(c().proxyLog(), new RegExp(`using iptables flavour family="${family}" flavour="legacy"`), `${family}: ${c().proxyLog()}`);
    }
    assert.match(await c().iptablesSave('IPv4'), /^-A PREROUTING .*-j KUBE-SERVICES$/m);
  });

  // uml.test.ts picks which of these run (--test-name-pattern): each costs guest time.
  serviceScenarios(c);
});
