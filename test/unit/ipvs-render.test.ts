// What the IPVS mode would program for a snapshot: virtual servers as `ipvsadm -Sn` lists them,
// the ipsets and the iptables rules that use them.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { renderIpvs, type IpvsOptions } from '../../src/backend/ipvs/render.js';
import { toIpvsadmRestore } from '../../src/backend/ipvs/ipvsadm.js';
import type { IpvsRuleset } from '../../src/backend/ipvs/types.js';
import type { ServicePortState } from '../../src/model/types.js';
import { backendConfig, endpoint, localEndpoint, servicePort, snapshot, type PortSpec } from '../support/snapshots.js';

const opts = (over: Partial<IpvsOptions> = {}): IpvsOptions => ({ ...backendConfig(over), ...over });

function render(ports: ServicePortState[], o: Partial<IpvsOptions> = {}): IpvsRuleset {
  return renderIpvs(snapshot(ports, { family: o.family ?? 'IPv4' }), opts(o));
}

/** The ipvsadm lines of one virtual server (its `-A` line and its real servers). */
function ipvsadm(rs: IpvsRuleset, service: string): string[] {
  return toIpvsadmRestore(rs.virtualServers)
    .trim()
    .split('\n')
    .filter((l) => l.split(' ')[2] === service);
}

function set(rs: IpvsRuleset, name: string): string[] {
  const s = rs.ipsets.find((x) => x.name === name);
  assert.ok(s, `set ${name} exists`);
  return s.entries;
}

function chain(rs: IpvsRuleset, table: string, name: string): string[] {
  const c = rs.iptables.chains.find((x) => x.table === table && x.name === name);
  assert.ok(c, `chain ${table}/${name} exists`);
  return c.rules;
}

const web = (over: Partial<PortSpec> = {}): ServicePortState =>
  servicePort({
    namespace: 'ns1',
    serviceName: 'web',
    clusterIP: '10.96.0.10',
    port: 80,
    endpoints: [endpoint('10.244.2.7', 8080), localEndpoint('10.244.1.5', 8080)],
    ...over,
  });

