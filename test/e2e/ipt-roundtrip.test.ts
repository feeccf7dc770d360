// Loads rendered iptables rulesets into real kernels (legacy x_tables and nf_tables, each in its
// own throwaway network namespace) and checks that iptables-save prints back exactly what was
// rendered: the renderer's text is the canonical form the backend compares the kernel against.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  baseChains,
  jumpRules,
  render,
  renderContext,
  renderServicePort,
  toRestoreInput,
  type IptChain,
  type IptRuleset,
  type IptTable,
} from '../../src/backend/iptables/render.js';
import { FragmentStore } from '../../src/backend/common/fragment-store.js';
import type { StoreOp } from '../../src/backend/common/fragment.js';
import type { BackendConfig } from '../../src/backend/types.js';
import type { ServicePortState } from '../../src/model/types.js';
import { backendConfig, endpoint, key, localEndpoint, servicePort, snapshot, syntheticCluster, type PortSpec } from '../support/snapshots.js';
import { useNetns } from '../support/netns.js';
import { hooksInput, run, tool, type Flavour } from '../support/iptables.js';

/** Chains of every table as iptables-save lists them: name → rules (text after `-A NAME `). */
function save(ns: string, flavour: Flavour, v6: boolean): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let table = '';
  for (const line of run(ns, [tool(flavour, v6, 'save')]).split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) out.set(`${table}/${line.slice(1).split(' ')[0]}`, []);
    else if (line.startsWith('-A ')) {
      const rest = line.slice(3);
      const sp = rest.indexOf(' ');
      const chain = sp < 0 ? rest : rest.slice(0, sp);
      out.get(`${table}/${chain}`)!.push(sp < 0 ? '' : rest.slice(sp + 1));
    }
  }
  return out;
}

const BUILTIN: Record<IptTable, string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
};

/** A shared chain with its service rules sorted (their order is free), the fixed rules last. */
function sortedItems(config: BackendConfig): (c: IptChain) => IptChain {
  const base = baseChains(renderContext(config));
  return (c) => {
    const b = base.find((x) => x.table === c.table && x.name === c.name);
    if (!b) return c;
    const items = c.rules.slice(0, c.rules.length - b.rules.length);
    return { ...c, rules: [...items.sort(), ...c.rules.slice(items.length)] };
  };
}

/**
 * The kernel holds exactly our chains with exactly the rendered rules, and the hooks. After a
 * partial sync the service rules of a shared chain are in insertion order: compare them as a set.
 */
function assertKernelHas(ns: string, flavour: Flavour, rs: IptRuleset, config: BackendConfig, partial = false): void {
  const v6 = rs.family === 'IPv6';
  const got = save(ns, flavour, v6);
  const rendered = partial ? rs.chains.map(sortedItems(config)) : rs.chains;
  if (partial) for (const [k, rules] of got) got.set(k, sortedItems(config)({ table: k.split('/')[0] as IptTable, name: k.split('/')[1]!, rules }).rules);
  const want = new Map<string, string[]>();
  for (const [table, chains] of Object.entries(BUILTIN)) for (const c of chains) want.set(`${table}/${c}`, []);
  for (const j of jumpRules(renderContext(config))) want.get(`${j.table}/${j.chain}`)!.push(j.rule);
  for (const c of rendered) want.set(`${c.table}/${c.name}`, c.rules);
  // iptables-nft lists only the tables that exist; an untouched table has no chains to compare.
  const ours = (k: string): boolean => Object.keys(BUILTIN).includes(k.split('/')[0]!);
  for (const k of [...got.keys()].filter((k) => ours(k) && !want.has(k))) assert.fail(`unexpected chain ${k}`);
  for (const [k, rules] of want) {
    if (!got.has(k) && rules.length === 0 && !rs.chains.some((c) => `${c.table}/${c.name}` === k)) continue;
    assert.deepEqual(got.get(k), rules, `rules of ${k}`);
  }
}

