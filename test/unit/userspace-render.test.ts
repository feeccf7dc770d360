// The userspace mode's plan (listeners and portals) and its redirect rules, in the legacy
// proxy's chains, exactly as iptables-save prints them.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { planUserspace } from '../../src/backend/userspace/plan.js';
import { redirectJumps, renderRedirects } from '../../src/backend/userspace/render.js';
import { endpoint, localEndpoint, servicePort, snapshot } from '../support/snapshots.js';

const web = (over: Partial<Parameters<typeof servicePort>[0]> = {}) =>
  servicePort({
    namespace: 'ns1',
    serviceName: 'web',
    portName: 'http',
    clusterIP: '10.96.0.10',
    port: 80,
    endpoints: [endpoint('10.244.1.5', 8080), localEndpoint('10.244.0.5', 8080)],
    ...over,
  });

function chainsOf(ports: Parameters<typeof snapshot>[0], listenerPorts: Record<string, number>, nodePortIPs: string[] | null = null) {
  const plan = planUserspace(snapshot(ports));
  return { plan, chains: new Map(renderRedirects(plan, new Map(Object.entries(listenerPorts)), nodePortIPs).map((c) => [c.name, c.rules])) };
}

describe('userspace plan', () => {
  test('one listener per service port, balancing over the cluster endpoints, with affinity', () => {
    const plan = planUserspace(snapshot([web({ sessionAffinity: { clientIPTimeoutSeconds: 10800 } })]));
    const listeners = plan.listeners.map((l) => ({ ...l, endpoints: l.endpoints.map(({ ip, port }) => ({ ip, port })) }));
    assert.deepEqual(listeners, [
      {
        key: 'ns1/web:http/TCP',
        service: 'ns1/web:http/TCP',
        protocol: 'TCP',
        endpoints: [
          { ip: '10.244.0.5', port: 8080 },
          { ip: '10.244.1.5', port: 8080 },
        ],
        affinityTimeoutSeconds: 10800,
      },
    ]);
  });

  test('externalTrafficPolicy Local: external portals get a second listener with only local endpoints', () => {
    const { plan } = chainsOf([web({ nodePort: 30080, externalIPs: ['192.0.2.7'], externalPolicyLocal: true })], {});
    const byKey = new Map(plan.listeners.map((l) => [l.key, l.endpoints.map((e) => e.ip)]));
    assert.deepEqual(byKey.get('ns1/web:http/TCP'), ['10.244.0.5', '10.244.1.5']);
    assert.deepEqual(byKey.get('ns1/web:http/TCP/local'), ['10.244.0.5']);
    const listenerOf = new Map(plan.portals.map((p) => [`${p.kind}:${(p.ips ?? ['*']).join()}`, p.listener]));
    assert.equal(listenerOf.get('service:10.96.0.10'), 'ns1/web:http/TCP');
    assert.equal(listenerOf.get('service:192.0.2.7'), 'ns1/web:http/TCP/local');
    assert.equal(listenerOf.get('nodePort:*'), 'ns1/web:http/TCP/local');
  });

  test('internalTrafficPolicy Local: the cluster IP goes to the local listener', () => {
    const { plan } = chainsOf([web({ internalPolicyLocal: true })], {});
    assert.deepEqual(plan.listeners.map((l) => l.key), ['ns1/web:http/TCP/local']);
  });

  test('a service port with invalid data gets neither a listener nor a portal', () => {
    const { plan } = chainsOf([web({ clusterIP: 'not-an-ip' })], {});
    assert.deepEqual(plan, { family: 'IPv4', listeners: [], portals: [] });
  });
});

