// Property test: random and hostile API objects (bad CIDRs and IPs, huge and deeply nested
// values, duplicate ClusterIPs, ports and NodePorts, external IPs that are loopback or another
// Service's ClusterIP, names of every length) through the model and both kernel renderers.
// Nothing may throw, and every rendered ruleset must pass the kernel's own checkers inside a
// throwaway network namespace: `nft -c -f -` for nftables, `iptables-restore --test` and
// `ip6tables-restore --test` (nft and legacy flavours) for iptables.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { render as renderIptables, toRestoreInput } from '../../src/backend/iptables/render.js';
import { render } from '../../src/backend/nftables/render.js';
import { toNftScript } from '../../src/backend/nftables/script.js';
import type { BackendConfig } from '../../src/backend/types.js';
import type { KubeObject } from '../../src/model/k8s.js';
import { ProxyModel } from '../../src/model/tracker.js';
import type { IPFamily } from '../../src/model/types.js';
import { useNetns } from '../support/netns.js';
import { rng } from '../support/snapshots.js';

const ns = useNetns(`kpthost-${randomBytes(3).toString('hex')}`);

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

/** An object nested `depth` levels deep, built without recursion. */
function deep(depth: number): unknown {
  let o: unknown = 'bottom';
  for (let i = 0; i < depth; i++) o = i % 2 ? { a: o } : [o];
  return o;
}

const DEEP = deep(100_000);
const HUGE = 'x'.repeat(1 << 20);
const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789-.';

function name(g: Gen): string {
  if (g.chance(0.05)) return HUGE;
  if (g.chance(0.05)) return g.pick(['', 'UPPER', 'with space', 'ünïcode', '-lead', 'trail-', 'a/b', '"quote', 'semi;colon', '\u0000nul']);
  const len = g.pick([1, 2, 62, 63, 64, 252, 253, 254, g.int(1, 300)]);
  let s = '';
  for (let i = 0; i < len; i++) s += NAME_CHARS[g.int(0, NAME_CHARS.length - 1)];
  return s;
}

const CLUSTER_IPS = ['10.96.0.1', '10.96.0.2', '10.96.0.3', 'fd00:96::1', 'fd00:96::2'];
const ODD_IPS = ['127.0.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '169.254.1.1', '::1', '::', 'ff02::1', 'fe80::1', '::ffff:10.0.0.1', '010.1.1.1', '1.2.3', '1.2.3.4/32', '', 'garbage'];
const CIDRS = ['10.0.0.0/8', '192.0.2.0/24', '2001:db8::/32', '10.0.0.1/33', 'bogus', '0.0.0.0/0', '::/0', ' 10.1.0.0/16 ', '10.0.0.0/08', '1.2.3.4'];

function value(g: Gen, good: () => unknown): unknown {
  if (g.chance(0.85)) return good();
  return g.pick([DEEP, HUGE, null, 42, -1, 1e308, true, {}, [], 'string', Array.from({ length: 5000 }, (_, i) => `203.0.113.${i & 255}`)]);
}

function service(g: Gen): KubeObject {
  const type = g.pick(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName', 'Bogus']);
  const ips = g.chance(0.3) ? [g.pick(CLUSTER_IPS.slice(0, 3)), g.pick(CLUSTER_IPS.slice(3))] : [g.pick([...CLUSTER_IPS, ...ODD_IPS.slice(0, 3)])];
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      // Some valid names, so that slices attach and endpoint rules are rendered too.
      name: value(g, () => (g.chance(0.4) ? g.pick(['web', 'api', 'db', `svc-${g.int(0, 40)}`]) : name(g))),
      namespace: value(g, () => g.pick(['default', 'ns1', name(g)])),
      creationTimestamp: value(g, () => g.pick(['2024-01-01T00:00:00Z', '2023-06-01T00:00:00Z', 'not a time'])),
      annotations: g.chance(0.1) ? { deep: DEEP } : undefined,
    },
    spec: {
      type,
      clusterIP: ips[0],
      clusterIPs: value(g, () => ips),
      ports: value(g, () =>
        Array.from({ length: g.int(0, 3) }, (_, j) => ({
          name: value(g, () => g.pick([`p${j}`, 'p0', name(g)])),
          protocol: g.pick(['TCP', 'UDP', 'SCTP', 'ICMP', undefined]),
          port: value(g, () => g.pick([80, 443, 53, 0, 65536])),
          nodePort: value(g, () => g.pick([30000, 30001, 0, 70000])),
        })),
      ),
      externalIPs: value(g, () => Array.from({ length: g.int(0, 4) }, () => g.pick([...CLUSTER_IPS, ...ODD_IPS, '203.0.113.7', '2001:db8::7']))),
      loadBalancerSourceRanges: value(g, () => Array.from({ length: g.int(0, 3) }, () => g.pick(CIDRS))),
      sessionAffinity: g.pick(['ClientIP', 'None', 'Bogus']),
      sessionAffinityConfig: value(g, () => ({ clientIP: { timeoutSeconds: g.pick([1, 10800, 86401, -5, 'x']) } })),
      externalTrafficPolicy: g.pick(['Local', 'Cluster', 'Bogus', undefined]),
      internalTrafficPolicy: g.pick(['Local', 'Cluster', undefined]),
      healthCheckNodePort: value(g, () => g.pick([30100, 0, 99999])),
      selector: g.chance(0.1) ? DEEP : undefined,
    },
    status: { loadBalancer: { ingress: value(g, () => [{ ip: g.pick(['192.0.2.10', '192.0.2.11', ...ODD_IPS, '2001:db8::10']), ipMode: g.pick(['VIP', 'Proxy', undefined, 'Odd']) }]) } },
  } as unknown as KubeObject;
}

