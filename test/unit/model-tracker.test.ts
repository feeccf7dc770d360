import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ProxyModel } from '../../src/model/tracker.js';
import type { KubeObject } from '../../src/model/k8s.js';
import type { EventType, SourceEvent } from '../../src/source/types.js';

const NODE = 'node-a';

function ev(kind: SourceEvent['kind'], object: unknown, type: EventType = 'ADDED'): SourceEvent {
  return { kind, type, object: object as KubeObject };
}

// Distinct Services get distinct ClusterIPs, as the API server allocates them.
function clusterIPFor(ns: string, name: string): string {
  if (ns === 'ns1' && name === 'svc1') return '172.30.0.41';
  let h = 0;
  for (const c of `${ns}/${name}`) h = (h * 31 + c.charCodeAt(0)) % 65021;
  return `172.31.${h >> 8}.${(h & 255) || 1}`;
}

function service(name: string, spec: Record<string, unknown> = {}, ns = 'ns1'): SourceEvent['object'] {
  return {
    metadata: { namespace: ns, name },
    spec: { clusterIP: clusterIPFor(ns, name), ports: [{ name: 'p80', port: 80, protocol: 'TCP' }], ...spec },
  } as SourceEvent['object'];
}

interface EpSpec {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
  zones?: string[];
}

function slice(
  name: string,
  svc: string,
  eps: EpSpec[],
  opts: { ports?: unknown[]; family?: 'IPv4' | 'IPv6'; ns?: string } = {},
): SourceEvent['object'] {
  return {
    metadata: { namespace: opts.ns ?? 'ns1', name, labels: { 'kubernetes.io/service-name': svc } },
    addressType: opts.family ?? 'IPv4',
    ports: opts.ports ?? [{ name: 'p80', port: 8080, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.serving, terminating: e.terminating },
      nodeName: e.node ?? 'node-b',
      ...(e.zones ? { hints: { forZones: e.zones.map((z) => ({ name: z })) } } : {}),
    })),
  } as SourceEvent['object'];
}

function node(labels: Record<string, string>, extra: Record<string, unknown> = {}): SourceEvent['object'] {
  return { metadata: { name: NODE, labels }, ...extra } as SourceEvent['object'];
}

const sorted = (s: Iterable<string>): string[] => [...s].sort();

