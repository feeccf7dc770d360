import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { AFFINITY_SET_SIZE, isDispatchSet, type NftRuleset } from '../../src/backend/nftables/layout.js';
import { render } from '../../src/backend/nftables/render.js';
import { newTableSteps, nftScriptParts, toNftScript } from '../../src/backend/nftables/script.js';
import { affinityTag } from '../../src/backend/nftables/names.js';
import { diff, opCountFromScratch, opsToScripts, type NftOp } from '../../src/backend/nftables/diff.js';
import { RulesetState } from '../../src/backend/nftables/state.js';
import { NftError, applyScript } from '../../src/backend/nftables/apply.js';
import { readTable } from '../../src/backend/nftables/readback.js';
import { NftablesBackend } from '../../src/backend/nftables/backend.js';
import type { BackendConfig } from '../../src/backend/types.js';
import { backendConfig, emptyChanges, endpoint, key, localEndpoint, servicePort, snapshot, syntheticCluster } from '../support/snapshots.js';
import { useNetns } from '../support/netns.js';
import type { ServicePortState } from '../../src/model/types.js';

const cfg = backendConfig();

function set(rs: NftRuleset, name: string): Map<string, string | undefined> {
  const s = rs.sets.find((x) => x.name === name);
  assert.ok(s, `set ${name} exists`);
  return s.elements;
}

/**
 * Where each tuple of a dispatch map goes: the verdict map's own elements (per-service chains)
 * and every shape's tuple set (`goto <shape>`). `service-nodeports` gathers the nodeport shapes.
 */
function dispatch(rs: NftRuleset, map: 'service-ips' | 'service-nodeports'): Map<string, string | undefined> {
  const out = new Map(set(rs, map));
  for (const s of rs.sets) {
    const shape = /^(.*)-tuples$/.exec(s.name)?.[1];
    if (!shape || shape.startsWith('nodeport-') !== (map === 'service-nodeports')) continue;
    for (const k of s.elements.keys()) out.set(k, `goto ${shape}`);
  }
  return out;
}

function chain(rs: NftRuleset, name: string): string[] {
  const c = rs.chains.find((x) => x.name === name);
  assert.ok(c, `chain ${name} exists`);
  return c.rules;
}


/** The per-protocol DNAT rules of a shape chain (one endpoint map per protocol). */
function dnat(cond: string, kind: 'service' | 'nodeport', n: number, offset = false): string[] {
  return ['tcp', 'udp', 'sctp'].map((p) => {
    const k = kind === 'service' ? `ip daddr . meta l4proto . ${p} dport` : `meta l4proto . ${p} dport`;
    return `${cond}meta l4proto ${p} dnat ip to ${k} . numgen random mod ${n}${offset ? ' offset 65536' : ''} map @${kind}-endpoints-${p}`;
  });
}

const web = (over: Partial<Parameters<typeof servicePort>[0]> = {}): ServicePortState =>
  servicePort({
    namespace: 'ns1',
    serviceName: 'svc1',
    portName: 'p80',
    clusterIP: '10.96.0.10',
    port: 80,
    endpoints: [endpoint('10.244.2.5', 8080), localEndpoint('10.244.1.5', 8080)],
    ...over,
  });

