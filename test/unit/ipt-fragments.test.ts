// The invariant partial syncs rely on: a full render equals the fixed chains plus every service
// port's fragment, and the operations a FragmentStore derives from re-rendered fragments
// (service rules inserted at the head of shared chains, deleted by spec) take the previous
// ruleset to the next one's render.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FragmentStore } from '../../src/backend/common/fragment-store.js';
import type { ObjectKind, StoreOp } from '../../src/backend/common/fragment.js';
import { baseChains, render, renderContext, renderServicePort, type IptChain, type IptContext } from '../../src/backend/iptables/render.js';
import { IptState } from '../../src/backend/iptables/state.js';
import type { KernelChains } from '../../src/backend/iptables/save.js';
import type { ServicePortState, Snapshot } from '../../src/model/types.js';
import { backendConfig, endpoint, key, randomPorts, rng, servicePort, snapshot, syntheticCluster } from '../support/snapshots.js';

const cfg = backendConfig();
const ctx: IptContext = renderContext(cfg);
const id = (c: { table: string; name: string }): string => `${c.table}/${c.name}`;
const KIND: ObjectKind<IptChain> = {
  id,
  same: (a, b) => a.rules.length === b.rules.length && a.rules.every((r, i) => r === b.rules[i]),
};

/** A kernel-like ruleset: chain id → rules, with service items inserted at the head. */
type Kernel = Map<string, string[]>;

function applyOps(kernel: Kernel, ops: Array<StoreOp<IptChain>>): void {
  for (const op of ops) {
    switch (op.kind) {
      case 'add-item':
        kernel.get(op.collection)!.unshift(op.key);
        break;
      case 'delete-item': {
        const rules = kernel.get(op.collection)!;
        const at = rules.indexOf(op.key);
        assert.ok(at >= 0, `deleted rule exists: ${op.key}`);
        rules.splice(at, 1);
        break;
      }
      case 'add-object':
      case 'replace-object':
        kernel.set(id(op.object), [...op.object.rules]);
        break;
      case 'delete-object':
        assert.ok(kernel.delete(id(op.object)), `deleted chain exists: ${id(op.object)}`);
        break;
      default:
        assert.fail(`unexpected operation ${op.kind}`);
    }
  }
}

/** Rendered chains, with the service-item part of shared chains sorted (its order is free). */
function normalized(chains: Map<string, string[]>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const b of baseChains(ctx)) {
    const rules = chains.get(id(b))!;
    const items = rules.slice(0, rules.length - b.rules.length);
    assert.deepEqual(rules.slice(items.length), b.rules, `fixed rules of ${id(b)} come last`);
    out.set(id(b), [...items.sort(), ...b.rules]);
  }
  for (const [k, rules] of chains) if (!out.has(k)) out.set(k, rules);
  return out;
}

function rendered(s: Snapshot): Map<string, string[]> {
  return new Map(render(s, cfg).chains.map((c) => [id(c), c.rules]));
}

function load(ports: ServicePortState[], order: string[]): { store: FragmentStore<IptChain>; kernel: Kernel } {
  const byKey = new Map(ports.map((p) => [key(p), p]));
  const store = new FragmentStore<IptChain>(KIND, baseChains(ctx).map(id));
  store.update(order, (k) => renderServicePort(byKey.get(k)!, ctx), false);
  const kernel: Kernel = new Map();
  for (const b of baseChains(ctx)) kernel.set(id(b), [...store.items(id(b)).keys(), ...b.rules]);
  for (const o of store.objects()) kernel.set(id(o), [...o.rules]);
  return { store, kernel };
}

for (const seed of [1, 2, 3, 4, 5]) {
  test(`render equals the fixed chains plus every fragment, before and after partial updates (seed ${seed})`, () => {
    const rand = rng(seed);
    const ports = randomPorts(rand, 25);
    const s1 = snapshot(ports);

    // Loaded in sorted key order, the store gives exactly the full render, order included.
    const sorted = [...s1.services.keys()].sort();
    assert.deepEqual(load(ports, sorted).kernel, rendered(s1));

    // In any order, the same rules (a shared chain's service items are unordered).
    const shuffled = [...sorted].sort(() => rand() - 0.5);
    const { store, kernel } = load(ports, shuffled);
    assert.deepEqual(normalized(kernel), normalized(rendered(s1)));

    // Change some ports, delete some, add some: the operations take the kernel to the new render.
    const replacements = randomPorts(rand, 25);
    const next = new Map(s1.services);
    const changed = new Set<string>();
    for (const k of sorted) {
      const r = rand();
      if (r < 0.2) {
        next.delete(k);
        changed.add(k);
      } else if (r < 0.5) {
        const alt = replacements.find((p) => key(p) === k);
        if (alt) {
          next.set(k, alt);
          changed.add(k);
        }
      }
    }
    for (const p of replacements.slice(0, 6)) {
      const k = key(p);
      if (!next.has(k)) {
        next.set(k, p);
        changed.add(k);
      }
    }
    assert.ok(changed.size > 5, 'the update changes something');
    const s2 = snapshot([...next.values()], { generation: 2 });
    const ops = store.update(changed, (k) => (next.has(k) ? renderServicePort(next.get(k)!, ctx) : undefined));
    applyOps(kernel, ops);
    assert.deepEqual(normalized(kernel), normalized(rendered(s2)));
  });
}