describe('ProxyModel snapshots', () => {
  test('first snapshot is full, carries service ports with endpoints; generation counts up', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1')));
    m.apply(ev('EndpointSlice', slice('svc1-a', 'svc1', [{ ip: '10.180.0.1', node: NODE }, { ip: '10.180.0.2' }])));
    const s1 = m.snapshot('IPv4');
    assert.equal(s1.generation, 1);
    assert.equal(s1.changes.full, true);
    assert.deepEqual(sorted(s1.changes.changed), ['ns1/svc1:p80/TCP']);
    const st = s1.services.get('ns1/svc1:p80/TCP')!;
    assert.deepEqual(st.endpoints.map((e) => `${e.ip}:${e.port}:${e.isLocal}`), ['10.180.0.1:8080:true', '10.180.0.2:8080:false']);
    assert.equal(st.clusterEndpoints.length, 2);
    assert.equal(st.localReadyCount, 1);
    const s2 = m.snapshot('IPv4');
    assert.equal(s2.generation, 2);
    assert.equal(s2.changes.full, false);
    assert.equal(s2.changes.changed.size, 0);
    assert.equal(s2.services.size, 1);
  });

  test('markFull makes the next snapshot full, once', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.snapshot('IPv4');
    m.markFull();
    assert.equal(m.snapshot('IPv4').changes.full, true);
    assert.equal(m.snapshot('IPv4').changes.full, false);
  });

  test('snapshots do not change after being handed out', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1')));
    const s1 = m.snapshot('IPv4');
    m.apply(ev('Service', service('svc1'), 'DELETED'));
    const s2 = m.snapshot('IPv4');
    assert.equal(s1.services.size, 1);
    assert.equal(s2.services.size, 0);
  });

  test('a family that is not tracked is an error', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    assert.throws(() => m.snapshot('IPv6'), /not tracked/);
  });

  test('dual-stack service: each family has its own ports, endpoints and change set', () => {
    const m = new ProxyModel({ nodeName: NODE });
    m.apply(ev('Service', service('svc1', { clusterIPs: ['172.30.0.41', 'fd00::41'], clusterIP: '172.30.0.41' })));
    m.apply(ev('EndpointSlice', slice('svc1-v4', 'svc1', [{ ip: '10.180.0.1' }])));
    m.apply(ev('EndpointSlice', slice('svc1-v6', 'svc1', [{ ip: 'fd00:10::1' }], { family: 'IPv6' })));
    const v4 = m.snapshot('IPv4');
    const s4 = v4.services.get('ns1/svc1:p80/TCP')!;
    assert.equal(s4.info.clusterIP, '172.30.0.41');
    assert.deepEqual(s4.endpoints.map((e) => e.ip), ['10.180.0.1']);
    // An IPv6 slice change must not show up in the IPv4 change set, and vice versa.
    m.apply(ev('EndpointSlice', slice('svc1-v6', 'svc1', [{ ip: 'fd00:10::2' }], { family: 'IPv6' }), 'MODIFIED'));
    assert.equal(m.snapshot('IPv4').changes.changed.size, 0);
    const v6 = m.snapshot('IPv6');
    const s6 = v6.services.get('ns1/svc1:p80/TCP')!;
    assert.equal(s6.info.clusterIP, 'fd00::41');
    assert.deepEqual(s6.endpoints.map((e) => e.ip), ['fd00:10::2']);
    assert.deepEqual(sorted(v6.changes.changed), ['ns1/svc1:p80/TCP']);
  });
});