describe('virtual servers', () => {
  test('a ClusterIP service is one rr virtual server with a masqueraded real server per endpoint', () => {
    const rs = render([web()]);
    assert.deepEqual(ipvsadm(rs, '10.96.0.10:80'), [
      '-A -t 10.96.0.10:80 -s rr',
      '-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1',
      '-a -t 10.96.0.10:80 -r 10.244.2.7:8080 -m -w 1',
    ]);
    assert.deepEqual(rs.dummyAddresses, ['10.96.0.10']);
    assert.deepEqual(set(rs, 'KUBE-CLUSTER-IP'), ['10.96.0.10,tcp:80']);
    assert.deepEqual(set(rs, 'KUBE-IPVS-IPS'), ['10.96.0.10']);
  });

  test('ClientIP affinity is persistence with the service timeout', () => {
    const rs = render([web({ sessionAffinity: { clientIPTimeoutSeconds: 10800 } })]);
    assert.equal(ipvsadm(rs, '10.96.0.10:80')[0], '-A -t 10.96.0.10:80 -s rr -p 10800');
    const short = render([web({ sessionAffinity: { clientIPTimeoutSeconds: 60 } })]);
    assert.equal(ipvsadm(short, '10.96.0.10:80')[0], '-A -t 10.96.0.10:80 -s rr -p 60');
  });

  test('the scheduler comes from the options; blank is rr, mh hashes the source port, unknown is an error', () => {
    assert.equal(ipvsadm(render([web()], { scheduler: 'wrr' }), '10.96.0.10:80')[0], '-A -t 10.96.0.10:80 -s wrr');
    assert.equal(ipvsadm(render([web()], { scheduler: '' }), '10.96.0.10:80')[0], '-A -t 10.96.0.10:80 -s rr');
    assert.equal(ipvsadm(render([web()], { scheduler: 'mh' }), '10.96.0.10:80')[0], '-A -t 10.96.0.10:80 -s mh -b mh-port');
    for (const s of ['lc', 'wlc', 'lblc', 'lblcr', 'sh', 'dh', 'sed', 'nq']) {
      assert.equal(render([web()], { scheduler: s }).virtualServers[0]!.scheduler, s);
    }
    assert.throws(() => render([web()], { scheduler: 'fastest' }), /unknown IPVS scheduler "fastest": must be one of rr, wrr/);
  });

  test('NodePort, external IPs and LB IPs each get virtual servers; eTP Local uses only local endpoints there', () => {
    const rs = render([
      web({ nodePort: 30080, externalIPs: ['203.0.113.9'], loadBalancerIPs: ['198.51.100.20'], externalPolicyLocal: true }),
    ]);
    const local = ['-a -t 192.168.50.11:30080 -r 10.244.1.5:8080 -m -w 1'];
    assert.deepEqual(ipvsadm(rs, '192.168.50.11:30080'), ['-A -t 192.168.50.11:30080 -s rr', ...local]);
    assert.deepEqual(ipvsadm(rs, '198.51.100.20:80').slice(1), ['-a -t 198.51.100.20:80 -r 10.244.1.5:8080 -m -w 1']);
    assert.deepEqual(ipvsadm(rs, '203.0.113.9:80').slice(1), ['-a -t 203.0.113.9:80 -r 10.244.1.5:8080 -m -w 1']);
    // The cluster IP is not subject to the external policy.
    assert.equal(ipvsadm(rs, '10.96.0.10:80').length, 3);
    assert.deepEqual(set(rs, 'KUBE-NODE-PORT-TCP'), ['30080']);
    assert.deepEqual(set(rs, 'KUBE-NODE-PORT-LOCAL-TCP'), ['30080']);
    assert.deepEqual(set(rs, 'KUBE-LOAD-BALANCER-LOCAL'), ['198.51.100.20,tcp:80']);
    assert.deepEqual(set(rs, 'KUBE-EXTERNAL-IP-LOCAL'), ['203.0.113.9,tcp:80']);
    assert.deepEqual(set(rs, 'KUBE-EXTERNAL-IP'), []);
    // Node addresses are not bound to kube-ipvs0; service addresses are.
    assert.deepEqual(rs.dummyAddresses, ['10.96.0.10', '198.51.100.20', '203.0.113.9']);
    // Local node ports keep the client source: RETURN comes before the masquerade mark.
    const np = chain(rs, 'nat', 'KUBE-NODE-PORT');
    assert.match(np[0]!, /^-p tcp .*--match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN$/);
    assert.match(np[1]!, /^-p tcp .*--match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ$/);
  });

  test('with Cluster policy external addresses use every endpoint and are masqueraded', () => {
    const rs = render([web({ nodePort: 30080, externalIPs: ['203.0.113.9'] })]);
    assert.equal(ipvsadm(rs, '192.168.50.11:30080').length, 3);
    assert.deepEqual(set(rs, 'KUBE-EXTERNAL-IP'), ['203.0.113.9,tcp:80']);
    assert.deepEqual(set(rs, 'KUBE-NODE-PORT-LOCAL-TCP'), []);
    assert.ok(chain(rs, 'nat', 'KUBE-SERVICES').some((r) => /--match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ$/.test(r)));
  });

  test('NodePorts listen on the node addresses nodePortAddresses selects, never on loopback', () => {
    const ports = [web({ nodePort: 30080 })];
    const nodeIPs = ['192.168.50.11', '10.0.0.11', '127.0.0.1'];
    const all = render(ports, { nodeIPs }).virtualServers.filter((v) => v.port === 30080).map((v) => v.address);
    assert.deepEqual(all, ['10.0.0.11', '192.168.50.11']);
    const some = render(ports, { nodeIPs, nodePortAddresses: ['10.0.0.0/8'] }).virtualServers.filter((v) => v.port === 30080);
    assert.deepEqual(some.map((v) => v.address), ['10.0.0.11']);
    const primary = render(ports, { nodeIPs, nodePortAddresses: ['primary'] }).virtualServers.filter((v) => v.port === 30080);
    assert.deepEqual(primary.map((v) => v.address), ['192.168.50.11']);
    // An external IP the node holds on another interface is served but not bound to kube-ipvs0.
    const held = render([web({ externalIPs: ['10.0.0.11'] })], { nodeIPs, nodePortAddresses: ['primary'] });
    assert.deepEqual(held.dummyAddresses, ['10.96.0.10']);
    assert.ok(held.virtualServers.some((v) => v.address === '10.0.0.11' && v.port === 80));
  });

  test('UDP and SCTP: SCTP node ports are matched per node address', () => {
    const dns = servicePort({ namespace: 'kube-system', serviceName: 'dns', protocol: 'UDP', clusterIP: '10.96.0.53', port: 53, nodePort: 30053, endpoints: [endpoint('10.244.2.3', 53)] });
    const sctp = servicePort({ namespace: 'ns1', serviceName: 'sig', protocol: 'SCTP', clusterIP: '10.96.0.77', port: 3868, nodePort: 30868, endpoints: [endpoint('10.244.2.4', 3868)] });
    const rs = render([dns, sctp]);
    assert.deepEqual(ipvsadm(rs, '10.96.0.53:53'), ['-A -u 10.96.0.53:53 -s rr', '-a -u 10.96.0.53:53 -r 10.244.2.3:53 -m -w 1']);
    assert.equal(ipvsadm(rs, '10.96.0.77:3868')[0], '-A --sctp-service 10.96.0.77:3868 -s rr');
    assert.deepEqual(set(rs, 'KUBE-NODE-PORT-UDP'), ['30053']);
    assert.deepEqual(set(rs, 'KUBE-NODE-PORT-SCTP-HASH'), ['192.168.50.11,sctp:30868']);
    assert.deepEqual(set(rs, 'KUBE-CLUSTER-IP'), ['10.96.0.53,udp:53', '10.96.0.77,sctp:3868']);
  });
});

