// The sandbox's plan, computed without touching the kernel: which pods it creates from the
// manifests, which addresses it tries from where, and how it judges the answers.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { EndpointSlice, Node } from '../../src/model/k8s.js';
import type { Snapshot } from '../../src/model/types.js';
import { loadManifests, planChecks, planPods, type Check, type ManifestObjects } from '../../src/sandbox/plan.js';
import { formatAnswers, judge } from '../../src/sandbox/report.js';

const EXAMPLES = join(fileURLToPath(new URL('../../../', import.meta.url)), 'examples');
const WEB = ['web-5c8d7f9b4-k2x7p', 'web-5c8d7f9b4-m9q4t', 'web-5c8d7f9b4-z8w3n'];
const WEB_LOCAL = ['web-5c8d7f9b4-k2x7p', 'web-5c8d7f9b4-m9q4t'];
const DNS_READY = ['dns-7b6f8d9c5-h4j2k', 'dns-7b6f8d9c5-r7t5v'];

function node(name: string, ip: string, podCIDR?: string): Node {
  return { kind: 'Node', metadata: { name }, spec: podCIDR ? { podCIDR, podCIDRs: [podCIDR] } : {}, status: { addresses: [{ type: 'InternalIP', address: ip }] } };
}

function slice(service: string, ips: Array<{ ip: string; node?: string; pod?: string }>, ports: Array<{ port: number; protocol?: string }>): EndpointSlice {
  return {
    kind: 'EndpointSlice',
    metadata: { name: `${service}-abc`, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: ips.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true },
      ...(e.node ? { nodeName: e.node } : {}),
      ...(e.pod ? { targetRef: { kind: 'Pod', name: e.pod } } : {}),
    })),
    ports,
  };
}

describe('sandbox plan from the example manifests', () => {
  let objects: ManifestObjects;
  let snapshot: Snapshot;

  before(async () => {
    ({ objects, snapshot } = await loadManifests(EXAMPLES, 'node-1'));
  });

  it('creates one pod per endpoint address, on its node, serving the ports of its slices', () => {
    const plan = planPods(objects, 'node-1');
    assert.equal(plan.nodeCount, 2);
    assert.deepEqual(plan.proxyNode, { name: 'node-1', index: 1 });
    const pods = new Map(plan.pods.map((p) => [p.name, p]));
    assert.equal(pods.size, 7, 'six endpoint pods and the client');
    assert.deepEqual(pods.get('web-5c8d7f9b4-z8w3n'), { name: 'web-5c8d7f9b4-z8w3n', node: 2, ip: '10.244.2.10', tcp: [8080], udp: [] });
    assert.deepEqual(pods.get('dns-7b6f8d9c5-q3w8x'), { name: 'dns-7b6f8d9c5-q3w8x', node: 1, ip: '10.244.1.21', tcp: [], udp: [5353] });
    assert.deepEqual(plan.client, { name: 'client', node: 1, ip: '10.244.1.250', tcp: [], udp: [] });
    assert.equal(plan.podByIp.get('10.244.1.20'), 'dns-7b6f8d9c5-h4j2k');
    assert.deepEqual(plan.notes, []);
  });

  it('tries every address from the right place and expects the pods the model selected', () => {
    const plan = planPods(objects, 'node-1');
    const { checks, skips } = planChecks(objects, snapshot, plan, { extIp: '10.0.0.100', sameNodeReplies: true });
    const find = (service: string, kind: string, from: string): Check => {
      const c = checks.filter((x) => x.service === `default/${service}` && x.kind === kind && x.from === from);
      assert.equal(c.length, 1, `${service} ${kind} from ${from}`);
      return c[0]!;
    };
    assert.deepEqual(find('dns', 'clusterIP', 'client'), {
      service: 'default/dns', kind: 'clusterIP', proto: 'udp', ip: '10.96.0.53', port: 53,
      from: 'client', fromIp: '10.244.1.250', expected: DNS_READY, sticky: false, unreachable: [],
    });
    assert.deepEqual(find('web-nodeport', 'nodePort', 'ext').expected, WEB);
    assert.equal(find('web-nodeport', 'nodePort', 'ext').ip, '10.0.0.1');
    assert.equal(find('web-nodeport', 'nodePort', 'ext').port, 30080);
    assert.deepEqual(find('web-local', 'clusterIP', 'client').expected, WEB);
    assert.deepEqual(find('web-local', 'nodePort', 'ext').expected, WEB_LOCAL);
    assert.deepEqual(find('web-local', 'loadBalancer', 'ext').expected, WEB_LOCAL);
    assert.equal(find('web-external', 'externalIP', 'ext').ip, '203.0.113.10');
    assert.equal(find('web-sticky', 'clusterIP', 'client').sticky, true);
    const lbExt = find('web-lb', 'loadBalancer', 'ext');
    assert.equal(lbExt.noAnswer, undefined, 'the external client is inside the source ranges');
    const lbPod = find('web-lb', 'loadBalancer', 'client');
    assert.equal(lbPod.noAnswer, 'dropped: source not in loadBalancerSourceRanges');
    assert.deepEqual(lbPod.expected, []);
    assert.equal(checks.length, 14);
    const byService = (a: { service: string }, b: { service: string }): number => a.service.localeCompare(b.service);
    assert.deepEqual([...skips].sort(byService), [
      { service: 'default/external-db', reason: 'no rules (ExternalName: a DNS alias only)' },
      { service: 'default/web-headless', reason: 'no rules (headless)' },
    ]);
  });

  it('without br_netfilter, marks same-node pods as unreachable from the client pod only', () => {
    const plan = planPods(objects, 'node-1');
    const { checks } = planChecks(objects, snapshot, plan, { extIp: '10.0.0.100', sameNodeReplies: false });
    const web = checks.find((c) => c.service === 'default/web' && c.kind === 'clusterIP')!;
    assert.deepEqual(web.unreachable, WEB_LOCAL);
    for (const c of checks.filter((x) => x.from === 'ext')) assert.deepEqual(c.unreachable, [], c.service);
  });
});