describe('ProxyModel change sets', () => {
  test('changed and deleted keys follow the derived state, not the raw objects', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1', { ports: [{ name: 'a', port: 80 }, { name: 'b', port: 81 }] })));
    m.apply(ev('Service', service('svc2')));
    m.snapshot('IPv4');

    // A field the proxy does not use changes nothing.
    m.apply(ev('Service', service('svc2', { selector: { app: 'x' } }), 'MODIFIED'));
    let c = m.snapshot('IPv4').changes;
    assert.equal(c.changed.size + c.deleted.size, 0);

    // Dropping a port deletes just that port.
    m.apply(ev('Service', service('svc1', { ports: [{ name: 'a', port: 80 }] }), 'MODIFIED'));
    c = m.snapshot('IPv4').changes;
    assert.deepEqual(sorted(c.deleted), ['ns1/svc1:b/TCP']);
    assert.equal(c.changed.size, 0);

    // Endpoints arriving change the port.
    m.apply(ev('EndpointSlice', slice('svc2-x', 'svc2', [{ ip: '10.0.0.1' }])));
    c = m.snapshot('IPv4').changes;
    assert.deepEqual(sorted(c.changed), ['ns1/svc2:p80/TCP']);

    m.apply(ev('Service', service('svc2'), 'DELETED'));
    const snap = m.snapshot('IPv4');
    assert.deepEqual(sorted(snap.changes.deleted), ['ns1/svc2:p80/TCP']);
    assert.deepEqual(sorted(snap.services.keys()), ['ns1/svc1:a/TCP']);
  });

  test('removed UDP endpoints are stale for every service IP; TCP ones are not', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    const ports = [
      { name: 'dns', port: 53, protocol: 'UDP' },
      { name: 'web', port: 80, protocol: 'TCP' },
    ];
    m.apply(ev('Service', service('svc1', { ports, externalIPs: ['192.0.2.1'] })));
    const slicePorts = [
      { name: 'dns', port: 5353, protocol: 'UDP' },
      { name: 'web', port: 8080, protocol: 'TCP' },
    ];
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }], { ports: slicePorts })));
    m.snapshot('IPv4');

    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2', ready: false }], { ports: slicePorts }), 'MODIFIED'));
    const c = m.snapshot('IPv4').changes;
    const stale = c.staleEndpoints.map((s) => `${s.protocol} ${s.serviceIP}:${s.servicePort} -> ${s.endpointIP}:${s.port}`).sort();
    assert.deepEqual(stale, ['UDP 172.30.0.41:53 -> 10.0.0.2:5353', 'UDP 192.0.2.1:53 -> 10.0.0.2:5353']);
    assert.deepEqual(c.staleServiceIPs, []);

    // Deleting the service makes the remaining UDP endpoint stale too.
    m.apply(ev('Service', service('svc1'), 'DELETED'));
    const d = m.snapshot('IPv4').changes;
    assert.deepEqual(
      d.staleEndpoints.map((s) => `${s.serviceIP}->${s.endpointIP}`).sort(),
      ['172.30.0.41->10.0.0.1', '192.0.2.1->10.0.0.1'],
    );
  });

  test('SCTP endpoints are tracked for staleness too', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1', { ports: [{ name: 's', port: 9, protocol: 'SCTP' }] })));
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }], { ports: [{ name: 's', port: 9, protocol: 'SCTP' }] })));
    m.snapshot('IPv4');
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [], { ports: [{ name: 's', port: 9, protocol: 'SCTP' }] }), 'DELETED'));
    assert.deepEqual(m.snapshot('IPv4').changes.staleEndpoints.map((s) => s.protocol), ['SCTP']);
  });

  test('UDP service IPs going from no endpoints to some are reported once', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    const ports = [{ name: 'dns', port: 53, protocol: 'UDP' }];
    m.apply(ev('Service', service('svc1', { ports, externalIPs: ['192.0.2.1'] })));
    assert.deepEqual(m.snapshot('IPv4').changes.staleServiceIPs, []);
    const slicePorts = [{ name: 'dns', port: 53, protocol: 'UDP' }];
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }], { ports: slicePorts })));
    assert.deepEqual(
      m.snapshot('IPv4').changes.staleServiceIPs.map((s) => `${s.protocol} ${s.ip}`).sort(),
      ['UDP 172.30.0.41', 'UDP 192.0.2.1'],
    );
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }], { ports: slicePorts }), 'MODIFIED'));
    const c = m.snapshot('IPv4').changes;
    assert.equal(c.changed.size, 1);
    assert.deepEqual(c.staleServiceIPs, []);
  });

  test('pendingChanges counts services not yet snapshotted', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1')));
    m.apply(ev('Service', service('svc2')));
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }])));
    assert.deepEqual(m.pendingChanges(), { services: 2, endpoints: 1 });
    m.snapshot('IPv4');
    assert.deepEqual(m.pendingChanges(), { services: 0, endpoints: 0 });
  });

  test('a slice relabelled to another service moves its endpoints', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1')));
    m.apply(ev('Service', service('svc2')));
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }])));
    m.snapshot('IPv4');
    m.apply(ev('EndpointSlice', slice('s', 'svc2', [{ ip: '10.0.0.1' }]), 'MODIFIED'));
    const snap = m.snapshot('IPv4');
    assert.deepEqual(sorted(snap.changes.changed), ['ns1/svc1:p80/TCP', 'ns1/svc2:p80/TCP']);
    assert.equal(snap.services.get('ns1/svc1:p80/TCP')!.endpoints.length, 0);
    assert.equal(snap.services.get('ns1/svc2:p80/TCP')!.endpoints.length, 1);
  });

  test('slices of another namespace do not attach to the service', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1')));
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }], { ns: 'other' })));
    assert.equal(m.snapshot('IPv4').services.get('ns1/svc1:p80/TCP')!.endpoints.length, 0);
  });

  test('a service that becomes headless disappears', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1')));
    m.snapshot('IPv4');
    m.apply(ev('Service', service('svc1', { clusterIP: 'None' }), 'MODIFIED'));
    const snap = m.snapshot('IPv4');
    assert.deepEqual(sorted(snap.changes.deleted), ['ns1/svc1:p80/TCP']);
    assert.equal(snap.services.size, 0);
  });

  test('localReadyCount counts distinct local ready pod IPs over all ports', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1', { ports: [{ name: 'a', port: 80 }, { name: 'b', port: 81 }] })));
    m.apply(
      ev(
        'EndpointSlice',
        slice('s', 'svc1', [{ ip: '10.0.0.1', node: NODE }, { ip: '10.0.0.2', node: NODE, ready: false }, { ip: '10.0.0.3' }], {
          ports: [{ name: 'a', port: 8080 }, { name: 'b', port: 8081 }],
        }),
      ),
    );
    const snap = m.snapshot('IPv4');
    assert.equal(snap.services.get('ns1/svc1:a/TCP')!.localReadyCount, 1);
    assert.equal(snap.services.get('ns1/svc1:b/TCP')!.localReadyCount, 1);
  });
});

