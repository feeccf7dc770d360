// The end-to-end scenarios every proxy mode must pass: the proxy runs in node1's network namespace
// against the fake API server, and real packets from pods and external clients show what a user
// would see. Each mode's test file registers them with modeSuite.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { E2ECluster, type ClusterOptions } from '../support/e2e-cluster.js';
import { COMMAND } from '../support/command.js';
import { requestMany, tcpRequest, udpRequest } from '../support/netclient.js';
import type { PodSpec } from '../support/topology.js';

export const PODS: PodSpec[] = [
  { name: 'a-1', node: 1, ip: '10.244.1.10', ip6: 'fd00:244:1::10' },
  { name: 'a-2', node: 1, ip: '10.244.1.11', ip6: 'fd00:244:1::11' },
  { name: 'b-1', node: 2, ip: '10.244.2.10', ip6: 'fd00:244:2::10' },
  { name: 'b-2', node: 2, ip: '10.244.2.11', ip6: 'fd00:244:2::11' },
  // A client pod on the proxy's node that is never an endpoint.
  { name: 'c-1', node: 1, ip: '10.244.1.20', ip6: 'fd00:244:1::20' },
];
export const ALL = ['a-1', 'a-2', 'b-1', 'b-2'];
export const NODE1_BRIDGE = '10.244.1.1';
export const NODE1_IP = '10.0.0.1';
export const EXT_IP = '10.0.0.100';
/** Long enough for an answer through the proxy, short enough to keep "dropped" checks quick. */
export const DROP_MS = 1500;

export const sorted = (o: Record<string, number>): string[] => Object.keys(o).sort();

/** Where a mode's data plane differs from the kernel modes', as a user would see it. */
export interface ModeTraits {
  /** Endpoints see the client's own address (a proxy process opens its own connections). */
  clientIP: boolean;
  /** A ClusterIP port the Service lacks is refused (kernel modes reject it). */
  refusesUnknownPorts: boolean;
  /** Outside traffic to a Local-policy port without local endpoints: dropped, or refused by a proxy. */
  noLocalEndpoints: 'timeout' | 'refused';
  /** Stopping the proxy removes its rules (its data plane is the process). */
  stopRemovesRules: boolean;
  /**
   * A client outside loadBalancerSourceRanges: dropped by kernel modes; a proxy process only
   * leaves its traffic unredirected, to whatever the node's routes do with it (unreachable here).
   */
  outsideSourceRanges: 'timeout' | 'unreachable';
  /**
   * A NodePort with externalTrafficPolicy Local reached from a pod or the node itself: any
   * endpoint, or (IPVS, as upstream: one virtual server per node address) the local ones only,
   * dropped when there is none. Absent: any.
   */
  localPolicyFromInside?: 'any' | 'local';
  /** The kernel's nf_tables has no ip/ip6 family (the User-Mode Linux guest): no nftables table can exist. */
  noNftTables?: boolean;
}

export const KERNEL_MODE: ModeTraits = {
  clientIP: true,
  refusesUnknownPorts: true,
  noLocalEndpoints: 'timeout',
  stopRemovesRules: false,
  outsideSourceRanges: 'timeout',
};

const NODE1_ADDRESSES = [NODE1_BRIDGE, NODE1_IP, 'fd00:244:1::1', 'fd00:10::1'];

/** The sources endpoints saw: the client itself, or (through a proxy process) node1's addresses. */
function assertSources(sources: Record<string, number>, client: string, count: number, traits: ModeTraits, what = ''): void {
  if (traits.clientIP) {
    assert.deepEqual(sources, { [client]: count }, what);
    return;
  }
  for (const src of Object.keys(sources)) assert.ok(NODE1_ADDRESSES.includes(src), `${what} seen from ${src}`);
}

