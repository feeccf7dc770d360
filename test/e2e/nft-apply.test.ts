// Applies rendered rulesets to a real kernel inside throwaway network namespaces.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteTables, type ExecOptions } from '../../src/backend/nftables/apply.js';
import { readTable } from '../../src/backend/nftables/readback.js';
import { NftablesBackend } from '../../src/backend/nftables/backend.js';
import { removeLeftovers } from '../../src/backend/common/leftovers.js';
import type { NftRuleset, NftSet } from '../../src/backend/nftables/layout.js';
import { render } from '../../src/backend/nftables/render.js';
import type { ServicePortState, Snapshot } from '../../src/model/types.js';
import { backendConfig, emptyChanges, endpoint, key, localEndpoint, servicePort, snapshot, syntheticCluster } from '../support/snapshots.js';
import { useNetns } from '../support/netns.js';

const { name: ns, wrap } = useNetns(`kptnft-e${process.pid}`);
const exec: ExecOptions = { wrap };
const cfg = backendConfig();

// Each test starts from an empty table, whatever the previous one left behind.
beforeEach(() => deleteTables(exec));

async function assertKernelHas(want: NftRuleset, on: ExecOptions = exec): Promise<void> {
  const kernel = await readTable(want.family, on);
  assert.ok(kernel, 'table exists');
  assert.deepEqual(kernel.chains.map((c) => c.name).sort(), want.chains.map((c) => c.name).sort());
  for (const s of want.sets) {
    const got: NftSet | undefined = kernel.sets.find((x) => x.name === s.name);
    assert.ok(got, `set ${s.name} exists`);
    if (!s.dynamic) assert.deepEqual(got.elements, s.elements, `elements of ${s.name}`);
  }
  assert.equal(kernel.sets.length, want.sets.length);
}

function partial(ports: ServicePortState[], changed: ServicePortState[], deleted: string[] = [], generation = 2): Snapshot {
  return snapshot(ports, {
    generation,
    changes: { ...emptyChanges(false), changed: new Set(changed.map(key)), deleted: new Set(deleted) },
  });
}