describe('sandbox plan rejects manifests that do not fit the topology', () => {
  const base = (): ManifestObjects => ({ nodes: [node('a', '10.0.0.1', '10.244.1.0/24'), node('b', '10.0.0.2', '10.244.2.0/24')], services: [], slices: [] });

  it('a node outside 10.0.0.N', () => {
    const o = base();
    o.nodes.push(node('c', '192.168.1.7'));
    assert.throws(() => planPods(o, 'a'), /node c: InternalIP 192\.168\.1\.7 does not fit/);
  });

  it('a pod CIDR that is not 10.244.N.0/24 for node N', () => {
    const o = base();
    o.nodes[1] = node('b', '10.0.0.2', '10.244.9.0/24');
    assert.throws(() => planPods(o, 'a'), /node b: pod CIDR 10\.244\.9\.0\/24 does not fit/);
  });

  it('a proxy node that is missing or not at 10.0.0.1', () => {
    assert.throws(() => planPods(base(), 'zz'), /no Node "zz"/);
    assert.throws(() => planPods(base(), 'b'), /must have InternalIP 10\.0\.0\.1/);
  });

  it('endpoints it cannot place become notes, not pods', () => {
    const o = base();
    o.slices.push(
      slice('s', [
        { ip: '172.16.0.5', pod: 'far' },
        { ip: '10.244.2.9', node: 'a', pod: 'wrong-node' },
        { ip: '10.244.1.7', pod: 'BadName' },
        { ip: '10.244.1.8', node: 'a', pod: 'client' },
      ], [{ port: 8080 }, { port: 53, protocol: 'UDP' }, { port: 99, protocol: 'SCTP' }]),
    );
    const plan = planPods(o, 'a');
    assert.equal(plan.notes.length, 2);
    assert.match(plan.notes[0]!, /172\.16\.0\.5: outside the sandbox pod networks/);
    assert.match(plan.notes[1]!, /10\.244\.2\.9: its nodeName a has pod CIDR 10\.244\.1\.0\/24/);
    // Names that are not usable pod names (or taken by the client) are derived from the address.
    assert.deepEqual(plan.pods.map((p) => [p.name, p.ip, p.tcp, p.udp]), [
      ['ep-10-244-1-7', '10.244.1.7', [8080], [53]],
      ['ep-10-244-1-8', '10.244.1.8', [8080], [53]],
      ['client', '10.244.1.250', [], []],
    ]);
  });
});

describe('sandbox verdicts', () => {
  const check = (over: Partial<Check> = {}): Check => ({
    service: 'default/web', kind: 'clusterIP', proto: 'tcp', ip: '10.96.0.10', port: 80,
    from: 'client', fromIp: '10.244.1.250', expected: ['a', 'b'], sticky: false, unreachable: [], ...over,
  });

  it('passes when every expected pod answers every request', () => {
    assert.deepEqual(judge(check(), { sent: 4, answered: { a: 2, b: 2 }, failures: {} }), { ok: true });
  });

  it('fails on a pod that is not an endpoint, a silent endpoint, or a failed request', () => {
    assert.equal(judge(check(), { sent: 4, answered: { a: 2, c: 2 }, failures: {} }).ok, false);
    assert.match(judge(check(), { sent: 4, answered: { a: 4 }, failures: {} }).remark!, /no answer from b/);
    assert.equal(judge(check(), { sent: 4, answered: { a: 2, b: 1 }, failures: { timeout: 1 } }).ok, false);
  });

  it('session affinity needs one pod for every request', () => {
    assert.equal(judge(check({ sticky: true }), { sent: 3, answered: { b: 3 }, failures: {} }).ok, true);
    assert.equal(judge(check({ sticky: true }), { sent: 3, answered: { a: 1, b: 2 }, failures: {} }).ok, false);
  });

  it('a dropped or rejected service must not answer', () => {
    const dropped = check({ expected: [], noAnswer: 'dropped: source not in loadBalancerSourceRanges' });
    assert.deepEqual(judge(dropped, { sent: 3, answered: {}, failures: { timeout: 3 } }), { ok: true, remark: dropped.noAnswer });
    assert.equal(judge(dropped, { sent: 3, answered: { a: 1 }, failures: { timeout: 2 } }).ok, false);
  });

  it('tolerates failures only for pods marked unreachable', () => {
    const c = check({ unreachable: ['a'] });
    assert.equal(judge(c, { sent: 4, answered: { b: 2 }, failures: { timeout: 2 } }).ok, true);
    assert.equal(judge(c, { sent: 4, answered: {}, failures: { timeout: 4 } }).ok, false);
    assert.equal(judge(c, { sent: 4, answered: { b: 2, x: 1 }, failures: { timeout: 1 } }).ok, false);
  });

  it('formats answers sorted by pod, with failures', () => {
    assert.equal(formatAnswers({ sent: 5, answered: { b: 1, a: 3 }, failures: { timeout: 1 } }), '4/5 answered: a 3, b 1; 1 timeout');
    assert.equal(formatAnswers({ sent: 3, answered: {}, failures: { refused: 3 } }), '0/3 answered; 3 refused');
  });
});
