// Randomized clusters, partly invalid, through the real model and the real nftables backend in a
// network namespace: every sync, full or partial, must be accepted by the kernel, and what the
// kernel holds afterwards must equal a fresh full render of the same snapshot.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { readTable } from '../../src/backend/nftables/readback.js';
import { NftablesBackend } from '../../src/backend/nftables/backend.js';
import type { NftSet } from '../../src/backend/nftables/layout.js';
import { render } from '../../src/backend/nftables/render.js';
import type { BackendConfig } from '../../src/backend/types.js';
import type { EndpointSlice, KubeObject, Service } from '../../src/model/k8s.js';
import { ProxyModel } from '../../src/model/tracker.js';
import type { IPFamily } from '../../src/model/types.js';
import { useNetns } from '../support/netns.js';
import { rng } from '../support/snapshots.js';

const { wrap } = useNetns(`kptrnd-${randomBytes(3).toString('hex')}`);

class Gen {
  constructor(readonly r: () => number) {}
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!;
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
}

const PROTOCOLS = ['TCP', 'UDP', 'SCTP', 'tcp', 'ICMP'] as const;

function service(g: Gen, i: number): Service {
  const dual = g.chance(0.3);
  const v4 = `10.96.${i >> 8}.${i & 255}`;
  const v6 = `fd00:96::${i.toString(16)}`;
  const type = g.pick(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName', 'ClusterIP']);
  const ports = Array.from({ length: g.int(1, 3) }, (_, j) => ({
    name: `p${j}`,
    protocol: g.pick(PROTOCOLS),
    port: g.chance(0.05) ? 70000 : g.int(1, 65535),
    targetPort: 8080,
    nodePort: type === 'ClusterIP' ? undefined : g.chance(0.1) ? 0 : 30000 + ((i * 3 + j) % 2768),
  }));
  const lb = type === 'LoadBalancer';
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `svc${i}`, namespace: g.pick(['default', 'ns1']) },
    spec: {
      type,
      clusterIP: g.chance(0.05) ? 'None' : g.chance(0.03) ? 'not-an-ip' : v4,
      clusterIPs: dual ? [v4, v6] : undefined,
      ports,
      externalIPs: g.chance(0.2) ? [`203.0.113.${i & 255}`, ...(dual ? [`2001:db8::${i.toString(16)}`] : [])] : undefined,
      sessionAffinity: g.chance(0.15) ? 'ClientIP' : 'None',
      sessionAffinityConfig: g.chance(0.5) ? { clientIP: { timeoutSeconds: g.int(1, 86400) } } : undefined,
      externalTrafficPolicy: g.chance(0.4) ? 'Local' : 'Cluster',
      internalTrafficPolicy: g.chance(0.2) ? 'Local' : 'Cluster',
      loadBalancerSourceRanges: lb && g.chance(0.5) ? [g.pick(['10.0.0.0/8', '10.0.0.0/24', '192.0.2.0/24', 'bogus', '10.1.0.0/16'])] : undefined,
    },
    status: lb
      ? { loadBalancer: { ingress: [{ ip: `192.0.2.${i & 255}`, ipMode: g.chance(0.2) ? 'Proxy' : 'VIP' }] } }
      : undefined,
  };
}

function slice(g: Gen, svc: Service, family: IPFamily): EndpointSlice {
  const name = svc.metadata!.name!;
  const v6 = family === 'IPv6';
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-${family.toLowerCase()}`, namespace: svc.metadata!.namespace, labels: { 'kubernetes.io/service-name': name } },
    addressType: family,
    ports: (svc.spec!.ports ?? []).map((p) => ({ name: p.name, port: g.int(1, 65535), protocol: p.protocol })),
    endpoints: Array.from({ length: g.int(0, 6) }, () => {
      const node = g.pick(['node-1', 'node-2']);
      const host = g.int(2, 250);
      const subnet = node === 'node-1' ? 1 : 2;
      return {
        addresses: [g.chance(0.02) ? '999.1.1.1' : v6 ? `fd00:244:${subnet}::${host.toString(16)}` : `10.244.${subnet}.${host}`],
        conditions: { ready: g.chance(0.8), serving: g.chance(0.9), terminating: g.chance(0.2) },
        nodeName: node,
        zone: g.pick(['a', 'b']),
      };
    }),
  };
}

const node: KubeObject = {
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: 'node-1', labels: { 'topology.kubernetes.io/zone': 'a' } },
  spec: { podCIDRs: ['10.244.1.0/24', 'fd00:244:1::/64'] },
  status: { addresses: [{ type: 'InternalIP', address: '10.0.0.1' }, { type: 'InternalIP', address: 'fd00:10::1' }] },
} as KubeObject;

function configFor(family: IPFamily): BackendConfig {
  const v6 = family === 'IPv6';
  return {
    family,
    masqueradeAll: false,
    masqueradeBit: 14,
    detectLocalMode: 'ClusterCIDR',
    localCIDRs: [v6 ? 'fd00:244::/32' : '10.244.0.0/16'],
    bridgeInterface: '',
    interfaceNamePrefix: '',
    nodePortAddresses: [],
    nodeIPs: [v6 ? 'fd00:10::1' : '10.0.0.1'],
  };
}


for (const seed of [1, 2, 3]) {
  test(`random cluster, seed ${seed}: 8 rounds of changes, every sync accepted and kernel = render`, async () => {
    const g = new Gen(rng(seed));
    const model = new ProxyModel({ nodeName: 'node-1' });
    model.apply({ kind: 'Node', type: 'ADDED', object: node });
    const services = new Map<number, Service>();
    const put = (i: number): void => {
      const svc = service(g, i);
      const type = services.has(i) ? 'MODIFIED' : 'ADDED';
      services.set(i, svc);
      model.apply({ kind: 'Service', type, object: svc });
      for (const fam of ['IPv4', 'IPv6'] as const) model.apply({ kind: 'EndpointSlice', type, object: slice(g, svc, fam) });
    };
    for (let i = 0; i < 60; i++) put(i);
    const backends = new Map((['IPv4', 'IPv6'] as const).map((f) => [f, new NftablesBackend(configFor(f), { wrap, removeLeftovers: false })]));
    try {
      for (let round = 0; round < 8; round++) {
        for (const [family, be] of backends) {
          const snap = model.snapshot(family);
          await be.sync(snap); // throws NftError if the kernel refuses anything
          const kernel = await readTable(family === 'IPv4' ? 'ip' : 'ip6', { wrap });
          assert.ok(kernel, `${family} table exists`);
          const want = render(snap, configFor(family));
          for (const s of want.sets) {
            if (s.dynamic) continue;
            const got: NftSet | undefined = kernel.sets.find((x) => x.name === s.name);
            assert.ok(got, `set ${s.name} in the kernel`);
            assert.deepEqual(new Map([...got.elements].sort()), new Map([...s.elements].sort()), `seed ${seed} round ${round} ${family} set ${s.name}`);
          }
          assert.deepEqual(kernel.chains.map((c) => c.name).sort(), want.chains.map((c) => c.name).sort(), `seed ${seed} round ${round} ${family} chains`);
        }
        // Change a random handful: edit, delete, add back.
        for (let k = 0; k < 6; k++) {
          const i = g.int(0, 69);
          if (services.has(i) && g.chance(0.3)) {
            const svc = services.get(i)!;
            services.delete(i);
            model.apply({ kind: 'Service', type: 'DELETED', object: svc });
          } else put(i);
        }
      }
    } finally {
      for (const be of backends.values()) await be.cleanup();
    }
  });
}