describe('nftables apply (network namespace)', () => {
  test('full load, then partial updates that add and remove shapes, services and affinity chains', async () => {
    const be = new NftablesBackend(cfg, { wrap, removeLeftovers: false });
    const a = servicePort({ namespace: 'ns1', serviceName: 'a', clusterIP: '10.96.0.10', nodePort: 30010, endpoints: [endpoint('10.244.2.5', 80)] });
    const b = servicePort({
      namespace: 'ns1',
      serviceName: 'b',
      protocol: 'UDP',
      port: 53,
      clusterIP: '10.96.0.11',
      loadBalancerIPs: ['203.0.113.5'],
      loadBalancerSourceRanges: ['198.51.100.0/24'],
      externalPolicyLocal: true,
      endpoints: [endpoint('10.244.2.6', 53), localEndpoint('10.244.1.6', 53)],
    });
    const s1 = snapshot([a, b]);
    const r1 = await be.sync(s1);
    assert.equal(r1.full, true);
    await assertKernelHas(render(s1, cfg));

    // A new endpoint count (a new shape chain, added in a later transaction than its map).
    const a2 = servicePort({ ...a.info, endpoints: [endpoint('10.244.2.5', 80), endpoint('10.244.2.7', 80), endpoint('10.244.2.8', 80)] });
    const s2 = partial([a2, b], [a2]);
    const r2 = await be.sync(s2);
    assert.equal(r2.full, false);
    assert.ok(r2.operations > 0 && r2.operations < 30, `few operations (${r2.operations})`);
    await assertKernelHas(render(s2, cfg));

    // Affinity on, service b deleted.
    const a3 = servicePort({ ...a2.info, sessionAffinity: { clientIPTimeoutSeconds: 300 }, endpoints: a2.endpoints });
    const s3 = partial([a3], [a3], [key(b)], 3);
    await be.sync(s3);
    await assertKernelHas(render(s3, cfg));

    // Affinity off again: its chains go away; the shared set of pinned clients stays.
    const s4 = partial([a2], [a2], [], 4);
    await be.sync(s4);
    await assertKernelHas(render(s4, cfg));
    assert.equal(/(?:service|local|external)-[A-Z0-9]{8}-/.test(be.describe()), false);
    assert.match(be.describe(), /affinity-clients/);

    // No change: nothing is sent.
    const r5 = await be.sync(partial([a2], [], [], 5));
    assert.equal(r5.operations, 0);
    assert.equal(be.lastTransactions, 0);

    await be.cleanup();
    assert.equal(await readTable('ip', exec), undefined);
  });

  test('a full sync over the budget into an empty kernel is one transaction, or in parts sent together; a restart sends only the difference', async () => {
    const ports = syntheticCluster(300, 4);
    const s1 = snapshot(ports);
    const one = new NftablesBackend(cfg, { wrap, removeLeftovers: false, budget: 500, newTableParts: 1 });
    await one.sync(s1);
    assert.equal(one.lastTransactions, 1, 'nothing to keep serving: one transaction');
    await assertKernelHas(render(s1, cfg));
    await one.cleanup();

    // The structure, then data elements in three parts at once, then tuples in three parts at once.
    const be = new NftablesBackend(cfg, { wrap, removeLeftovers: false, budget: 500, newTableParts: 3 });
    await be.sync(s1);
    assert.equal(be.lastTransactions, 7);
    await assertKernelHas(render(s1, cfg));

    // A restart with one service gone and one changed while the proxy was down.
    const changed = servicePort({ ...ports[7]!.info, endpoints: [endpoint('10.250.0.1', 8080)] });
    const s2 = snapshot([...ports.slice(0, 7), changed, ...ports.slice(8, 299)]);
    const restarted = new NftablesBackend(cfg, { wrap, removeLeftovers: false, budget: 500 });
    const r = await restarted.sync(s2);
    assert.equal(r.full, true);
    await assertKernelHas(render(s2, cfg));
    // Elements of the two services (slots, verdicts, hairpin, cluster IP), a new shape chain, and the kept chains rewritten.
    const chains = render(s2, cfg).chains.length;
    assert.ok(r.operations < chains + 30, `only the difference is sent (${r.operations} ops)`);
    await restarted.cleanup();
  });

  test('IPv6 backend loads and cleanup removes both families', async () => {
    const v6 = backendConfig({ family: 'IPv6' });
    const be6 = new NftablesBackend(v6, { wrap, removeLeftovers: false });
    const s = snapshot(
      [servicePort({ namespace: 'ns', serviceName: 'v6', clusterIP: 'fd00:10:96::10', nodePort: 30600, endpoints: [endpoint('fd00:10:244:2::5', 80)] })],
      { family: 'IPv6' },
    );
    await be6.sync(s);
    await assertKernelHas(render(s, v6));
    const be4 = new NftablesBackend(cfg, { wrap, removeLeftovers: false });
    await be4.sync(snapshot(syntheticCluster(3, 2)));
    await be4.cleanup();
    assert.equal(await readTable('ip', exec), undefined);
    assert.equal(await readTable('ip6', exec), undefined);
  });
});

