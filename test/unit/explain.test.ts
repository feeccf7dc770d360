// Packet traces over rulesets rendered from snapshots, in the spirit of upstream's nftables
// tracer tests: what a user asking "where does this packet go" should be told.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { render as renderIptables, toRestoreInput } from '../../src/backend/iptables/render.js';
import { render } from '../../src/backend/nftables/render.js';
import type { BackendConfig } from '../../src/backend/types.js';
import type { Endpoint, IPFamily, ServicePortInfo, ServicePortState, Snapshot } from '../../src/model/types.js';
import { servicePortKey } from '../../src/model/types.js';
import { explain, runExplainCommand, trace, TraceError, type TracePacket, type TraceResult } from '../../src/explain/index.js';
import { traceIptables } from '../../src/explain/iptables/index.js';

const NODE_IP = '192.168.0.2';
const NODE_IP6 = 'fd00:192::2';
const CLUSTER_CIDR = '10.0.0.0/8';
const LOCAL_POD = '10.0.1.5';
const EXTERNAL = '203.0.113.5';

function config(over: Partial<BackendConfig> = {}): BackendConfig {
  return {
    family: 'IPv4',
    masqueradeAll: false,
    masqueradeBit: 14,
    detectLocalMode: 'ClusterCIDR',
    localCIDRs: [CLUSTER_CIDR],
    bridgeInterface: '',
    interfaceNamePrefix: '',
    nodePortAddresses: [],
    nodeIPs: [NODE_IP],
    ...over,
  };
}

function ep(ip: string, port: number, over: Partial<Endpoint> = {}): Endpoint {
  return {
    ip, port, ready: true, serving: true, terminating: false, isLocal: false, nodeName: 'node-b',
    zone: '', hintsForZones: [], hintsForNodes: [], ...over,
  };
}

function local(ip: string, port: number): Endpoint {
  return ep(ip, port, { isLocal: true, nodeName: 'node-a' });
}

interface SvcSpec extends Partial<ServicePortInfo> {
  namespace: string;
  serviceName: string;
  port: number;
  endpoints?: Endpoint[];
  /** Overrides the endpoints used for Cluster policy (the model's selection). */
  clusterEndpoints?: Endpoint[];
}

/** A service port the way the model would hand it over: endpoint selection already made. */
function svc(s: SvcSpec): ServicePortState {
  const { endpoints = [], clusterEndpoints, ...rest } = s;
  const info: ServicePortInfo = {
    name: `${s.namespace}/${s.serviceName}:p${s.port}`,
    portName: `p${s.port}`,
    protocol: 'TCP',
    clusterIP: '',
    nodePort: 0,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    sessionAffinity: {},
    externalPolicyLocal: false,
    internalPolicyLocal: false,
    healthCheckNodePort: 0,
    trafficDistribution: '',
    type: 'ClusterIP',
    ...rest,
  };
  const usable = endpoints.filter((e) => e.ready);
  const cluster = clusterEndpoints ?? usable;
  const localEps = usable.filter((e) => e.isLocal);
  return {
    info,
    endpoints,
    clusterEndpoints: cluster,
    localEndpoints: localEps,
    allReachableEndpoints: [...new Set([...cluster, ...localEps])],
    hasAnyEndpoints: endpoints.length > 0,
    localReadyCount: localEps.length,
  };
}

function snapshot(services: ServicePortState[], family: IPFamily = 'IPv4'): Snapshot {
  return {
    family,
    generation: 1,
    node: { name: 'node-a', labels: {}, zone: '', podCIDRs: family === 'IPv4' ? ['10.0.1.0/24'] : ['fd00:10:1::/64'], addresses: [family === 'IPv4' ? NODE_IP : NODE_IP6] },
    services: new Map(services.map((s) => [servicePortKey(s.info), s])),
    changes: { full: true, changed: new Set(), deleted: new Set(), staleEndpoints: [], staleServiceIPs: [] },
  };
}

/** What every mode must agree on for one packet: the verdict and each endpoint with its masquerade flag. */
function outcome(r: TraceResult | TraceError): unknown {
  if (r instanceof TraceError) return 'cannot trace';
  return { verdict: r.verdict, endpoints: r.endpoints.map((e) => `${e.ip}:${e.port}${e.masquerade ? ' masqueraded' : ''}`).sort() };
}

