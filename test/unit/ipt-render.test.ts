// Golden renders of upstream's reference cases: whole chains, exactly, in iptables-save's form.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { baseChains, isLargeCluster, render, renderContext, renderInputsDigest, renderServicePort, type IptRuleset } from '../../src/backend/iptables/render.js';
import { probability } from '../../src/backend/iptables/syntax.js';
import { endpointChainName, serviceChainName } from '../../src/backend/iptables/names.js';
import type { BackendConfig } from '../../src/backend/types.js';
import type { ServicePortState } from '../../src/model/types.js';
import { backendConfig, endpoint, localEndpoint, servicePort, snapshot, syntheticCluster } from '../support/snapshots.js';

const cfg = backendConfig();

function chains(rs: IptRuleset): Map<string, string[]> {
  return new Map(rs.chains.map((c) => [`${c.table}/${c.name}`, c.rules]));
}

function renderPorts(ports: ServicePortState[], config: BackendConfig = cfg): Map<string, string[]> {
  return chains(render(snapshot(ports, { family: config.family }), config));
}

/** Chains beyond the fixed ones, by name, in render order. */
function ownedChains(c: Map<string, string[]>, config: BackendConfig = cfg): string[] {
  const base = new Set(baseChains(renderContext(config)).map((b) => `${b.table}/${b.name}`));
  return [...c.keys()].filter((k) => !base.has(k));
}

const NODEPORTS_TAIL =
  '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS';
const CLUSTER_IPS_TAIL = '-m comment --comment "cluster IPs on ports no service has" -j KUBE-CLUSTER-IPS';
const REJECT = 'REJECT --reject-with icmp-port-unreachable';

const SVC = 'KUBE-SVC-XPGD46QRK7WJZT7O';
const SVL = 'KUBE-SVL-XPGD46QRK7WJZT7O';
const EXT = 'KUBE-EXT-XPGD46QRK7WJZT7O';
const FW = 'KUBE-FW-XPGD46QRK7WJZT7O';
const SEP1 = 'KUBE-SEP-SXIVWICOYRO3J4NJ';
const sep = (ep: string): string => endpointChainName('ns1/svc1:p80', 'tcp', ep);
const SEP2 = sep('10.180.0.2:80');
const SEP3 = sep('10.180.0.3:80');

const svc1 = (over: Partial<Parameters<typeof servicePort>[0]> = {}): ServicePortState =>
  servicePort({
    namespace: 'ns1',
    serviceName: 'svc1',
    portName: 'p80',
    clusterIP: '172.30.0.41',
    port: 80,
    endpoints: [endpoint('10.180.0.1', 80), endpoint('10.180.0.2', 80), localEndpoint('10.180.0.3', 80)],
    ...over,
  });

const masqClusterIP = `! -s 10.244.0.0/16 -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`;
const toSvc = `-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j ${SVC}`;

function sepChain(ip: string, affinity = false): string[] {
  const name = sep(`${ip}:80`);
  const set = affinity ? ` -m recent --set --name ${name} --mask 255.255.255.255 --rsource` : '';
  return [
    `-s ${ip}/32 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ`,
    `-p tcp -m comment --comment "ns1/svc1:p80"${set} -m tcp -j DNAT --to-destination ${ip}:80`,
  ];
}

const threeWay = [
  `-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.33333333349 -j ${SEP1}`,
  `-m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m statistic --mode random --probability 0.50000000000 -j ${SEP2}`,
  `-m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j ${SEP3}`,
];