function flushAll(ns: string, flavour: Flavour, v6: boolean): void {
  for (const t of ['filter', 'nat', 'mangle']) {
    run(ns, [tool(flavour, v6, ''), '-t', t, '-F']);
    run(ns, [tool(flavour, v6, ''), '-t', t, '-X']);
  }
}

const web = (over: PortSpec): ServicePortState => servicePort({ portName: 'http', port: 80, ...over });

/** Every feature of the layout, for one family. */
function everyFeature(v6: boolean): ServicePortState[] {
  const a = (v4: string, v6addr: string): string => (v6 ? v6addr : v4);
  const remote = (n: number, port = 8080) => endpoint(a(`10.244.2.${n}`, `fd00:10:244:2::${n}`), port);
  const local = (n: number, port = 8080) => localEndpoint(a(`10.244.1.${n}`, `fd00:10:244:1::${n}`), port);
  return [
    web({ namespace: 'ns1', serviceName: 'three', clusterIP: a('10.96.0.10', 'fd00:10:96::a'), endpoints: [remote(1), remote(2), local(3)] }),
    web({
      namespace: 'ns1',
      serviceName: 'sticky',
      protocol: 'UDP',
      port: 53,
      portName: '',
      clusterIP: a('10.96.0.11', 'fd00:10:96::b'),
      nodePort: 30053,
      sessionAffinity: { clientIPTimeoutSeconds: 10800 },
      endpoints: [remote(4, 53), local(5, 53)],
    }),
    web({
      namespace: 'ns2',
      serviceName: 'lb-local',
      clusterIP: a('10.96.0.12', 'fd00:10:96::c'),
      nodePort: 30080,
      healthCheckNodePort: 32000,
      externalIPs: [a('192.168.99.1', '2001:db8:99::1')],
      loadBalancerIPs: [a('203.0.113.5', '2001:db8:5::5')],
      loadBalancerSourceRanges: [a('192.168.50.0/24', 'fd00:192::/64'), a('198.51.100.7/32', '2001:db8:7::7/128')],
      externalPolicyLocal: true,
      sessionAffinity: { clientIPTimeoutSeconds: 60 },
      endpoints: [remote(6), local(7)],
    }),
    web({
      namespace: 'ns2',
      serviceName: 'lb-remote',
      clusterIP: a('10.96.0.13', 'fd00:10:96::d'),
      nodePort: 30081,
      externalIPs: [a('192.168.99.2', '2001:db8:99::2')],
      loadBalancerIPs: [a('203.0.113.6', '2001:db8:5::6')],
      loadBalancerSourceRanges: [a('198.51.100.0/24', '2001:db8:100::/48')],
      externalPolicyLocal: true,
      endpoints: [remote(8)],
    }),
    web({ namespace: 'ns3', serviceName: 'itp', clusterIP: a('10.96.0.14', 'fd00:10:96::e'), internalPolicyLocal: true, endpoints: [remote(9), local(10)] }),
    web({ namespace: 'ns3', serviceName: 'itp-none', clusterIP: a('10.96.0.15', 'fd00:10:96::f'), internalPolicyLocal: true, endpoints: [remote(11)] }),
    web({
      namespace: 'ns4',
      serviceName: 'empty',
      clusterIP: a('10.96.0.16', 'fd00:10:96::10'),
      nodePort: 30082,
      externalIPs: [a('192.168.99.3', '2001:db8:99::3')],
      loadBalancerIPs: [a('203.0.113.7', '2001:db8:5::7')],
    }),
    web({ namespace: 'ns4', serviceName: 'sctp', protocol: 'SCTP', port: 9999, clusterIP: a('10.96.0.17', 'fd00:10:96::11'), endpoints: [remote(12, 9999)] }),
    web({
      namespace: 'ns4',
      serviceName: 'deny',
      clusterIP: a('10.96.0.18', 'fd00:10:96::12'),
      loadBalancerIPs: [a('203.0.113.8', '2001:db8:5::8')],
      loadBalancerSourceRanges: ['not-a-cidr'],
      endpoints: [remote(13)],
    }),
  ];
}