describe('no endpoints', () => {
  const REJECT = 'REJECT --reject-with icmp-port-unreachable';

  test('a service without endpoints is rejected in filter; its virtual server has no real server', () => {
    const rs = render([web({ endpoints: [], nodePort: 30080 })]);
    assert.deepEqual(ipvsadm(rs, '10.96.0.10:80'), ['-A -t 10.96.0.10:80 -s rr']);
    assert.deepEqual(chain(rs, 'filter', 'KUBE-SERVICES'), [
      `-d 10.96.0.10/32 -p tcp -m comment --comment "ns1/web has no endpoints" -m tcp --dport 80 -j ${REJECT}`,
      `-p tcp -m comment --comment "ns1/web has no endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j ${REJECT}`,
    ]);
    assert.ok(rs.jumps.some((j) => j.table === 'filter' && j.chain === 'INPUT' && j.rule.endsWith('-j KUBE-SERVICES')));
  });

  test('eTP Local with endpoints only on other nodes drops external traffic; the cluster IP still works', () => {
    const rs = render([web({ endpoints: [endpoint('10.244.2.7', 8080)], nodePort: 30080, externalPolicyLocal: true })]);
    assert.deepEqual(ipvsadm(rs, '192.168.50.11:30080'), ['-A -t 192.168.50.11:30080 -s rr']);
    assert.equal(ipvsadm(rs, '10.96.0.10:80').length, 2);
    assert.deepEqual(chain(rs, 'filter', 'KUBE-SERVICES'), [
      '-p tcp -m comment --comment "ns1/web has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j DROP',
    ]);
  });

  test('services with endpoints add no reject rules', () => {
    assert.deepEqual(chain(render([web()]), 'filter', 'KUBE-SERVICES'), []);
  });
});

