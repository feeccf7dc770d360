// Partial syncs of the IPVS mode: the changes IpvsState yields for the changed service ports,
// applied to a model of the kernel, give exactly what a full render of the last snapshot gives;
// and one endpoint change in a large cluster touches only its service.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toRestoreInput } from '../../src/backend/iptables/syntax.js';
import { vsKey, renderIpvs } from '../../src/backend/ipvs/render.js';
import { IpvsState, type IpvsChange } from '../../src/backend/ipvs/state.js';
import type { VirtualServer } from '../../src/backend/ipvs/types.js';
import type { ServicePortState, Snapshot } from '../../src/model/types.js';
import { backendConfig, emptyChanges, endpoint, key, randomPorts, rng, snapshot, syntheticCluster, syntheticService } from '../support/snapshots.js';

const cfg = { ...backendConfig(), nodeIPs: ['192.168.50.11', '192.168.99.1'] };

/** What the kernel would hold after applying each change's lines. */
interface Kernel {
  sets: Map<string, Set<string>>;
  dummy: Set<string>;
  vs: Map<string, VirtualServer>;
  chains: string;
}

function kernelOf(state: IpvsState): Kernel {
  const rs = state.ruleset();
  return {
    sets: new Map(rs.ipsets.map((s) => [s.name, new Set(s.entries)])),
    dummy: new Set(rs.dummyAddresses),
    vs: new Map(rs.virtualServers.map((v) => [vsKey(v), v])),
    chains: toRestoreInput(rs.iptables),
  };
}

function applyChange(k: Kernel, c: IpvsChange, state: IpvsState): void {
  for (const line of c.ipsetInput.split('\n').filter((l) => l !== '')) {
    const [verb, name, entry] = line.split(' ') as [string, string, string];
    const set = k.sets.get(name)!;
    if (verb === 'del') assert.ok(set.delete(entry), `deleted entry exists: ${line}`);
    else {
      assert.ok(!set.has(entry), `added entry is new: ${line}`);
      set.add(entry);
    }
  }
  for (const a of c.dummyDel) assert.ok(k.dummy.delete(a));
  for (const a of c.dummyAdd) k.dummy.add(a);
  for (const { before, desired } of c.virtualServers) {
    if (before) assert.deepEqual(k.vs.get(vsKey(before)), before);
    if (desired) k.vs.set(vsKey(desired), desired);
    else k.vs.delete(vsKey(before!));
  }
  if (c.chainsChanged) k.chains = toRestoreInput({ family: 'IPv4', chains: state.chains() });
}

function assertSame(k: Kernel, snap: Snapshot, seed: number, step: number): void {
  const want = renderIpvs(snap, cfg);
  const at = `seed ${seed} step ${step}`;
  for (const s of want.ipsets) assert.deepEqual([...k.sets.get(s.name)!].sort(), [...s.entries].sort(), `${at}: set ${s.name}`);
  assert.deepEqual([...k.dummy].sort(), want.dummyAddresses, `${at}: kube-ipvs0`);
  assert.deepEqual([...k.vs.values()].sort((a, b) => (vsKey(a) < vsKey(b) ? -1 : 1)), [...want.virtualServers].sort((a, b) => (vsKey(a) < vsKey(b) ? -1 : 1)), `${at}: virtual servers`);
  assert.equal(k.chains, toRestoreInput(want.iptables), `${at}: chains`);
}

test('random partial syncs give exactly the ruleset a full render of the last snapshot gives', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const rand = rng(seed);
    let ports = new Map<string, ServicePortState>(randomPorts(rand, 12).map((p) => [key(p), p]));
    const state = new IpvsState(cfg).load(snapshot([...ports.values()]));
    const kernel = kernelOf(state);
    for (let step = 0; step < 25; step++) {
      // A new random cluster; each service port either keeps its state, takes the new one, or goes.
      const next = new Map<string, ServicePortState>();
      const changes = emptyChanges(false);
      for (const p of randomPorts(rand, 12)) {
        const k = key(p);
        const r = rand();
        if (r < 0.6 && ports.has(k)) next.set(k, ports.get(k)!);
        else if (r < 0.9) {
          next.set(k, p);
          changes.changed.add(k);
        }
      }
      for (const k of ports.keys()) if (!next.has(k)) changes.deleted.add(k);
      ports = next;
      const snap = snapshot([...ports.values()], { changes });
      applyChange(kernel, state.update(snap, [...changes.changed, ...changes.deleted]), state);
      assertSame(kernel, snap, seed, step);
      assert.deepEqual(state.ruleset(), renderIpvs(snap, cfg), `seed ${seed} step ${step}: state`);
    }
  }
});

test('one endpoint change among 10,000 services touches only that service', () => {
  const ports = syntheticCluster(10_000, 10);
  const state = new IpvsState(cfg).load(snapshot(ports));
  const changed = syntheticService(4242, 10);
  changed.endpoints.push(endpoint('10.200.0.1', 8080));
  changed.clusterEndpoints.push(endpoint('10.200.0.1', 8080));
  ports[4242] = changed;
  const changes = { ...emptyChanges(false), changed: new Set([key(changed)]) };
  const c = state.update(snapshot(ports, { changes }), changes.changed);
  assert.equal(c.virtualServers.length, 1);
  assert.equal(c.virtualServers[0]!.desired!.address, '10.96.16.146');
  assert.equal(c.virtualServers[0]!.desired!.realServers.length, 11);
  assert.equal(c.virtualServers[0]!.before!.realServers.length, 10);
  assert.equal(c.ipsetInput, '');
  assert.deepEqual([c.dummyAdd, c.dummyDel, c.chainsChanged], [[], [], false]);
});
