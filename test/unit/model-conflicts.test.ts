import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ProxyModel } from '../../src/model/tracker.js';
import { parseService, type ParsedService } from '../../src/model/service.js';
import { ConflictResolver, resolveConflicts } from '../../src/model/conflicts.js';
import { unusableExternalIP } from '../../src/model/addresses.js';
import type { KubeObject } from '../../src/model/k8s.js';
import type { EventType, SourceEvent } from '../../src/source/types.js';

function svc(name: string, spec: Record<string, unknown>, created?: string, ns = 'default'): KubeObject {
  return {
    metadata: { namespace: ns, name, ...(created ? { creationTimestamp: created } : {}) },
    spec: { ports: [{ name: 'http', port: 80, protocol: 'TCP' }], ...spec },
  } as KubeObject;
}

const ev = (object: KubeObject, type: EventType = 'ADDED'): SourceEvent => ({ kind: 'Service', type, object });

function programmed(m: ProxyModel): string[] {
  const snap = m.snapshot('IPv4');
  return [...snap.services.values()].map((s) => `${s.info.name} ${s.info.clusterIP} ${s.info.nodePort} [${s.info.externalIPs.join(',')}]`).sort();
}

describe('cross-Service conflicts', () => {
  test('same ClusterIP and port: the older Service wins whatever the arrival order; the loser takes over when it goes', () => {
    const older = svc('a-old', { clusterIP: '10.96.0.10' }, '2024-01-01T00:00:00Z');
    const newer = svc('b-new', { clusterIP: '10.96.0.10' }, '2024-02-01T00:00:00Z');
    for (const order of [[older, newer], [newer, older]]) {
      const m = new ProxyModel({ nodeName: 'n', families: ['IPv4'] });
      for (const o of order) m.apply(ev(o));
      assert.deepEqual(programmed(m), ['default/a-old:http 10.96.0.10 0 []']);
      m.apply(ev(older, 'DELETED'));
      assert.deepEqual(programmed(m), ['default/b-new:http 10.96.0.10 0 []']);
    }
  });

  test('same ClusterIP, other port: both programmed', () => {
    const m = new ProxyModel({ nodeName: 'n', families: ['IPv4'] });
    m.apply(ev(svc('a', { clusterIP: '10.96.0.10' })));
    m.apply(ev(svc('b', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 81 }] })));
    assert.equal(programmed(m).length, 2);
  });

  test('same NodePort: older wins; without timestamps namespace/name decides', () => {
    const m = new ProxyModel({ nodeName: 'n', families: ['IPv4'] });
    m.apply(ev(svc('zz', { type: 'NodePort', clusterIP: '10.96.0.2', ports: [{ port: 80, nodePort: 30080 }] })));
    m.apply(ev(svc('aa', { type: 'NodePort', clusterIP: '10.96.0.1', ports: [{ port: 80, nodePort: 30080 }] })));
    assert.deepEqual(programmed(m), ['default/aa 10.96.0.1 30080 []']);
    // A timestamp makes zz older than aa (no timestamp counts as newest).
    m.apply(ev(svc('zz', { type: 'NodePort', clusterIP: '10.96.0.2', ports: [{ port: 80, nodePort: 30080 }] }, '2020-01-01T00:00:00Z'), 'MODIFIED'));
    assert.deepEqual(programmed(m), ['default/zz 10.96.0.2 30080 []']);
  });

  test("an external IP equal to another Service's ClusterIP is dropped; the valid one stays", () => {
    const m = new ProxyModel({ nodeName: 'n', families: ['IPv4'] });
    m.apply(ev(svc('victim', { clusterIP: '10.96.0.10' })));
    m.apply(ev(svc('thief', { clusterIP: '10.96.0.20', externalIPs: ['10.96.0.10', '192.0.2.7'] })));
    assert.deepEqual(programmed(m), ['default/thief:http 10.96.0.20 0 [192.0.2.7]', 'default/victim:http 10.96.0.10 0 []']);
    // The victim goes away: the external IP is no longer anybody's ClusterIP.
    m.apply(ev(svc('victim', { clusterIP: '10.96.0.10' }), 'DELETED'));
    assert.deepEqual(programmed(m), ['default/thief:http 10.96.0.20 0 [10.96.0.10,192.0.2.7]']);
  });
});

