// The tracer's interpreter on small hand-written tables: control flow, lookups, branching,
// and refusing what it cannot read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { traceTable, TraceError, type TraceChain, type TracePacket, type TraceSet, type TraceTable } from '../../src/explain/index.js';

const NODE = { localIPs: ['192.168.0.2'] };

function table(chains: TraceChain[], sets: TraceSet[] = [], family: 'ip' | 'ip6' = 'ip'): TraceTable {
  return { family, chains, sets };
}

function pkt(over: Partial<TracePacket> = {}): TracePacket {
  return { sourceIP: '10.0.0.5', destIP: '10.96.0.1', protocol: 'TCP', destPort: 80, from: 'pod', inInterface: 'veth0', ...over };
}

const pre = (rules: string[], over: Partial<TraceChain> = {}): TraceChain => ({
  name: 'pre', hook: 'prerouting', type: 'filter', priority: 'dstnat - 10', rules, ...over,
});
const nat = (rules: string[]): TraceChain => ({ name: 'nat-pre', hook: 'prerouting', type: 'nat', priority: 'dstnat', rules });

test('jump returns to the caller, goto does not, return leaves the chain', () => {
  const t = table([
    pre(['jump a', 'counter comment "after a"', 'goto b', 'drop']),
    { name: 'a', rules: ['meta mark set 0x1', 'return', 'drop'] },
    { name: 'b', rules: ['meta mark & 0x1 == 0x1 jump c'] },
    { name: 'c', rules: ['ip saddr 10.0.0.0/8 return', 'reject'] },
  ]);
  const r = traceTable(t, pkt(), NODE);
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(r.path, [
    'pre: jump a',
    'a: meta mark set 0x1',
    'a: return',
    'pre: counter comment "after a"',
    'pre: goto b',
    'b: meta mark & 0x1 == 0x1 jump c',
    'c: ip saddr 10.0.0.0/8 return',
  ]);
  const other = traceTable(t, pkt({ sourceIP: '172.16.0.1' }), NODE);
  assert.equal(other.verdict, 'REJECT');
});

test('base chains run in priority order and a drop policy drops', () => {
  const t = table([
    { name: 'late', hook: 'prerouting', type: 'filter', priority: 'filter', rules: ['counter'] },
    { name: 'early', hook: 'prerouting', type: 'filter', priority: -200, rules: ['counter'] },
    { name: 'fwd', hook: 'forward', type: 'filter', priority: 0, policy: 'drop', rules: ['ct state established,related accept'] },
  ]);
  const r = traceTable(t, pkt(), NODE);
  assert.equal(r.verdict, 'DROP');
  assert.deepEqual(r.path, ['early: counter', 'late: counter', 'fwd: policy drop']);
});

test('routing: local destinations go to input, others to forward and postrouting', () => {
  const t = table([
    { name: 'in', hook: 'input', type: 'filter', priority: 0, rules: ['tcp dport 22 drop'] },
    { name: 'fwd', hook: 'forward', type: 'filter', priority: 0, rules: ['udp dport 80 drop', 'counter'] },
    { name: 'post', hook: 'postrouting', type: 'nat', priority: 'srcnat', rules: ['ip daddr != 10.0.0.0/8 masquerade'] },
  ]);
  assert.equal(traceTable(t, pkt({ destIP: '192.168.0.2', destPort: 22 }), NODE).verdict, 'DROP');
  const fwd = traceTable(t, pkt({ destIP: '8.8.8.8' }), NODE);
  assert.equal(fwd.masquerade, true);
  assert.equal(fwd.branches[0]!.routed, 'forward');
  assert.deepEqual(fwd.path, ['fwd: counter', 'post: ip daddr != 10.0.0.0/8 masquerade']);
});

