// The iptables tracer on hand-written restore input in upstream kube-proxy's layout: what a
// user asking "where does this packet go" is told, and every piece of the rule grammar.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jumpRules, renderContext } from '../../src/backend/iptables/render.js';
import { TraceError, type TracePacket, type TraceResult } from '../../src/explain/index.js';
import { jumpRuleSpec, parseRestoreInput, traceIptables, UPSTREAM_JUMPS } from '../../src/explain/iptables/index.js';

const NODE_IP = '192.168.0.2';
const NODE = { localIPs: [NODE_IP] };
const LOCAL_POD = '10.0.1.5';
const EXTERNAL = '203.0.113.5';

// Four services on a node with cluster CIDR 10.0.0.0/8:
//  ns1/svc1:p80  ClusterIP 172.30.0.41:80 → 10.180.0.1:80, 10.180.2.1:80
//  ns2/np:p80    NodePort 3001 (cluster IP 172.30.0.42) → three endpoints, externalTrafficPolicy Cluster
//  ns3/aff:p80   ClusterIP 172.30.0.43:80, ClientIP affinity 10800 s → 10.180.7.1:80, 10.180.7.2:80
//  ns4/lb:p80    LoadBalancer 1.2.3.4:80, source ranges 203.0.113.0/25 → 10.180.4.1:80
//  ns5/empty:p80 ClusterIP 172.30.0.45:80, no endpoints; ns2/np has health check node port 30000
const CLUSTER = `*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-NODEPORTS -m comment --comment "ns2/np:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns5/empty:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j REJECT
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "ns4/lb:p80 traffic not accepted by KUBE-FW-4DNSTQCLQZDHEAGP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-SVC-AFFXXXXXXXXXXXXX - [0:0]
:KUBE-SEP-AFFAAAAAAAAAAAAA - [0:0]
:KUBE-SEP-AFFBBBBBBBBBBBBB - [0:0]
:KUBE-FW-4DNSTQCLQZDHEAGP - [0:0]
:KUBE-EXT-4DNSTQCLQZDHEAGP - [0:0]
:KUBE-SVC-4DNSTQCLQZDHEAGP - [0:0]
:KUBE-SEP-LBAAAAAAAAAAAAAA - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns2/np:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns2/np:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns3/aff:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-AFFXXXXXXXXXXXXX
-A KUBE-SERVICES -m comment --comment "ns4/lb:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-FW-4DNSTQCLQZDHEAGP
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j KUBE-SEP-UKSFD7AGPMPPLUHC
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns1/svc1:p80 -s 10.180.2.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.2.1:80
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade traffic for ns2/np:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/np:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/np:p80 -> 10.0.1.7:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-RS4RBKLTHTF2IUXJ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/np:p80 -> 10.180.2.2:80" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-C6EBXVWJJZMIWKLZ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/np:p80 -> 10.180.2.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/np:p80 -s 10.0.1.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/np:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.7:80
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns2/np:p80 -s 10.180.2.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns2/np:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.2.2:80
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns2/np:p80 -s 10.180.2.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns2/np:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.2.3:80
-A KUBE-SVC-AFFXXXXXXXXXXXXX -m comment --comment "ns3/aff:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-AFFXXXXXXXXXXXXX -m comment --comment "ns3/aff:p80 -> 10.180.7.1:80" -m recent --name KUBE-SEP-AFFAAAAAAAAAAAAA --mask 255.255.255.255 --rsource --rcheck --seconds 10800 --reap -j KUBE-SEP-AFFAAAAAAAAAAAAA
-A KUBE-SVC-AFFXXXXXXXXXXXXX -m comment --comment "ns3/aff:p80 -> 10.180.7.2:80" -m recent --name KUBE-SEP-AFFBBBBBBBBBBBBB --mask 255.255.255.255 --rsource --rcheck --seconds 10800 --reap -j KUBE-SEP-AFFBBBBBBBBBBBBB
-A KUBE-SVC-AFFXXXXXXXXXXXXX -m comment --comment "ns3/aff:p80 -> 10.180.7.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-AFFAAAAAAAAAAAAA
-A KUBE-SVC-AFFXXXXXXXXXXXXX -m comment --comment "ns3/aff:p80 -> 10.180.7.2:80" -j KUBE-SEP-AFFBBBBBBBBBBBBB
-A KUBE-SEP-AFFAAAAAAAAAAAAA -m comment --comment ns3/aff:p80 -s 10.180.7.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-AFFAAAAAAAAAAAAA -m comment --comment ns3/aff:p80 -m recent --set --name KUBE-SEP-AFFAAAAAAAAAAAAA --mask 255.255.255.255 --rsource -m tcp -p tcp -j DNAT --to-destination 10.180.7.1:80
-A KUBE-SEP-AFFBBBBBBBBBBBBB -m comment --comment ns3/aff:p80 -s 10.180.7.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-AFFBBBBBBBBBBBBB -m comment --comment ns3/aff:p80 -m recent --set --name KUBE-SEP-AFFBBBBBBBBBBBBB --mask 255.255.255.255 --rsource -m tcp -p tcp -j DNAT --to-destination 10.180.7.2:80
-A KUBE-FW-4DNSTQCLQZDHEAGP -m comment --comment "ns4/lb:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-4DNSTQCLQZDHEAGP
-A KUBE-FW-4DNSTQCLQZDHEAGP -m comment --comment "other traffic to ns4/lb:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-EXT-4DNSTQCLQZDHEAGP -m comment --comment "masquerade traffic for ns4/lb:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-4DNSTQCLQZDHEAGP -j KUBE-SVC-4DNSTQCLQZDHEAGP
-A KUBE-SVC-4DNSTQCLQZDHEAGP -m comment --comment "ns4/lb:p80 -> 10.180.4.1:80" -j KUBE-SEP-LBAAAAAAAAAAAAAA
-A KUBE-SEP-LBAAAAAAAAAAAAAA -m comment --comment ns4/lb:p80 -s 10.180.4.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-LBAAAAAAAAAAAAAA -m comment --comment ns4/lb:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.4.1:80
COMMIT
`;