describe('a new table whose parts the kernel refuses', () => {
  // Tools run with an `nft` first on PATH that refuses data parts (element blocks of
  // cluster-ips, no table block) while a flag file exists.
  const own = useNetns(`kptnft-p${process.pid}`);
  const dir = mkdtempSync(join(tmpdir(), 'kpt-nft-refuse-'));
  const flag = join(dir, 'refuse');
  const wrap = [...own.wrap, 'env', `PATH=${dir}:${process.env.PATH}`];
  before(() => {
    const realNft = execFileSync('sh', ['-c', 'command -v nft']).toString().trim();
    const script = [
      '#!/bin/sh',
      'for last in "$@"; do :; done',
      `if [ -f '${flag}' ] && [ -f "$last" ] && grep -q '^add element .* cluster-ips {' "$last" && ! grep -q '^table ' "$last"; then`,
      '  echo "Error: refused for the test" >&2; exit 1',
      'fi',
      `exec '${realNft}' "$@"`,
    ].join('\n');
    writeFileSync(join(dir, 'nft'), `${script}\n`);
    chmodSync(join(dir, 'nft'), 0o755);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('the sync fails with nft\'s message, and the next one completes the table from what the kernel holds', async () => {
    const on: ExecOptions = { wrap };
    const s1 = snapshot(syntheticCluster(300, 4));
    const be = new NftablesBackend(cfg, { wrap, removeLeftovers: false, budget: 500, newTableParts: 2 });
    writeFileSync(flag, '');
    await assert.rejects(be.sync(s1), /refused for the test/);
    assert.equal(be.syncFailures, 1);
    const half = await readTable('ip', on);
    assert.ok(half, 'the structure went in');
    assert.equal(half.sets.find((x) => x.name === 'cluster-ips')?.elements.size, 0, 'no data part went in');
    rmSync(flag);
    const r = await be.sync(s1);
    assert.equal(r.full, true);
    await assertKernelHas(render(s1, cfg), on);
    await be.cleanup();
  });
});

describe('leftovers of the iptables and ipvs modes', () => {
  test('removes only kube-proxy KUBE-* chains and the jumps to them', async () => {
    assert.equal(spawnSync('iptables', ['-V']).status, 0, 'iptables is installed (the project setup installs it)');
    const ipt = (...args: string[]): void => {
      execFileSync('ip', ['netns', 'exec', ns, 'iptables', ...args]);
    };
    ipt('-t', 'nat', '-N', 'KUBE-SERVICES');
    ipt('-t', 'nat', '-N', 'KUBE-SVC-ABCDEFGHIJKLMNOP');
    ipt('-t', 'nat', '-N', 'KUBE-SEP-ABCDEFGHIJKLMNOP');
    ipt('-t', 'nat', '-A', 'KUBE-SERVICES', '-d', '10.96.0.1/32', '-p', 'tcp', '--dport', '443', '-j', 'KUBE-SVC-ABCDEFGHIJKLMNOP');
    ipt('-t', 'nat', '-A', 'KUBE-SVC-ABCDEFGHIJKLMNOP', '-j', 'KUBE-SEP-ABCDEFGHIJKLMNOP');
    ipt('-t', 'nat', '-A', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES');
    ipt('-t', 'nat', '-N', 'FOREIGN');
    ipt('-t', 'nat', '-A', 'FOREIGN', '-p', 'tcp', '--dport', '8080', '-j', 'RETURN');
    ipt('-t', 'nat', '-A', 'PREROUTING', '-j', 'FOREIGN');
    ipt('-t', 'filter', '-N', 'KUBE-FORWARD');
    ipt('-t', 'filter', '-A', 'FORWARD', '-j', 'KUBE-FORWARD');
    // kubelet's chain of the same prefix stays.
    ipt('-t', 'filter', '-N', 'KUBE-FIREWALL');
    ipt('-t', 'filter', '-A', 'INPUT', '-j', 'KUBE-FIREWALL');

    const report = await removeLeftovers(exec);
    assert.equal(report.iptablesChains, 4);
    const save = execFileSync('ip', ['netns', 'exec', ns, 'iptables-save']).toString();
    assert.doesNotMatch(save, /KUBE-SERVICES|KUBE-SVC-|KUBE-SEP-|KUBE-FORWARD/);
    assert.match(save, /^:FOREIGN /m);
    assert.match(save, /^-A FOREIGN -p tcp -m tcp --dport 8080 -j RETURN$/m);
    assert.match(save, /^-A PREROUTING -j FOREIGN$/m);
    assert.match(save, /^:KUBE-FIREWALL /m);
    assert.match(save, /^-A INPUT -j KUBE-FIREWALL$/m);
    // Nothing left: a second run changes nothing.
    assert.equal((await removeLeftovers(exec)).iptablesChains, 0);
  });

  test('removes the kube-ipvs0 interface', async () => {
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'add', 'kube-ipvs0', 'type', 'bridge']);
    const report = await removeLeftovers(exec);
    assert.equal(report.removedInterface, true);
    const links = execFileSync('ip', ['netns', 'exec', ns, 'ip', '-o', 'link']).toString();
    assert.doesNotMatch(links, /kube-ipvs0/);
  });
});
