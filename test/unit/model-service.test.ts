import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseService, servicePortName, type ServiceParseResult } from '../../src/model/service.js';
import type { ServicePortInfo } from '../../src/model/types.js';
import { parseCIDR, parseIP } from '../../src/model/validate.js';

function svc(spec: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    metadata: { namespace: 'ns1', name: 'svc1', ...((extra.metadata as object) ?? {}) },
    spec: { clusterIP: '172.30.0.41', ports: [{ name: 'p80', port: 80, protocol: 'TCP' }], ...spec },
    ...(extra.status ? { status: extra.status } : {}),
  };
}

function ok(r: ServiceParseResult) {
  assert.equal(r.status, 'ok', JSON.stringify(r));
  if (r.status !== 'ok') throw new Error('unreachable');
  return r;
}

function v4(r: ServiceParseResult): ServicePortInfo[] {
  return ok(r).service.ports.IPv4;
}

describe('parseService: names and skipped kinds', () => {
  test('ServicePortName text: ns/name:port, port omitted when unnamed', () => {
    assert.equal(servicePortName('ns1', 'svc1', 'p80'), 'ns1/svc1:p80');
    assert.equal(servicePortName('ns1', 'svc1', ''), 'ns1/svc1');
    const [p] = v4(parseService(svc({ ports: [{ port: 80 }] })));
    assert.equal(p!.name, 'ns1/svc1');
    assert.equal(p!.portName, '');
    assert.equal(p!.protocol, 'TCP', 'protocol defaults to TCP');
  });

  test('headless (clusterIP None, clusterIPs [None]) is skipped', () => {
    assert.equal(parseService(svc({ clusterIP: 'None' })).status, 'skipped');
    assert.equal(parseService(svc({ clusterIP: 'None', clusterIPs: ['None'] })).status, 'skipped');
  });

  test('ExternalName is skipped even with a cluster IP', () => {
    assert.equal(parseService(svc({ type: 'ExternalName', externalName: 'example.com' })).status, 'skipped');
  });

  test('service-proxy-name and headless labels are skipped', () => {
    for (const label of ['service.kubernetes.io/service-proxy-name', 'service.kubernetes.io/headless']) {
      const r = parseService(svc({}, { metadata: { labels: { [label]: '' } } }));
      assert.equal(r.status, 'skipped', label);
    }
  });

  test('no cluster IP at all is skipped, not invalid', () => {
    assert.equal(parseService(svc({ clusterIP: '' })).status, 'skipped');
  });
});

describe('parseService: IP families', () => {
  test('dual-stack service yields one port set per family with that family\'s cluster IP', () => {
    const r = ok(
      parseService(
        svc({
          clusterIP: '172.30.0.41',
          clusterIPs: ['172.30.0.41', 'FD00:1234::41'],
          externalIPs: ['192.0.2.1', '2001:DB8::1', '192.0.2.2'],
          loadBalancerSourceRanges: [' 203.0.113.0/25 ', '2001:db8:1::/48', '198.51.100.7/24'],
          type: 'LoadBalancer',
          ports: [{ name: 'p80', port: 80, nodePort: 30080 }],
        }, { status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }, { ip: '2001:db8::9' }] } } }),
      ),
    );
    const [a] = r.service.ports.IPv4;
    const [b] = r.service.ports.IPv6;
    assert.equal(a!.clusterIP, '172.30.0.41');
    assert.deepEqual(a!.externalIPs, ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual(a!.loadBalancerIPs, ['198.51.100.1']);
    assert.deepEqual(a!.loadBalancerSourceRanges, ['203.0.113.0/25', '198.51.100.0/24']);
    assert.equal(b!.clusterIP, 'fd00:1234::41', 'IPv6 normalized to lower-case compressed form');
    assert.deepEqual(b!.externalIPs, ['2001:db8::1']);
    assert.deepEqual(b!.loadBalancerIPs, ['2001:db8::9']);
    assert.deepEqual(b!.loadBalancerSourceRanges, ['2001:db8:1::/48']);
    assert.equal(a!.nodePort, 30080);
    assert.equal(b!.nodePort, 30080);
  });

  test('single-stack service has no ports in the other family', () => {
    const r = ok(parseService(svc({ externalIPs: ['2001:db8::1'] })));
    assert.equal(r.service.ports.IPv4.length, 1);
    assert.equal(r.service.ports.IPv6.length, 0);
  });

  test('clusterIP is used when clusterIPs is absent', () => {
    const r = ok(parseService(svc({ clusterIP: 'fd00::10' })));
    assert.equal(r.service.ports.IPv6[0]!.clusterIP, 'fd00::10');
    assert.equal(r.service.ports.IPv4.length, 0);
  });

  test('ipMode Proxy ingress is excluded, VIP and unset kept; hostname-only ignored', () => {
    const [p] = v4(
      parseService(
        svc({ type: 'LoadBalancer', ports: [{ port: 80, nodePort: 30001 }] }, {
          status: {
            loadBalancer: {
              ingress: [
                { ip: '198.51.100.1', ipMode: 'Proxy' },
                { ip: '198.51.100.2', ipMode: 'VIP' },
                { ip: '198.51.100.3' },
                { hostname: 'lb.example.com' },
              ],
            },
          },
        }),
      ),
    );
    assert.deepEqual(p!.loadBalancerIPs, ['198.51.100.2', '198.51.100.3']);
  });

  test('invalid and IPv4-mapped IPs are dropped per field with a reason', () => {
    const r = ok(
      parseService(svc({ externalIPs: ['192.0.2.1', '::ffff:192.0.2.9', 'not-an-ip', '010.1.1.1'], loadBalancerSourceRanges: ['10.0.0.0/33', 'x'] })),
    );
    assert.deepEqual(r.service.ports.IPv4[0]!.externalIPs, ['192.0.2.1']);
    assert.deepEqual(r.service.ports.IPv4[0]!.loadBalancerSourceRanges, []);
    const reasons = r.problems.map((p) => p.reason).sort();
    assert.deepEqual(reasons, [
      'invalid-external-ip',
      'invalid-external-ip',
      'invalid-external-ip',
      'invalid-source-range',
      'invalid-source-range',
    ]);
  });

  test('invalid cluster IP makes the service invalid', () => {
    const r = parseService(svc({ clusterIP: '300.1.1.1' }));
    assert.equal(r.status, 'invalid');
    assert.equal(r.status === 'invalid' && r.reason, 'invalid-cluster-ip');
  });
});

