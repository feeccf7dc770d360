// The iptables mode's restart checkpoint: a restart compares its render with what a clean stop
// wrote exactly as with a save of the kernel, and a checkpoint is read once.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { takeIptablesCheckpoint, writeIptablesCheckpoint } from '../../src/backend/iptables/checkpoint.js';
import { contextDigest, renderContext, renderInputsDigest } from '../../src/backend/iptables/render.js';
import { IptState } from '../../src/backend/iptables/state.js';
import type { Snapshot } from '../../src/model/types.js';
import { backendConfig, endpoint, snapshot, syntheticCluster } from '../support/snapshots.js';
import { tempFiles } from '../support/tempfiles.js';

const files = tempFiles('kpt-ipt-checkpoint-');

function stateOf(services: number, endpoints: number): IptState {
  const snap = snapshot(syntheticCluster(services, endpoints));
  const state = new IptState(renderContext(backendConfig()));
  state.renderRest(snap, [...snap.services.keys()].sort());
  return state;
}

const HEAD = { token: '0123456789abcdef', family: 'IPv4', flavour: 'nft', context: contextDigest(renderContext(backendConfig())) } as const;

function renderedFrom(snap: Snapshot): Array<[string, number]> {
  return [...snap.services].map(([k, s]) => [k, renderInputsDigest(s)]);
}

test('every chain a stopping proxy wrote is held, by the checkpoint, as the restart renders it', () => {
  const state = stateOf(50, 3);
  const path = join(files.dir, 'held.checkpoint');
  writeIptablesCheckpoint(path, HEAD, state.chains(), []);
  const cp = takeIptablesCheckpoint(path);
  assert.ok(cp && !('error' in cp), JSON.stringify(cp));
  assert.deepEqual([cp.token, cp.family, cp.flavour], ['0123456789abcdef', 'IPv4', 'nft']);
  const chains = state.chains();
  assert.equal(cp.kernel.whole.size + cp.kernel.digests.size, chains.length);
  const sep = chains.find((c) => c.name.startsWith('KUBE-SEP-'))!;
  assert.ok(cp.kernel.digests.has(`nat/${sep.name}`), 'service port chains by digest');
  assert.ok(cp.kernel.whole.has('nat/KUBE-SERVICES'), 'the shared chains whole');
  const notHeld = chains.filter((c) => !state.held(cp.kernel, c)).map((c) => `${c.table}/${c.name}`);
  assert.deepEqual(notHeld, []);

  // A restart whose Services changed meanwhile finds exactly those chains to write.
  const other = stateOf(51, 3);
  const changed = other.chains().filter((c) => !other.held(cp.kernel, c)).map((c) => `${c.table}/${c.name}`);
  assert.ok(changed.includes('nat/KUBE-SERVICES'), changed.join());
  assert.ok(changed.some((id) => id.startsWith('nat/KUBE-SVC-')), changed.join());
  assert.ok(changed.length < 10, changed.join());
});

test('a checkpoint is taken once: the file is gone after it is read', () => {
  const path = join(files.dir, 'once.checkpoint');
  writeIptablesCheckpoint(path, { ...HEAD, family: 'IPv6', flavour: 'legacy' }, stateOf(2, 1).chains(), []);
  assert.ok(existsSync(path));
  assert.ok(takeIptablesCheckpoint(path));
  assert.equal(existsSync(path), false);
  assert.equal(takeIptablesCheckpoint(path), undefined, 'no file, no checkpoint');
});

test('a damaged checkpoint is an error to log, not a crash, and it is removed', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /unknown checkpoint format/],
    ['{"format":99,"token":"t","family":"IPv4","flavour":"nft","context":1}\n', /unknown checkpoint format/],
    // The format before service ports were recorded.
    ['{"format":1,"token":"t","family":"IPv4","flavour":"nft"}\n', /unknown checkpoint format/],
    ['{"format":2,"token":"t","family":"IPv4","flavour":"nft","context":1}\nnat/KUBE-SEP-X\tnot-a-number\n', /malformed digest/],
    ['{"format":2,"token":"t","family":"IPv4","flavour":"nft","context":1}\n@default/web:http/TCP\t\n', /malformed digest/],
    ['{"format":2,"token":"t","family":"IPv4","flavour":"nft","context":1}\nno tab here\n', /malformed digest/],
    ['{"format":2,"token":"t","family":"IPv4","flavour":"nft","context":1}\n{"id":"nat/KUBE-SERVICES","rules":[1]}\n', /malformed chain/],
    ['{"format":2,"token":"t","family":"IPv4","flavour":"nft","context":1}\n{"id":"nat/KUBE-SER', /unreadable checkpoint/],
  ];
  for (const [text, error] of cases) {
    const path = files.write(text, 'checkpoint');
    const cp = takeIptablesCheckpoint(path);
    assert.ok(cp && 'error' in cp && error.test(cp.error), `${JSON.stringify(text)}: ${JSON.stringify(cp)}`);
    assert.equal(existsSync(path), false);
  }
});

test("a restart takes the checkpoint's word for the chains of service ports rendered from the same, and compares the others", async () => {
  const ports = syntheticCluster(6, 2);
  const snap = snapshot(ports);
  const state = new IptState(renderContext(backendConfig()));
  state.renderRest(snap, [...snap.services.keys()].sort());
  const path = join(files.dir, 'rendered.checkpoint');
  writeIptablesCheckpoint(path, HEAD, state.chains(), renderedFrom(snap));
  const cp = takeIptablesCheckpoint(path);
  assert.ok(cp && !('error' in cp), JSON.stringify(cp));
  assert.equal(cp.kernel.rendered?.inputs.size, 6);
  // Digests that match nothing: only what is compared chain by chain is written.
  for (const id of cp.kernel.digests.keys()) cp.kernel.digests.set(id, 0);
  // The chains declared by the nft flavour's transactions, and those legacy's one transaction writes.
  const written = async (s: Snapshot, config = backendConfig()): Promise<string[]> => {
    const restarted = new IptState(renderContext(config));
    const out: string[] = [];
    for await (const step of restarted.chunkedInputs('IPv4', s, 10000, async () => [], cp.kernel)) out.push(...[step].flat());
    const declared = out.join('').split('\n').filter((l) => l.startsWith(':KUBE-S'));
    const inOne = new IptState(renderContext(config));
    inOne.renderRest(s, [...s.services.keys()].sort());
    assert.deepEqual(inOne.chainsToWrite(s, cp.kernel).map((c) => `:${c.name} - [0:0]`).sort(), [...declared].sort(), 'legacy writes the same');
    return declared;
  };

  assert.deepEqual(await written(snap), [], 'every port rendered from the same: nothing read, nothing written');

  const changed = ports.map((p, i) => (i === 2 ? { ...p, clusterEndpoints: [...p.clusterEndpoints, endpoint('10.244.9.9', 8080)] } : p));
  const declared = await written(snapshot(changed));
  assert.ok(declared.some((l) => l.startsWith(':KUBE-SVC-')), declared.join());
  // The changed port's service chain and its three endpoint chains, nothing of the others.
  assert.equal(declared.length, 4, declared.join());

  const otherContext = await written(snap, backendConfig({ masqueradeAll: true }));
  assert.equal(otherContext.length, 6 * 3, 'under another context every service port is compared (and here rewritten)');
});