describe('conflicts resolved one change at a time', () => {
  // A small deterministic generator (no dependency), so a failure reproduces.
  function rng(seed: number): () => number {
    let x = seed;
    return () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  }

  test('after each of 400 random changes, the result equals a resolution of all Services from scratch', () => {
    const IPS = ['10.96.0.1', '10.96.0.2', '10.96.0.3', '10.96.0.4'];
    for (const seed of [1, 7, 42]) {
      const rand = rng(seed);
      const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
      const services = new Map<string, ParsedService>();
      const resolver = new ConflictResolver();
      for (let step = 0; step < 400; step++) {
        const name = `s${Math.floor(rand() * 12)}`;
        const key = `default/${name}`;
        if (rand() < 0.25) services.delete(key);
        else {
          const r = parseService(
            svc(
              name,
              {
                type: 'NodePort',
                clusterIP: pick(IPS),
                externalIPs: rand() < 0.4 ? [pick(IPS)] : [],
                ports: [{ name: 'p', port: pick([80, 81]), nodePort: pick([30001, 30002, 30003]), protocol: 'TCP' }],
              },
              `2024-01-0${1 + Math.floor(rand() * 3)}T00:00:00Z`,
            ),
          );
          assert.equal(r.status, 'ok');
          if (r.status === 'ok') services.set(key, r.service);
        }
        // Now and then every Service at once, as at the first snapshot.
        resolver.update(services, rand() < 0.1 ? [...services.keys(), key] : [key]);
        const scratch = resolveConflicts(services.values());
        const sorted = <T>(m: Map<string, T>): Array<[string, T]> => [...m].sort(([a], [b]) => (a < b ? -1 : 1));
        const ids = (cs: Array<{ service: string; reason: string; detail: string }>): string[] => cs.map((c) => `${c.service} ${c.reason} ${c.detail}`).sort();
        assert.deepEqual(sorted(resolver.effective), sorted(scratch.effective), `seed ${seed} step ${step}`);
        assert.deepEqual(ids(resolver.all()), ids(scratch.conflicts), `seed ${seed} step ${step}`);
        // A new resolver given everything (a restart's first snapshot) agrees too.
        const fresh = new ConflictResolver();
        fresh.update(services, services.keys());
        assert.deepEqual(sorted(fresh.effective), sorted(scratch.effective), `fresh, seed ${seed} step ${step}`);
        assert.deepEqual(ids(fresh.all()), ids(scratch.conflicts), `fresh, seed ${seed} step ${step}`);
      }
    }
  });

  test('a change re-resolves only the Services it shares a claim with', () => {
    const services = new Map<string, ParsedService>();
    const resolver = new ConflictResolver();
    for (let i = 0; i < 50; i++) {
      const r = parseService(svc(`s${i}`, { clusterIP: `10.96.1.${i}` }));
      if (r.status === 'ok') services.set(r.service.key, r.service);
    }
    resolver.update(services, services.keys());
    const r = parseService(svc('zz', { clusterIP: '10.96.1.7' }));
    if (r.status === 'ok') services.set(r.service.key, r.service);
    const { previous } = resolver.update(services, ['default/zz']);
    assert.deepEqual([...previous.keys()].sort(), ['default/s7', 'default/zz']);
    assert.equal(resolver.effective.get('default/zz')?.ports.IPv4.length, 0, 'the later name loses the shared ClusterIP:port (no timestamps)');
  });
});

describe('per-Service fail-closed input', () => {
  test('unusable external IPs are dropped with a reason; valid ones stay', () => {
    const r = parseService(svc('x', { clusterIP: '10.96.0.1', externalIPs: ['127.0.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '169.254.1.1', '::1', 'ff02::1', 'fe80::1', '::', '192.0.2.1'] }));
    assert.equal(r.status, 'ok');
    if (r.status !== 'ok') return;
    assert.deepEqual(r.service.ports.IPv4[0]!.externalIPs, ['192.0.2.1']);
    assert.equal(r.problems.filter((p) => p.reason === 'unusable-external-ip').length, 9);
  });

  test('unusableExternalIP names the class', () => {
    assert.equal(unusableExternalIP('127.5.5.5'), 'loopback');
    assert.equal(unusableExternalIP('239.1.1.1'), 'multicast');
    assert.equal(unusableExternalIP('255.255.255.255'), 'broadcast');
    assert.equal(unusableExternalIP('fe80::9'), 'link-local');
    assert.equal(unusableExternalIP('203.0.113.9'), null);
  });

  test('loadBalancerSourceRanges with no usable entry for a family deny all in that family', () => {
    const lb = (ranges: unknown): ReturnType<typeof parseService> =>
      parseService(svc('lb', { type: 'LoadBalancer', clusterIPs: ['10.96.0.1', 'fd00::1'], loadBalancerSourceRanges: ranges }));
    const only = (r: ReturnType<typeof parseService>, f: 'IPv4' | 'IPv6'): boolean | undefined =>
      r.status === 'ok' ? r.service.ports[f][0]!.sourceRangesDenyAll : undefined;
    let r = lb(['not-a-cidr']);
    assert.equal(only(r, 'IPv4'), true);
    assert.equal(only(r, 'IPv6'), true);
    r = lb(['192.0.2.0/24']);
    assert.equal(only(r, 'IPv4'), undefined);
    assert.equal(only(r, 'IPv6'), true);
    r = lb('garbage');
    assert.equal(only(r, 'IPv4'), true);
    r = lb([]);
    assert.equal(only(r, 'IPv4'), undefined);
    r = lb(undefined);
    assert.equal(only(r, 'IPv6'), undefined);
  });

  test('an invalid name of any length is named in full enough to find it', () => {
    const long = 'x'.repeat(5000);
    const r = parseService({ metadata: { namespace: 'default', name: long }, spec: {} } as KubeObject);
    assert.equal(r.status, 'invalid');
    if (r.status === 'invalid') assert.match(r.key, /^default\/x{253}\.\.\.\(5000 chars\)$/);
  });
});
