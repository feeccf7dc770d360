// The iptables mode's restart checkpoint: a restart compares its render with what a clean stop
// wrote exactly as with a save of the kernel, and a checkpoint is read once.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { takeIptablesCheckpoint, writeIptablesCheckpoint } from '../../src/backend/iptables/checkpoint.js';
import { renderContext } from '../../src/backend/iptables/render.js';
import { IptState } from '../../src/backend/iptables/state.js';
import { backendConfig, snapshot, syntheticCluster } from '../support/snapshots.js';
import { tempFiles } from '../support/tempfiles.js';

const files = tempFiles('kpt-ipt-checkpoint-');

function stateOf(services: number, endpoints: number): IptState {
  const snap = snapshot(syntheticCluster(services, endpoints));
  const state = new IptState(renderContext(backendConfig()));
  state.renderRest(snap, [...snap.services.keys()].sort());
  return state;
}

test('every chain a stopping proxy wrote is held, by the checkpoint, as the restart renders it', () => {
  const state = stateOf(50, 3);
  const path = join(files.dir, 'held.checkpoint');
  writeIptablesCheckpoint(path, { token: '0123456789abcdef', family: 'IPv4', flavour: 'nft' }, state.chains());
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
  writeIptablesCheckpoint(path, { token: 'ffffffffffffffff', family: 'IPv6', flavour: 'legacy' }, stateOf(2, 1).chains());
  assert.ok(existsSync(path));
  assert.ok(takeIptablesCheckpoint(path));
  assert.equal(existsSync(path), false);
  assert.equal(takeIptablesCheckpoint(path), undefined, 'no file, no checkpoint');
});

test('a damaged checkpoint is an error to log, not a crash, and it is removed', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /unknown checkpoint format/],
    ['{"format":99,"token":"t","family":"IPv4","flavour":"nft"}\n', /unknown checkpoint format/],
    ['{"format":1,"token":"t","family":"IPv4","flavour":"nft"}\nnat/KUBE-SEP-X\tnot-a-number\n', /malformed digest/],
    ['{"format":1,"token":"t","family":"IPv4","flavour":"nft"}\nno tab here\n', /malformed digest/],
    ['{"format":1,"token":"t","family":"IPv4","flavour":"nft"}\n{"id":"nat/KUBE-SERVICES","rules":[1]}\n', /malformed chain/],
    ['{"format":1,"token":"t","family":"IPv4","flavour":"nft"}\n{"id":"nat/KUBE-SER', /unreadable checkpoint/],
  ];
  for (const [text, error] of cases) {
    const path = files.write(text, 'checkpoint');
    const cp = takeIptablesCheckpoint(path);
    assert.ok(cp && 'error' in cp && error.test(cp.error), `${JSON.stringify(text)}: ${JSON.stringify(cp)}`);
    assert.equal(existsSync(path), false);
  }
});