function attempt(traceOnce: () => TraceResult): TraceResult | TraceError {
  try {
    return traceOnce();
  } catch (e) {
    if (e instanceof TraceError) return e;
    throw e;
  }
}

type PacketSpec = Partial<TracePacket> & { sourceIP: string; destIP: string; destPort: number };

/** The packet traced through the rules each backend renders for the same snapshot. */
function traceBothModes(services: ServicePortState[], packet: PacketSpec, cfg: BackendConfig): { pk: TracePacket; nft: TraceResult | TraceError; ipt: TraceResult | TraceError } {
  const pk: TracePacket = { protocol: 'TCP', from: 'pod', ...packet };
  const snap = snapshot(services, cfg.family);
  const node = { localIPs: cfg.nodeIPs };
  return {
    pk,
    nft: attempt(() => trace(render(snap, cfg), pk, node)),
    ipt: attempt(() => traceIptables(toRestoreInput(renderIptables(snap, cfg)), cfg.family, pk, node)),
  };
}

/**
 * Traces the packet through the rules both the nftables and the iptables backends render for
 * the snapshot, requires the same answer from both, and returns the nftables trace (whose
 * path the assertions below name).
 */
function run(services: ServicePortState[], packet: PacketSpec, cfg = config()): TraceResult {
  const { pk, nft, ipt } = traceBothModes(services, packet, cfg);
  const show = (r: TraceResult | TraceError): string => (r instanceof TraceError ? r.message : JSON.stringify(outcome(r)));
  assert.deepEqual(outcome(ipt), outcome(nft), `modes disagree for ${JSON.stringify(pk)}\n  nftables: ${show(nft)}\n  iptables: ${show(ipt)}`);
  if (nft instanceof TraceError) throw nft;
  return nft;
}

function eps(r: TraceResult): string[] {
  return r.endpoints.map((e) => `${e.ip}:${e.port}`).sort();
}

function masqueraded(r: TraceResult): string[] {
  return r.endpoints.filter((e) => e.masquerade).map((e) => `${e.ip}:${e.port}`).sort();
}

const svc1 = (): ServicePortState =>
  svc({ namespace: 'ns1', serviceName: 'svc1', port: 80, clusterIP: '172.30.0.41', endpoints: [ep('10.180.0.1', 8080), ep('10.180.2.1', 8080)] });

test('pod to ClusterIP: every endpoint, no masquerade from a local pod', () => {
  const r = run([svc1()], { sourceIP: LOCAL_POD, destIP: '172.30.0.41', destPort: 80 });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.180.0.1:8080', '10.180.2.1:8080']);
  assert.equal(r.masquerade, false);
  assert.ok(r.path.includes('services: ip daddr . meta l4proto . th dport @cluster-2-tuples goto cluster-2'), r.path.join('\n'));
  assert.ok(r.path.some((p) => p.startsWith('cluster-2: meta l4proto tcp dnat ip to')), r.path.join('\n'));
  assert.deepEqual(r.branches.map((b) => b.conditions).sort(), [['numgen random mod 2 = 0'], ['numgen random mod 2 = 1']]);
});