function pkt(over: Partial<TracePacket>): TracePacket {
  return { sourceIP: LOCAL_POD, destIP: '172.30.0.41', protocol: 'TCP', destPort: 80, from: 'pod', ...over };
}

function run(over: Partial<TracePacket>, rules = CLUSTER): TraceResult {
  return traceIptables(rules, 'IPv4', pkt(over), NODE);
}

const eps = (r: TraceResult): string[] => r.endpoints.map((e) => `${e.ip}:${e.port}`).sort();
const masqueraded = (r: TraceResult): string[] => r.endpoints.filter((e) => e.masquerade).map((e) => `${e.ip}:${e.port}`).sort();

test('ClusterIP from a local pod: both endpoints, each on a random branch, client IP kept', () => {
  const r = run({});
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.180.0.1:80', '10.180.2.1:80']);
  assert.equal(r.masquerade, false);
  assert.deepEqual(r.branches.map((b) => b.conditions), [
    ['KUBE-SVC-XPGD46QRK7WJZT7O: random p=0.5000000000 matched'],
    ['KUBE-SVC-XPGD46QRK7WJZT7O: random p=0.5000000000 not matched'],
  ]);
  assert.ok(r.branches.every((b) => b.routed === 'forward'));
  // The built-in chains are absent from the input: upstream's hooks are assumed.
  assert.deepEqual(r.branches[0]!.path, [
    'nat/PREROUTING: -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    'nat/KUBE-SERVICES: -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',
    'nat/KUBE-SVC-XPGD46QRK7WJZT7O: -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ',
    'nat/KUBE-SEP-SXIVWICOYRO3J4NJ: -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80',
    'filter/FORWARD: -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    'filter/FORWARD: -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    'filter/FORWARD: -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    'filter/FORWARD: -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    'nat/POSTROUTING: -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    'nat/KUBE-POSTROUTING: -m mark ! --mark 0x4000/0x4000 -j RETURN',
  ]);
});