/** Service behaviour, in one cluster: each scenario adds Services of its own. */
export function serviceScenarios(c: () => E2ECluster, traits: ModeTraits = KERNEL_MODE): void {
  it('a ClusterIP serves TCP and UDP from every endpoint, and endpoints see the client pod IP', async () => {
    await c().addService({
      name: 'web',
      clusterIPs: ['10.96.0.10'],
      ports: [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 },
      ],
    });
    await c().setEndpoints('web', ALL);
    const tcp = await requestMany(c().topo, 'c-1', '10.96.0.10', 80, 60);
    assert.deepEqual(tcp.errors, {});
    assert.deepEqual(sorted(tcp.pods), ALL);
    assertSources(tcp.sources, '10.244.1.20', 60, traits, 'pod-to-service traffic is not masqueraded');
    const udp = await requestMany(c().topo, 'c-1', '10.96.0.10', 53, 60, { proto: 'udp' });
    assert.deepEqual(udp.errors, {});
    assert.deepEqual(sorted(udp.pods), ALL);
    assertSources(udp.sources, '10.244.1.20', 60, traits);
    // A port the Service does not have is refused rather than left to time out.
    if (traits.refusesUnknownPorts) {
      assert.deepEqual(await tcpRequest(c().topo, 'c-1', '10.96.0.10', 8080, { timeoutMs: 1000 }), { ok: false, error: 'refused' });
    }
  });

  it('a pod reaching itself through its Service is answered by itself from a masqueraded source (hairpin)', async () => {
    await c().addService({
      name: 'self',
      clusterIPs: ['10.96.0.11'],
      ports: [
        { name: 'http', port: 80 },
        { name: 'dns', protocol: 'UDP', port: 53 },
      ],
    });
    await c().setEndpoints('self', ['a-1']);
    // Masquerading picks the address of the bridge the packet leaves by: the node's pod gateway.
    assert.deepEqual(await tcpRequest(c().topo, 'a-1', '10.96.0.11', 80), { ok: true, pod: 'a-1', seenSource: NODE1_BRIDGE });
    assert.deepEqual(await udpRequest(c().topo, 'a-1', '10.96.0.11', 53), { ok: true, pod: 'a-1', seenSource: NODE1_BRIDGE });
  });

  it('NodePort, external IP and load-balancer IP serve an external client through every endpoint, masqueraded', async () => {
    await c().addService({
      name: 'lb',
      type: 'LoadBalancer',
      clusterIPs: ['10.96.0.20'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
      externalIPs: ['192.0.2.10'],
      loadBalancerIPs: ['192.0.2.20'],
    });
    await c().setEndpoints('lb', ['a-1', 'b-1']);
    for (const [ip, port] of [
      [NODE1_IP, 30080],
      ['192.0.2.10', 80],
      ['192.0.2.20', 80],
    ] as const) {
      const r = await requestMany(c().topo, 'ext', ip, port, 30);
      assert.deepEqual(r.errors, {}, `${ip}:${port}`);
      assert.deepEqual(sorted(r.pods), ['a-1', 'b-1'], `${ip}:${port}`);
      // externalTrafficPolicy Cluster: the source is node1's address toward the endpoint.
      for (const src of Object.keys(r.sources)) assert.ok([NODE1_BRIDGE, NODE1_IP].includes(src), `${ip}:${port} seen from ${src}`);
    }
    // The NodePort also answers pods and the node itself.
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', NODE1_IP, 30080, 30)).pods), ['a-1', 'b-1']);
    assert.deepEqual(sorted((await requestMany(c().topo, 'node1', NODE1_IP, 30080, 30)).pods), ['a-1', 'b-1']);
  });

  it('loadBalancerSourceRanges: a client inside the range is served, one outside is dropped', async () => {
    await c().addService({
      name: 'fw',
      type: 'LoadBalancer',
      clusterIPs: ['10.96.0.21'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30081 }],
      loadBalancerIPs: ['192.0.2.21'],
      loadBalancerSourceRanges: [`${EXT_IP}/32`],
    });
    await c().setEndpoints('fw', ['a-1']);
    assert.deepEqual(await tcpRequest(c().topo, 'ext', '192.0.2.21', 80), { ok: true, pod: 'a-1', seenSource: NODE1_BRIDGE });
    const outside = await tcpRequest(c().topo, 'ext2', '192.0.2.21', 80, { timeoutMs: DROP_MS });
    assert.deepEqual({ ok: outside.ok, error: outside.ok ? undefined : outside.error }, { ok: false, error: traits.outsideSourceRanges });
    // Source ranges guard the load-balancer IP only, not the Service's NodePort.
    assert.deepEqual(await tcpRequest(c().topo, 'ext2', NODE1_IP, 30081), { ok: true, pod: 'a-1', seenSource: NODE1_BRIDGE });
  });

  it('a Service without endpoints refuses TCP and UDP at once', async () => {
    await c().addService({
      name: 'empty',
      clusterIPs: ['10.96.0.30'],
      ports: [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 },
      ],
    });
    assert.deepEqual(await tcpRequest(c().topo, 'c-1', '10.96.0.30', 80, { timeoutMs: 1000 }), { ok: false, error: 'refused' });
    assert.deepEqual(await udpRequest(c().topo, 'c-1', '10.96.0.30', 53, { timeoutMs: 1000 }), { ok: false, error: 'refused' });
  });

  it('a removed endpoint gets no new connections after the next sync; an added one is reached', async () => {
    await c().addService({ name: 'churn', clusterIPs: ['10.96.0.31'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('churn', ['a-1', 'b-1']);
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.31', 80, 30)).pods), ['a-1', 'b-1']);

    await c().setEndpoints('churn', ['a-1']);
    const one = await requestMany(c().topo, 'c-1', '10.96.0.31', 80, 30);
    assert.deepEqual(one.pods, { 'a-1': 30 });
    assert.deepEqual(one.errors, {});

    await c().setEndpoints('churn', ['a-1', 'b-2']);
    const two = await requestMany(c().topo, 'c-1', '10.96.0.31', 80, 30);
    assert.deepEqual(sorted(two.pods), ['a-1', 'b-2']);
    assert.deepEqual(two.errors, {});
  });

  it('a UDP flow to a removed endpoint moves to a remaining one (its conntrack entries are cleared)', async () => {
    await c().addService({ name: 'udp-churn', clusterIPs: ['10.96.0.32'], ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 }] });
    await c().setEndpoints('udp-churn', ['a-2']);
    // A fixed source port keeps every datagram in one conntrack flow, as a DNS resolver's would.
    const flow = { proto: 'udp' as const, sourcePort: 40053 };
    assert.deepEqual((await requestMany(c().topo, 'c-1', '10.96.0.32', 53, 3, flow)).pods, { 'a-2': 3 });
    await c().setEndpoints('udp-churn', ['b-1']);
    // a-2 still runs, so a leftover flow would keep being answered by it.
    const after = await requestMany(c().topo, 'c-1', '10.96.0.32', 53, 3, flow);
    assert.deepEqual(after.pods, { 'b-1': 3 }, JSON.stringify(after.results));
  });

  it('a deleted Service stops answering', async () => {
    assert.equal((await tcpRequest(c().topo, 'c-1', '10.96.0.31', 80)).ok, true);
    await c().removeService('churn');
    const r = await tcpRequest(c().topo, 'c-1', '10.96.0.31', 80, { timeoutMs: DROP_MS });
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.ok(!(await c().ruleText('IPv4'))!.includes('10.96.0.31'), 'the ClusterIP left the rules');
  });

  it('ClientIP session affinity sends every connection of a client to one pod', async () => {
    await c().addService({
      name: 'sticky',
      clusterIPs: ['10.96.0.40'],
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      sessionAffinity: 'ClientIP',
    });
    await c().setEndpoints('sticky', ALL);
    // One at a time: the first connection records the client's endpoint for the others.
    const r = await requestMany(c().topo, 'c-1', '10.96.0.40', 80, 20, { concurrency: 1 });
    assert.deepEqual(r.errors, {});
    assert.equal(Object.keys(r.pods).length, 1, `answered by ${JSON.stringify(r.pods)}`);

    // The pinned pod goes away: the client is pinned afresh, to one of the others.
    const pinned = Object.keys(r.pods)[0]!;
    await c().setEndpoints('sticky', ALL.filter((p) => p !== pinned));
    const after = await requestMany(c().topo, 'c-1', '10.96.0.40', 80, 20, { concurrency: 1 });
    assert.deepEqual(after.errors, {});
    assert.equal(Object.keys(after.pods).length, 1, `answered by ${JSON.stringify(after.pods)}`);
    assert.ok(!(pinned in after.pods), `still answered by the removed ${pinned}`);
  });

  it('externalTrafficPolicy Local: outside traffic reaches only local pods with the client IP kept, and is dropped without one', async () => {
    await c().addService({
      name: 'local',
      type: 'NodePort',
      clusterIPs: ['10.96.0.50'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30082 }],
      externalTrafficPolicy: 'Local',
    });
    await c().setEndpoints('local', ['a-1', 'b-1']);
    const r = await requestMany(c().topo, 'ext', NODE1_IP, 30082, 20);
    assert.deepEqual(r.pods, { 'a-1': 20 });
    assertSources(r.sources, EXT_IP, 20, traits);
    if (traits.localPolicyFromInside === 'local') assert.deepEqual((await requestMany(c().topo, 'c-1', NODE1_IP, 30082, 20)).pods, { 'a-1': 20 });

    await c().setEndpoints('local', ['b-1', 'b-2']);
    assert.deepEqual(await tcpRequest(c().topo, 'ext', NODE1_IP, 30082, { timeoutMs: DROP_MS }), { ok: false, error: traits.noLocalEndpoints });
    // The policy is about traffic from outside: the ClusterIP still reaches the remote endpoints,
    // and so does the NodePort from a pod or the node itself (in IPVS, the local ones only).
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.50', 80, 20)).pods), ['b-1', 'b-2']);
    for (const client of ['c-1', 'node1']) {
      if (traits.localPolicyFromInside !== 'local') assert.deepEqual(sorted((await requestMany(c().topo, client, NODE1_IP, 30082, 20)).pods), ['b-1', 'b-2']);
      // A pod's connection is dropped by the Local policy's rule; the node's own meets the virtual
      // server without real servers, which IPVS answers with port unreachable.
      else assert.deepEqual(await tcpRequest(c().topo, client, NODE1_IP, 30082, { timeoutMs: DROP_MS }), { ok: false, error: client === 'node1' ? 'refused' : 'timeout' }, client);
    }
  });

  it('Services for another proxy, headless and ExternalName Services get no rules', async () => {
    await c().addService(
      {
        name: 'other',
        clusterIPs: ['10.96.0.60'],
        ports: [{ name: 'http', port: 80, targetPort: 8080 }],
        labels: { 'service.kubernetes.io/service-proxy-name': 'someone-else' },
      },
      { expectRules: false },
    );
    await c().setEndpoints('other', ['a-1'], { expectRules: false });
    await c().addService({ name: 'headless', clusterIPs: 'None', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }, { expectRules: false });
    await c().setEndpoints('headless', ['a-1'], { expectRules: false });
    await c().addService(
      { name: 'extname', type: 'ExternalName', externalName: 'db.example.com', ports: [{ name: 'http', port: 80 }] },
      { expectRules: false },
    );
    await c().barrier();

    for (const family of ['IPv4', 'IPv6'] as const) {
      const rules = await c().ruleText(family);
      assert.ok(rules !== null, `${family} rules exist`);
      for (const word of ['default/other', 'default/headless', 'default/extname', '10.96.0.60']) {
        assert.ok(!rules.includes(word), `${family} rules mention ${word}`);
      }
    }
    const r = await tcpRequest(c().topo, 'c-1', '10.96.0.60', 80, { timeoutMs: DROP_MS });
    assert.equal(r.ok, false, `the other proxy's ClusterIP answered: ${JSON.stringify(r)}`);
  });

  it('an IPv6 ClusterIP of a dual-stack Service serves TCP and UDP from every endpoint', async () => {
    await c().addService({
      name: 'web6',
      clusterIPs: ['10.96.0.70', 'fd00:96::70'],
      ports: [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 },
      ],
    });
    await c().setEndpoints('web6', ALL);
    assert.ok((await c().ruleText('IPv6'))?.includes('fd00:96::70'), 'the IPv6 rules hold the IPv6 ClusterIP');
    const tcp = await requestMany(c().topo, 'c-1', 'fd00:96::70', 80, 60);
    assert.deepEqual(tcp.errors, {});
    assert.deepEqual(sorted(tcp.pods), ALL);
    assertSources(tcp.sources, 'fd00:244:1::20', 60, traits);
    const udp = await requestMany(c().topo, 'c-1', 'fd00:96::70', 53, 60, { proto: 'udp' });
    assert.deepEqual(udp.errors, {});
    assert.deepEqual(sorted(udp.pods), ALL);
    // The IPv4 side of the same Service keeps working.
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.70', 80, 40)).pods), ALL);
  });
}