test('concatenated vmap, interval sets, anonymous sets and fib', () => {
  const sets: TraceSet[] = [
    { name: 'svc', elements: ['10.96.0.1 . tcp . 80 : jump web', '10.96.0.1 . udp . 53 : drop'] },
    { name: 'allow', elements: ['10.96.0.1 . tcp . 80 . 10.0.0.0/16', '10.96.0.1 . tcp . 80 . 10.9.0.1-10.9.0.9'] },
  ];
  const t = table([
    pre([
      'fib daddr type local accept',
      'ip daddr . meta l4proto . th dport vmap @svc',
      'meta l4proto { tcp, sctp } th dport { 80, 1000-2000 } reject',
    ]),
    { name: 'web', rules: ['ip daddr . meta l4proto . th dport . ip saddr @allow accept', 'drop'] },
  ], sets);
  assert.equal(traceTable(t, pkt({ sourceIP: '10.0.200.1' }), NODE).verdict, 'ACCEPT');
  assert.equal(traceTable(t, pkt({ sourceIP: '10.9.0.5' }), NODE).verdict, 'ACCEPT');
  assert.equal(traceTable(t, pkt({ sourceIP: '10.1.0.1' }), NODE).verdict, 'DROP');
  assert.equal(traceTable(t, pkt({ protocol: 'UDP', destPort: 53 }), NODE).verdict, 'DROP');
  assert.equal(traceTable(t, pkt({ destIP: '10.96.0.2', destPort: 1500 }), NODE).verdict, 'REJECT');
  assert.equal(traceTable(t, pkt({ destIP: '10.96.0.2', protocol: 'UDP', destPort: 1500 }), NODE).verdict, 'ACCEPT');
  const local = traceTable(t, pkt({ destIP: '192.168.0.2' }), NODE);
  assert.deepEqual(local.path, ['pre: fib daddr type local accept']);
});

test('numgen with an offset branches over every value; a slot missing from the map falls through', () => {
  const t = table([
    nat(['dnat ip to ip daddr . th dport . numgen random mod 3 offset 7 map @eps', 'drop']),
  ], [{ name: 'eps', elements: ['10.96.0.1 . 80 . 7 : 10.1.0.1 . 8080', '10.96.0.1 . 80 . 8 : 10.1.0.2 . 8081'] }]);
  const r = traceTable(t, pkt(), NODE);
  assert.deepEqual(r.branches.map((b) => [b.conditions, b.verdict, b.endpoint]), [
    [['numgen random mod 3 offset 7 = 7'], 'ACCEPT', { ip: '10.1.0.1', port: 8080 }],
    [['numgen random mod 3 offset 7 = 8'], 'ACCEPT', { ip: '10.1.0.2', port: 8081 }],
    [['numgen random mod 3 offset 7 = 9'], 'DROP', undefined],
  ]);
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(r.endpoints.map((e) => e.port), [8080, 8081]);
});

test('NAT chains run once: the first DNAT ends the nat hook, later nat chains are skipped', () => {
  const t = table([
    { name: 'n1', hook: 'prerouting', type: 'nat', priority: -100, rules: ['dnat to 10.1.0.1:81'] },
    { name: 'n2', hook: 'prerouting', type: 'nat', priority: -90, rules: ['dnat to 10.1.0.2:82'] },
    { name: 'f', hook: 'prerouting', type: 'filter', priority: 0, rules: ['ip daddr 10.1.0.1 th dport 81 counter'] },
  ]);
  const r = traceTable(t, pkt(), NODE);
  assert.deepEqual(r.endpoints.map((e) => `${e.ip}:${e.port}`), ['10.1.0.1:81']);
  assert.deepEqual(r.path, ['n1: dnat to 10.1.0.1:81', 'f: ip daddr 10.1.0.1 th dport 81 counter']);
});

test('interface names: exact, prefix wildcard, negation; no input interface on host traffic', () => {
  const t = table([
    pre(['iifname "cbr0" meta mark set 0x1', 'iifname != "eth*" meta mark set meta mark | 0x2']),
    { name: 'post', hook: 'postrouting', type: 'nat', priority: 100, rules: ['meta mark 0x3 masquerade'] },
    { name: 'out', hook: 'output', type: 'filter', priority: 0, rules: ['iifname != "eth*" drop'] },
  ]);
  assert.equal(traceTable(t, pkt({ inInterface: 'cbr0' }), NODE).masquerade, true);
  assert.equal(traceTable(t, pkt({ inInterface: 'eth1' }), NODE).masquerade, false);
  assert.equal(traceTable(t, pkt({ inInterface: 'veth9' }), NODE).masquerade, false);
  // In output there is no input interface: neither `==` nor `!=` matches.
  assert.equal(traceTable(t, pkt({ from: 'host', sourceIP: '192.168.0.2' }), NODE).verdict, 'ACCEPT');
});