describe('service ports', () => {
  test('ClusterIP with three endpoints: statistic probabilities, hairpin, DNAT', () => {
    const c = renderPorts([svc1()]);
    assert.deepEqual(ownedChains(c), [`nat/${SVC}`, `nat/${SEP1}`, `nat/${SEP2}`, `nat/${SEP3}`]);
    assert.deepEqual(c.get('nat/KUBE-SERVICES'), [toSvc, NODEPORTS_TAIL]);
    assert.deepEqual(c.get(`nat/${SVC}`), [masqClusterIP, ...threeWay]);
    assert.deepEqual(c.get(`nat/${SEP1}`), sepChain('10.180.0.1'));
    assert.deepEqual(c.get(`nat/${SEP3}`), sepChain('10.180.0.3'));
    assert.deepEqual(c.get('filter/KUBE-CLUSTER-IPS'), [`-d 172.30.0.41/32 -m comment --comment "ns1/svc1 cluster IP" -j ${REJECT}`]);
    assert.deepEqual(c.get('filter/KUBE-SERVICES'), [CLUSTER_IPS_TAIL]);
    assert.deepEqual(c.get('nat/KUBE-NODEPORTS'), []);
  });

  test('NodePort: KUBE-NODEPORTS to the external chain, which masquerades', () => {
    const c = renderPorts([svc1({ nodePort: 3001 })]);
    assert.deepEqual(ownedChains(c), [`nat/${EXT}`, `nat/${SVC}`, `nat/${SEP1}`, `nat/${SEP2}`, `nat/${SEP3}`]);
    assert.deepEqual(c.get('nat/KUBE-NODEPORTS'), [`-p tcp -m comment --comment "ns1/svc1:p80" -m tcp --dport 3001 -j ${EXT}`]);
    assert.deepEqual(c.get(`nat/${EXT}`), [
      '-m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ',
      `-j ${SVC}`,
    ]);
  });

  test('external IPs go to the external chain, and source ranges do not apply to them', () => {
    const c = renderPorts([svc1({ externalIPs: ['192.168.99.11'], loadBalancerSourceRanges: ['203.0.113.0/25'] })]);
    assert.deepEqual(c.get('nat/KUBE-SERVICES'), [
      toSvc,
      `-d 192.168.99.11/32 -p tcp -m comment --comment "ns1/svc1:p80 external IP" -m tcp --dport 80 -j ${EXT}`,
      NODEPORTS_TAIL,
    ]);
    assert.ok(!c.has(`nat/${FW}`));
    assert.deepEqual(c.get('filter/KUBE-PROXY-FIREWALL'), []);
  });

  test('LoadBalancer with source ranges: the firewall chain, the node allowed through its LB IP', () => {
    const c = renderPorts([
      svc1({ nodePort: 3001, loadBalancerIPs: ['1.2.3.4'], loadBalancerSourceRanges: ['192.168.0.0/16', '203.0.113.0/25', '203.0.113.9/25'] }),
    ]);
    assert.deepEqual(ownedChains(c), [`nat/${EXT}`, `nat/${FW}`, `nat/${SVC}`, `nat/${SEP1}`, `nat/${SEP2}`, `nat/${SEP3}`]);
    assert.deepEqual(c.get('nat/KUBE-SERVICES'), [
      toSvc,
      `-d 1.2.3.4/32 -p tcp -m comment --comment "ns1/svc1:p80 loadbalancer IP" -m tcp --dport 80 -j ${FW}`,
      NODEPORTS_TAIL,
    ]);
    assert.deepEqual(c.get(`nat/${FW}`), [
      `-s 192.168.0.0/16 -m comment --comment "ns1/svc1:p80 loadbalancer IP" -j ${EXT}`,
      `-s 203.0.113.0/25 -m comment --comment "ns1/svc1:p80 loadbalancer IP" -j ${EXT}`,
      // The node (192.168.50.11) is in a range: traffic looping back from the LB IP is allowed.
      `-s 1.2.3.4/32 -m comment --comment "ns1/svc1:p80 loadbalancer IP" -j ${EXT}`,
      '-m comment --comment "other traffic to ns1/svc1:p80 will be dropped by KUBE-PROXY-FIREWALL"',
    ]);
    assert.deepEqual(c.get('filter/KUBE-PROXY-FIREWALL'), [
      `-d 1.2.3.4/32 -p tcp -m comment --comment "ns1/svc1:p80 traffic not accepted by ${FW}" -m tcp --dport 80 -j DROP`,
    ]);
  });

  test('source ranges that deny everything, or of which none is usable, fail closed', () => {
    const denyAll = svc1({ loadBalancerIPs: ['1.2.3.4'], loadBalancerSourceRanges: ['fd00::/8'] });
    denyAll.info.sourceRangesDenyAll = true;
    for (const port of [denyAll, svc1({ loadBalancerIPs: ['1.2.3.4'], loadBalancerSourceRanges: ['bogus', 'fd00::/8'] })]) {
      const c = renderPorts([port]);
      assert.deepEqual(c.get(`nat/${FW}`), ['-m comment --comment "other traffic to ns1/svc1:p80 will be dropped by KUBE-PROXY-FIREWALL"']);
      assert.equal(c.get('filter/KUBE-PROXY-FIREWALL')!.length, 1);
    }
  });

  test('externalTrafficPolicy Local with local endpoints: client IP kept, node and pod traffic short-circuited', () => {
    const c = renderPorts([svc1({ nodePort: 3001, loadBalancerIPs: ['1.2.3.4'], externalPolicyLocal: true })]);
    assert.deepEqual(ownedChains(c), [`nat/${EXT}`, `nat/${SVC}`, `nat/${SVL}`, `nat/${SEP1}`, `nat/${SEP2}`, `nat/${SEP3}`]);
    assert.deepEqual(c.get(`nat/${EXT}`), [
      `-s 10.244.0.0/16 -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" -j ${SVC}`,
      '-m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
      `-m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j ${SVC}`,
      `-j ${SVL}`,
    ]);
    assert.deepEqual(c.get(`nat/${SVL}`), [`-m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j ${SEP3}`]);
    assert.deepEqual(c.get(`nat/${SVC}`), [masqClusterIP, ...threeWay]);
    assert.deepEqual(c.get('filter/KUBE-EXTERNAL-SERVICES'), []);
  });

  test('externalTrafficPolicy Local without local endpoints: DROP what is not short-circuited', () => {
    const c = renderPorts([
      svc1({
        nodePort: 3001,
        externalIPs: ['192.168.99.11'],
        loadBalancerIPs: ['1.2.3.4'],
        externalPolicyLocal: true,
        endpoints: [endpoint('10.180.0.1', 80)],
      }),
    ]);
    assert.deepEqual(ownedChains(c), [`nat/${EXT}`, `nat/${SVC}`, `nat/${SEP1}`]);
    assert.deepEqual(c.get(`nat/${EXT}`), [
      `-s 10.244.0.0/16 -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" -j ${SVC}`,
      '-m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
      `-m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j ${SVC}`,
    ]);
    assert.deepEqual(c.get('filter/KUBE-EXTERNAL-SERVICES'), [
      '-d 192.168.99.11/32 -p tcp -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp --dport 80 -j DROP',
      '-d 1.2.3.4/32 -p tcp -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp --dport 80 -j DROP',
      '-p tcp -m comment --comment "ns1/svc1:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 3001 -j DROP',
    ]);
    // Cluster IP traffic is unaffected.
    assert.deepEqual(c.get('nat/KUBE-SERVICES')![0], toSvc);
  });

  test('internalTrafficPolicy Local: the cluster IP goes to the local chain, or is dropped', () => {
    const c = renderPorts([svc1({ internalPolicyLocal: true })]);
    assert.deepEqual(ownedChains(c), [`nat/${SVL}`, `nat/${SEP3}`]);
    assert.deepEqual(c.get('nat/KUBE-SERVICES'), [
      `-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j ${SVL}`,
      NODEPORTS_TAIL,
    ]);
    assert.deepEqual(c.get(`nat/${SVL}`), [masqClusterIP, `-m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j ${SEP3}`]);

    const none = renderPorts([svc1({ internalPolicyLocal: true, endpoints: [endpoint('10.180.0.1', 80)] })]);
    assert.deepEqual(ownedChains(none), []);
    assert.deepEqual(none.get('filter/KUBE-SERVICES'), [
      '-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp --dport 80 -j DROP',
      CLUSTER_IPS_TAIL,
    ]);
  });

  test('ClientIP affinity: recent checks before the statistic rules, set in the endpoint chain', () => {
    const c = renderPorts([svc1({ sessionAffinity: { clientIPTimeoutSeconds: 10800 }, endpoints: [endpoint('10.180.0.1', 80), endpoint('10.180.0.2', 80)] })]);
    const recent = (name: string) => `-m recent --rcheck --seconds 10800 --reap --name ${name} --mask 255.255.255.255 --rsource`;
    assert.deepEqual(c.get(`nat/${SVC}`), [
      masqClusterIP,
      `-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" ${recent(SEP1)} -j ${SEP1}`,
      `-m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" ${recent(SEP2)} -j ${SEP2}`,
      `-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.50000000000 -j ${SEP1}`,
      `-m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j ${SEP2}`,
    ]);
    assert.deepEqual(c.get(`nat/${SEP2}`), sepChain('10.180.0.2', true));
  });

  test('no endpoints: no nat chains, REJECT for every address of the service', () => {
    const c = renderPorts([svc1({ nodePort: 3001, externalIPs: ['192.168.99.11'], loadBalancerIPs: ['1.2.3.4'], endpoints: [] })]);
    assert.deepEqual(ownedChains(c), []);
    assert.deepEqual(c.get('nat/KUBE-SERVICES'), [NODEPORTS_TAIL]);
    assert.deepEqual(c.get('nat/KUBE-NODEPORTS'), []);
    assert.deepEqual(c.get('filter/KUBE-SERVICES'), [
      `-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp --dport 80 -j ${REJECT}`,
      CLUSTER_IPS_TAIL,
    ]);
    assert.deepEqual(c.get('filter/KUBE-EXTERNAL-SERVICES'), [
      `-d 192.168.99.11/32 -p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp --dport 80 -j ${REJECT}`,
      `-d 1.2.3.4/32 -p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp --dport 80 -j ${REJECT}`,
      `-p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 3001 -j ${REJECT}`,
    ]);
  });

  test('health-check node port accepted in filter KUBE-NODEPORTS', () => {
    const c = renderPorts([svc1({ nodePort: 3001, loadBalancerIPs: ['1.2.3.4'], externalPolicyLocal: true, healthCheckNodePort: 30000 })]);
    assert.deepEqual(c.get('filter/KUBE-NODEPORTS'), ['-p tcp -m comment --comment "ns1/svc1:p80 health check node port" -m tcp --dport 30000 -j ACCEPT']);
  });

  test('IPv6: /128 addresses, bracketed DNAT, ICMPv6 reject, full-length recent mask', () => {
    const v6 = backendConfig({ family: 'IPv6' });
    const port = servicePort({
      namespace: 'ns1',
      serviceName: 'svc1',
      portName: 'p80',
      protocol: 'UDP',
      clusterIP: 'FD00:10:96::0A',
      port: 80,
      sessionAffinity: { clientIPTimeoutSeconds: 60 },
      endpoints: [endpoint('fd00:10:180::1', 8080)],
    });
    const svc = serviceChainName('KUBE-SVC-', 'ns1/svc1:p80', 'udp');
    const ep = endpointChainName('ns1/svc1:p80', 'udp', '[fd00:10:180::1]:8080');
    const c = renderPorts([port], v6);
    assert.deepEqual(ownedChains(c, v6), [`nat/${svc}`, `nat/${ep}`]);
    assert.deepEqual(c.get(`nat/${svc}`), [
      `! -s fd00:10:244::/56 -d fd00:10:96::a/128 -p udp -m comment --comment "ns1/svc1:p80 cluster IP" -m udp --dport 80 -j KUBE-MARK-MASQ`,
      `-m comment --comment "ns1/svc1:p80 -> [fd00:10:180::1]:8080" -m recent --rcheck --seconds 60 --reap --name ${ep} --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -j ${ep}`,
      `-m comment --comment "ns1/svc1:p80 -> [fd00:10:180::1]:8080" -j ${ep}`,
    ]);
    assert.deepEqual(c.get(`nat/${ep}`), [
      '-s fd00:10:180::1/128 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ',
      `-p udp -m comment --comment "ns1/svc1:p80" -m recent --set --name ${ep} --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -m udp -j DNAT --to-destination [fd00:10:180::1]:8080`,
    ]);
    assert.deepEqual(c.get('filter/KUBE-CLUSTER-IPS'), [
      '-d fd00:10:96::a/128 -m comment --comment "ns1/svc1 cluster IP" -j REJECT --reject-with icmp6-port-unreachable',
    ]);
  });
});