/**
 * iptables-restore input for a partial sync, as the store's operations describe it: owned chains
 * created or rewritten whole, service rules inserted at the head of shared chains and deleted by
 * their text, then chains nothing refers to any more removed.
 */
function partialInput(ops: Array<StoreOp<IptChain>>): string {
  const out: string[] = [];
  for (const table of ['filter', 'nat', 'mangle'] as const) {
    const declare: string[] = [];
    const rules: string[] = [];
    const remove: string[] = [];
    for (const op of ops) {
      if (op.kind === 'add-item' || op.kind === 'delete-item') {
        const [t, chain] = op.collection.split('/');
        if (t === table) rules.push(op.kind === 'add-item' ? `-I ${chain} 1 ${op.key}` : `-D ${chain} ${op.key}`);
      } else if (op.kind === 'add-object' || op.kind === 'replace-object' || op.kind === 'delete-object') {
        if (op.object.table !== table) continue;
        declare.push(`:${op.object.name} - [0:0]`);
        if (op.kind === 'delete-object') remove.push(`-X ${op.object.name}`);
        else declare.push(...op.object.rules.map((r) => `-A ${op.object.name} ${r}`));
      } else {
        assert.fail(`unexpected operation ${op.kind}`);
      }
    }
    if (declare.length + rules.length + remove.length === 0) continue;
    const heads = declare.filter((l) => l.startsWith(':'));
    out.push(`*${table}`, ...heads, ...declare.filter((l) => !l.startsWith(':')), ...rules, ...remove, 'COMMIT');
  }
  return out.join('\n') + '\n';
}

/** A later snapshot: some ports kept, one changed (no more local endpoint), some gone, one new. */
function evolve(ports: ServicePortState[], v6: boolean): ServicePortState[] {
  const lbLocal = ports.find((p) => p.info.serviceName === 'lb-local')!;
  const changed = servicePort({ ...lbLocal.info, endpoints: lbLocal.endpoints.filter((e) => !e.isLocal) });
  const added = web({
    namespace: 'ns5',
    serviceName: 'added',
    clusterIP: v6 ? 'fd00:10:96::50' : '10.96.0.50',
    nodePort: 30090,
    endpoints: [endpoint(v6 ? 'fd00:10:244:2::50' : '10.244.2.50', 8080)],
  });
  return [...ports.slice(0, 2), changed, ...ports.slice(4, 6), added];
}

interface Case {
  name: string;
  config: BackendConfig;
  ports: ServicePortState[];
  /** After the first load: a smaller snapshot, whose chains replace the first one's. */
  then: ServicePortState[];
}

const cases: Case[] = [
  { name: 'IPv4, ClusterCIDR', config: backendConfig(), ports: everyFeature(false), then: everyFeature(false).slice(0, 2) },
  {
    name: 'IPv6, BridgeInterface, masqueradeAll',
    config: backendConfig({ family: 'IPv6', detectLocalMode: 'BridgeInterface', bridgeInterface: 'cbr0', masqueradeAll: true }),
    ports: everyFeature(true),
    then: everyFeature(true).slice(3),
  },
  {
    name: 'IPv4, InterfaceNamePrefix, node port addresses, no localhost NodePorts',
    config: backendConfig({
      detectLocalMode: 'InterfaceNamePrefix',
      interfaceNamePrefix: 'veth',
      nodePortAddresses: ['192.168.50.0/24', 'primary', '127.0.0.0/8'],
      localhostNodePorts: false,
    }),
    ports: everyFeature(false),
    then: [],
  },
  {
    name: 'IPv6, NodeCIDR, large cluster (no endpoint comments)',
    config: backendConfig({ family: 'IPv6', detectLocalMode: 'NodeCIDR', localCIDRs: ['fd00:10:244:1::/64'] }),
    ports: [...everyFeature(true), ...v6Cluster(11, 100)],
    then: everyFeature(true),
  },
];