function slice(g: Gen, svcName: unknown, svcNs: unknown): KubeObject {
  const family = g.pick(['IPv4', 'IPv6', 'FQDN', 'Bogus']);
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: value(g, () => (g.chance(0.5) ? `slice-${g.int(0, 1000)}` : name(g))), namespace: svcNs, labels: value(g, () => ({ 'kubernetes.io/service-name': svcName })) },
    addressType: family,
    ports: value(g, () => [{ name: g.pick(['p0', 'p1', '']), port: value(g, () => g.pick([8080, 0, 70000])), protocol: g.pick(['TCP', 'UDP', 'SCTP']) }]),
    endpoints: value(g, () =>
      Array.from({ length: g.int(0, 4) }, () => ({
        addresses: value(g, () => [g.pick(['10.244.1.5', '10.244.2.6', 'fd00:244:1::5', ...ODD_IPS])]),
        conditions: value(g, () => ({ ready: g.chance(0.8), serving: g.pick([true, false, 'yes']), terminating: g.chance(0.2) })),
        nodeName: value(g, () => g.pick(['node-1', 'node-2', name(g)])),
        zone: g.pick(['a', 'b', undefined]),
        hints: value(g, () => ({ forZones: [{ name: g.pick(['a', 'b']) }] })),
      })),
    ),
  } as unknown as KubeObject;
}

/**
 * A well-formed Service with endpoint slices in both families but random valid settings (type,
 * protocol, affinity, policies, odd source ranges): hostile objects rarely get as far as
 * endpoints, and rules with endpoints must pass the checkers too.
 */