// Representative snapshots, also loaded into a real kernel below.
const cases: Record<string, { ports: ServicePortState[]; config?: BackendConfig }> = {
  clusterIP: { ports: [web()] },
  nodePort: { ports: [web({ nodePort: 30080 })] },
  externalIP: { ports: [web({ externalIPs: ['192.168.99.1'] })] },
  lbSourceRanges: {
    ports: [web({ loadBalancerIPs: ['203.0.113.5'], loadBalancerSourceRanges: ['192.168.50.0/24', '198.51.100.7/32'] })],
  },
  lbDenyAll: { ports: [web({ loadBalancerIPs: ['203.0.113.5'], externalIPs: ['192.168.99.1'], sourceRangesDenyAll: true })] },
  eTPLocal: { ports: [web({ nodePort: 30080, loadBalancerIPs: ['203.0.113.5'], externalPolicyLocal: true })] },
  eTPLocalNoLocal: {
    ports: [web({ nodePort: 30080, externalIPs: ['192.168.99.1'], externalPolicyLocal: true, endpoints: [endpoint('10.244.2.5', 8080)] })],
  },
  iTPLocal: { ports: [web({ internalPolicyLocal: true })] },
  iTPLocalNoLocal: { ports: [web({ internalPolicyLocal: true, endpoints: [endpoint('10.244.2.5', 8080)] })] },
  affinity: {
    ports: [web({ nodePort: 30080, loadBalancerIPs: ['203.0.113.5'], sessionAffinity: { clientIPTimeoutSeconds: 600 }, externalPolicyLocal: true })],
  },
  noEndpoints: { ports: [web({ nodePort: 30080, endpoints: [] })] },
  ipv6: {
    ports: [
      web({
        clusterIP: 'fd00:10:96::a',
        nodePort: 30080,
        loadBalancerIPs: ['2001:db8::5'],
        loadBalancerSourceRanges: ['2001:db8:1::/48'],
        sessionAffinity: { clientIPTimeoutSeconds: 60 },
        endpoints: [endpoint('fd00:10:244:2::5', 8080), localEndpoint('FD00:10:244:1:0:0:0:5', 8080)],
      }),
    ],
    config: backendConfig({ family: 'IPv6' }),
  },
  sctp: { ports: [web({ protocol: 'SCTP', port: 9999 })] },
  tcpAndUdp: { ports: [web({ protocol: 'TCP', port: 53, portName: 'dns-tcp' }), web({ protocol: 'UDP', port: 53, portName: 'dns' })] },
  bridgeMasqueradeAll: { ports: [web({ sessionAffinity: { clientIPTimeoutSeconds: 30 } })], config: backendConfig({ masqueradeAll: true, detectLocalMode: 'BridgeInterface', bridgeInterface: 'cbr0' }) },
  prefixNoCIDR: { ports: [web({ externalPolicyLocal: true, externalIPs: ['192.168.99.1'] })], config: backendConfig({ detectLocalMode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' }) },
};

function renderCase(name: string): NftRuleset {
  const c = cases[name]!;
  const conf = c.config ?? cfg;
  return render(snapshot(c.ports, { family: conf.family }), conf);
}

describe('render', () => {
  test('endpoints out of order or listed twice fill the slots once each, in address order', () => {
    const eps = ['10.244.3.5', '10.244.1.5', '10.244.3.5', '10.244.2.5'].map((ip) => endpoint(ip, 8080));
    const rs = render(snapshot([servicePort({ namespace: 'ns', serviceName: 'web', clusterIP: '10.96.0.20', port: 80, protocol: 'TCP', endpoints: eps })]), cfg);
    assert.deepEqual([...set(rs, 'service-endpoints-tcp')], [
      ['10.96.0.20 . tcp . 80 . 0', '10.244.1.5 . 8080'],
      ['10.96.0.20 . tcp . 80 . 1', '10.244.2.5 . 8080'],
      ['10.96.0.20 . tcp . 80 . 2', '10.244.3.5 . 8080'],
    ]);
    assert.deepEqual([...dispatch(rs, 'service-ips')], [['10.96.0.20 . tcp . 80', 'goto cluster-3']]);
    assert.equal(set(rs, 'hairpin').size, 3);
  });

  test('ClusterIP: data slots, shape chain, wrong-port reject set, hairpin', () => {
    const rs = renderCase('clusterIP');
    assert.equal(rs.family, 'ip');
    assert.equal(rs.table, 'kube-proxy');
    assert.deepEqual([...set(rs, 'cluster-ips').keys()], ['10.96.0.10']);
    assert.deepEqual([...dispatch(rs, 'service-ips')], [['10.96.0.10 . tcp . 80', 'goto cluster-2']]);
    assert.deepEqual([...set(rs, 'service-endpoints-tcp')], [
      ['10.96.0.10 . tcp . 80 . 0', '10.244.1.5 . 8080'],
      ['10.96.0.10 . tcp . 80 . 1', '10.244.2.5 . 8080'],
    ]);
    assert.deepEqual(chain(rs, 'cluster-2'), [
      'ip saddr != { 10.244.0.0/16 } jump mark-for-masquerade',
      ...dnat('', 'service', 2),
    ]);
    assert.deepEqual([...set(rs, 'hairpin').keys()].sort(), ['10.244.1.5 . 10.244.1.5', '10.244.2.5 . 10.244.2.5']);
    assert.equal(set(rs, 'nodeport-ips').size, 1);
    assert.equal(dispatch(rs, 'service-nodeports').size, 0);
  });

  test('NodePort on the primary node IP, or on nodePortAddresses CIDRs', () => {
    const rs = renderCase('nodePort');
    assert.deepEqual([...set(rs, 'nodeport-ips').keys()], ['192.168.50.11']);
    assert.deepEqual([...dispatch(rs, 'service-nodeports')], [['tcp . 30080', 'goto nodeport-2']]);
    assert.deepEqual([...set(rs, 'nodeport-endpoints-tcp').keys()], ['tcp . 30080 . 0', 'tcp . 30080 . 1']);
    assert.deepEqual(chain(rs, 'nodeport-2'), [
      'jump mark-for-masquerade',
      ...dnat('', 'nodeport', 2),
    ]);
    const two = backendConfig({ nodeIPs: ['192.168.50.11', '172.16.0.11'], nodePortAddresses: ['172.16.0.0/12'] });
    assert.deepEqual([...set(render(snapshot(cases.nodePort!.ports), two), 'nodeport-ips').keys()], ['172.16.0.11']);
    const none = backendConfig({ nodeIPs: [] });
    const rsNone = render(snapshot(cases.nodePort!.ports), none);
    assert.equal(set(rsNone, 'nodeport-ips').size, 0);
    assert.equal(dispatch(rsNone, 'service-nodeports').size, 0);
  });

  test('external IP: Cluster policy masquerades, no firewall', () => {
    const rs = renderCase('externalIP');
    assert.equal(dispatch(rs, 'service-ips').get('192.168.99.1 . tcp . 80'), 'goto external-2');
    assert.deepEqual(chain(rs, 'external-2')[0], 'jump mark-for-masquerade');
    assert.equal(set(rs, 'firewall-ips').size, 0);
  });

  test('LoadBalancer source ranges: firewall sets, node allowed through its LB IP', () => {
    const rs = renderCase('lbSourceRanges');
    assert.deepEqual([...set(rs, 'firewall-ips').keys()], ['203.0.113.5 . tcp . 80']);
    assert.deepEqual([...set(rs, 'firewall-allow').keys()], [
      '203.0.113.5 . tcp . 80 . 192.168.50.0/24',
      '203.0.113.5 . tcp . 80 . 198.51.100.7',
      '203.0.113.5 . tcp . 80 . 203.0.113.5',
    ]);
    const far = render(snapshot(cases.lbSourceRanges!.ports), backendConfig({ nodeIPs: ['172.16.0.11'] }));
    assert.ok(!set(far, 'firewall-allow').has('203.0.113.5 . tcp . 80 . 203.0.113.5'));
    assert.deepEqual(chain(rs, 'firewall-check'), ['ip daddr . meta l4proto . th dport . ip saddr @firewall-allow return', 'drop']);
  });

  test('source ranges with none usable: the LB IP is firewalled with no allowed source', () => {
    const rs = renderCase('lbDenyAll');
    assert.deepEqual([...set(rs, 'firewall-ips').keys()], ['203.0.113.5 . tcp . 80']);
    assert.equal(set(rs, 'firewall-allow').size, 0);
    // External IPs are not load-balancer IPs: source ranges never applied to them.
    assert.equal(dispatch(rs, 'service-ips').get('192.168.99.1 . tcp . 80'), 'goto external-2');
  });

  test('externalTrafficPolicy Local: local endpoints first, cluster endpoints at the offset', () => {
    const rs = renderCase('eTPLocal');
    assert.equal(dispatch(rs, 'service-ips').get('203.0.113.5 . tcp . 80'), 'goto external-local-1-2');
    assert.equal(dispatch(rs, 'service-nodeports').get('tcp . 30080'), 'goto nodeport-local-1-2');
    const eps = set(rs, 'service-endpoints-tcp');
    assert.equal(eps.get('203.0.113.5 . tcp . 80 . 0'), '10.244.1.5 . 8080');
    assert.equal(eps.get('203.0.113.5 . tcp . 80 . 65536'), '10.244.1.5 . 8080');
    assert.equal(eps.get('203.0.113.5 . tcp . 80 . 65537'), '10.244.2.5 . 8080');
    assert.ok(!eps.has('203.0.113.5 . tcp . 80 . 1'));
    assert.deepEqual(chain(rs, 'external-local-1-2'), [
      'fib saddr type local jump mark-for-masquerade',
      ...dnat('fib saddr type local ', 'service', 2, true),
      ...dnat('ip saddr { 10.244.0.0/16 } ', 'service', 2, true),
      ...dnat('', 'service', 1),
    ]);
    // ClusterIP traffic is unaffected by the external policy.
    assert.equal(dispatch(rs, 'service-ips').get('10.96.0.10 . tcp . 80'), 'goto cluster-2');
  });

  test('externalTrafficPolicy Local without local endpoints drops outside traffic only', () => {
    const rs = renderCase('eTPLocalNoLocal');
    assert.equal(dispatch(rs, 'service-ips').get('192.168.99.1 . tcp . 80'), 'goto external-local-0-1');
    assert.equal(dispatch(rs, 'service-nodeports').get('tcp . 30080'), 'goto nodeport-local-0-1');
    const rules = chain(rs, 'external-local-0-1');
    assert.equal(rules[rules.length - 1], 'drop');
    assert.equal(rules[1], dnat('fib saddr type local ', 'service', 1, true)[0]);
  });

  test('internalTrafficPolicy Local uses only local endpoints, drops when there are none here', () => {
    const rs = renderCase('iTPLocal');
    assert.equal(dispatch(rs, 'service-ips').get('10.96.0.10 . tcp . 80'), 'goto cluster-1');
    assert.deepEqual([...set(rs, 'service-endpoints-tcp')], [['10.96.0.10 . tcp . 80 . 0', '10.244.1.5 . 8080']]);
    const none = renderCase('iTPLocalNoLocal');
    assert.equal(dispatch(none, 'service-ips').size, 0);
    assert.deepEqual([...set(none, 'no-endpoint-services')], [['10.96.0.10 . tcp . 80', 'drop']]);
  });

  test('ClientIP affinity: upstream-style per-service chains, one shared set of pinned clients', () => {
    const rs = renderCase('affinity');
    const svc = 'service-ULMVA6XW-ns1/svc1/tcp/p80';
    assert.equal(dispatch(rs, 'service-ips').get('10.96.0.10 . tcp . 80'), `goto ${svc}`);
    assert.equal(dispatch(rs, 'service-ips').get('203.0.113.5 . tcp . 80'), 'goto external-ULMVA6XW-ns1/svc1/tcp/p80');
    assert.equal(dispatch(rs, 'service-nodeports').get('tcp . 30080'), 'goto external-ULMVA6XW-ns1/svc1/tcp/p80');
    const rules = chain(rs, svc);
    assert.equal(rules[0], 'ip daddr 10.96.0.10 ip saddr != { 10.244.0.0/16 } jump mark-for-masquerade');
    // One affinity set for every service, keyed by client and endpoint tag; no set per service.
    const aff = rs.sets.filter((s) => s.name.startsWith('affinity-'));
    const affSet = 'affinity-clients';
    assert.deepEqual(aff.map((s) => [s.name, s.decl, s.dynamic]), [[affSet, `typeof ip saddr . numgen random mod 1; size ${AFFINITY_SET_SIZE}; flags dynamic,timeout`, true]]);
    // No chain per endpoint: a pinned client goes to its endpoint, any other picks one at random.
    assert.ok(!rs.chains.some((c) => c.name.startsWith('endpoint-')));
    const [t1, t2] = ['10.244.1.5', '10.244.2.5'].map((ip) => affinityTag(`ns1/svc1/tcp/p80__${ip}/8080`));
    const tags = new Set([t1, t2]);
    const pin = (tag: number, ip: string): string =>
      `update @${affSet} { ip saddr . numgen random mod 1 offset ${tag} timeout 600s } meta l4proto tcp dnat ip to ${ip}:8080`;
    assert.deepEqual(rules.slice(1), [
      `ip saddr . numgen random mod 1 offset ${t1} @${affSet} ${pin(t1!, '10.244.1.5')}`,
      `ip saddr . numgen random mod 1 offset ${t2} @${affSet} ${pin(t2!, '10.244.2.5')}`,
      `numgen random mod 2 0 ${pin(t1!, '10.244.1.5')}`,
      pin(t2!, '10.244.2.5'),
    ]);
    assert.equal(tags.size, 2, 'each endpoint has its own tag');
    assert.deepEqual(chain(rs, 'external-ULMVA6XW-ns1/svc1/tcp/p80'), [
      'fib saddr type local jump mark-for-masquerade',
      `fib saddr type local goto ${svc}`,
      `ip saddr { 10.244.0.0/16 } goto ${svc}`,
      'goto local-ULMVA6XW-ns1/svc1/tcp/p80',
    ]);
    // No shape chains and no data slots for affinity services.
    assert.equal(set(rs, 'service-endpoints-tcp').size, 0);
    assert.ok(!rs.chains.some((c) => /^cluster-\d/.test(c.name)));
  });

  test('affinity: two services with the same endpoint pin their clients apart in the shared set', () => {
    const ep = [endpoint('10.244.1.5', 8080)];
    const aff = { clientIPTimeoutSeconds: 60 };
    const rs = render(snapshot([
      servicePort({ namespace: 'ns', serviceName: 'a', clusterIP: '10.96.0.1', port: 80, protocol: 'TCP', sessionAffinity: aff, endpoints: ep }),
      servicePort({ namespace: 'ns', serviceName: 'b', clusterIP: '10.96.0.2', port: 80, protocol: 'TCP', sessionAffinity: aff, endpoints: ep }),
    ]), cfg);
    const pinned = rs.chains.filter((c) => c.name.startsWith('service-')).map((c) => c.rules.find((r) => r.includes('@affinity-clients update'))!);
    assert.equal(pinned.length, 2);
    const tagOf = (rule: string): string => /offset (\d+) @affinity-clients/.exec(rule)![1]!;
    assert.notEqual(tagOf(pinned[0]!), tagOf(pinned[1]!));
    // Declared in every table, with or without affinity services, and never given elements.
    const plain = render(snapshot([servicePort({ namespace: 'ns', serviceName: 'c', clusterIP: '10.96.0.3', port: 80, protocol: 'TCP', endpoints: ep })]), cfg);
    assert.deepEqual(plain.sets.filter((s) => s.name.startsWith('affinity-')).map((s) => [s.name, s.elements.size]), [['affinity-clients', 0]]);
  });

  test('no endpoints: reject for ClusterIP and NodePort, ClusterIP still known', () => {
    const rs = renderCase('noEndpoints');
    assert.deepEqual([...set(rs, 'no-endpoint-services')], [['10.96.0.10 . tcp . 80', 'goto reject-chain']]);
    assert.deepEqual([...set(rs, 'no-endpoint-nodeports')], [['tcp . 30080', 'goto reject-chain']]);
    assert.ok(set(rs, 'cluster-ips').has('10.96.0.10'));
    assert.equal(dispatch(rs, 'service-ips').size, 0);
  });

  test('IPv6: ip6 family, canonical addresses, ip6 matches', () => {
    const rs = renderCase('ipv6');
    assert.equal(rs.family, 'ip6');
    assert.ok(set(rs, 'cluster-ips').has('fd00:10:96::a'));
    assert.deepEqual([...set(rs, 'nodeport-ips').keys()], ['fd00:192::11']);
    assert.ok(set(rs, 'firewall-allow').has('2001:db8::5 . tcp . 80 . 2001:db8:1::/48'));
    assert.ok(set(rs, 'hairpin').has('fd00:10:244:1::5 . fd00:10:244:1::5'));
    assert.ok(rs.chains.some((c) => c.rules.some((r) => r.endsWith(' meta l4proto tcp dnat ip6 to [fd00:10:244:1::5]:8080'))));
    for (const c of rs.chains) for (const r of c.rules) assert.doesNotMatch(r, /\bip (saddr|daddr)\b/);
  });

  test('SCTP and one port number on TCP and UDP', () => {
    assert.equal(dispatch(renderCase('sctp'), 'service-ips').get('10.96.0.10 . sctp . 9999'), 'goto cluster-2');
    const rs = renderCase('tcpAndUdp');
    assert.deepEqual([...dispatch(rs, 'service-ips').keys()].sort(), ['10.96.0.10 . tcp . 53', '10.96.0.10 . udp . 53']);
    assert.deepEqual([...set(rs, 'cluster-ips').keys()], ['10.96.0.10']);
  });

  test('detect-local variants and masqueradeAll', () => {
    const br = renderCase('bridgeMasqueradeAll');
    assert.equal(chain(br, 'service-ULMVA6XW-ns1/svc1/tcp/p80')[0], 'ip daddr 10.96.0.10 jump mark-for-masquerade');
    const pre = renderCase('prefixNoCIDR');
    assert.deepEqual(chain(pre, 'cluster-2')[0], 'iifname != "veth*" jump mark-for-masquerade');
    assert.ok(chain(pre, 'external-local-1-2').includes(dnat('iifname "veth*" ', 'service', 2, true)[1]!));
    const brOnly = render(snapshot([web()]), backendConfig({ detectLocalMode: 'BridgeInterface', bridgeInterface: 'cbr0' }));
    assert.equal(chain(brOnly, 'cluster-2')[0], 'iifname != "cbr0" jump mark-for-masquerade');
    // No local CIDRs: nothing is local, ClusterIP traffic is not masqueraded.
    const noLocal = render(snapshot([web()]), backendConfig({ localCIDRs: [] }));
    assert.deepEqual(chain(noLocal, 'cluster-2'), dnat('', 'service', 2));
    assert.equal(chain(noLocal, 'mark-for-masquerade')[0], 'meta mark set meta mark | 0x4000');
  });

  test('bad input is skipped, the rest still renders', () => {
    const rs = render(
      snapshot([
        web({ clusterIP: 'not-an-ip', serviceName: 'bad' }),
        web({ serviceName: 'bad-eps', clusterIP: '10.96.0.20', endpoints: [endpoint('999.1.1.1', 80), endpoint('10.244.2.9', 0), endpoint('10.244.2.8', 80)] }),
        web(),
      ]),
      cfg,
    );
    assert.deepEqual([...set(rs, 'cluster-ips').keys()].sort(), ['10.96.0.10', '10.96.0.20']);
    assert.equal(dispatch(rs, 'service-ips').get('10.96.0.20 . tcp . 80'), 'goto cluster-1');
  });

  test('two services claiming one external IP and port: the smaller key wins, in full and incremental renders', () => {
    const a = web({ namespace: 'a', externalIPs: ['192.168.99.1'] });
    const b = web({ namespace: 'b', clusterIP: '10.96.0.11', externalIPs: ['192.168.99.1'], endpoints: [endpoint('10.244.2.77', 80)] });
    const rs = render(snapshot([b, a]), cfg);
    assert.equal(dispatch(rs, 'service-ips').get('192.168.99.1 . tcp . 80'), 'goto external-2');
    const st = new RulesetState(cfg);
    st.update(snapshot([b]));
    const ops = st.update(snapshot([a, b]), [key(a)]);
    // The tuple moves from the loser's shape to the winner's.
    assert.ok(ops.some((o) => o.kind === 'add-element' && o.set === 'external-2-tuples' && o.key === '192.168.99.1 . tcp . 80'));
    assert.ok(ops.some((o) => o.kind === 'delete-element' && o.set === 'external-1-tuples' && o.key === '192.168.99.1 . tcp . 80'));
    assert.deepEqual(st.ruleset().sets, rs.sets);
    const back = st.update(snapshot([b]), [key(a)]);
    assert.ok(back.some((o) => o.kind === 'add-element' && o.set === 'external-1-tuples' && o.key === '192.168.99.1 . tcp . 80'));
  });
});

describe('diff and chunking', () => {
  const cluster = syntheticCluster(1000, 3);
  const target = cluster[500]!;
  const changedEndpoints = [target.clusterEndpoints[0]!, endpoint('10.200.0.1', 8080), target.clusterEndpoints[2]!];
  const changed = servicePort({ ...target.info, endpoints: changedEndpoints });
  const cip = target.info.clusterIP;

  test('one endpoint of one service among 1,000 changes: only that service\'s elements', () => {
    const before = snapshot(cluster);
    const after = snapshot(cluster.map((p, i) => (i === 500 ? changed : p)));
    const expected: NftOp[] = [
      { kind: 'add-element', set: 'hairpin', key: '10.200.0.1 . 10.200.0.1', value: undefined },
      { kind: 'replace-element', set: 'service-endpoints-tcp', key: `${cip} . tcp . 80 . 1`, value: '10.100.5.222 . 8080' },
      { kind: 'replace-element', set: 'service-endpoints-tcp', key: `${cip} . tcp . 80 . 2`, value: '10.200.0.1 . 8080' },
      { kind: 'delete-element', set: 'hairpin', key: '10.100.5.221 . 10.100.5.221' },
    ];
    assert.equal(cip, '10.96.1.244');
    assert.deepEqual(diff(render(before, cfg), render(after, cfg)), expected);
    const st = new RulesetState(cfg);
    st.update(before);
    assert.deepEqual(st.update(after, [key(changed)]), expected);
    assert.deepEqual(st.ruleset().sets, render(after, cfg).sets);
  });

  test('endpoint count change: new shape set, chain and dispatch rule first, tuple moved, then the old slot removed', () => {
    const st = new RulesetState(cfg);
    st.update(snapshot(cluster));
    const fewer = servicePort({ ...target.info, endpoints: target.clusterEndpoints.slice(0, 2) });
    const ops = st.update(snapshot(cluster.map((p, i) => (i === 500 ? fewer : p))), [key(fewer)]);
    assert.deepEqual(
      ops.map((o) => [o.kind, o.kind === 'add-set' ? o.set.name : 'set' in o ? o.set : 'chain' in o ? o.chain.name : o.name, 'key' in o ? o.key : '']),
      [
        ['add-set', 'cluster-2-tuples', ''],
        ['add-chain', 'cluster-2', ''],
        ['replace-chain', 'services', ''],
        ['add-element', 'cluster-2-tuples', `${cip} . tcp . 80`],
        ['delete-element', 'cluster-3-tuples', `${cip} . tcp . 80`],
        ['delete-element', 'service-endpoints-tcp', `${cip} . tcp . 80 . 2`],
        ['delete-element', 'hairpin', '10.100.5.222 . 10.100.5.222'],
      ],
    );
    const services = ops.find((o) => o.kind === 'replace-chain')!;
    assert.ok(services.kind === 'replace-chain' && services.chain.rules.includes('ip daddr . meta l4proto . th dport @cluster-2-tuples goto cluster-2'));
    // Removing the last service with 2 endpoints: its dispatch rule goes after its tuple (late),
    // then the shape chain, then its set.
    const gone = st.update(snapshot(cluster.filter((_, i) => i !== 500)), [key(fewer)]);
    assert.deepEqual(
      gone.slice(-3).map((o) => [o.kind, 'chain' in o ? o.chain.name : 'name' in o ? o.name : '']),
      [
        ['replace-chain', 'services'],
        ['delete-chain', 'cluster-2'],
        ['delete-set', 'cluster-2-tuples'],
      ],
    );
    const rule = gone.at(-3)!;
    assert.ok(rule.kind === 'replace-chain' && !rule.chain.rules.some((r) => r.includes('cluster-2')));
    const verdictAt = gone.findIndex((o) => o.kind === 'delete-element' && o.set === 'cluster-2-tuples');
    const dataAt = gone.findIndex((o) => o.kind === 'delete-element' && o.set === 'service-endpoints-tcp');
    assert.ok(verdictAt >= 0 && verdictAt < dataAt);
  });

  test('incremental state equals a full render after a sequence of changes', () => {
    const st = new RulesetState(cfg);
    let ports = syntheticCluster(50, 2);
    st.update(snapshot(ports));
    const steps: Array<(p: ServicePortState[]) => ServicePortState[]> = [
      (p) => p.map((s, i) => (i === 3 ? servicePort({ ...s.info, endpoints: [] }) : s)),
      (p) => p.map((s, i) => (i === 4 ? servicePort({ ...s.info, sessionAffinity: { clientIPTimeoutSeconds: 10 }, endpoints: s.endpoints }) : s)),
      (p) => p.map((s, i) => (i === 5 ? servicePort({ ...s.info, nodePort: 30005, externalPolicyLocal: true, endpoints: [...s.endpoints, localEndpoint('10.244.1.50', 80)] }) : s)),
      (p) => p.filter((_, i) => i !== 6),
      (p) => p.map((s, i) => (i === 4 ? servicePort({ ...s.info, sessionAffinity: {}, endpoints: s.endpoints }) : s)),
    ];
    for (const step of steps) {
      const next = step(ports);
      const keys = new Set([...ports.map(key), ...next.map(key)]);
      st.update(snapshot(next), keys);
      const full = render(snapshot(next), cfg);
      const mine = st.ruleset();
      assert.deepEqual(mine.sets, full.sets);
      assert.deepEqual(new Map(mine.chains.map((c) => [c.name, c.rules])), new Map(full.chains.map((c) => [c.name, c.rules])));
      ports = next;
    }
  });

  test('chunks respect the budget and keep verdicts after their data', () => {
    const ports = syntheticCluster(40, 5);
    const ops = diff({ family: 'ip', table: 'kube-proxy', sets: [], chains: [] }, render(snapshot(ports), cfg));
    const budget = 37;
    const scripts = opsToScripts(ops, budget);
    assert.ok(scripts.length > 5);
    const seen = new Set<string>();
    for (const s of scripts) {
      const lines = s.split('\n');
      const cost = lines.filter((l) => /^\t/.test(l) || /^add rule /.test(l) || /^(add|delete) (chain|set|map) /.test(l)).length;
      assert.ok(cost <= budget, `chunk cost ${cost} within ${budget}`);
      let current = '';
      for (const l of lines) {
        const m = /^add element ip kube-proxy (\S+) \{$/.exec(l);
        if (m) current = m[1]!;
        const el = /^\t,?(.*)$/.exec(l);
        if (el && current) {
          const k = el[1]!.split(' : ')[0]!;
          seen.add(`${current}|${k}`);
          if (current.endsWith('-tuples')) {
            // Every slot of the tuple must already be there when it becomes live.
            for (let i = 0; i < 5; i++) assert.ok(seen.has(`service-endpoints-tcp|${k} . ${i}`), `slot ${i} of ${k} before its verdict`);
            assert.ok(seen.has(`cluster-ips|${k.split(' . ')[0]}`));
          }
        }
        if (l === '}') current = '';
      }
    }
    assert.equal(seen.size, ops.filter((o) => o.kind === 'add-element').length);
  });

  test('the operation count of a full load equals the operations a diff from an empty table yields', () => {
    for (const name of Object.keys(cases)) {
      const rs = renderCase(name);
      const ops = diff({ family: rs.family, table: rs.table, sets: [], chains: [] }, rs);
      assert.equal(opCountFromScratch(rs), ops.length, `case ${name}`);
    }
  });
});

describe('kernel acceptance (throwaway network namespace)', () => {
  const { name: ns, wrap } = useNetns(`kptnft-u${process.pid}`);

  test('every representative ruleset is accepted by nft -c', async () => {
    for (const name of Object.keys(cases)) {
      const script = toNftScript(renderCase(name));
      await assert.doesNotReject(applyScript(script, { wrap, check: true }), `case ${name}`);
    }
  });

  test('an invalid script is rejected with nft\'s message and the failing line', async () => {
    const script = 'add table ip kube-proxy\nadd chain ip kube-proxy c\nadd rule ip kube-proxy c jump no-such-chain\n';
    await assert.rejects(applyScript(script, { wrap, check: true }), (e: unknown) => {
      assert.ok(e instanceof NftError);
      assert.equal(e.line, 3);
      assert.equal(e.lineText, 'add rule ip kube-proxy c jump no-such-chain');
      return true;
    });
  });

  test('a script in pieces is applied as one file, and a refused one names its failing line across the pieces', async () => {
    const good = ['add table ip kpts-parts\nadd chain ', 'ip kpts-parts c\n', 'add chain ip kpts-parts d\n'];
    await applyScript({ parts: () => good }, { wrap });
    assert.match(execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'kpts-parts']).toString(), /chain c[\s\S]*chain d/);
    const bad = ['add chain ip kpts-parts e\nadd rule ip kpts-', 'parts c jump no-such-chain\n'];
    await assert.rejects(applyScript({ parts: () => bad }, { wrap }), (e: unknown) => {
      assert.ok(e instanceof NftError);
      assert.equal(e.line, 2);
      assert.equal(e.lineText, 'add rule ip kpts-parts c jump no-such-chain');
      return true;
    });
    assert.doesNotMatch(execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'kpts-parts']).toString(), /chain e/);
    await applyScript('delete table ip kpts-parts\n', { wrap });
  });

  test('a large table comes in pieces of bounded size, broken at line ends, every element once', () => {
    const rs = renderCase(Object.keys(cases)[0]!);
    const big = { ...rs, sets: rs.sets.map((x) => ({ ...x })) };
    const target = big.sets.find((x) => !x.dynamic && x.kind === 'set' && x.name === 'cluster-ips')!;
    target.elements = new Map(Array.from({ length: 30000 }, (_, i) => [`10.96.${i >> 8}.${i & 255}`, undefined]));
    const parts = [...nftScriptParts(big)];
    assert.ok(parts.length > 1, 'several pieces');
    assert.ok(parts.every((p) => p.length < (1 << 18) + 200), 'each piece stays small');
    assert.ok(parts.every((p) => p.endsWith('\n')), 'broken at line ends');
    const text = parts.join('');
    assert.equal(text.match(/^\t,?10\.96\.\d+\.\d+$/gm)?.length, 30000);
    assert.ok(text.endsWith('}\n'));
  });

  test('a new table in parts: the structure, then every data element once across the data parts, then every tuple once', () => {
    const rs = renderCase(Object.keys(cases)[0]!);
    const whole = toNftScript(rs);
    const elementsOf = (text: string): string[] => {
      const out: string[] = [];
      let set = '';
      for (const line of text.split('\n')) {
        const head = /^add element \S+ \S+ (\S+) \{$/.exec(line);
        if (head) set = head[1]!;
        else if (line.startsWith('\t') && set) out.push(`${set}: ${line.replace(/^\t,?/, '')}`);
        else if (line === '}') set = '';
      }
      return out.sort();
    };
    const steps = newTableSteps(rs, 3);
    const structure = [...steps.structure()].join('');
    assert.equal(structure, whole.slice(0, whole.indexOf('add element')), 'the table block of the whole script');
    const data = steps.data.map((p) => [...p()].join(''));
    const dispatch = steps.dispatch.map((p) => [...p()].join(''));
    assert.ok(data.length > 1 && dispatch.length >= 1, `${data.length} data parts, ${dispatch.length} tuple parts`);
    assert.ok(data.every((t) => t.length > 0) && dispatch.every((t) => t.length > 0), 'no empty part');
    assert.ok(data.flatMap(elementsOf).every((e) => !isDispatchSet(e.split(':')[0]!)), 'data parts hold no tuple');
    assert.ok(dispatch.flatMap(elementsOf).every((e) => isDispatchSet(e.split(':')[0]!)), 'tuple parts hold only tuples');
    assert.deepEqual([...data, ...dispatch].flatMap(elementsOf).sort(), elementsOf(whole), 'every element of the whole script, once');
  });

  test('a rejected partial transaction (interactive nft session) names the failing command and changes nothing', async () => {
    await applyScript('add table ip kpts-probe\nadd chain ip kpts-probe c\n', { wrap });
    const script = 'add chain ip kpts-probe d\nadd element ip kpts-probe nosuchset {\n\t10.0.0.1\n\t,10.0.0.2\n}\nadd rule ip kpts-probe c jump no-such-chain\n';
    await assert.rejects(applyScript(script, { wrap }), (e: unknown) => {
      assert.ok(e instanceof NftError);
      assert.equal(e.line, 2);
      assert.equal(e.lineText, 'add element ip kpts-probe nosuchset {');
      return true;
    });
    const listed = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'kpts-probe']).toString();
    assert.doesNotMatch(listed, /chain d/, 'the whole transaction was rolled back');
    // The session goes on serving later transactions.
    await applyScript('add chain ip kpts-probe e\n', { wrap });
    assert.match(execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'kpts-probe']).toString(), /chain e/);
    await applyScript('delete table ip kpts-probe\n', { wrap });
  });

  test('a rejected transaction leaves the previous table intact and the next sync is full', async () => {
    const be = new NftablesBackend(cfg, { wrap, removeLeftovers: false });
    const a1 = web();
    const a2 = web({ serviceName: 'svc2', clusterIP: '10.96.0.20', endpoints: [endpoint('10.244.2.20', 80)] });
    const first = await be.sync(snapshot([a1, a2]));
    assert.equal(first.full, true);
    // Someone removes one of our elements behind our back.
    await applyScript('delete element ip kube-proxy cluster-2-tuples { 10.96.0.10 . tcp . 80 }\n', { wrap });
    const b1 = web({ endpoints: [endpoint('10.244.2.5', 8080)] });
    const b3 = web({ serviceName: 'svc3', clusterIP: '10.96.0.30', endpoints: [endpoint('10.244.2.30', 80)] });
    const changes = { ...emptyChanges(false), changed: new Set([key(b1), key(b3)]) };
    const snapB = snapshot([b1, a2, b3], { generation: 2, changes });
    await assert.rejects(be.sync(snapB), NftError);
    assert.equal(be.syncFailures, 1);
    const kernel = await readTable('ip', { wrap });
    assert.ok(kernel);
    const k = (n: string) => kernel.sets.find((s) => s.name === n)!.elements;
    // Nothing of the failed transaction is in: no svc3, svc1 still has both slots.
    assert.ok(!k('cluster-1-tuples').has('10.96.0.30 . tcp . 80'));
    assert.ok(k('service-endpoints-tcp').has('10.96.0.10 . tcp . 80 . 1'));
    assert.ok(k('cluster-1-tuples').has('10.96.0.20 . tcp . 80'));
    const retry = await be.sync({ ...snapB, generation: 3 });
    assert.equal(retry.full, true);
    const repaired = await readTable('ip', { wrap });
    const want = render(snapB, cfg);
    for (const s of want.sets) assert.deepEqual(repaired!.sets.find((x) => x.name === s.name)!.elements, s.elements, s.name);
    await be.cleanup();
    assert.equal(await readTable('ip', { wrap }), undefined);
  });
});
