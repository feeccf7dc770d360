import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { endpointsForPort, parseEndpointSlice, type ParsedSlice, type SliceParseResult } from '../../src/model/endpoints.js';

function slice(
  name: string,
  endpoints: unknown[],
  opts: { ports?: unknown[]; addressType?: string; service?: string; namespace?: string } = {},
): Record<string, unknown> {
  return {
    metadata: {
      namespace: opts.namespace ?? 'ns1',
      name,
      labels: { 'kubernetes.io/service-name': opts.service ?? 'svc1' },
    },
    addressType: opts.addressType ?? 'IPv4',
    ports: opts.ports ?? [{ name: 'p80', port: 8080, protocol: 'TCP' }],
    endpoints,
  };
}

function parsed(r: SliceParseResult): ParsedSlice {
  assert.equal(r.status, 'ok', JSON.stringify(r));
  if (r.status !== 'ok') throw new Error('unreachable');
  return r.slice;
}

describe('parseEndpointSlice', () => {
  test('condition defaults: ready absent = true, serving absent = ready, terminating absent = false', () => {
    const s = parsed(
      parseEndpointSlice(
        slice('s1', [
          { addresses: ['10.0.0.1'] },
          { addresses: ['10.0.0.2'], conditions: { ready: false } },
          { addresses: ['10.0.0.3'], conditions: { ready: false, serving: true, terminating: true } },
          { addresses: ['10.0.0.4'], conditions: { ready: null, serving: null, terminating: null } },
        ]),
      ),
    );
    const got = s.endpoints.map((e) => [e.ip, e.ready, e.serving, e.terminating]);
    assert.deepEqual(got, [
      ['10.0.0.1', true, true, false],
      ['10.0.0.2', false, false, false],
      ['10.0.0.3', false, true, true],
      ['10.0.0.4', true, true, false],
    ]);
    assert.equal(s.serviceKey, 'ns1/svc1');
    assert.equal(s.family, 'IPv4');
  });

  test('FQDN slices are ignored, not invalid', () => {
    const r = parseEndpointSlice(slice('s1', [{ addresses: ['example.com'] }], { addressType: 'FQDN' }));
    assert.equal(r.status, 'ignored');
  });

  test('endpoints with a bad or wrong-family address are dropped with a reason', () => {
    const r = parseEndpointSlice(
      slice('s1', [
        { addresses: ['10.0.0.1'] },
        { addresses: ['fd00::1'] },
        { addresses: ['bogus'] },
        { addresses: [] },
        { addresses: ['10.0.0.2'], conditions: { ready: 'yes' } },
      ]),
    );
    assert.equal(r.status, 'ok');
    if (r.status !== 'ok') return;
    assert.deepEqual(r.slice.endpoints.map((e) => e.ip), ['10.0.0.1']);
    assert.deepEqual(r.problems.map((p) => p.reason).sort(), [
      'endpoint-family-mismatch',
      'endpoint-without-address',
      'invalid-conditions',
      'invalid-endpoint-ip',
    ]);
  });

  test('unnamed port defaults to name "" and protocol TCP; port 0 dropped', () => {
    const s = parsed(parseEndpointSlice(slice('s1', [], { ports: [{ port: 80 }, { name: 'x', port: 0 }, { name: 'y', port: null }] })));
    assert.deepEqual(s.ports, [{ name: '', protocol: 'TCP', port: 80 }]);
  });

  test('hints and node/zone are carried; IPv6 addresses normalized', () => {
    const s = parsed(
      parseEndpointSlice(
        slice(
          's6',
          [
            {
              addresses: ['FD00:0:0::5'],
              nodeName: 'node-a',
              zone: 'zone-a',
              hints: { forZones: [{ name: 'zone-b' }, { name: 'zone-a' }], forNodes: [{ name: 'node-a' }] },
            },
          ],
          { addressType: 'IPv6' },
        ),
      ),
    );
    assert.deepEqual(s.endpoints[0], {
      ip: 'fd00::5',
      ready: true,
      serving: true,
      terminating: false,
      nodeName: 'node-a',
      zone: 'zone-a',
      hintsForZones: ['zone-a', 'zone-b'],
      hintsForNodes: ['node-a'],
    });
  });

  const bad: Array<[string, unknown, string]> = [
    ['no service-name label', { metadata: { namespace: 'ns1', name: 's' }, addressType: 'IPv4' }, 'missing-service-name'],
    ['unknown address type', slice('s', [], { addressType: 'IPX' }), 'invalid-address-type'],
    ['endpoints not a list', { ...slice('s', []), endpoints: 5 }, 'invalid-endpoints'],
    [
      '100k endpoints in one slice',
      slice('s', Array.from({ length: 100_000 }, (_, i) => ({ addresses: [`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`] }))),
      'too-many-endpoints',
    ],
    ['1 MB slice name', slice('x'.repeat(1 << 20), []), 'invalid-metadata'],
  ];
  for (const [name, obj, reason] of bad) {
    test(`invalid: ${name}`, () => {
      const r = parseEndpointSlice(obj);
      assert.equal(r.status, 'invalid');
      assert.equal(r.status === 'invalid' && r.reason, reason);
    });
  }
});