function plausible(g: Gen, n: number): KubeObject[] {
  const name = `ok-${n}`;
  const type = g.pick(['ClusterIP', 'NodePort', 'LoadBalancer']);
  const protocol = g.pick(['TCP', 'UDP', 'SCTP']);
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default', creationTimestamp: '2024-01-01T00:00:00Z' },
    spec: {
      type,
      clusterIP: `10.96.1.${n}`,
      clusterIPs: [`10.96.1.${n}`, `fd00:96::1:${n}`],
      ipFamilies: ['IPv4', 'IPv6'],
      ports: [{ name: 'p0', protocol, port: g.pick([80, 53, 65535]), ...(type === 'ClusterIP' ? {} : { nodePort: 30000 + n }) }],
      externalIPs: g.chance(0.3) ? ['203.0.113.7', '2001:db8::7'] : undefined,
      loadBalancerSourceRanges: type === 'LoadBalancer' && g.chance(0.5) ? Array.from({ length: g.int(1, 3) }, () => g.pick(CIDRS)) : undefined,
      sessionAffinity: g.pick(['ClientIP', 'None']),
      externalTrafficPolicy: type === 'ClusterIP' ? undefined : g.pick(['Local', 'Cluster']),
      internalTrafficPolicy: g.pick(['Local', 'Cluster']),
    },
    status: type === 'LoadBalancer' ? { loadBalancer: { ingress: [{ ip: `192.0.2.${n}` }, { ip: `2001:db8::1:${n}` }] } } : {},
  };
  const slices = (['IPv4', 'IPv6'] as const).map((family) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-${family.toLowerCase()}`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
    addressType: family,
    ports: [{ name: 'p0', port: g.pick([8080, 1, 65535]), protocol }],
    endpoints: Array.from({ length: g.int(1, 4) }, (_, i) => ({
      addresses: [family === 'IPv4' ? `10.244.${1 + (i % 2)}.${n}` : `fd00:244:${1 + (i % 2)}::${n}`],
      conditions: { ready: g.chance(0.8), serving: g.chance(0.9), terminating: g.chance(0.2) },
      nodeName: `node-${1 + (i % 2)}`,
    })),
  }));
  return [svc, ...slices] as unknown as KubeObject[];
}

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

/** The kernel's checker; returns its complaint, or '' when the ruleset is accepted. */
function nftCheck(script: string): string {
  try {
    execFileSync('ip', ['netns', 'exec', ns.name, 'nft', '-c', '-f', '-'], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
    return '';
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? err).slice(0, 2000);
  }
}

/** iptables-restore's test mode for a family and flavour; returns its complaint, or '' when the input is accepted. */
function iptablesCheck(input: string, family: IPFamily, flavour: 'nft' | 'legacy'): string {
  const tool = `${family === 'IPv6' ? 'ip6tables' : 'iptables'}-${flavour}-restore`;
  try {
    execFileSync('ip', ['netns', 'exec', ns.name, tool, '--test'], { input, stdio: ['pipe', 'pipe', 'pipe'] });
    return '';
  } catch (err) {
    return `${tool}: ${String((err as { stderr?: Buffer }).stderr ?? err).slice(0, 2000)}`;
  }
}

for (const seed of [11, 12, 13, 14]) {
  test(`hostile objects, seed ${seed}: no throw; every ruleset passes nft -c and iptables-restore --test`, () => {
    const g = new Gen(rng(seed));
    const model = new ProxyModel({ nodeName: 'node-1' });
    model.apply({ kind: 'Node', type: 'ADDED', object: { metadata: { name: 'node-1', labels: { 'topology.kubernetes.io/zone': 'a' } } } as KubeObject });
    const live: KubeObject[] = [];
    let withEndpoints = 0;
    const orig = process.stderr.write.bind(process.stderr);
    // The model logs every bad object; thousands of warnings would drown the test output.
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      for (let round = 0; round < 4; round++) {
        for (let k = 0; k < 40; k++) {
          if (live.length > 0 && g.chance(0.15)) {
            const gone = live.splice(g.int(0, live.length - 1), 1)[0]!;
            model.apply({ kind: gone.kind === 'Service' ? 'Service' : 'EndpointSlice', type: 'DELETED', object: gone });
            continue;
          }
          const svc = service(g);
          live.push(svc);
          model.apply({ kind: 'Service', type: g.pick(['ADDED', 'MODIFIED']), object: svc });
          const s = slice(g, svc.metadata?.name, svc.metadata?.namespace);
          live.push(s);
          model.apply({ kind: 'EndpointSlice', type: 'ADDED', object: s });
        }
        for (const o of plausible(g, 10 * round + g.int(0, 9))) {
          model.apply({ kind: o.kind === 'Service' ? 'Service' : 'EndpointSlice', type: 'ADDED', object: o });
        }
        for (const family of ['IPv4', 'IPv6'] as const) {
          const snap = model.snapshot(family);
          const script = toNftScript(render(snap, configFor(family)));
          const complaint = nftCheck(script);
          assert.equal(complaint, '', `seed ${seed} round ${round} ${family}`);
          const input = toRestoreInput(renderIptables(snap, configFor(family)));
          if (/^-A KUBE-SEP-/m.test(input)) withEndpoints++;
          for (const flavour of ['nft', 'legacy'] as const) {
            assert.equal(iptablesCheck(input, family, flavour), '', `seed ${seed} round ${round} ${family} iptables-${flavour}`);
          }
        }
      }
    } finally {
      process.stderr.write = orig;
    }
    // Rulesets without Service endpoints would prove little about the iptables renderer.
    assert.ok(withEndpoints > 0, `seed ${seed}: some iptables ruleset has endpoint chains`);
    // Internal errors would show up as skipped objects of their own reason.
    assert.equal(model.invalidObjects.get('Event/internal-error'), undefined);
  });
}