describe('ProxyModel node', () => {
  test('node info: labels, zone, pod CIDRs, InternalIP before ExternalIP; other nodes ignored', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(
      ev(
        'Node',
        node(
          { 'topology.kubernetes.io/zone': 'zone-a', role: 'worker' },
          {
            spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:244:1::/64'] },
            status: {
              addresses: [
                { type: 'ExternalIP', address: '203.0.113.5' },
                { type: 'Hostname', address: 'node-a' },
                { type: 'InternalIP', address: '192.168.1.10' },
                { type: 'InternalIP', address: 'FD00::10' },
              ],
            },
          },
        ),
      ),
    );
    m.apply(ev('Node', { metadata: { name: 'node-z', labels: { 'topology.kubernetes.io/zone': 'zone-z' } } }));
    const n = m.node();
    assert.equal(n.name, NODE);
    assert.equal(n.zone, 'zone-a');
    assert.deepEqual(n.labels, { 'topology.kubernetes.io/zone': 'zone-a', role: 'worker' });
    assert.deepEqual(n.podCIDRs, ['10.244.1.0/24', 'fd00:244:1::/64']);
    assert.deepEqual(n.addresses, ['192.168.1.10', 'fd00::10', '203.0.113.5']);
    assert.equal(m.snapshot('IPv4').node.zone, 'zone-a');
  });

  test('a zone change re-selects endpoints and marks every service port changed', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Node', node({ 'topology.kubernetes.io/zone': 'zone-a' })));
    m.apply(ev('Service', service('svc1')));
    m.apply(ev('Service', service('svc2')));
    m.apply(
      ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1', zones: ['zone-a'] }, { ip: '10.0.0.2', zones: ['zone-b'] }])),
    );
    let snap = m.snapshot('IPv4');
    assert.deepEqual(snap.services.get('ns1/svc1:p80/TCP')!.clusterEndpoints.map((e) => e.ip), ['10.0.0.1']);
    m.apply(ev('Node', node({ 'topology.kubernetes.io/zone': 'zone-b' }), 'MODIFIED'));
    snap = m.snapshot('IPv4');
    assert.deepEqual(sorted(snap.changes.changed), ['ns1/svc1:p80/TCP', 'ns1/svc2:p80/TCP']);
    assert.deepEqual(snap.services.get('ns1/svc1:p80/TCP')!.clusterEndpoints.map((e) => e.ip), ['10.0.0.2']);
    // Same labels again: nothing changes.
    m.apply(ev('Node', node({ 'topology.kubernetes.io/zone': 'zone-b' }), 'MODIFIED'));
    assert.equal(m.snapshot('IPv4').changes.changed.size, 0);
  });

  test('deleting the own Node keeps its last known state', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Node', node({ 'topology.kubernetes.io/zone': 'zone-a' })));
    m.apply(ev('Node', node({}), 'DELETED'));
    assert.equal(m.node().zone, 'zone-a');
  });
});