test('ClusterIP from outside the cluster CIDR is masqueraded; a pod reaching itself is masqueraded (hairpin)', () => {
  const ext = run({ sourceIP: EXTERNAL, from: 'external' });
  assert.deepEqual(masqueraded(ext), ['10.180.0.1:80', '10.180.2.1:80']);
  assert.ok(ext.path.includes('nat/KUBE-POSTROUTING: -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully'));
  assert.ok(ext.path.includes('nat/KUBE-MARK-MASQ: -j MARK --or-mark 0x4000'));

  const hairpin = run({ sourceIP: '10.180.0.1' });
  assert.deepEqual(eps(hairpin), ['10.180.0.1:80', '10.180.2.1:80']);
  assert.deepEqual(masqueraded(hairpin), ['10.180.0.1:80']);
});

test('NodePort from outside: three endpoints with their probabilities, all masqueraded', () => {
  const r = run({ sourceIP: EXTERNAL, destIP: NODE_IP, destPort: 3001, from: 'external' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.0.1.7:80', '10.180.2.2:80', '10.180.2.3:80']);
  assert.deepEqual(masqueraded(r), eps(r));
  const chain = 'KUBE-SVC-GNZBNJ2PO5MGZ6GT';
  assert.deepEqual(r.branches.map((b) => [b.endpoint!.ip, ...b.conditions]), [
    ['10.0.1.7', `${chain}: random p=0.33333333349 matched`],
    ['10.180.2.2', `${chain}: random p=0.66666666651 not matched`, `${chain}: random p=0.50000000000 matched`],
    ['10.180.2.3', `${chain}: random p=0.66666666651 not matched`, `${chain}: random p=0.50000000000 not matched`],
  ]);
  assert.ok(r.path.includes('nat/KUBE-SERVICES: -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'));
  // The same port on an address that is not the node's is not a NodePort.
  const elsewhere = run({ sourceIP: EXTERNAL, destIP: '192.168.0.99', destPort: 3001, from: 'external' });
  assert.deepEqual(elsewhere.endpoints, []);
  assert.equal(elsewhere.branches[0]!.routed, 'forward');
});

test('host to a ClusterIP goes through nat OUTPUT and is masqueraded (the node is outside the cluster CIDR)', () => {
  const r = run({ sourceIP: NODE_IP, from: 'host' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(masqueraded(r), ['10.180.0.1:80', '10.180.2.1:80']);
  assert.ok(r.path[0]!.startsWith('nat/OUTPUT: -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'));
  assert.ok(r.path.includes('filter/OUTPUT: -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'));
  // NodePorts answer on 127.0.0.1 too; the localnet guard drops what reaches 127.0.0.1 from outside untranslated.
  const lo = run({ sourceIP: '127.0.0.1', destIP: '127.0.0.1', destPort: 3001, from: 'host' });
  assert.equal(lo.verdict, 'ACCEPT');
  assert.equal(lo.endpoints.length, 3);
  const martian = run({ sourceIP: EXTERNAL, destIP: '127.0.0.1', destPort: 9999, from: 'external' });
  assert.equal(martian.verdict, 'DROP');
  assert.ok(martian.path.includes('filter/KUBE-FIREWALL: -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP'));
});

test('session affinity: each endpoint the client may be pinned to, then the fresh random choice', () => {
  const r = run({ destIP: '172.30.0.43' });
  assert.deepEqual(eps(r), ['10.180.7.1:80', '10.180.7.2:80']);
  assert.deepEqual(r.branches.map((b) => [b.endpoint!.ip, ...b.conditions]), [
    ['10.180.7.1', `${LOCAL_POD} seen in recent list KUBE-SEP-AFFAAAAAAAAAAAAA within 10800s`],
    ['10.180.7.2', `${LOCAL_POD} not in recent list KUBE-SEP-AFFAAAAAAAAAAAAA within 10800s`, `${LOCAL_POD} seen in recent list KUBE-SEP-AFFBBBBBBBBBBBBB within 10800s`],
    ['10.180.7.1', `${LOCAL_POD} not in recent list KUBE-SEP-AFFAAAAAAAAAAAAA within 10800s`, `${LOCAL_POD} not in recent list KUBE-SEP-AFFBBBBBBBBBBBBB within 10800s`, 'KUBE-SVC-AFFXXXXXXXXXXXXX: random p=0.5000000000 matched'],
    ['10.180.7.2', `${LOCAL_POD} not in recent list KUBE-SEP-AFFAAAAAAAAAAAAA within 10800s`, `${LOCAL_POD} not in recent list KUBE-SEP-AFFBBBBBBBBBBBBB within 10800s`, 'KUBE-SVC-AFFXXXXXXXXXXXXX: random p=0.5000000000 not matched'],
  ]);
  const pins = Object.fromEntries(r.endpoints.map((e) => [e.ip, e.pins]));
  assert.deepEqual(pins['10.180.7.1'], [{ set: 'KUBE-SEP-AFFAAAAAAAAAAAAA', key: LOCAL_POD, timeout: '10800s' }]);
  assert.deepEqual(pins['10.180.7.2'], [{ set: 'KUBE-SEP-AFFBBBBBBBBBBBBB', key: LOCAL_POD, timeout: '10800s' }]);
});

test('a service without endpoints is rejected in filter KUBE-SERVICES, from a pod and from the host', () => {
  for (const over of [{}, { sourceIP: NODE_IP, from: 'host' as const }]) {
    const r = run({ ...over, destIP: '172.30.0.45' });
    assert.equal(r.verdict, 'REJECT');
    assert.deepEqual(r.endpoints, []);
    assert.ok(r.path.includes('filter/KUBE-SERVICES: -m comment --comment "ns5/empty:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j REJECT'));
  }
});

test('LoadBalancer source ranges: allowed sources reach the endpoint, others are dropped by KUBE-PROXY-FIREWALL', () => {
  const ok = run({ sourceIP: EXTERNAL, destIP: '1.2.3.4', from: 'external' });
  assert.equal(ok.verdict, 'ACCEPT');
  assert.deepEqual(masqueraded(ok), ['10.180.4.1:80']);
  const blocked = run({ sourceIP: '203.0.113.200', destIP: '1.2.3.4', from: 'external' });
  assert.equal(blocked.verdict, 'DROP');
  assert.deepEqual(blocked.endpoints, []);
  assert.ok(blocked.path.includes('filter/KUBE-PROXY-FIREWALL: -m comment --comment "ns4/lb:p80 traffic not accepted by KUBE-FW-4DNSTQCLQZDHEAGP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP'));
});

test('the health check node port is accepted on the node by filter KUBE-NODEPORTS', () => {
  const r = run({ sourceIP: EXTERNAL, destIP: NODE_IP, destPort: 30000, from: 'external' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.equal(r.branches[0]!.routed, 'local');
  assert.ok(r.path.includes('filter/KUBE-NODEPORTS: -m comment --comment "ns2/np:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT'));
});

test('upstream hooks: the jump list puts each built-in chain in kernel order, and the input may carry its own', () => {
  const filterInput = UPSTREAM_JUMPS.filter((j) => j.table === 'filter' && j.from === 'INPUT').map((j) => j.to).reverse();
  assert.deepEqual(filterInput, ['KUBE-FIREWALL', 'KUBE-PROXY-FIREWALL', 'KUBE-NODEPORTS', 'KUBE-EXTERNAL-SERVICES']);
  // With the jumps written out, only they count: here nat PREROUTING does not reach KUBE-SERVICES.
  const own = CLUSTER.replace(':KUBE-NODEPORTS - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ', ':PREROUTING ACCEPT [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ')
    .replace('-A KUBE-MARK-MASQ -j MARK', '-A PREROUTING -s 10.99.0.0/16 -j KUBE-SERVICES\n-A KUBE-MARK-MASQ -j MARK');
  assert.deepEqual(run({}, own).endpoints, []);
  assert.deepEqual(eps(run({ sourceIP: '10.99.0.1' }, own)), ['10.180.0.1:80', '10.180.2.1:80']);
});

test('the jumps the tracer assumes are the ones the iptables backend ensures', () => {
  const ctx = renderContext({
    family: 'IPv4', masqueradeAll: false, masqueradeBit: 14, detectLocalMode: 'ClusterCIDR', localCIDRs: ['10.0.0.0/8'],
    bridgeInterface: '', interfaceNamePrefix: '', nodePortAddresses: [], nodeIPs: [NODE_IP], localhostNodePorts: true,
  });
  assert.deepEqual(jumpRules(ctx), UPSTREAM_JUMPS.map((j) => ({ table: j.table, chain: j.from, rule: jumpRuleSpec(j) })));
});

test('DNAT to an IPv6 endpoint in ip6tables input', () => {
  const rules = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-V6 - [0:0]
:KUBE-SEP-V6A - [0:0]
:KUBE-SEP-V6B - [0:0]
-A KUBE-SERVICES -m comment --comment "ns8/v6:p80 cluster IP" -m tcp -p tcp -d fd00:172:30::48/128 --dport 80 -j KUBE-SVC-V6
-A KUBE-SVC-V6 -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-V6A
-A KUBE-SVC-V6 -j KUBE-SEP-V6B
-A KUBE-SEP-V6A -p tcp -m tcp -j DNAT --to-destination [fd00:10:180::1]:8080
-A KUBE-SEP-V6B -p tcp -m tcp -j DNAT --to-destination fd00:10:180::2
COMMIT
`;
  const r = traceIptables(rules, 'IPv6', pkt({ sourceIP: 'fd00:10:1::5', destIP: 'fd00:172:30::48' }), { localIPs: ['fd00:192::2'] });
  assert.deepEqual(eps(r), ['fd00:10:180::1:8080', 'fd00:10:180::2:80']);
  assert.throws(() => traceIptables(rules, 'IPv4', pkt({}), NODE), (e: unknown) => e instanceof TraceError && /IPv6 address in an IPv4 ruleset/.test(e.message));
});

/** A one-table input whose nat PREROUTING holds the given rules (and the chains they use). */
function pre(rules: string[], extra = ''): string {
  return `*nat\n:PREROUTING ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n${extra}${rules.map((r) => `-A PREROUTING ${r}`).join('\n')}\nCOMMIT\n`;
}

test('grammar: addresses, protocols, ports and interfaces, each with negation', () => {
  const to = (over: Partial<TracePacket>, rules: string[]): string[] => {
    const r = traceIptables(pre(rules), 'IPv4', pkt({ inInterface: 'veth12', ...over }), NODE);
    return r.branches.map((b) => b.endpoint?.ip ?? 'none');
  };
  const d = (ip: string): string => `-j DNAT --to-destination ${ip}`;
  assert.deepEqual(to({}, ['-s 10.0.0.0/8 ' + d('1.1.1.1')]), ['1.1.1.1']);
  assert.deepEqual(to({}, ['! -s 10.0.0.0/8 ' + d('1.1.1.1')]), ['none']);
  assert.deepEqual(to({}, ['--source 10.0.1.4/31 --destination 172.30.0.41/32 ' + d('1.1.1.2')]), ['1.1.1.2']);
  assert.deepEqual(to({}, ['-p udp ' + d('1.1.1.1'), '! -p udp ' + d('1.1.1.3')]), ['1.1.1.3']);
  assert.deepEqual(to({ protocol: 'SCTP' }, ['-p sctp -m sctp --dport 80 ' + d('1.1.1.4')]), ['1.1.1.4']);
  assert.deepEqual(to({ protocol: 'UDP' }, ['-p udp --dport 70:90 ' + d('1.1.1.5')]), ['1.1.1.5']);
  assert.deepEqual(to({}, ['-p tcp -m tcp ! --dport 80 ' + d('1.1.1.1'), '-p all ' + d('1.1.1.6')]), ['1.1.1.6']);
  assert.deepEqual(to({}, ['-i veth+ ' + d('1.1.1.7')]), ['1.1.1.7']);
  assert.deepEqual(to({}, ['! -i veth12 ' + d('1.1.1.1'), '-i eth0 ' + d('1.1.1.1')]), ['none']);
  // A source port is not part of a trace: a match on it is a branch.
  const sp = traceIptables(pre(['-p tcp -m tcp --sport 1024:65535 ' + d('1.1.1.8')]), 'IPv4', pkt({}), NODE);
  assert.deepEqual(sp.branches.map((b) => [b.endpoint?.ip ?? 'none', ...b.conditions]), [
    ['1.1.1.8', 'source port in 1024:65535'],
    ['none', 'source port not in 1024:65535'],
  ]);
  assert.throws(() => to({ inInterface: undefined }, ['-i veth+ ' + d('1.1.1.7')]), /give the packet an input interface/);
  assert.throws(() => to({}, ['-p tcp --dport 80 -m udp ' + d('1.1.1.1')]), /-m udp needs -p udp/);
});

test('grammar: marks, conntrack states, addrtype, jumps, goto, RETURN and policies', () => {
  const rules = `*nat
:PREROUTING ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
[5:300] -A PREROUTING -j MARK --set-xmark 0x4000/0xffffffff
-A PREROUTING -j A
-A PREROUTING -m mark --mark 0x6000 ! -d 192.168.0.2 -j DNAT --to-destination 1.1.1.1
-A PREROUTING -m mark ! --mark 0x2000/0x2000 -j DNAT --to-destination 1.1.1.2
-A PREROUTING -m comment --comment "unmarked only" -m mark --mark 0x0/0x2000 -j DNAT --to-destination 1.1.1.3
-A A -j MARK --or-mark 0x2000
-A A -m conntrack ! --ctstate NEW -j MARK --and-mark 0x0
-A A -m addrtype ! --src-type LOCAL -g B
-A A -j MARK --set-mark 0x0
-A B -m addrtype --dst-type LOCAL -j RETURN
-A B -j RETURN
-A B -j MARK --set-mark 0x1
COMMIT
*filter
:FORWARD DROP [0:0]
:INPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate DNAT -d 1.1.1.1 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j REJECT --reject-with icmp-port-unreachable
COMMIT
`;
  const r = traceIptables(rules, 'IPv4', pkt({}), NODE);
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['1.1.1.1:80']);
  assert.deepEqual(r.path, [
    'nat/PREROUTING: -j MARK --set-xmark 0x4000/0xffffffff',
    'nat/PREROUTING: -j A',
    'nat/A: -j MARK --or-mark 0x2000',
    'nat/A: -m addrtype ! --src-type LOCAL -g B',
    'nat/B: -j RETURN',
    'nat/PREROUTING: -m mark --mark 0x6000 ! -d 192.168.0.2 -j DNAT --to-destination 1.1.1.1',
    'filter/FORWARD: -m conntrack --ctstate DNAT -d 1.1.1.1 -j ACCEPT',
  ]);
  // Not translated: the FORWARD policy drops it; to the node's own port 22 it is rejected.
  const dropped = traceIptables(rules.replace('-m mark --mark 0x6000 !', '-m mark --mark 0x6001 !'), 'IPv4', pkt({}), NODE);
  assert.equal(dropped.verdict, 'DROP');
  assert.equal(dropped.path[dropped.path.length - 1], 'filter/FORWARD: policy DROP');
  const ssh = traceIptables(rules, 'IPv4', pkt({ destIP: NODE_IP, destPort: 22 }), NODE);
  assert.equal(ssh.verdict, 'REJECT');
});

test('grammar: restore commands -I, -D, -F, -X and statistic certainties', () => {
  const rules = `*nat
:PREROUTING ACCEPT [0:0]
:GONE - [0:0]
-A PREROUTING -j DNAT --to-destination 9.9.9.9
-A PREROUTING -m statistic --mode random --probability 1.0 -j DNAT --to-destination 2.2.2.2
-I PREROUTING 1 -m statistic --mode random --probability 0.0 -j DNAT --to-destination 1.1.1.1
-D PREROUTING -j DNAT --to-destination 9.9.9.9
-A GONE -j DROP
-F GONE
-X GONE
COMMIT
`;
  const r = traceIptables(rules, 'IPv4', pkt({}), NODE);
  assert.deepEqual(r.branches.map((b) => [b.endpoint?.ip, ...b.conditions]), [['2.2.2.2']]);
  assert.throws(() => traceIptables(rules.replace('-X GONE', '-X GONE\n-A GONE -j DROP'), 'IPv4', pkt({}), NODE), /no chain 'GONE'/);
});

test('what the tracer cannot read is an error naming the rule, never a guess', () => {
  const cases: Array<[string, RegExp]> = [
    ['-p tcp -m multiport --dports 80,443 -j A', /nat\/PREROUTING: cannot interpret rule "-p tcp -m multiport --dports 80,443 -j A": match module 'multiport' is not supported/],
    ['-j SNAT --to-source 1.2.3.4', /target SNAT is not supported|option --to-source of target SNAT is not supported/],
    ['-j LOG', /no chain or supported target named LOG/],
    ['-m statistic --mode nth --every 2 -j A', /option --every is not supported|mode 'nth' is not supported/],
    ['-m recent --name X --update --seconds 5 -j A', /option --update is not supported/],
    ['-m addrtype --dst-type UNICAST -j A', /type 'UNICAST' is not supported/],
    ['-p tcp -m tcp --tcp-flags SYN SYN -j A', /option --tcp-flags is not supported/],
    ['-j DNAT --to-destination 1.1.1.1-1.1.1.9', /address ranges are not supported/],
    ['-j MASQUERADE', /MASQUERADE is only valid in nat POSTROUTING/],
    ['-o eth0 -j A', /-o cannot be used on PREROUTING/],
  ];
  for (const [rule, msg] of cases) {
    assert.throws(() => traceIptables(pre([rule]), 'IPv4', pkt({}), NODE), (e: unknown) => e instanceof TraceError && msg.test(e.message), rule);
  }
  // A rule nothing reaches does not matter.
  const unreached = traceIptables(pre(['-j ACCEPT', '-m multiport --dports 1,2 -j A']), 'IPv4', pkt({}), NODE);
  assert.equal(unreached.verdict, 'ACCEPT');
  // Broken input as a whole is a TraceError too.
  assert.throws(() => traceIptables('*nat\n:A - [0:0]\n', 'IPv4', pkt({}), NODE), (e: unknown) => e instanceof TraceError && /no COMMIT/.test(e.message));
  assert.throws(() => traceIptables('-A A -j ACCEPT\n', 'IPv4', pkt({}), NODE), /outside a table block/);
  assert.throws(() => traceIptables('*nat\n-A A -m comment --comment "open\nCOMMIT\n', 'IPv4', pkt({}), NODE), /unterminated quote/);
});

test('the restore reader keeps declared chains, policies and rule text', () => {
  const t = parseRestoreInput(CLUSTER);
  assert.deepEqual([...t.keys()], ['filter', 'nat']);
  const nat = t.get('nat')!;
  assert.equal(nat.chains.get('KUBE-SVC-XPGD46QRK7WJZT7O')!.rules.length, 3);
  assert.equal(nat.chains.get('PREROUTING')!.policy, 'ACCEPT');
  assert.equal(nat.chains.get('KUBE-SEP-SXIVWICOYRO3J4NJ')!.rules[1], '-m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80');
});