test('dynamic sets: unknown membership branches; an update earlier on the same branch is remembered', () => {
  const t = table([
    nat(['ip saddr @aff goto ep1', 'goto ep2']),
    { name: 'ep1', rules: ['dnat to 10.1.0.1:80'] },
    { name: 'ep2', rules: ['update @aff { ip saddr timeout 5m }', 'ip saddr @aff dnat to 10.1.0.2:80'] },
  ], [{ name: 'aff', elements: [], timeout: '1h' }]);
  const r = traceTable(t, pkt(), NODE);
  assert.deepEqual(r.branches.map((b) => [b.conditions, b.endpoint?.ip]), [
    [['10.0.0.5 already in @aff'], '10.1.0.1'],
    [['10.0.0.5 not in @aff'], '10.1.0.2'],
  ]);
  assert.deepEqual(r.branches[1]!.pins, [{ set: 'aff', key: '10.0.0.5', timeout: '5m' }]);
});

test('ct state, ct status and IPv6 DNAT', () => {
  const t = table([
    pre(['ct state invalid drop', 'ct state != new drop', 'ct status dnat drop']),
    nat(['ip6 daddr fd00::1 meta l4proto tcp dnat ip6 to [fd00:10::5]:8080']),
    { name: 'post', hook: 'postrouting', type: 'nat', priority: 100, rules: ['ct status dnat ip6 saddr fd00:10::/64 masquerade'] },
  ], [], 'ip6');
  const r = traceTable(t, pkt({ sourceIP: 'fd00:10::7', destIP: 'fd00::1' }), NODE);
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(r.endpoints, [{ ip: 'fd00:10::5', port: 8080, masquerade: true, pins: [] }]);
});

test('what the tracer cannot interpret is an error naming the chain and the rule', () => {
  const cases: Array<[TraceTable, RegExp]> = [
    [table([pre(['ip saddr 10.0.0.0/8 tproxy to :50080'])]), /chain pre: cannot interpret rule "ip saddr 10\.0\.0\.0\/8 tproxy to :50080": unknown statement 'tproxy'/],
    [table([pre(['meta oifname "eth0" drop'])]), /chain pre: .*unknown expression 'meta oifname'/],
    [table([pre(['jump nowhere'])]), /chain pre: rule "jump nowhere" jumps to missing chain nowhere/],
    [table([pre(['ip daddr @missing drop'])]), /no set or map named missing/],
    [table([pre(['ip daddr . th dport @s drop'])], [{ name: 's', elements: ['10.96.0.1'] }]), /has 1 parts, lookup key has 2/],
    [table([pre(['ip daddr vmap @m'])], [{ name: 'm', elements: ['10.96.0.1 : frobnicate x'] }]), /element "10\.96\.0\.1 : frobnicate x" of m: unexpected 'x'/],
    [table([pre(['ip daddr vmap @m'])], [{ name: 'm', elements: ['10.96.0.1 : 10.1.0.1'] }]), /map element 10\.96\.0\.1 has no verdict/],
    [table([pre(['th dport 80 iifname "x*" drop'])]), /give the packet an input interface/],
    [table([pre(['jump a']), { name: 'a', rules: ['jump a'] }]), /jump depth/],
    [table([pre(['ip saddr 10.0.0.300 drop'])]), /cannot read '10\.0\.0\.300'/],
    [table([{ name: 'x', hook: 'prerouting', type: 'filter', priority: 'bogus + 1', rules: [] }]), /unknown chain priority/],
  ];
  for (const [t, msg] of cases) {
    assert.throws(() => traceTable(t, pkt({ inInterface: undefined }), NODE), (e: unknown) => e instanceof TraceError && msg.test(e.message), String(msg));
  }
  assert.throws(() => traceTable(table([]), pkt({ destPort: 70000 }), NODE), TraceError);
  assert.throws(() => traceTable(table([]), pkt({ destIP: 'not-an-ip' }), NODE), TraceError);
});