/** Restart, stop and --cleanup: registered last, they end with the proxy stopped and its rules gone. */
export function shutdownScenarios(c: () => E2ECluster, traits: ModeTraits = KERNEL_MODE): void {
  it(traits.stopRemovesRules ? 'a restarted proxy serves again after its first sync' : 'a restarted proxy keeps serving: rules stay while it is down and after its first sync', async () => {
    const check = async (when: string): Promise<void> => {
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.10', 80, 30)).pods), ALL, when);
      assert.deepEqual(sorted((await requestMany(c().topo, 'ext', NODE1_IP, 30080, 20)).pods), ['a-1', 'b-1'], when);
    };
    await c().proxy.stop();
    if (traits.stopRemovesRules) {
      assert.equal((await tcpRequest(c().topo, 'c-1', '10.96.0.10', 80, { timeoutMs: DROP_MS })).ok, false, 'nothing serves while the proxy is down');
    } else {
      await check('while the proxy is down');
    }
    await c().restartProxy();
    await check('after the restarted proxy synced');
    assert.deepEqual(await tcpRequest(c().topo, 'c-1', '10.96.0.30', 80, { timeoutMs: 1000 }), { ok: false, error: 'refused' });
  });

  it(traits.stopRemovesRules ? 'stopping the proxy removes its rules from both families; --cleanup finds nothing left' : 'stopping the proxy keeps the rules; --cleanup removes them from both families', async () => {
    await c().proxy.stop();
    if (traits.stopRemovesRules) {
      assert.equal(await c().ruleText('IPv4'), null);
      assert.equal(await c().ruleText('IPv6'), null);
    } else {
      assert.notEqual(await c().ruleText('IPv4'), null);
      assert.notEqual(await c().ruleText('IPv6'), null);
      assert.equal((await tcpRequest(c().topo, 'c-1', '10.96.0.10', 80)).ok, true, 'services still work without the proxy process');
    }

    await c().topo.exec('node1', process.execPath, [COMMAND, '--cleanup', '--proxy-mode', c().mode]);
    assert.equal(await c().ruleText('IPv4'), null);
    assert.equal(await c().ruleText('IPv6'), null);
    if (!traits.noNftTables) assert.doesNotMatch((await c().topo.exec('node1', 'nft', ['list', 'tables'])).stdout, /kube-proxy/);
    if (c().mode === 'iptables') {
      for (const family of ['IPv4', 'IPv6'] as const) {
        for (const flavour of ['nft', 'legacy'] as const) {
          const saved = await c().iptablesSave(family, flavour);
          assert.doesNotMatch(saved, /KUBE-(SERVICES|SVC-|SEP-|PROXY-CANARY|MARK-MASQ|POSTROUTING)/, `${family} ${flavour}`);
        }
        assert.match(await c().iptablesSave(family), /^:KUBE-KUBELET-CANARY /m, "kubelet's chain stays");
      }
    }
    assert.equal((await tcpRequest(c().topo, 'c-1', '10.96.0.10', 80, { timeoutMs: DROP_MS })).ok, false);
  });
}

/**
 * One cluster for a mode: every shared scenario, then the mode's own (`extra`, run while the
 * proxy still runs), then the shutdown scenarios.
 */
export function modeSuite(
  title: string,
  opts: Omit<ClusterOptions, 'pods'>,
  extra?: (c: () => E2ECluster) => void,
  traits: ModeTraits = KERNEL_MODE,
): void {
  describe(title, () => {
    let cluster: E2ECluster | undefined;
    const c = (): E2ECluster => {
      if (!cluster) throw new Error('the cluster did not start');
      return cluster;
    };

    before(async () => {
      cluster = await E2ECluster.start({ ...opts, pods: PODS });
    });

    after(async () => {
      await cluster?.destroy();
    });

    serviceScenarios(c, traits);
    extra?.(c);
    shutdownScenarios(c, traits);
  });
}