describe('local traffic detection', () => {
  const ext = (config: BackendConfig): { svc: string[]; ext: string[] } => {
    const c = renderPorts([svc1({ nodePort: 3001, externalPolicyLocal: true })], config);
    return { svc: c.get(`nat/${SVC}`)!.slice(0, -3), ext: c.get(`nat/${EXT}`)!.slice(0, 1) };
  };
  const masq = (cond: string): string =>
    `${cond}-p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`;
  const pod = (cond: string): string => `${cond} -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" -j ${SVC}`;

  test('ClusterCIDR and NodeCIDR: by source CIDR', () => {
    for (const mode of ['ClusterCIDR', 'NodeCIDR'] as const) {
      assert.deepEqual(ext(backendConfig({ detectLocalMode: mode, localCIDRs: ['10.244.1.0/24'] })), {
        svc: [masq('! -s 10.244.1.0/24 -d 172.30.0.41/32 ')],
        ext: [pod('-s 10.244.1.0/24')],
      });
    }
  });

  test('BridgeInterface and InterfaceNamePrefix: by input interface', () => {
    assert.deepEqual(ext(backendConfig({ detectLocalMode: 'BridgeInterface', bridgeInterface: 'cbr0' })), {
      svc: [masq('-d 172.30.0.41/32 ! -i cbr0 ')],
      ext: [pod('-i cbr0')],
    });
    assert.deepEqual(ext(backendConfig({ detectLocalMode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' })), {
      svc: [masq('-d 172.30.0.41/32 ! -i veth+ ')],
      ext: [pod('-i veth+')],
    });
  });

  test('nothing detectable: no cluster IP masquerade, no pod short-circuit; masqueradeAll masquerades all', () => {
    const none = ext(backendConfig({ localCIDRs: [] }));
    assert.deepEqual(none.svc, []);
    assert.deepEqual(none.ext, ['-m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ']);
    assert.deepEqual(ext(backendConfig({ detectLocalMode: 'BridgeInterface', bridgeInterface: 'bad name!' })).svc, []);
    assert.deepEqual(ext(backendConfig({ masqueradeAll: true })).svc, [masq('-d 172.30.0.41/32 ')]);
  });
});

describe('large clusters and bad input', () => {
  test('past 1000 endpoints, endpoint rules lose their comments, other rules keep them', () => {
    assert.equal(isLargeCluster(snapshot(syntheticCluster(10, 100))), false);
    assert.equal(isLargeCluster(snapshot([...syntheticCluster(10, 100), svc1({ endpoints: [endpoint('10.180.0.1', 80)] })])), true);
    const c = chains(render(snapshot([...syntheticCluster(10, 100), svc1()]), cfg));
    assert.deepEqual(c.get(`nat/${SVC}`), [
      masqClusterIP,
      `-m statistic --mode random --probability 0.33333333349 -j ${SEP1}`,
      `-m statistic --mode random --probability 0.50000000000 -j ${SEP2}`,
      `-j ${SEP3}`,
    ]);
    assert.deepEqual(c.get(`nat/${SEP1}`), ['-s 10.180.0.1/32 -j KUBE-MARK-MASQ', '-p tcp -m tcp -j DNAT --to-destination 10.180.0.1:80']);
    const ctx = renderContext(cfg, { largeCluster: true });
    assert.deepEqual(renderServicePort(svc1(), ctx).items.slice(0, 2), ['nat/KUBE-SERVICES', toSvc]);
  });

  test('probabilities as iptables-save prints the stored fraction', () => {
    assert.equal(probability(2), '0.50000000000');
    assert.equal(probability(3), '0.33333333349');
    assert.equal(probability(1000), '0.00100000016');
    // Exactly halfway at the eleventh decimal: printf rounds to even.
    assert.equal(probability(4096), '0.00024414062');
  });

  test('an invalid service port renders nothing; invalid endpoints are left out', () => {
    const ctx = renderContext(cfg);
    for (const bad of [
      svc1({ clusterIP: '172.30.0.300' }),
      svc1({ clusterIP: 'fd00::1' }),
      svc1({ port: 0 }),
      svc1({ port: 70000 }),
      svc1({ nodePort: -1 }),
      svc1({ externalIPs: ['1.2.3'] }),
      svc1({ loadBalancerIPs: ['fd00::1'] }),
      svc1({ protocol: 'ICMP' as never }),
      servicePort({ namespace: 'ns1', serviceName: 'x"; -j ACCEPT', clusterIP: '172.30.0.41', endpoints: [endpoint('10.180.0.1', 80)] }),
    ]) {
      assert.deepEqual(renderServicePort(bad, ctx), { items: [], objects: [], refs: [] }, JSON.stringify(bad.info));
    }
    const c = renderPorts([svc1({ endpoints: [endpoint('10.180.0.1', 80), endpoint('10.180.0.999', 80), endpoint('10.180.0.2', 0), endpoint('fd00::1', 80)] })]);
    assert.deepEqual(ownedChains(c), [`nat/${SVC}`, `nat/${SEP1}`]);
    assert.deepEqual(c.get(`nat/${SVC}`), [masqClusterIP, `-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j ${SEP1}`]);
  });

  test('a port without a cluster IP of this family still serves its external addresses', () => {
    const c = renderPorts([svc1({ clusterIP: '', nodePort: 3001 })]);
    assert.deepEqual(c.get('nat/KUBE-SERVICES'), [NODEPORTS_TAIL]);
    assert.deepEqual(c.get(`nat/${SVC}`), threeWay);
    assert.deepEqual(c.get('filter/KUBE-CLUSTER-IPS'), []);
  });
});

test('what a service port renders from, as a digest: equal for equal inputs, different whenever the render differs', () => {
  const eps = [endpoint('10.180.0.1', 80), endpoint('10.180.0.2', 80), localEndpoint('10.180.0.3', 80)];
  const spec = { namespace: 'ns1', serviceName: 'svc1', portName: 'p80', clusterIP: '172.30.0.41', port: 80, endpoints: eps };
  const variants: ServicePortState[] = [
    servicePort(spec),
    servicePort({ ...spec, clusterIP: '172.30.0.42' }),
    servicePort({ ...spec, port: 81 }),
    servicePort({ ...spec, protocol: 'UDP' }),
    servicePort({ ...spec, nodePort: 30080 }),
    servicePort({ ...spec, nodePort: 30080, externalPolicyLocal: true, healthCheckNodePort: 30000 }),
    servicePort({ ...spec, internalPolicyLocal: true }),
    servicePort({ ...spec, externalIPs: ['192.168.99.11'] }),
    servicePort({ ...spec, loadBalancerIPs: ['1.2.3.4'] }),
    servicePort({ ...spec, loadBalancerIPs: ['1.2.3.4'], loadBalancerSourceRanges: ['203.0.113.0/25'] }),
    servicePort({ ...spec, loadBalancerIPs: ['1.2.3.4'], sourceRangesDenyAll: true }),
    servicePort({ ...spec, sessionAffinity: { clientIPTimeoutSeconds: 10800 } }),
    servicePort({ ...spec, endpoints: eps.slice(0, 2) }),
    servicePort({ ...spec, endpoints: [endpoint('10.180.0.1', 8080), ...eps.slice(1)] }),
    servicePort({ ...spec, endpoints: [endpoint('10.180.0.9', 80), ...eps.slice(1)] }),
    servicePort({ ...spec, endpoints: [] }),
    { ...servicePort({ ...spec, endpoints: [] }), hasAnyEndpoints: true },
  ];
  const rendered = (s: ServicePortState): string => {
    const f = renderServicePort(s, renderContext(cfg));
    return JSON.stringify([f.items, f.objects.map((o) => [o.name, o.rules])]);
  };
  for (const [i, a] of variants.entries()) {
    assert.equal(renderInputsDigest(structuredClone(a)), renderInputsDigest(a), `variant ${i}: a copy digests the same`);
    for (const [j, b] of variants.entries()) {
      if (j > i && rendered(a) !== rendered(b)) assert.notEqual(renderInputsDigest(a), renderInputsDigest(b), `variants ${i} and ${j} render differently`);
    }
  }
  // Fields the render does not read leave the digest as it is.
  const base = variants[0]!;
  const unread = { ...base, endpoints: [], allReachableEndpoints: [], localReadyCount: 7, clusterEndpoints: base.clusterEndpoints.map((e) => ({ ...e, zone: 'z9' })) };
  assert.equal(rendered(unread), rendered(base));
  assert.equal(renderInputsDigest(unread), renderInputsDigest(base));
});
