// Loads a rendered ruleset into node1 of a test topology (iptables-nft, as on most current
// nodes) and sends real packets through it: which pod answers, and which source it sees.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { render, toRestoreInput } from '../../src/backend/iptables/render.js';
import type { ServicePortState } from '../../src/model/types.js';
import { hooksInput, run } from '../support/iptables.js';
import { requestMany, tcpRequest } from '../support/netclient.js';
import { backendConfig, endpoint, localEndpoint, servicePort, snapshot, type PortSpec } from '../support/snapshots.js';
import { createTopology, type Topology } from '../support/topology.js';

const web = (over: PortSpec): ServicePortState => servicePort({ portName: 'http', port: 80, ...over });

describe('rendered rules carry real traffic (node1 of a test topology, iptables-nft)', () => {
  let topo: Topology;
  const NODE1 = '10.0.0.1';
  const config = backendConfig({ nodeIPs: [NODE1], localCIDRs: ['10.244.0.0/16'] });
  const a1 = localEndpoint('10.244.1.10', 8080);
  const b1 = endpoint('10.244.2.10', 8080);
  const b2 = endpoint('10.244.2.11', 8080);
  const ports = [
    web({ namespace: 'ns', serviceName: 'web', clusterIP: '10.96.0.10', nodePort: 30080, endpoints: [a1, b1, b2] }),
    web({ namespace: 'ns', serviceName: 'self', clusterIP: '10.96.0.11', endpoints: [a1] }),
    web({
      namespace: 'ns',
      serviceName: 'local',
      clusterIP: '10.96.0.12',
      loadBalancerIPs: ['192.0.2.12'],
      externalPolicyLocal: true,
      endpoints: [a1, b1],
    }),
    web({
      namespace: 'ns',
      serviceName: 'fenced',
      clusterIP: '10.96.0.13',
      loadBalancerIPs: ['192.0.2.13'],
      loadBalancerSourceRanges: ['10.0.0.100/32'],
      endpoints: [b1],
    }),
    web({ namespace: 'ns', serviceName: 'empty', clusterIP: '10.96.0.14', nodePort: 30081 }),
  ];
  const NODE1_V6 = 'fd00:10::1';
  const config6 = backendConfig({ family: 'IPv6', nodeIPs: [NODE1_V6], localCIDRs: ['fd00:244::/32'] });
  const ports6 = [
    web({
      namespace: 'ns',
      serviceName: 'web',
      clusterIP: 'fd00:10:96::a',
      nodePort: 30080,
      endpoints: [localEndpoint('fd00:244:1::10', 8080), endpoint('fd00:244:2::10', 8080), endpoint('fd00:244:2::11', 8080)],
    }),
  ];
  const sorted = (o: Record<string, number>): string[] => Object.keys(o).sort();
  // A port-unreachable that arrives while connect() still holds its socket only counts as a soft
  // error, and the client learns of the refusal from the answer to its retried SYN, a second on.
  const REFUSED_WAIT = { timeoutMs: 3000 };

  before(async () => {
    topo = await createTopology({
      prefix: 'kptipt',
      pods: [
        { name: 'a-1', node: 1, ip: '10.244.1.10', ip6: 'fd00:244:1::10' },
        { name: 'c-1', node: 1, ip: '10.244.1.20', ip6: 'fd00:244:1::20' },
        { name: 'b-1', node: 2, ip: '10.244.2.10', ip6: 'fd00:244:2::10' },
        { name: 'b-2', node: 2, ip: '10.244.2.11', ip6: 'fd00:244:2::11' },
      ],
    });
    const node = topo.node(1).ns;
    // As on a real node, where iptables mode filters (after routing) what nat did not translate.
    run(node, ['ip', 'route', 'add', 'default', 'via', topo.node(2).ip]);
    run(node, ['ip', '-6', 'route', 'add', 'default', 'via', topo.node(2).ip6]);
    run(node, ['iptables-nft-restore', '--noflush'], toRestoreInput(render(snapshot(ports), config)));
    run(node, ['iptables-nft-restore', '--noflush'], hooksInput(config));
    run(node, ['ip6tables-nft-restore', '--noflush'], toRestoreInput(render(snapshot(ports6, { family: 'IPv6' }), config6)));
    run(node, ['ip6tables-nft-restore', '--noflush'], hooksInput(config6));
  });

  after(async () => {
    await topo?.destroy();
  });

  test('a cluster IP reaches every endpoint from a pod without masquerade; other ports are refused', async () => {
    const r = await requestMany(topo, 'c-1', '10.96.0.10', 80, 45);
    assert.deepEqual(r.errors, {});
    assert.deepEqual(sorted(r.pods), ['a-1', 'b-1', 'b-2']);
    assert.deepEqual(r.sources, { '10.244.1.20': 45 });
    assert.deepEqual(await tcpRequest(topo, 'c-1', '10.96.0.10', 8080, REFUSED_WAIT), { ok: false, error: 'refused' });
    assert.deepEqual(await tcpRequest(topo, 'c-1', '10.96.0.14', 80, REFUSED_WAIT), { ok: false, error: 'refused' });
  });

  test('a pod reaching itself through its service sees a masqueraded source (hairpin)', async () => {
    assert.deepEqual(await tcpRequest(topo, 'a-1', '10.96.0.11', 80), { ok: true, pod: 'a-1', seenSource: '10.244.1.1' });
  });

  test('a NodePort serves an external client, masqueraded; one without endpoints is refused', async () => {
    const r = await requestMany(topo, 'ext', NODE1, 30080, 45);
    assert.deepEqual(r.errors, {});
    assert.deepEqual(sorted(r.pods), ['a-1', 'b-1', 'b-2']);
    assert.ok(!('10.0.0.100' in r.sources), `client IP hidden: ${JSON.stringify(r.sources)}`);
    assert.deepEqual(await tcpRequest(topo, 'ext', NODE1, 30081, REFUSED_WAIT), { ok: false, error: 'refused' });
  });

  test('externalTrafficPolicy Local: only the local endpoint answers, with the client IP kept', async () => {
    const r = await requestMany(topo, 'ext', '192.0.2.12', 80, 20);
    assert.deepEqual(r.errors, {});
    assert.deepEqual(r.pods, { 'a-1': 20 });
    assert.deepEqual(r.sources, { '10.0.0.100': 20 });
  });

  test('loadBalancerSourceRanges: an allowed client is served, another is dropped', async () => {
    assert.deepEqual(await tcpRequest(topo, 'ext', '192.0.2.13', 80), { ok: true, pod: 'b-1', seenSource: NODE1 });
    assert.deepEqual(await tcpRequest(topo, 'ext2', '192.0.2.13', 80, { timeoutMs: 1500 }), { ok: false, error: 'timeout' });
  });

  test('IPv6: a cluster IP from a pod and a NodePort from outside, other ports refused', async () => {
    const r = await requestMany(topo, 'c-1', 'fd00:10:96::a', 80, 45);
    assert.deepEqual(r.errors, {});
    assert.deepEqual(sorted(r.pods), ['a-1', 'b-1', 'b-2']);
    assert.deepEqual(r.sources, { 'fd00:244:1::20': 45 });
    assert.deepEqual(await tcpRequest(topo, 'c-1', 'fd00:10:96::a', 8080, REFUSED_WAIT), { ok: false, error: 'refused' });
    const np = await requestMany(topo, 'ext', NODE1_V6, 30080, 45);
    assert.deepEqual(np.errors, {});
    assert.deepEqual(sorted(np.pods), ['a-1', 'b-1', 'b-2']);
    assert.ok(!('fd00:10::100' in np.sources), `client IP hidden: ${JSON.stringify(np.sources)}`);
  });
});