test('ClusterIP from outside the cluster CIDR is masqueraded', () => {
  const r = run([svc1()], { sourceIP: EXTERNAL, destIP: '172.30.0.41', destPort: 80, from: 'external', inInterface: 'eth0' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(masqueraded(r), ['10.180.0.1:8080', '10.180.2.1:8080']);
  assert.ok(r.path.includes('mark-for-masquerade: meta mark set meta mark | 0x4000'));
  assert.ok(r.path.includes('masquerading: masquerade fully-random'));
});

test('ClusterIP from the host itself is masqueraded (output path)', () => {
  const r = run([svc1()], { sourceIP: NODE_IP, destIP: '172.30.0.41', destPort: 80, from: 'host' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(masqueraded(r), ['10.180.0.1:8080', '10.180.2.1:8080']);
  assert.ok(r.path.includes('nat-output: jump services'));
});

test('hairpin: a pod reaching its own service is masqueraded only when it lands on itself', () => {
  const r = run([svc1()], { sourceIP: '10.180.0.1', destIP: '172.30.0.41', destPort: 80 });
  assert.deepEqual(eps(r), ['10.180.0.1:8080', '10.180.2.1:8080']);
  assert.deepEqual(masqueraded(r), ['10.180.0.1:8080']);
  assert.equal(r.masquerade, true);
  assert.ok(r.path.includes('nat-postrouting: ct status dnat ip saddr . ip daddr @hairpin masquerade'));
});

test('wrong port on a ClusterIP is rejected', () => {
  const r = run([svc1()], { sourceIP: LOCAL_POD, destIP: '172.30.0.41', destPort: 81 });
  assert.equal(r.verdict, 'REJECT');
  assert.deepEqual(r.endpoints, []);
  assert.ok(r.path.includes('filter-forward: ip daddr @cluster-ips reject'), r.path.join('\n'));
  const udp = run([svc1()], { sourceIP: LOCAL_POD, destIP: '172.30.0.41', destPort: 80, protocol: 'UDP' });
  assert.equal(udp.verdict, 'REJECT', 'same port, other protocol');
});

test('traffic to an address that is no service is not translated', () => {
  const r = run([svc1()], { sourceIP: LOCAL_POD, destIP: '10.180.0.1', destPort: 8080 });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(r.endpoints, []);
  assert.equal(r.branches[0]!.routed, 'forward');
});

const nodePortSvc = (policyLocal = false): ServicePortState =>
  svc({
    namespace: 'ns2', serviceName: 'np', port: 80, type: 'NodePort', clusterIP: '172.30.0.42', nodePort: 3001,
    externalPolicyLocal: policyLocal,
    endpoints: [local('10.0.1.7', 80), ep('10.180.2.2', 80), ep('10.180.2.3', 80)],
  });

test('external to NodePort: masqueraded, every endpoint', () => {
  const r = run([nodePortSvc()], { sourceIP: EXTERNAL, destIP: NODE_IP, destPort: 3001, from: 'external' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.0.1.7:80', '10.180.2.2:80', '10.180.2.3:80']);
  assert.deepEqual(masqueraded(r), eps(r));
  assert.ok(r.path.includes('services: ip daddr @nodeport-ips meta l4proto . th dport @nodeport-3-tuples goto nodeport-3'));
  assert.ok(r.path.some((p) => p.startsWith('nodeport-3: meta l4proto tcp dnat ip to meta l4proto . tcp dport . numgen random mod 3')));
  // The same port on an address NodePorts do not answer on reaches the node itself.
  const cfg = config({ nodeIPs: [NODE_IP, '192.168.0.99'], nodePortAddresses: ['primary'] });
  const other = run([nodePortSvc()], { sourceIP: EXTERNAL, destIP: '192.168.0.99', destPort: 3001, from: 'external' }, cfg);
  assert.deepEqual(other.endpoints, []);
  assert.equal(other.branches[0]!.routed, 'local');
});

test('nodePortAddresses unset: iptables mode answers NodePorts on every node address, nftables mode on the primary one', () => {
  // Upstream's defaults differ by mode; every other case gives both modes the same answer.
  const cfg = config({ nodeIPs: [NODE_IP, '192.168.0.99'] });
  const { nft, ipt } = traceBothModes([nodePortSvc()], { sourceIP: EXTERNAL, destIP: '192.168.0.99', destPort: 3001, from: 'external' }, cfg);
  assert.ok(!(nft instanceof TraceError) && !(ipt instanceof TraceError));
  assert.deepEqual(nft.endpoints, []);
  assert.deepEqual(eps(ipt), ['10.0.1.7:80', '10.180.2.2:80', '10.180.2.3:80']);
});

test('NodePort with externalTrafficPolicy Local: external clients reach local endpoints only, client IP kept', () => {
  const r = run([nodePortSvc(true)], { sourceIP: EXTERNAL, destIP: NODE_IP, destPort: 3001, from: 'external' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.0.1.7:80']);
  assert.equal(r.masquerade, false);
});

test('NodePort with externalTrafficPolicy Local from the host: cluster endpoints, masqueraded', () => {
  const r = run([nodePortSvc(true)], { sourceIP: NODE_IP, destIP: NODE_IP, destPort: 3001, from: 'host' });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.0.1.7:80', '10.180.2.2:80', '10.180.2.3:80']);
  assert.deepEqual(masqueraded(r), eps(r));
});

const lbSvc = (over: Partial<SvcSpec> = {}): ServicePortState =>
  svc({
    namespace: 'ns3', serviceName: 'lb', port: 80, type: 'LoadBalancer', clusterIP: '172.30.0.43', nodePort: 3003,
    loadBalancerIPs: ['1.2.3.4'], externalIPs: ['192.168.99.33'],
    endpoints: [local('10.0.1.8', 80), ep('10.180.3.1', 80)],
    ...over,
  });

test('LoadBalancer with loadBalancerSourceRanges: allowed source accepted, other sources dropped', () => {
  const s = lbSvc({ loadBalancerSourceRanges: ['203.0.113.0/25'] });
  const ok = run([s], { sourceIP: EXTERNAL, destIP: '1.2.3.4', destPort: 80, from: 'external' });
  assert.equal(ok.verdict, 'ACCEPT');
  assert.deepEqual(eps(ok), ['10.0.1.8:80', '10.180.3.1:80']);
  assert.deepEqual(masqueraded(ok), eps(ok));
  assert.ok(ok.path.includes('firewall-check: ip daddr . meta l4proto . th dport . ip saddr @firewall-allow return'));

  const blocked = run([s], { sourceIP: '203.0.113.200', destIP: '1.2.3.4', destPort: 80, from: 'external' });
  assert.equal(blocked.verdict, 'DROP');
  assert.deepEqual(blocked.endpoints, []);
  assert.ok(blocked.path.includes('firewall-check: drop'));

  // The source ranges guard the LB IP only: the external IP of the same service stays open.
  const viaExternalIP = run([s], { sourceIP: '203.0.113.200', destIP: '192.168.99.33', destPort: 80, from: 'external' });
  assert.equal(viaExternalIP.verdict, 'ACCEPT');
});

test('LoadBalancer source ranges containing the node IP let the node reach its LB IP', () => {
  const inside = lbSvc({ loadBalancerSourceRanges: ['192.168.0.0/24'] });
  const r = run([inside], { sourceIP: '1.2.3.4', destIP: '1.2.3.4', destPort: 80, from: 'host' }, config({ nodeIPs: [NODE_IP, '1.2.3.4'] }));
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.0.1.8:80', '10.180.3.1:80']);
  const fromNodeIP = run([inside], { sourceIP: NODE_IP, destIP: '1.2.3.4', destPort: 80, from: 'host' });
  assert.equal(fromNodeIP.verdict, 'ACCEPT');

  const outside = lbSvc({ loadBalancerSourceRanges: ['203.0.113.0/24'] });
  const d = run([outside], { sourceIP: '1.2.3.4', destIP: '1.2.3.4', destPort: 80, from: 'host' }, config({ nodeIPs: [NODE_IP, '1.2.3.4'] }));
  assert.equal(d.verdict, 'DROP');
});

test('externalTrafficPolicy Cluster on an LB IP: masqueraded from outside and from a local pod', () => {
  const fromOutside = run([lbSvc()], { sourceIP: EXTERNAL, destIP: '1.2.3.4', destPort: 80, from: 'external' });
  assert.deepEqual(eps(fromOutside), ['10.0.1.8:80', '10.180.3.1:80']);
  assert.deepEqual(masqueraded(fromOutside), eps(fromOutside));
  const fromPod = run([lbSvc()], { sourceIP: LOCAL_POD, destIP: '1.2.3.4', destPort: 80 });
  assert.deepEqual(eps(fromPod), ['10.0.1.8:80', '10.180.3.1:80']);
  assert.deepEqual(masqueraded(fromPod), eps(fromPod));
});

test('externalTrafficPolicy Local on an LB IP: outside clients reach local endpoints unmasqueraded; local pods reach all', () => {
  const s = lbSvc({ externalPolicyLocal: true });
  const fromOutside = run([s], { sourceIP: EXTERNAL, destIP: '1.2.3.4', destPort: 80, from: 'external' });
  assert.deepEqual(eps(fromOutside), ['10.0.1.8:80']);
  assert.equal(fromOutside.masquerade, false);
  const fromPod = run([s], { sourceIP: LOCAL_POD, destIP: '1.2.3.4', destPort: 80 });
  assert.deepEqual(eps(fromPod), ['10.0.1.8:80', '10.180.3.1:80']);
  assert.equal(fromPod.masquerade, false);
  assert.ok(fromPod.branches.every((b) => b.conditions.some((c) => /offset 65536 = 6553[67]/.test(c))));

  const noLocal = lbSvc({ externalPolicyLocal: true, endpoints: [ep('10.180.3.1', 80)] });
  const dropped = run([noLocal], { sourceIP: EXTERNAL, destIP: '1.2.3.4', destPort: 80, from: 'external' });
  assert.equal(dropped.verdict, 'DROP');
  const podStillWorks = run([noLocal], { sourceIP: LOCAL_POD, destIP: '1.2.3.4', destPort: 80 });
  assert.deepEqual(eps(podStillWorks), ['10.180.3.1:80']);
});

test('internalTrafficPolicy Local: only local endpoints; none local means drop', () => {
  const s = svc({
    namespace: 'ns4', serviceName: 'itp', port: 80, clusterIP: '172.30.0.44', internalPolicyLocal: true,
    endpoints: [local('10.0.1.9', 80), ep('10.180.4.1', 80)],
  });
  const r = run([s], { sourceIP: LOCAL_POD, destIP: '172.30.0.44', destPort: 80 });
  assert.deepEqual(eps(r), ['10.0.1.9:80']);
  const none = svc({
    namespace: 'ns4', serviceName: 'itp', port: 80, clusterIP: '172.30.0.44', internalPolicyLocal: true,
    endpoints: [ep('10.180.4.1', 80)],
  });
  const d = run([none], { sourceIP: LOCAL_POD, destIP: '172.30.0.44', destPort: 80 });
  assert.equal(d.verdict, 'DROP');
  assert.ok(d.path.includes('filter-prerouting-pre-dnat: ip daddr . meta l4proto . th dport vmap @no-endpoint-services'));
});

test('terminating fallback: the tracer follows the endpoints the model selected', () => {
  const terminating = [ep('10.180.5.1', 80, { ready: false, terminating: true }), ep('10.180.5.2', 80, { ready: false, terminating: true })];
  const s = svc({ namespace: 'ns5', serviceName: 'term', port: 80, clusterIP: '172.30.0.45', endpoints: terminating, clusterEndpoints: terminating });
  const r = run([s], { sourceIP: LOCAL_POD, destIP: '172.30.0.45', destPort: 80 });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.180.5.1:80', '10.180.5.2:80']);
});

test('no endpoints: rejected, from a pod and from the host', () => {
  const s = svc({ namespace: 'ns6', serviceName: 'empty', port: 80, clusterIP: '172.30.0.46' });
  const r = run([s], { sourceIP: LOCAL_POD, destIP: '172.30.0.46', destPort: 80 });
  assert.equal(r.verdict, 'REJECT');
  assert.ok(r.path.includes('reject-chain: reject'));
  const h = run([s], { sourceIP: NODE_IP, destIP: '172.30.0.46', destPort: 80, from: 'host' });
  assert.equal(h.verdict, 'REJECT');
  assert.ok(h.path.includes('filter-output-pre-dnat: ip daddr . meta l4proto . th dport vmap @no-endpoint-services'));
});

test('ClientIP affinity: reports the pinned branches and the fresh choice', () => {
  const s = svc({
    namespace: 'ns7', serviceName: 'aff', port: 80, clusterIP: '172.30.0.47', sessionAffinity: { clientIPTimeoutSeconds: 10800 },
    endpoints: [ep('10.180.7.1', 80), ep('10.180.7.2', 80)],
  });
  const r = run([s], { sourceIP: LOCAL_POD, destIP: '172.30.0.47', destPort: 80 });
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.180.7.1:80', '10.180.7.2:80']);
  for (const e of r.endpoints) {
    assert.equal(e.pins.length, 1);
    const [client, tag] = e.pins[0]!.key.split(' . ');
    assert.equal(client, LOCAL_POD);
    assert.match(tag!, /^\d+$/, 'the endpoint\'s tag');
    assert.equal(e.pins[0]!.timeout, '10800s');
    assert.match(e.pins[0]!.set, /^affinity-/);
  }
  const pinned = r.branches.filter((b) => b.conditions.some((c) => c.includes('already in @affinity-')));
  assert.equal(pinned.length, 2, 'one branch per endpoint the client may already be pinned to');
  const fresh = r.branches.filter((b) => b.conditions.every((c) => !c.includes('already in')));
  assert.deepEqual(fresh.map((b) => b.endpoint!.ip).sort(), ['10.180.7.1', '10.180.7.2']);
  assert.ok(fresh.every((b) => b.conditions.some((c) => c.startsWith('numgen random mod 2'))));
});

test('IPv6 ClusterIP', () => {
  const s = svc({
    namespace: 'ns8', serviceName: 'v6', port: 80, clusterIP: 'fd00:172:30::48',
    endpoints: [ep('fd00:10:180::1', 8080), ep('fd00:10:180::2', 8080)],
  });
  const cfg = config({ family: 'IPv6', localCIDRs: ['fd00:10::/32'], nodeIPs: [NODE_IP6] });
  const r = run([s], { sourceIP: 'fd00:10:1::5', destIP: 'fd00:172:30::48', destPort: 80 }, cfg);
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['fd00:10:180::1:8080', 'fd00:10:180::2:8080']);
  assert.equal(r.masquerade, false);
  const outside = run([s], { sourceIP: 'fd00:99::5', destIP: 'fd00:172:30::48', destPort: 80, from: 'external' }, cfg);
  assert.equal(outside.masquerade, true);
  assert.throws(() => run([s], { sourceIP: LOCAL_POD, destIP: 'fd00:172:30::48', destPort: 80 }, cfg), TraceError);
});

test('interface-based local detection needs and uses the input interface', () => {
  const cfg = config({ detectLocalMode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth', localCIDRs: [] });
  const fromPod = run([svc1()], { sourceIP: LOCAL_POD, destIP: '172.30.0.41', destPort: 80, inInterface: 'veth1234' }, cfg);
  assert.equal(fromPod.masquerade, false);
  const fromUplink = run([svc1()], { sourceIP: LOCAL_POD, destIP: '172.30.0.41', destPort: 80, inInterface: 'eth0' }, cfg);
  assert.equal(fromUplink.masquerade, true);
  assert.throws(() => run([svc1()], { sourceIP: LOCAL_POD, destIP: '172.30.0.41', destPort: 80 }, cfg), /input interface/);
});

test('explain() text names verdict, endpoints, masquerade and the path', () => {
  const cfg = config();
  const text = explain(render(snapshot([svc1()]), cfg), { sourceIP: '10.180.0.1', destIP: '172.30.0.41', protocol: 'TCP', destPort: 80, from: 'pod' }, { localIPs: cfg.nodeIPs });
  assert.match(text, /^verdict: ACCEPT$/m);
  assert.match(text, /^ {2}10\.180\.0\.1:8080 {2}\(masqueraded\)$/m);
  assert.match(text, /^ {2}10\.180\.2\.1:8080$/m);
  assert.match(text, /^masquerade: only for 10\.180\.0\.1:8080$/m);
  assert.match(text, /^ {2}services: ip daddr \. meta l4proto \. th dport @cluster-2-tuples goto cluster-2$/m);
  assert.match(text, /^ {2}when numgen random mod 2 = 1: ACCEPT, to 10\.180\.2\.1:8080$/m);
});

test('runExplainCommand: parses arguments, guesses the source kind, prints the trace', async () => {
  const calls: unknown[] = [];
  const loader = async (source: unknown, family: IPFamily, mode: string): Promise<{ snapshot: Snapshot; config: BackendConfig }> => {
    calls.push([source, family, mode]);
    return { snapshot: snapshot([nodePortSvc(true)]), config: config() };
  };
  let out = '';
  let err = '';
  const code = await runExplainCommand(['explain', '--manifests', '/tmp/m', '--from', EXTERNAL, '--to', `${NODE_IP}:3001`], loader, (s) => (out += s), (s) => (err += s));
  assert.equal(code, 0, err);
  // Without --proxy-mode or a config file's mode, explain traces the proxy's own default: iptables.
  assert.deepEqual(calls, [[{ manifests: '/tmp/m' }, 'IPv4', 'iptables']]);
  assert.match(out, /from external/);
  assert.match(out, /^ {2}10\.0\.1\.7:80$/m);
  assert.match(out, /^masquerade: no/m);

  out = '';
  const host = await runExplainCommand(['--kubeconfig=/k', '--from', NODE_IP, '--to', `${NODE_IP}:3001`, '--json'], loader, (s) => (out += s), (s) => (err += s));
  assert.equal(host, 0, err);
  const json = JSON.parse(out) as TraceResult & { packet: TracePacket };
  assert.equal(json.packet.from, 'host');
  assert.equal(json.endpoints.length, 3);

  out = '';
  const pod = await runExplainCommand(['--manifests', 'd', '--from', '10.0.1.77', '--to', '172.30.0.42:80', '--proto', 'udp'], loader, (s) => (out += s), (s) => (err += s));
  assert.equal(pod, 0, err);
  assert.match(out, /UDP 10\.0\.1\.77 -> 172\.30\.0\.42:80 \(from pod/);
  assert.match(out, /^verdict: REJECT$/m);

  out = '';
  const explicit = await runExplainCommand(['--manifests', 'd', '--proxy-mode', 'nftables', '--from', EXTERNAL, '--to', `${NODE_IP}:3001`], loader, (s) => (out += s), (s) => (err += s));
  assert.equal(explicit, 0, err);
  assert.match(out, /^ {2}10\.0\.1\.7:80$/m);
  assert.deepEqual(calls.at(-1), [{ manifests: 'd' }, 'IPv4', 'nftables']);
});

test('runExplainCommand: iptables mode traces its own rules; a mode without traceable rules exits 1 before loading anything', async () => {
  let loads = 0;
  const loader = async (): Promise<{ snapshot: Snapshot; config: BackendConfig }> => {
    loads++;
    return { snapshot: snapshot([nodePortSvc(true)]), config: config() };
  };
  let out = '';
  let err = '';
  const ipt = await runExplainCommand(['--manifests', 'd', '--proxy-mode', 'iptables', '--from', EXTERNAL, '--to', `${NODE_IP}:3001`], loader, (s) => (out += s), (s) => (err += s));
  assert.equal(ipt, 0, err);
  assert.match(out, /^ {2}10\.0\.1\.7:80$/m);
  assert.match(out, /^masquerade: no/m);
  assert.match(out, /^ {2}nat\/KUBE-NODEPORTS: /m);
  assert.equal(loads, 1);
  out = '';
  const ipvs = await runExplainCommand(['--manifests', 'd', '--proxy-mode', 'ipvs', '--from', EXTERNAL, '--to', `${NODE_IP}:3001`], loader, (s) => (out += s), (s) => (err += s));
  assert.equal(ipvs, 0, err);
  assert.match(out, /^ {2}10\.0\.1\.7:80$/m);
  assert.match(out, /^ {2}ipvs: virtual server TCP /m);
  out = '';
  err = '';
  const code = await runExplainCommand(['--manifests', 'd', '--proxy-mode', 'userspace', '--from', EXTERNAL, '--to', `${NODE_IP}:3001`], loader, (s) => (out += s), (s) => (err += s));
  assert.equal(code, 1);
  assert.equal(out, '');
  assert.match(err, /proxy mode userspace cannot be traced yet/);
  assert.equal(loads, 2, 'ipvs loaded once, userspace never');
});

test('runExplainCommand: bad arguments and loader failures are reported, not thrown', async () => {
  const loader = async (): Promise<never> => {
    throw new Error('no such directory');
  };
  const cases: Array<[string[], number, RegExp]> = [
    [['--from', '1.2.3.4', '--to', '1.2.3.4:80'], 2, /exactly one of --manifests, --kubeconfig and --node/],
    [['--manifests', 'd', '--from', 'nope', '--to', '1.2.3.4:80'], 2, /not an IP address/],
    [['--manifests', 'd', '--from', '1.2.3.4', '--to', '1.2.3.4'], 2, /not IP:PORT/],
    [['--manifests', 'd', '--from', '1.2.3.4', '--to', '[fd00::1]:80'], 2, /same IP family/],
    [['--manifests', 'd', '--from', '1.2.3.4', '--to', '1.2.3.4:80', '--proto', 'icmp'], 2, /not tcp, udp or sctp/],
    [['--manifests', 'd', '--from', '1.2.3.4', '--to', '1.2.3.4:80', '--bogus'], 2, /unknown argument/],
    [['--manifests', 'd', '--from', '1.2.3.4', '--to', '1.2.3.4:80', '--proxy-mode', 'kernelspace'], 2, /--proxy-mode 'kernelspace' is not iptables, nftables, ipvs, userspace/],
    [['--manifests', 'd', '--from', '1.2.3.4', '--to', '1.2.3.4:80'], 1, /no such directory/],
  ];
  for (const [argv, want, msg] of cases) {
    let err = '';
    const code = await runExplainCommand(argv, loader, () => {}, (s) => (err += s));
    assert.equal(code, want, argv.join(' '));
    assert.match(err, msg);
  }
});