describe('userspace redirect rules', () => {
  test('cluster IP, external IP and NodePort redirect to the listener port, from pods and from the node', () => {
    const { chains } = chainsOf([web({ nodePort: 30080, externalIPs: ['192.0.2.7'] })], { 'ns1/web:http/TCP': 36001 });
    const portal = (ip: string): string =>
      `-d ${ip}/32 -p tcp -m comment --comment "ns1/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 36001`;
    assert.deepEqual(chains.get('KUBE-PORTALS-CONTAINER'), [portal('10.96.0.10'), portal('192.0.2.7')]);
    assert.deepEqual(chains.get('KUBE-PORTALS-HOST'), chains.get('KUBE-PORTALS-CONTAINER'));
    const nodePort = '-p tcp -m comment --comment "ns1/web:http node port" -m tcp --dport 30080 -j REDIRECT --to-ports 36001';
    assert.deepEqual(chains.get('KUBE-NODEPORT-CONTAINER'), [nodePort]);
    assert.deepEqual(chains.get('KUBE-NODEPORT-HOST'), [nodePort]);
  });

  test('nodePortAddresses restrict the NodePort rules to those addresses', () => {
    const { chains } = chainsOf([web({ nodePort: 30080 })], { 'ns1/web:http/TCP': 36001 }, ['192.168.1.10']);
    assert.deepEqual(chains.get('KUBE-NODEPORT-CONTAINER'), [
      '-d 192.168.1.10/32 -p tcp -m comment --comment "ns1/web:http node port" -m tcp --dport 30080 -j REDIRECT --to-ports 36001',
    ]);
  });

  test('load-balancer source ranges: only listed clients are redirected; none usable, nobody', () => {
    const lb = { loadBalancerIPs: ['203.0.113.9'], loadBalancerSourceRanges: ['198.51.100.0/24'] };
    const { chains } = chainsOf([web(lb)], { 'ns1/web:http/TCP': 36001 });
    assert.ok(chains.get('KUBE-PORTALS-CONTAINER')!.includes(
      '-s 198.51.100.0/24 -d 203.0.113.9/32 -p tcp -m comment --comment "ns1/web:http" -m tcp --dport 80 -j REDIRECT --to-ports 36001',
    ));
    const denied = chainsOf([web({ ...lb, loadBalancerSourceRanges: ['fd00::/64'] })], { 'ns1/web:http/TCP': 36001 }).chains;
    assert.ok(!denied.get('KUBE-PORTALS-CONTAINER')!.some((r) => r.includes('203.0.113.9')));
  });

  test('externalTrafficPolicy Local: the node and its pods use the cluster listener, outside clients the local one', () => {
    const plan = planUserspace(snapshot([web({ nodePort: 30080, externalPolicyLocal: true })]));
    const ports = new Map([['ns1/web:http/TCP', 36001], ['ns1/web:http/TCP/local', 36002]]);
    const localPods = { ifLocal: { src: '-s 10.244.0.0/16' }, ifNotLocal: { src: '! -s 10.244.0.0/16' } };
    const chains = new Map(renderRedirects(plan, ports, null, localPods).map((c) => [c.name, c.rules]));
    const np = (src: string, to: number): string =>
      `${src}-p tcp -m comment --comment "ns1/web:http node port" -m tcp --dport 30080 -j REDIRECT --to-ports ${to}`;
    assert.deepEqual(chains.get('KUBE-NODEPORT-HOST'), [np('', 36001)]);
    // Disjoint rules: a partial sync may put them in any order.
    assert.deepEqual(chains.get('KUBE-NODEPORT-CONTAINER'), [np('-s 10.244.0.0/16 ', 36001), np('! -s 10.244.0.0/16 ', 36002)]);
  });

  test('a listener the proxy could not open (SCTP) gets no rules', () => {
    const { chains } = chainsOf([web({ protocol: 'SCTP', nodePort: 30080 })], {});
    for (const rules of chains.values()) assert.deepEqual(rules, []);
  });

  test('the hooks put the portals before the NodePorts in PREROUTING and OUTPUT', () => {
    const jumps = redirectJumps(null);
    for (const chain of ['PREROUTING', 'OUTPUT']) {
      const ours = jumps.filter((j) => j.chain === chain).map((j) => j.rule);
      // ensureJumps prepends missing jumps one after the other: the last listed ends up first.
      assert.match(ours[1]!, /-j KUBE-PORTALS-(CONTAINER|HOST)$/);
      assert.match(ours[0]!, /^-m addrtype --dst-type LOCAL .* -j KUBE-NODEPORT-(CONTAINER|HOST)$/);
    }
  });
});