/** syntheticCluster in IPv6. */
function v6Cluster(services: number, eps: number): ServicePortState[] {
  return syntheticCluster(services, eps).map((p) => {
    const h = (ip: string) => 'fd00:' + ip.split('.').map((x) => Number(x).toString(16)).join(':') + '::';
    return servicePort({ ...p.info, clusterIP: h(p.info.clusterIP) + '1', endpoints: p.endpoints.map((e) => endpoint(h(e.ip) + '2', e.port)) });
  });
}

for (const flavour of ['legacy', 'nft'] as const) {
  describe(`iptables-${flavour}-restore accepts rendered rulesets and saves them back unchanged`, () => {
    const { name: ns } = useNetns(`kptipt-${flavour[0]}${process.pid}`);
    for (const v6 of [false, true]) {
      test(`partial sync by rule insertion and deletion by spec (${v6 ? 'IPv6' : 'IPv4'})`, () => {
        const config = backendConfig(v6 ? { family: 'IPv6' } : {});
        const ctx = renderContext(config);
        flushAll(ns, flavour, v6);
        const before = everyFeature(v6);
        const after = evolve(before, v6);
        const family = { family: config.family };
        run(ns, [tool(flavour, v6, 'restore'), '--noflush'], toRestoreInput(render(snapshot(before, family), config)));
        run(ns, [tool(flavour, v6, 'restore'), '--noflush'], hooksInput(config));
        const store = new FragmentStore<IptChain>(
          { id: (c) => `${c.table}/${c.name}`, same: (a, b) => a.rules.join('\n') === b.rules.join('\n') },
          baseChains(ctx).map((c) => `${c.table}/${c.name}`),
        );
        store.update(before.map(key), (k) => renderServicePort(before.find((p) => key(p) === k)!, ctx), false);
        const next = new Map(after.map((p) => [key(p), p]));
        const ops = store.update([...before.map(key), ...next.keys()], (k) => (next.has(k) ? renderServicePort(next.get(k)!, ctx) : undefined));
        for (const kind of ['add-item', 'delete-item', 'add-object', 'replace-object', 'delete-object']) {
          assert.ok(ops.some((o) => o.kind === kind), `the update has a ${kind}`);
        }
        run(ns, [tool(flavour, v6, 'restore'), '--noflush'], partialInput(ops));
        assertKernelHas(ns, flavour, render(snapshot(after, family), config), config, true);
      });
    }
    for (const c of cases) {
      test(c.name, () => {
        const v6 = c.config.family === 'IPv6';
        flushAll(ns, flavour, v6);
        const family = { family: c.config.family };
        const first = render(snapshot(c.ports, family), c.config);
        assert.ok(first.chains.some((x) => x.name.startsWith('KUBE-SEP-')), 'the snapshot renders endpoint chains');
        run(ns, [tool(flavour, v6, 'restore'), '--noflush'], toRestoreInput(first));
        run(ns, [tool(flavour, v6, 'restore'), '--noflush'], hooksInput(c.config));
        assertKernelHas(ns, flavour, first, c.config);

        // The next sync: chains that are gone are named stale, flushed and deleted.
        const next = render(snapshot(c.then, family), c.config);
        const live = new Set(next.chains.map((x) => `${x.table}/${x.name}`));
        const stale = first.chains.filter((x) => !live.has(`${x.table}/${x.name}`));
        assert.ok(stale.length > 0, 'some chains go away');
        run(ns, [tool(flavour, v6, 'restore'), '--noflush'], toRestoreInput(next, stale));
        assertKernelHas(ns, flavour, next, c.config);
      });
    }
  });
}
