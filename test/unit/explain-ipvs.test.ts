// The IPVS tracer on rendered IPVS state: where a new connection goes, whether it is
// masqueraded, and what the filter chains do when no virtual server serves it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderIpvs } from '../../src/backend/ipvs/render.js';
import type { IpvsRuleset } from '../../src/backend/ipvs/types.js';
import { formatTrace, type TracePacket } from '../../src/explain/index.js';
import { traceIpvs } from '../../src/explain/ipvs.js';
import { backendConfig, endpoint, localEndpoint, servicePort, snapshot } from '../support/snapshots.js';

const NODE_IP = '192.168.50.11';
const NODE = { localIPs: [NODE_IP] };
const LOCAL_POD = '10.244.1.50';
const EXTERNAL = '203.0.113.9';

const web = servicePort({
  namespace: 'ns', serviceName: 'web', clusterIP: '10.96.0.10', port: 80, nodePort: 30080,
  endpoints: [localEndpoint('10.244.1.5', 8080), endpoint('10.244.2.5', 8080)],
});
const empty = servicePort({ namespace: 'ns', serviceName: 'empty', clusterIP: '10.96.0.11', port: 80 });
const local = servicePort({
  namespace: 'ns', serviceName: 'local', clusterIP: '10.96.0.12', port: 80, nodePort: 30082, loadBalancerIPs: ['192.0.2.11'],
  externalPolicyLocal: true, endpoints: [localEndpoint('10.244.1.6', 8080), endpoint('10.244.2.6', 8080)],
});
const remoteOnly = servicePort({
  namespace: 'ns', serviceName: 'remote', clusterIP: '10.96.0.13', port: 80, nodePort: 30083,
  externalPolicyLocal: true, endpoints: [endpoint('10.244.2.7', 8080)],
});
const firewalled = servicePort({
  namespace: 'ns', serviceName: 'fw', clusterIP: '10.96.0.14', port: 80, loadBalancerIPs: ['192.0.2.12'],
  loadBalancerSourceRanges: ['198.51.100.0/24'], endpoints: [endpoint('10.244.2.8', 8080)],
});
const rs: IpvsRuleset = renderIpvs(snapshot([web, empty, local, remoteOnly, firewalled]), backendConfig());

function pk(sourceIP: string, dest: string, from: TracePacket['from']): TracePacket {
  const [destIP, port] = dest.split(':');
  return { sourceIP, destIP: destIP!, destPort: Number(port), protocol: 'TCP', from };
}

const eps = (r: ReturnType<typeof traceIpvs>): string[] => r.endpoints.map((e) => `${e.ip}:${e.port}${e.masquerade ? ' masq' : ''}`);

test('cluster IP from a local pod: every real server, the client IP kept', () => {
  const r = traceIpvs(rs, pk(LOCAL_POD, '10.96.0.10:80', 'pod'), NODE);
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(eps(r), ['10.244.1.5:8080', '10.244.2.5:8080']);
  assert.ok(r.path.some((p) => p.startsWith('ipvs: virtual server TCP 10.96.0.10:80 rr')));
});

test('an endpoint reaching itself through its service is masqueraded (hairpin), the others not', () => {
  const r = traceIpvs(rs, pk('10.244.1.5', '10.96.0.10:80', 'pod'), NODE);
  assert.deepEqual(eps(r), ['10.244.1.5:8080 masq', '10.244.2.5:8080']);
  assert.match(formatTrace(pk('10.244.1.5', '10.96.0.10:80', 'pod'), r), /masquerade: only for 10\.244\.1\.5:8080/);
});

test('cluster IP from outside the pod network is masqueraded', () => {
  const r = traceIpvs(rs, pk(EXTERNAL, '10.96.0.10:80', 'external'), NODE);
  assert.deepEqual(eps(r), ['10.244.1.5:8080 masq', '10.244.2.5:8080 masq']);
});

test('NodePort from outside: masqueraded to every endpoint; with Local policy only local ones, client IP kept', () => {
  assert.deepEqual(eps(traceIpvs(rs, pk(EXTERNAL, `${NODE_IP}:30080`, 'external'), NODE)), ['10.244.1.5:8080 masq', '10.244.2.5:8080 masq']);
  assert.deepEqual(eps(traceIpvs(rs, pk(EXTERNAL, `${NODE_IP}:30082`, 'external'), NODE)), ['10.244.1.6:8080']);
  assert.deepEqual(eps(traceIpvs(rs, pk(EXTERNAL, '192.0.2.11:80', 'external'), NODE)), ['10.244.1.6:8080']);
});

test('no endpoints: rejected; Local policy with endpoints elsewhere only: dropped', () => {
  const none = traceIpvs(rs, pk(LOCAL_POD, '10.96.0.11:80', 'pod'), NODE);
  assert.equal(none.verdict, 'REJECT');
  assert.ok(none.path.some((p) => p.includes('ns/empty has no endpoints')));
  assert.equal(traceIpvs(rs, pk(EXTERNAL, `${NODE_IP}:30083`, 'external'), NODE).verdict, 'DROP');
  // Inside the cluster the same service still reaches its remote endpoint.
  assert.deepEqual(eps(traceIpvs(rs, pk(LOCAL_POD, '10.96.0.13:80', 'pod'), NODE)), ['10.244.2.7:8080']);
});

test('a port no service has on a service address is rejected by the IPVS access filter', () => {
  const r = traceIpvs(rs, pk(LOCAL_POD, '10.96.0.10:81', 'pod'), NODE);
  assert.equal(r.verdict, 'REJECT');
  assert.ok(r.path.some((p) => p.startsWith('filter/KUBE-IPVS-FILTER:') && p.includes('REJECT')));
});

test('loadBalancerSourceRanges: inside served and masqueraded, outside dropped, the node itself dropped', () => {
  assert.deepEqual(eps(traceIpvs(rs, pk('198.51.100.7', '192.0.2.12:80', 'external'), NODE)), ['10.244.2.8:8080 masq']);
  assert.equal(traceIpvs(rs, pk(EXTERNAL, '192.0.2.12:80', 'external'), NODE).verdict, 'DROP');
  // The node reaches its own LB IP from that address (it is bound to kube-ipvs0).
  assert.equal(traceIpvs(rs, pk('192.0.2.12', '192.0.2.12:80', 'host'), NODE).verdict, 'DROP');
  const fromNodeIP = traceIpvs(rs, pk(NODE_IP, '192.0.2.12:80', 'host'), NODE);
  assert.equal(fromNodeIP.verdict, 'DROP');
  assert.ok(fromNodeIP.path[0]!.startsWith('route: 192.0.2.12 is local (kube-ipvs0)'));
});

test('a draining real server (weight 0) is not reachable', () => {
  const drained = structuredClone(rs);
  const vs = drained.virtualServers.find((v) => v.address === '10.96.0.10' && v.port === 80)!;
  vs.realServers[1]!.weight = 0;
  assert.deepEqual(eps(traceIpvs(drained, pk(LOCAL_POD, '10.96.0.10:80', 'pod'), NODE)), ['10.244.1.5:8080']);
});

test('an address no service uses is not translated', () => {
  const r = traceIpvs(rs, pk(LOCAL_POD, '10.244.2.5:8080', 'pod'), NODE);
  assert.equal(r.verdict, 'ACCEPT');
  assert.deepEqual(r.endpoints, []);
});