describe('endpointsForPort', () => {
  test('matches slice ports by name and protocol, uses the slice port number', () => {
    const s = parsed(
      parseEndpointSlice(
        slice('s1', [{ addresses: ['10.0.0.1'] }], {
          ports: [
            { name: 'p80', port: 8080, protocol: 'TCP' },
            { name: 'p80', port: 5353, protocol: 'UDP' },
            { name: 'other', port: 9090, protocol: 'TCP' },
          ],
        }),
      ),
    );
    assert.deepEqual(endpointsForPort([s], 'p80', 'TCP', 'n').map((e) => e.port), [8080]);
    assert.deepEqual(endpointsForPort([s], 'p80', 'UDP', 'n').map((e) => e.port), [5353]);
    assert.deepEqual(endpointsForPort([s], 'p81', 'TCP', 'n'), []);
  });

  test('duplicates across slices appear once, the ready copy preferred; sorted by ip:port text', () => {
    const a = parsed(
      parseEndpointSlice(
        slice('a', [{ addresses: ['10.0.0.2'], conditions: { ready: false } }, { addresses: ['10.0.0.10'] }]),
      ),
    );
    const b = parsed(parseEndpointSlice(slice('b', [{ addresses: ['10.0.0.2'], conditions: { ready: true } }, { addresses: ['10.0.0.1'] }])));
    for (const order of [[a, b], [b, a]]) {
      const eps = endpointsForPort(order, 'p80', 'TCP', 'n');
      assert.deepEqual(eps.map((e) => `${e.ip}:${e.port}:${e.ready}`), [
        '10.0.0.10:8080:true',
        '10.0.0.1:8080:true',
        '10.0.0.2:8080:true',
      ]);
    }
  });

  test('duplicates within one slice appear once', () => {
    const s = parsed(
      parseEndpointSlice(slice('a', [{ addresses: ['10.0.0.2'], conditions: { ready: false } }, { addresses: ['10.0.0.2'] }])),
    );
    const eps = endpointsForPort([s], 'p80', 'TCP', 'n');
    assert.equal(eps.length, 1);
    assert.equal(eps[0]!.ready, true);
  });

  test('isLocal is nodeName == our node', () => {
    const s = parsed(parseEndpointSlice(slice('a', [{ addresses: ['10.0.0.1'], nodeName: 'me' }, { addresses: ['10.0.0.2'], nodeName: 'you' }, { addresses: ['10.0.0.3'] }])));
    assert.deepEqual(endpointsForPort([s], 'p80', 'TCP', 'me').map((e) => e.isLocal), [true, false, false]);
  });

  test('different port numbers for the same port name (rolling update) both appear', () => {
    const a = parsed(parseEndpointSlice(slice('a', [{ addresses: ['10.0.0.1'] }], { ports: [{ name: 'p80', port: 8080 }] })));
    const b = parsed(parseEndpointSlice(slice('b', [{ addresses: ['10.0.0.2'] }], { ports: [{ name: 'p80', port: 9090 }] })));
    assert.deepEqual(endpointsForPort([a, b], 'p80', 'TCP', 'n').map((e) => `${e.ip}:${e.port}`), ['10.0.0.1:8080', '10.0.0.2:9090']);
  });
});