test('ports of one service share their cluster IP reject rule; it goes with the last of them', () => {
  const http = servicePort({ namespace: 'ns', serviceName: 's', portName: 'http', port: 80, clusterIP: '10.96.0.1', endpoints: [endpoint('10.244.2.1', 80)] });
  const https = servicePort({ namespace: 'ns', serviceName: 's', portName: 'https', port: 443, clusterIP: '10.96.0.1', endpoints: [endpoint('10.244.2.1', 443)] });
  const reject = '-d 10.96.0.1/32 -m comment --comment "ns/s cluster IP" -j REJECT --reject-with icmp-port-unreachable';
  const { store, kernel } = load([http, https], [key(http), key(https)]);
  assert.deepEqual(kernel.get('filter/KUBE-CLUSTER-IPS'), [reject]);
  const rejects = (ops: Array<StoreOp<IptChain>>): string[] =>
    ops.flatMap((o) => ('collection' in o && o.collection === 'filter/KUBE-CLUSTER-IPS' ? [`${o.kind} ${o.key}`] : []));
  assert.deepEqual(rejects(store.update([key(http)], () => undefined)), []);
  assert.deepEqual(rejects(store.update([key(https)], () => undefined)), [`delete-item ${reject}`]);
});

test('a full sync rendered partly ahead (while the start-up runs) writes the same transactions', async () => {
  const snap = snapshot(syntheticCluster(1000, 3));
  const inputs = async (state: IptState): Promise<string[]> => {
    const out: string[] = [];
    for await (const input of state.chunkedInputs('IPv4', snap, 2000, async () => [])) out.push(...[input].flat());
    return out;
  };
  const plain = await inputs(new IptState(renderContext(backendConfig())));

  // The start-up ends after a few groups: part of the services are rendered ahead, not all.
  const ahead = new IptState(renderContext(backendConfig()));
  let turns = 0;
  const startUp = new Promise<void>((resolve) => {
    const turn = (): void => void (++turns === 3 ? resolve() : setImmediate(turn));
    setImmediate(turn);
  });
  await ahead.renderAhead(snap, startUp);
  const renderedAhead = [...ahead.store.keys()].length;
  assert.ok(renderedAhead > 0 && renderedAhead < 1000, `${renderedAhead} of 1000 rendered ahead`);
  assert.deepEqual(await inputs(ahead), plain);

  // A start-up already over: nothing is rendered ahead.
  const late = new IptState(renderContext(backendConfig()));
  await late.renderAhead(snap, Promise.resolve());
  assert.equal([...late.store.keys()].length, 0);
  assert.deepEqual(await inputs(late), plain);
});

test("a full sync's service groups come several at a time, between the fixed chains and the dispatch chains", async () => {
  const snap = snapshot(syntheticCluster(300, 3));
  const steps = async (together: number): Promise<Array<string | string[]>> => {
    const out: Array<string | string[]> = [];
    const state = new IptState(renderContext(backendConfig()));
    for await (const step of state.chunkedInputs('IPv4', snap, 400, async () => [], undefined, together)) out.push(step);
    return out;
  };
  const one = await steps(1);
  const three = await steps(3);
  assert.deepEqual(three.flat(), one.flat(), 'the same transactions in the same order');
  const first = three[0]!;
  const last = three[three.length - 1]!;
  assert.equal(typeof first, 'string', 'the fixed chains alone, first');
  assert.match(first as string, /^:KUBE-MARK-MASQ /m);
  assert.equal(typeof last, 'string', 'the dispatch chains alone, last');
  assert.match(last as string, /^-A KUBE-SERVICES /m);
  const groups = three.slice(1, -1);
  assert.ok(groups.length >= 3, `${groups.length} steps of groups`);
  for (const [i, g] of groups.entries()) {
    assert.ok(Array.isArray(g), `step ${i + 1} is a set of groups`);
    assert.ok(g.length === 3 || (i === groups.length - 1 && g.length >= 1), `step ${i + 1}: ${g.length} groups`);
    for (const input of g) assert.doesNotMatch(input, /^-A KUBE-SERVICES /m, 'no group makes a service reachable');
  }
  // No group jumps to a chain another group declares.
  const declared = groups.flat().map((input) => new Set([...input.matchAll(/^:(\S+) /gm)].map((m) => m[1]!)));
  groups.flat().forEach((input, i) => {
    for (const m of input.matchAll(/ -j (KUBE-(?:SVC|SEP|SVL|EXT|FW)-\S+)/g)) assert.ok(declared[i]!.has(m[1]!), `${m[1]} is declared in its own group`);
  });
});

