// The shared verification step: what kernelInSync() reports around a repair, what is logged and
// what a repair counts as.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KernelCheck, sameMultiset, tally, tallyNamed, type Difference } from '../../src/backend/common/verify.js';
import { setLogWriter } from '../../src/log.js';

function captureLog<T>(fn: () => Promise<T>): Promise<{ result: T; lines: string[] }> {
  const lines: string[] = [];
  const prev = setLogWriter((l) => lines.push(l));
  return fn()
    .then((result) => ({ result, lines }))
    .finally(() => setLogWriter(prev));
}

describe('KernelCheck', () => {
  it('nothing differs: no repair, nothing logged, in sync', async () => {
    const check = new KernelCheck('nftables', 'IPv4');
    let applied = false;
    const { result, lines } = await captureLog(() => check.run(async () => ({ differences: [], apply: async () => void (applied = true) })));
    assert.deepEqual(result, { repaired: 0, differences: [] });
    assert.equal(applied, false);
    assert.equal(check.inSync(), true);
    assert.deepEqual(lines, []);
  });

  it('a difference is logged with its count, repaired, and counted once', async () => {
    const check = new KernelCheck('iptables', 'IPv6');
    let inSyncDuringRepair: boolean | undefined;
    const { result, lines } = await captureLog(() =>
      check.run(async () => ({
        differences: [
          { what: 'missing element in service-ips', count: 1 },
          { what: 'changed chain services', count: 2 },
        ],
        apply: async () => {
          inSyncDuringRepair = check.inSync();
        },
      })),
    );
    assert.equal(result.repaired, 3);
    assert.deepEqual(result.differences, ['missing element in service-ips: 1', 'changed chain services: 2']);
    assert.equal(inSyncDuringRepair, false, 'out of sync while the repair runs');
    assert.equal(check.inSync(), true);
    assert.equal(check.repairs, 1);
    assert.ok(lines.some((l) => /rules differ/.test(l) && /mode="iptables"/.test(l) && /family="IPv6"/.test(l) && /items=3/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /repaired kernel rules/.test(l)), lines.join('\n'));
  });

  it('a failed repair throws and stays out of sync until a later run succeeds', async () => {
    const check = new KernelCheck('nftables', 'IPv4');
    const differences = [{ what: 'table missing, rebuilt', count: 1 }];
    await captureLog(async () => {
      await assert.rejects(check.run(async () => ({ differences, apply: async () => Promise.reject(new Error('kernel said no')) })), /kernel said no/);
    });
    assert.equal(check.inSync(), false);
    assert.equal(check.repairs, 0);
    await captureLog(() => check.run(async () => ({ differences, apply: async () => undefined })));
    assert.equal(check.inSync(), true);
    assert.equal(check.repairs, 1);
  });
});

describe('verification helpers', () => {
  it('sameMultiset compares in any order, counting duplicates', () => {
    assert.equal(sameMultiset(['a', 'b', 'a'], ['a', 'a', 'b']), true);
    assert.equal(sameMultiset(['a', 'b'], ['a', 'b', 'b']), false);
    assert.equal(sameMultiset(['a', 'a', 'b'], ['a', 'b', 'b']), false);
    assert.equal(sameMultiset([], []), true);
  });

  it('tally skips zero counts; tallyNamed names the first three', () => {
    const out: Difference[] = [];
    tally(out, 'missing chain', 0);
    tally(out, 'missing chain', 2);
    tallyNamed(out, 'changed chain', []);
    tallyNamed(out, 'changed chain', ['nat/A', 'nat/B', 'nat/C', 'nat/D']);
    assert.deepEqual(out, [
      { what: 'missing chain', count: 2 },
      { what: 'changed chain (nat/A, nat/B, nat/C, …)', count: 4 },
    ]);
  });
});