describe('ProxyModel bad input', () => {
  test('every kind of bad object is skipped with a counted reason; the rest still syncs', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    const events: SourceEvent[] = [
      ev('Service', service('good')),
      ev('Service', null),
      ev('Service', { metadata: { namespace: 'ns1' } }),
      ev('Service', service('x'.repeat(1 << 20))),
      ev('Service', service('badtype', { type: 'Weird' })),
      ev('Service', service('badip', { clusterIP: '999.0.0.1' })),
      ev('Service', service('manyports', { ports: Array.from({ length: 3000 }, (_, i) => ({ name: `p${i}`, port: i + 1 })) })),
      ev('EndpointSlice', { metadata: { namespace: 'ns1', name: 'nolabel' }, addressType: 'IPv4' }),
      ev('EndpointSlice', { ...(slice('huge', 'good', []) as object), endpoints: Array.from({ length: 100_000 }, () => ({ addresses: ['10.0.0.9'] })) }),
      ev('EndpointSlice', slice('okslice', 'good', [{ ip: '10.0.0.1' }, { ip: 'nope' }])),
      { kind: 'Gadget', type: 'ADDED', object: {} } as unknown as SourceEvent,
      { kind: 'Service', type: 'EXPLODED', object: {} } as unknown as SourceEvent,
      null as unknown as SourceEvent,
    ];
    for (const e of events) assert.doesNotThrow(() => m.apply(e));
    const snap = m.snapshot('IPv4');
    assert.deepEqual(sorted(snap.services.keys()), ['ns1/good:p80/TCP']);
    assert.deepEqual(snap.services.get('ns1/good:p80/TCP')!.endpoints.map((e) => e.ip), ['10.0.0.1']);
    assert.deepEqual(Object.fromEntries([...m.invalidObjects].sort()), {
      'EndpointSlice/missing-service-name': 1,
      'EndpointSlice/too-many-endpoints': 1,
      'Event/invalid-event': 4,
      'Service/invalid-cluster-ip': 1,
      'Service/invalid-metadata': 2,
      'Service/invalid-ports': 1,
      'Service/invalid-type': 1,
    });
    assert.equal(m.droppedFields.get('EndpointSlice/invalid-endpoint-ip'), 1);
  });

  test('an invalid update keeps the previous version; a later valid one replaces it; delete works by name', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1', { clusterIP: '172.30.0.1' })));
    m.snapshot('IPv4');
    m.apply(ev('Service', service('svc1', { type: 'Bogus' }), 'MODIFIED'));
    let snap = m.snapshot('IPv4');
    assert.equal(snap.changes.changed.size, 0);
    assert.equal(snap.services.get('ns1/svc1:p80/TCP')!.info.clusterIP, '172.30.0.1');
    m.apply(ev('Service', service('svc1', { clusterIP: '172.30.0.2' }), 'MODIFIED'));
    snap = m.snapshot('IPv4');
    assert.equal(snap.services.get('ns1/svc1:p80/TCP')!.info.clusterIP, '172.30.0.2');
    // The deleted object's body may be garbage: namespace and name are enough.
    m.apply(ev('Service', { metadata: { namespace: 'ns1', name: 'svc1' }, spec: 'garbage' }, 'DELETED'));
    snap = m.snapshot('IPv4');
    assert.deepEqual(sorted(snap.changes.deleted), ['ns1/svc1:p80/TCP']);
  });

  test('an FQDN slice replacing an IP slice of the same name removes its endpoints', () => {
    const m = new ProxyModel({ nodeName: NODE, families: ['IPv4'] });
    m.apply(ev('Service', service('svc1')));
    m.apply(ev('EndpointSlice', slice('s', 'svc1', [{ ip: '10.0.0.1' }])));
    m.snapshot('IPv4');
    m.apply(ev('EndpointSlice', { ...(slice('s', 'svc1', []) as object), addressType: 'FQDN' }, 'MODIFIED'));
    assert.equal(m.snapshot('IPv4').services.get('ns1/svc1:p80/TCP')!.endpoints.length, 0);
  });
});
