// ipvsadm and ipset text: what the apply layer feeds the tools, and reading the kernel's listing back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderIpvs } from '../../src/backend/ipvs/render.js';
import { IpvsadmParseError, parseIpvsadmSave, toIpvsadmRestore } from '../../src/backend/ipvs/ipvsadm.js';
import { IPSET_SPECS, ipsetName, toIpsetRestore, toIpsetUpdate } from '../../src/backend/ipvs/ipsets.js';
import { backendConfig, endpoint, servicePort, snapshot } from '../support/snapshots.js';

test('ipset names and types are upstream’s', () => {
  const types = Object.fromEntries(IPSET_SPECS.map((s) => [s.name, s.type]));
  assert.deepEqual(types, {
    'KUBE-LOOP-BACK': 'hash:ip,port,ip',
    'KUBE-CLUSTER-IP': 'hash:ip,port',
    'KUBE-EXTERNAL-IP': 'hash:ip,port',
    'KUBE-EXTERNAL-IP-LOCAL': 'hash:ip,port',
    'KUBE-LOAD-BALANCER': 'hash:ip,port',
    'KUBE-LOAD-BALANCER-FW': 'hash:ip,port',
    'KUBE-LOAD-BALANCER-LOCAL': 'hash:ip,port',
    'KUBE-LOAD-BALANCER-SOURCE-IP': 'hash:ip,port,ip',
    'KUBE-LOAD-BALANCER-SOURCE-CIDR': 'hash:ip,port,net',
    'KUBE-NODE-PORT-TCP': 'bitmap:port',
    'KUBE-NODE-PORT-LOCAL-TCP': 'bitmap:port',
    'KUBE-NODE-PORT-UDP': 'bitmap:port',
    'KUBE-NODE-PORT-LOCAL-UDP': 'bitmap:port',
    'KUBE-NODE-PORT-SCTP-HASH': 'hash:ip,port',
    'KUBE-NODE-PORT-LOCAL-SCTP-HASH': 'hash:ip,port',
    'KUBE-HEALTH-CHECK-NODE-PORT': 'bitmap:port',
    'KUBE-IPVS-IPS': 'hash:ip',
  });
  assert.equal(ipsetName('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'IPv6'), 'KUBE-6-LOAD-BALANCER-SOURCE-CID');
  assert.equal(ipsetName('KUBE-CLUSTER-IP', 'IPv4'), 'KUBE-CLUSTER-IP');
});

test('ipset restore input creates each set if missing, then sets its exact content', () => {
  const p = servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: '10.96.0.10', port: 80, nodePort: 30080, endpoints: [endpoint('10.244.2.7', 8080)] });
  const text = toIpsetRestore(renderIpvs(snapshot([p]), backendConfig()).ipsets);
  const lines = text.trim().split('\n');
  assert.ok(lines.includes('create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist'));
  assert.ok(lines.includes('create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist'));
  const at = lines.indexOf('flush KUBE-CLUSTER-IP');
  assert.ok(at > 0);
  assert.equal(lines[at + 1], 'add KUBE-CLUSTER-IP 10.96.0.10,tcp:80');
  assert.ok(lines.includes('add KUBE-NODE-PORT-TCP 30080'));
  assert.equal(lines.filter((l) => l.startsWith('create ')).length, IPSET_SPECS.length);
});

test('ipvsadm restore text parses back into the same virtual servers', () => {
  const ports = [
    servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: '10.96.0.10', port: 80, nodePort: 30080, sessionAffinity: { clientIPTimeoutSeconds: 10800 }, endpoints: [endpoint('10.244.2.7', 8080), endpoint('10.244.1.5', 8080)] }),
    servicePort({ namespace: 'ns1', serviceName: 'dns', protocol: 'UDP', clusterIP: '10.96.0.53', port: 53, endpoints: [endpoint('10.244.2.3', 53)] }),
    servicePort({ namespace: 'ns1', serviceName: 'sig', protocol: 'SCTP', clusterIP: '10.96.0.77', port: 3868, endpoints: [] }),
  ];
  for (const scheduler of ['rr', 'mh']) {
    const vs = renderIpvs(snapshot(ports), { ...backendConfig(), scheduler }).virtualServers;
    const parsed = parseIpvsadmSave(toIpvsadmRestore(vs));
    assert.deepEqual(parsed, vs.map((v) => ({ ...v, realServers: v.realServers.map((r) => ({ ...r, forwarding: 'masq' })) })));
  }
  const p6 = servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: 'fd00:10:96::a', port: 80, endpoints: [endpoint('fd00:10:244:2::7', 8080)] });
  const vs6 = renderIpvs(snapshot([p6], { family: 'IPv6' }), backendConfig({ family: 'IPv6' })).virtualServers;
  assert.equal(parseIpvsadmSave(toIpvsadmRestore(vs6))[0]!.realServers[0]!.address, 'fd00:10:244:2::7');
});

test('ipvsadm -Sn output as the kernel prints it, others’ services included', () => {
  const saved = [
    '-A -t 10.96.0.10:80 -s rr -p 10800',
    '-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 0',
    '-A -u 172.16.0.1:53 -s wlc',
    '-a -u 172.16.0.1:53 -r 172.16.0.2:53 -g -w 3',
    '-A -f 7 -s rr',
    '',
  ].join('\n');
  assert.deepEqual(parseIpvsadmSave(saved), [
    { protocol: 'TCP', address: '10.96.0.10', port: 80, scheduler: 'rr', persistenceTimeoutSeconds: 10800, realServers: [{ address: '10.244.1.5', port: 8080, weight: 0, forwarding: 'masq' }] },
    { protocol: 'UDP', address: '172.16.0.1', port: 53, scheduler: 'wlc', realServers: [{ address: '172.16.0.2', port: 53, weight: 3, forwarding: 'route' }] },
  ]);
  assert.throws(() => parseIpvsadmSave('-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1\n'), IpvsadmParseError);
  assert.throws(() => parseIpvsadmSave('-A -t 10.0.0.1 -s rr\n'), IpvsadmParseError);
  assert.throws(() => parseIpvsadmSave('garbage\n'), IpvsadmParseError);
});

test('a set the kernel holds is updated by its differences only: deletions, then additions', () => {
  const set = (entries: string[]) => ({ name: 'KUBE-LOOP-BACK', type: 'hash:ip,port,ip' as const, family: 'IPv4' as const, comment: '', entries });
  const before = set(['10.244.1.5,tcp:8080,10.244.1.5', '10.244.1.6,tcp:8080,10.244.1.6']);
  const after = set(['10.244.1.6,tcp:8080,10.244.1.6', '10.244.1.7,tcp:8080,10.244.1.7']);
  assert.equal(toIpsetUpdate(before, after), 'del KUBE-LOOP-BACK 10.244.1.5,tcp:8080,10.244.1.5\nadd KUBE-LOOP-BACK 10.244.1.7,tcp:8080,10.244.1.7\n');
  assert.equal(toIpsetUpdate(after, after), '');
  assert.equal(toIpsetUpdate(set([]), set(['10.244.1.9,tcp:80,10.244.1.9'])), 'add KUBE-LOOP-BACK 10.244.1.9,tcp:80,10.244.1.9\n');
});