describe('parseService: ports', () => {
  test('bad ports are dropped, good ones kept', () => {
    const ports = v4(
      parseService(
        svc({
          type: 'NodePort',
          ports: [
            { name: 'ok', port: 80, nodePort: 30080 },
            { name: 'zero', port: 0 },
            { name: 'big', port: 65536 },
            { name: 'frac', port: 80.5 },
            { name: 'proto', port: 81, protocol: 'ICMP' },
            { name: 'np', port: 82, nodePort: 70000 },
            { name: 'Bad_Name', port: 83 },
            { name: 'ok', port: 84 },
            { name: 'udp', port: 53, protocol: 'UDP' },
            { name: 'sctp', port: 9, protocol: 'SCTP' },
          ],
        }),
      ),
    );
    assert.deepEqual(
      ports.map((p) => `${p.portName}/${p.protocol}/${p.port}/${p.nodePort}`),
      ['ok/TCP/80/30080', 'udp/UDP/53/0', 'sctp/SCTP/9/0'],
    );
  });

  test('nodePort ignored for ClusterIP services', () => {
    const [p] = v4(parseService(svc({ ports: [{ port: 80, nodePort: 30080 }] })));
    assert.equal(p!.nodePort, 0);
  });

  test('too many ports: the service is skipped as invalid', () => {
    const ports = Array.from({ length: 5000 }, (_, i) => ({ name: `p${i}`, port: (i % 65535) + 1 }));
    const r = parseService(svc({ ports }));
    assert.equal(r.status, 'invalid');
  });
});

