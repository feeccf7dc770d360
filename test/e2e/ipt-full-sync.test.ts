// A full sync of the iptables backend (nft flavour) in many transactions, several written side
// by side, into node1 of a test topology: every Service answers from its own pods, the kernel
// holds exactly what was rendered, and a restart over it writes nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { IptablesBackend } from '../../src/backend/iptables/backend.js';
import type { ServicePortState } from '../../src/model/types.js';
import { run } from '../support/iptables.js';
import { requestMany } from '../support/netclient.js';
import { backendConfig, endpoint, localEndpoint, servicePort, snapshot } from '../support/snapshots.js';
import { createTopology, type Topology } from '../support/topology.js';

const SERVICES = 40;
const vip = (i: number): string => `10.96.1.${i + 1}`;
// Services alternate between the pods of node1 and of node2, so a pod answering for the wrong
// Service (a jump into another group's chain) shows.
const podsOf = (i: number): string[] => (i % 2 === 0 ? ['a-1', 'a-2'] : ['b-1', 'b-2']);

describe('iptables full sync in transactions written side by side (iptables-nft, node1 of a test topology)', () => {
  let topo: Topology;
  const config = backendConfig({ nodeIPs: ['10.0.0.1'], localCIDRs: ['10.244.0.0/16'] });
  const ports: ServicePortState[] = [];
  for (let i = 0; i < SERVICES; i++) {
    const eps = i % 2 === 0 ? [localEndpoint('10.244.1.10', 8080), localEndpoint('10.244.1.11', 8080)] : [endpoint('10.244.2.10', 8080), endpoint('10.244.2.11', 8080)];
    ports.push(servicePort({ namespace: 'ns', serviceName: `svc-${i}`, portName: 'http', port: 80, clusterIP: vip(i), endpoints: eps }));
  }
  let wrap: string[] = [];

  before(async () => {
    topo = await createTopology({
      prefix: 'kptiptfs',
      pods: [
        { name: 'a-1', node: 1, ip: '10.244.1.10' },
        { name: 'a-2', node: 1, ip: '10.244.1.11' },
        { name: 'c-1', node: 1, ip: '10.244.1.20' },
        { name: 'b-1', node: 2, ip: '10.244.2.10' },
        { name: 'b-2', node: 2, ip: '10.244.2.11' },
      ],
    });
    wrap = ['ip', 'netns', 'exec', topo.node(1).ns];
    run(topo.node(1).ns, ['ip', 'route', 'add', 'default', 'via', topo.node(2).ip]);
  });

  after(async () => {
    await topo?.destroy();
  });

  test('every Service answers from its own pods; the kernel holds what was rendered; a restart writes nothing', async () => {
    // 14 lines per Service as the budget counts them: groups of four Services, written three at a time.
    const be = new IptablesBackend(config, { wrap, flavour: 'nft', budget: 50, restoresTogether: 3 });
    const res = await be.sync(snapshot(ports));
    assert.equal(res.full, true);
    assert.ok(be.lastTransactions >= 10, `${be.lastTransactions} transactions`);
    for (const i of [0, 1, SERVICES / 2, SERVICES - 2, SERVICES - 1]) {
      const got = await requestMany(topo, 'c-1', vip(i), 80, 12);
      assert.deepEqual(Object.keys(got.pods).sort(), podsOf(i), `svc-${i} at ${vip(i)}`);
    }
    const v = await be.verify();
    assert.equal(v.repaired, 0, 'the kernel holds exactly the rendered rules');

    const restarted = new IptablesBackend(config, { wrap, flavour: 'nft', budget: 50, restoresTogether: 3 });
    const again = await restarted.sync(snapshot(ports));
    // Over rules already in place only the jumps from the built-in chains are checked.
    assert.equal(again.operations, 0);
  });
});