describe('iptables rules', () => {
  test('off-pod-network clients of a cluster IP are masqueraded; local endpoints hairpin through KUBE-LOOP-BACK', () => {
    const rs = render([web()]);
    const svc = chain(rs, 'nat', 'KUBE-SERVICES');
    assert.equal(svc[0], '-s 127.0.0.0/8 -j RETURN');
    assert.ok(svc.includes('! -s 10.244.0.0/16 -m comment --comment "service cluster IP and port" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ'));
    assert.deepEqual(svc.slice(-2), ['-m addrtype --dst-type LOCAL -j KUBE-NODE-PORT', '-m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT']);
    assert.deepEqual(set(rs, 'KUBE-LOOP-BACK'), ['10.244.1.5,tcp:8080,10.244.1.5']);
    const post = chain(rs, 'nat', 'KUBE-POSTROUTING');
    assert.match(post[0]!, /--match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE$/);
    assert.deepEqual(post.slice(1), [
      '-m mark ! --mark 0x4000/0x4000 -j RETURN',
      '-j MARK --set-xmark 0x4000/0x0',
      '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]);
    assert.deepEqual(chain(rs, 'nat', 'KUBE-MARK-MASQ'), ['-j MARK --set-xmark 0x4000/0x4000']);
  });

  test('masqueradeAll marks every cluster IP connection; without local detection only VIP-sourced ones', () => {
    const all = chain(render([web()], { masqueradeAll: true }), 'nat', 'KUBE-SERVICES');
    assert.ok(all.some((r) => r.startsWith('-m comment') && r.endsWith('KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ')));
    const none = chain(render([web()], { localCIDRs: [] }), 'nat', 'KUBE-SERVICES');
    assert.ok(none.some((r) => r.endsWith('KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ')));
  });

  test('rules that match an empty set are left out', () => {
    const svc = chain(render([]), 'nat', 'KUBE-SERVICES');
    assert.deepEqual(svc, ['-s 127.0.0.0/8 -j RETURN', '-m addrtype --dst-type LOCAL -j KUBE-NODE-PORT']);
    assert.deepEqual(chain(render([]), 'nat', 'KUBE-NODE-PORT'), []);
  });

  test('loadBalancerSourceRanges: allowed CIDRs, the node when in range, and nothing else', () => {
    const ranges = ['192.168.50.0/24', '203.0.113.7/32'];
    const rs = render([web({ loadBalancerIPs: ['198.51.100.20'], loadBalancerSourceRanges: ranges })]);
    assert.deepEqual(set(rs, 'KUBE-LOAD-BALANCER-FW'), ['198.51.100.20,tcp:80']);
    assert.deepEqual(set(rs, 'KUBE-LOAD-BALANCER-SOURCE-CIDR'), ['198.51.100.20,tcp:80,192.168.50.0/24', '198.51.100.20,tcp:80,203.0.113.7']);
    assert.deepEqual(set(rs, 'KUBE-LOAD-BALANCER-SOURCE-IP'), ['198.51.100.20,tcp:80,198.51.100.20']);
    assert.deepEqual(chain(rs, 'filter', 'KUBE-IPVS-OUT-FILTER'), []);
    const fw = chain(rs, 'filter', 'KUBE-SOURCE-RANGES-FIREWALL');
    assert.equal(fw.length, 3);
    assert.equal(fw[2], '-j DROP');
    assert.match(chain(rs, 'filter', 'KUBE-PROXY-FIREWALL')[0]!, /KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL$/);

    const away = render([web({ loadBalancerIPs: ['198.51.100.20'], loadBalancerSourceRanges: ['203.0.113.0/24'] })]);
    assert.deepEqual(set(away, 'KUBE-LOAD-BALANCER-SOURCE-IP'), []);
    assert.deepEqual(chain(away, 'filter', 'KUBE-IPVS-OUT-FILTER'), ['-s 198.51.100.20/32 -m ipvs --vproto 6 --vaddr 198.51.100.20 --vport 80 -j DROP']);
  });

  test('source ranges that are all unusable fail closed', () => {
    const rs = render([web({ loadBalancerIPs: ['198.51.100.20'], loadBalancerSourceRanges: ['fd00::/8'], sourceRangesDenyAll: true })]);
    assert.deepEqual(set(rs, 'KUBE-LOAD-BALANCER-FW'), ['198.51.100.20,tcp:80']);
    assert.deepEqual(set(rs, 'KUBE-LOAD-BALANCER-SOURCE-CIDR'), []);
  });

  test('addresses on kube-ipvs0 on ports no service has are rejected for new connections', () => {
    const f = chain(render([web()]), 'filter', 'KUBE-IPVS-FILTER');
    assert.equal(f.at(-1), '-m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable');
    assert.ok(f.includes('-m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN'));
  });

  test('health-check node ports are accepted', () => {
    const rs = render([web({ loadBalancerIPs: ['198.51.100.20'], externalPolicyLocal: true, healthCheckNodePort: 32000 })]);
    assert.deepEqual(set(rs, 'KUBE-HEALTH-CHECK-NODE-PORT'), ['32000']);
    assert.match(chain(rs, 'filter', 'KUBE-NODE-PORT')[0]!, /KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT$/);
  });
});

describe('robustness', () => {
  test('a service port with invalid data renders nothing; the others still render', () => {
    const bad = servicePort({ namespace: 'ns1', serviceName: 'bad', clusterIP: '10.96.0.300', port: 80, endpoints: [endpoint('10.244.2.7', 8080)] });
    const badEp = web({ serviceName: 'eps', clusterIP: '10.96.0.11', endpoints: [endpoint('not-an-ip', 80), endpoint('10.244.2.8', 0), endpoint('10.244.2.9', 80)] });
    const rs = render([bad, web(), badEp]);
    assert.deepEqual(rs.virtualServers.map((v) => v.address), ['10.96.0.10', '10.96.0.11']);
    assert.deepEqual(rs.virtualServers[1]!.realServers, [{ address: '10.244.2.9', port: 80, weight: 1 }]);
  });

  test('a name too long for a rule comment skips the service port', () => {
    const long = web({ serviceName: 'x'.repeat(240), clusterIP: '10.96.0.12' });
    assert.deepEqual(render([long, web()]).virtualServers.map((v) => v.address), ['10.96.0.10']);
  });

  test('two service ports on one address and port give one virtual server', () => {
    const rs = render([web(), web({ serviceName: 'web2' })]);
    assert.equal(rs.virtualServers.length, 1);
  });

  test('the render is deterministic whatever the snapshot order', () => {
    const a = [web({ nodePort: 30080 }), web({ serviceName: 'b', clusterIP: '10.96.0.20' })];
    assert.deepEqual(render(a), render([...a].reverse()));
  });

  test('excludeCIDRs keeps this family only, canonical', () => {
    assert.deepEqual(render([], { excludeCIDRs: ['10.200.0.1/16', 'fd00::/64'] }).excludeCIDRs, ['10.200.0.0/16']);
  });
});

describe('IPv6', () => {
  test('sets are KUBE-6-…, addresses bracketed for ipvsadm', () => {
    const p = servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: 'fd00:10:96::a', port: 80, endpoints: [localEndpoint('fd00:10:244:1::5', 8080)] });
    const rs = render([p], { family: 'IPv6' });
    assert.deepEqual(ipvsadm(rs, '[fd00:10:96::a]:80'), ['-A -t [fd00:10:96::a]:80 -s rr', '-a -t [fd00:10:96::a]:80 -r [fd00:10:244:1::5]:8080 -m -w 1']);
    assert.deepEqual(set(rs, 'KUBE-6-CLUSTER-IP'), ['fd00:10:96::a,tcp:80']);
    assert.equal(chain(rs, 'nat', 'KUBE-SERVICES')[0], '-s ::1/128 -j RETURN');
    assert.ok(rs.ipsets.every((s) => s.name.startsWith('KUBE-6-') && s.name.length <= 31 && s.family === 'IPv6'));
  });
});