describe('parseService: affinity and policies', () => {
  test('ClientIP affinity defaults its timeout to 10800 seconds', () => {
    assert.equal(v4(parseService(svc({ sessionAffinity: 'ClientIP' })))[0]!.sessionAffinity.clientIPTimeoutSeconds, 10800);
    const custom = svc({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } });
    assert.equal(v4(parseService(custom))[0]!.sessionAffinity.clientIPTimeoutSeconds, 60);
    const bad = svc({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: -5 } } });
    const r = ok(parseService(bad));
    assert.equal(r.service.ports.IPv4[0]!.sessionAffinity.clientIPTimeoutSeconds, 10800);
    assert.deepEqual(r.problems.map((p) => p.reason), ['invalid-session-affinity-timeout']);
    assert.equal(v4(parseService(svc({ sessionAffinity: 'None' })))[0]!.sessionAffinity.clientIPTimeoutSeconds, undefined);
  });

  test('externalTrafficPolicy Local only counts for externally reachable services', () => {
    const clusterOnly = v4(parseService(svc({ externalTrafficPolicy: 'Local' })))[0]!;
    assert.equal(clusterOnly.externalPolicyLocal, false);
    const withExternalIP = v4(parseService(svc({ externalTrafficPolicy: 'Local', externalIPs: ['192.0.2.1'] })))[0]!;
    assert.equal(withExternalIP.externalPolicyLocal, true);
    const nodePort = v4(parseService(svc({ type: 'NodePort', externalTrafficPolicy: 'Local' })))[0]!;
    assert.equal(nodePort.externalPolicyLocal, true);
    assert.equal(nodePort.healthCheckNodePort, 0, 'health check node port only for LoadBalancer');
  });

  test('healthCheckNodePort only with LoadBalancer and eTP Local', () => {
    const lbLocal = svc({ type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 });
    assert.equal(v4(parseService(lbLocal))[0]!.healthCheckNodePort, 32000);
    const lbCluster = svc({ type: 'LoadBalancer', externalTrafficPolicy: 'Cluster', healthCheckNodePort: 32000 });
    assert.equal(v4(parseService(lbCluster))[0]!.healthCheckNodePort, 0);
  });

  test('internalTrafficPolicy and trafficDistribution are carried', () => {
    const [p] = v4(parseService(svc({ internalTrafficPolicy: 'Local', trafficDistribution: 'PreferClose' })));
    assert.equal(p!.internalPolicyLocal, true);
    assert.equal(p!.trafficDistribution, 'PreferClose');
    assert.equal(p!.type, 'ClusterIP');
  });
});

describe('parseService: bad input', () => {
  const cases: Array<[string, unknown, string]> = [
    ['null', null, 'invalid-metadata'],
    ['no metadata', { spec: {} }, 'invalid-metadata'],
    ['1 MB name', { metadata: { namespace: 'ns', name: 'a'.repeat(1 << 20) }, spec: { clusterIP: '10.0.0.1' } }, 'invalid-metadata'],
    ['bad namespace', { metadata: { namespace: 'NS!', name: 'x' }, spec: { clusterIP: '10.0.0.1' } }, 'invalid-metadata'],
    ['no spec', { metadata: { namespace: 'ns', name: 'x' } }, 'invalid-spec'],
    ['unknown type', { metadata: { namespace: 'ns', name: 'x' }, spec: { type: 'Magic', clusterIP: '10.0.0.1' } }, 'invalid-type'],
    ['ports not a list', { metadata: { namespace: 'ns', name: 'x' }, spec: { clusterIP: '10.0.0.1', ports: 'x' } }, 'invalid-ports'],
    ['clusterIPs not a list', { metadata: { namespace: 'ns', name: 'x' }, spec: { clusterIPs: 5 } }, 'invalid-cluster-ip'],
    ['labels not an object', { metadata: { namespace: 'ns', name: 'x', labels: 'x' }, spec: { clusterIP: '10.0.0.1' } }, 'invalid-labels'],
  ];
  for (const [name, obj, reason] of cases) {
    test(name, () => {
      const r = parseService(obj);
      assert.equal(r.status, 'invalid');
      assert.equal(r.status === 'invalid' && r.reason, reason);
    });
  }
});

describe('IP and CIDR normalization', () => {
  test('IPs', () => {
    const cases: Array<[string, string | undefined]> = [
      ['10.0.0.1', '10.0.0.1'],
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
      ['::', '::'],
      ['::1.2.3.4', '::102:304'],
      ['::ffff:1.2.3.4', undefined],
      ['fe80::1%eth0', undefined],
      ['1.2.3', undefined],
      ['1.2.3.4.5', undefined],
      ['01.2.3.4', undefined],
      ['256.1.1.1', undefined],
      ['1::2::3', undefined],
      ['12345::1', undefined],
      ['', undefined],
    ];
    for (const [input, want] of cases) assert.equal(parseIP(input)?.ip, want, input);
  });

  test('CIDRs', () => {
    const cases: Array<[string, string | undefined]> = [
      ['10.1.2.3/8', '10.0.0.0/8'],
      ['0.0.0.0/0', '0.0.0.0/0'],
      ['2001:db8::1/32', '2001:db8::/32'],
      ['ffff::ffff/127', 'ffff::fffe/127'],
      ['10.0.0.0/33', undefined],
      ['10.0.0.0/08', undefined],
      ['10.0.0.0', undefined],
      ['::/129', undefined],
    ];
    for (const [input, want] of cases) assert.equal(parseCIDR(input)?.cidr, want, input);
  });
});