test('dispatch chains the kernel lacks are filled over several transactions in order; ones it holds are replaced in one', async () => {
  const snap = snapshot(syntheticCluster(300, 3));
  const steps = async (saved: KernelChains | undefined): Promise<string[]> => {
    const out: string[] = [];
    const state = new IptState(renderContext(backendConfig()));
    for await (const step of state.chunkedInputs('IPv4', snap, 400, async () => [], saved, 2)) out.push(...[step].flat());
    return out;
  };
  const empty: KernelChains = { whole: new Map(), digests: new Map(), builtin: new Set() };
  const rulesOf = (inputs: string[], table: string): string[] =>
    inputs.flatMap((input) => {
      const t = input.indexOf(`*${table}\n`);
      if (t < 0) return [];
      const body = input.slice(t, input.indexOf('COMMIT', t));
      return body.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ') || l.startsWith('-A KUBE-CLUSTER-IPS ') || l.startsWith('-A KUBE-NODEPORTS '));
    });
  const whole = await steps(undefined);
  const pieced = await steps(empty);
  const lastWhole = whole[whole.length - 1]!;
  const dispatchPieces = pieced.slice(whole.length - 1);
  assert.ok(dispatchPieces.length >= 3, `${dispatchPieces.length} dispatch transactions`);
  assert.deepEqual(pieced.slice(0, whole.length - 1), whole.slice(0, -1), 'the same groups before');
  for (const table of ['filter', 'nat']) assert.deepEqual(rulesOf(dispatchPieces, table), rulesOf([lastWhole], table), `${table}: the same rules in the same order`);
  const declared = new Set<string>();
  for (const [i, input] of dispatchPieces.entries()) {
    const rules = input.split('\n').filter((l) => l.startsWith('-A ')).length;
    assert.ok(rules <= 2 * 200, `transaction ${i}: ${rules} rules`);
    let table = '';
    for (const line of input.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      const chain = /^:(\S+) /.exec(line)?.[1];
      if (chain === undefined) continue;
      assert.ok(!declared.has(`${table}/${chain}`), `transaction ${i} flushes ${table}/${chain}, which an earlier one filled`);
      declared.add(`${table}/${chain}`);
    }
  }
  assert.ok(declared.has('filter/KUBE-SERVICES') && declared.has('nat/KUBE-SERVICES'));
  assert.match(dispatchPieces[dispatchPieces.length - 1]!, /-j KUBE-NODEPORTS$/m, "KUBE-SERVICES' jump to KUBE-NODEPORTS stays last");

  // A kernel that holds KUBE-SERVICES (other rules): it is replaced in one transaction.
  const held: KernelChains = { whole: new Map([['nat/KUBE-SERVICES', ['-j RETURN']]]), digests: new Map(), builtin: new Set() };
  const over = await steps(held);
  assert.equal(over.length, whole.length);
  assert.equal(over[over.length - 1], lastWhole);
});

test('a restart edits a dispatch chain the kernel holds with a service rule too many and one too few', async () => {
  const snap = snapshot(syntheticCluster(50, 2));
  const state = new IptState(renderContext(backendConfig()));
  state.renderRest(snap, [...snap.services.keys()]);
  const kernel: KernelChains = { whole: new Map(), digests: new Map(), builtin: new Set() };
  for (const c of state.sharedChains()) kernel.whole.set(`${c.table}/${c.name}`, [...c.rules]);
  for (const c of state.store.objects()) kernel.whole.set(`${c.table}/${c.name}`, [...c.rules]);
  const services = kernel.whole.get('nat/KUBE-SERVICES')!;
  const missing = services[3]!;
  const extra = '-d 10.96.99.99/32 -p tcp -m comment --comment "gone/svc:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-GONEGONEGONEGONE';
  kernel.whole.set('nat/KUBE-SERVICES', [extra, ...services.filter((r) => r !== missing)]);
  const out: string[] = [];
  for await (const step of state.chunkedInputs('IPv4', snap, 10000, async () => [], kernel, 2)) out.push(...[step].flat());
  assert.deepEqual(out, [`*nat\n-D KUBE-SERVICES ${extra}\n-I KUBE-SERVICES 1 ${missing}\nCOMMIT\n`]);

  // Its fixed tail out of place: rewritten whole.
  kernel.whole.set('nat/KUBE-SERVICES', services.slice().reverse());
  const rewritten: string[] = [];
  for await (const step of state.chunkedInputs('IPv4', snap, 10000, async () => [], kernel, 2)) rewritten.push(...[step].flat());
  assert.equal(rewritten.length, 1);
  assert.match(rewritten[0]!, /^:KUBE-SERVICES - \[0:0\]$/m);
});
