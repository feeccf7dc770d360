// The iptables apply layer against real kernels (nft and legacy flavours, IPv4 and IPv6), each
// test in a network namespace of its own, so that what one leaves behind cannot affect another.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  IptablesRestoreError,
  canaryAlive,
  detectFlavour,
  ensureJumps,
  parseSave,
  restore,
  saveTables,
  toolFor,
  type ExecOptions,
  type Flavour,
} from '../../src/backend/iptables/apply.js';
import { CANARY_CHAIN, CANARY_RULE } from '../../src/backend/iptables/canary.js';
import { forEachLine, IPTABLES_MODE_TABLES, kernelChainsReader, keptWhole } from '../../src/backend/iptables/save.js';
import { cleanupIptables, removeLeftovers, removeLeftoversForIptables } from '../../src/backend/common/leftovers.js';
import type { IPFamily } from '../../src/model/types.js';

let seq = 0;
let ns = '';
let exec: ExecOptions = {};

beforeEach(() => {
  ns = `kptipt-a${process.pid}-${seq++}`;
  execFileSync('ip', ['netns', 'add', ns]);
  exec = { wrap: ['ip', 'netns', 'exec', ns] };
});
afterEach(() => {
  execFileSync('ip', ['netns', 'del', ns]);
});

function ipt(family: IPFamily, flavour: Flavour, ...args: string[]): void {
  execFileSync('ip', ['netns', 'exec', ns, toolFor(family, flavour, 'iptables'), ...args]);
}

const save = async (family: IPFamily, flavour: Flavour, table?: string) =>
  parseSave(await saveTables(family, flavour, exec, table ? [table] : undefined));

const CANARIES = ['mangle', 'nat', 'filter'].map((t) => `*${t}\n:${CANARY_CHAIN} - [0:0]\n-F ${CANARY_CHAIN}\n-A ${CANARY_CHAIN} ${CANARY_RULE}\nCOMMIT\n`).join('');

const cases: Array<[IPFamily, Flavour]> = [
  ['IPv4', 'nft'],
  ['IPv6', 'nft'],
  ['IPv4', 'legacy'],
  ['IPv6', 'legacy'],
];

for (const [family, flavour] of cases) {
  const other: Flavour = flavour === 'nft' ? 'legacy' : 'nft';
  describe(`iptables apply, ${flavour} flavour, ${family}`, () => {
    test('restore writes the rules and saveTables reads them back; nothing lands in the other flavour', async () => {
      await restore('*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n', family, flavour, exec);
      const nat = (await save(family, flavour, 'nat')).get('nat')!;
      assert.deepEqual(nat.chains.get('KUBE-MARK-MASQ'), ['-j MARK --set-xmark 0x4000/0x4000']);
      assert.deepEqual(nat.chains.get('KUBE-SERVICES'), []);
      assert.doesNotMatch(await saveTables(family, other, exec), /KUBE-/);
    });

    test('a rejected restore reports the line and keeps the failing table as it was', async () => {
      await restore('*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n', family, flavour, exec);
      // An earlier table commits; the failing one changes nothing, not even its flush and new chain.
      const input = [
        '*filter',
        ':KUBE-FORWARD - [0:0]',
        '-A KUBE-FORWARD -j ACCEPT',
        'COMMIT',
        '*nat',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-NODEPORTS - [0:0]',
        '-A KUBE-SERVICES -j KUBE-NODEPORTS',
        '-A KUBE-SERVICES -p tcp -m tcp --dport 99999 -j RETURN',
        'COMMIT',
        '',
      ].join('\n');
      const err = await restore(input, family, flavour, exec).then(
        () => assert.fail('the restore was accepted'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof IptablesRestoreError, String(err));
      assert.equal(err.line, 9, err.message);
      assert.equal(err.lineText, '-A KUBE-SERVICES -p tcp -m tcp --dport 99999 -j RETURN');
      assert.match(err.toolMessage, /99999/);
      assert.equal(err.tool, toolFor(family, flavour, 'restore'));
      const after = await save(family, flavour);
      assert.deepEqual(after.get('nat')!.chains.get('KUBE-SERVICES'), ['-j RETURN']);
      assert.equal(after.get('nat')!.chains.has('KUBE-NODEPORTS'), false);
      assert.deepEqual(after.get('filter')!.chains.get('KUBE-FORWARD'), ['-j ACCEPT']);
    });

    test('restores on lanes of their own run side by side (nft); a failing one reports its own line, the others stay', async () => {
      const chain = (i: number): string => `*nat\n:KUBE-SVC-LANE${i} - [0:0]\n-A KUBE-SVC-LANE${i} -j RETURN\nCOMMIT\n`;
      if (flavour === 'legacy') {
        await assert.rejects(restore(chain(1), family, flavour, exec, 1), /side by side/);
        return;
      }
      await Promise.all([0, 1, 2, 3].map((lane) => restore(chain(lane), family, flavour, exec, lane)));
      const held = (await save(family, flavour, 'nat')).get('nat')!.chains;
      for (const i of [0, 1, 2, 3]) assert.deepEqual(held.get(`KUBE-SVC-LANE${i}`), ['-j RETURN'], `chain ${i}`);

      const bad = '*nat\n:KUBE-SVC-LANE5 - [0:0]\n-A KUBE-SVC-LANE5 -p tcp -m tcp --dport 99999 -j RETURN\nCOMMIT\n';
      const [first, failed, third] = await Promise.allSettled([restore(chain(4), family, flavour, exec, 0), restore(bad, family, flavour, exec, 1), restore(chain(6), family, flavour, exec, 2)]);
      assert.equal(first.status, 'fulfilled');
      assert.equal(third.status, 'fulfilled');
      assert.equal(failed.status, 'rejected');
      const err = (failed as PromiseRejectedResult).reason as unknown;
      assert.ok(err instanceof IptablesRestoreError, String(err));
      assert.equal(err.line, 3, err.message);
      assert.match(err.lineText, /99999/);
      const after = (await save(family, flavour, 'nat')).get('nat')!.chains;
      assert.equal(after.has('KUBE-SVC-LANE5'), false);
      assert.deepEqual(after.get('KUBE-SVC-LANE4'), ['-j RETURN']);
      assert.deepEqual(after.get('KUBE-SVC-LANE6'), ['-j RETURN']);
    });

    test('a jump to a chain that does not exist is reported at the rule naming it', async () => {
      const input = '*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-NOSUCHCHAIN0000\nCOMMIT\n';
      const err = await restore(input, family, flavour, exec).then(
        () => assert.fail('the restore was accepted'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof IptablesRestoreError, String(err));
      assert.equal(err.line, 3, err.message);
      assert.equal(err.lineText, '-A KUBE-SERVICES -j KUBE-SVC-NOSUCHCHAIN0000');
    });

    test('ensureJumps prepends missing jumps as upstream does, removes duplicates, and is idempotent', async () => {
      await restore('*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:OTHER - [0:0]\nCOMMIT\n', family, flavour, exec);
      await restore('*filter\n:KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\nCOMMIT\n', family, flavour, exec);
      const external = '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES';
      const health = '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS';
      ipt(family, flavour, '-t', 'nat', '-A', 'PREROUTING', '-j', 'OTHER');
      const portals = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES';
      const jumps = [
        { table: 'nat', chain: 'PREROUTING', rule: portals },
        { table: 'nat', chain: 'OUTPUT', rule: portals },
        { table: 'nat', chain: 'POSTROUTING', rule: '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING' },
        { table: 'filter', chain: 'INPUT', rule: external },
        { table: 'filter', chain: 'INPUT', rule: health },
      ];
      assert.equal(await ensureJumps(jumps, family, flavour, exec), 5);
      // Each one prepended in turn: the later jump is the first rule.
      assert.deepEqual((await save(family, flavour, 'filter')).get('filter')!.chains.get('INPUT'), [health, external]);
      let nat = (await save(family, flavour, 'nat')).get('nat')!;
      assert.deepEqual(nat.chains.get('PREROUTING'), [portals, '-j OTHER']);
      assert.deepEqual(nat.chains.get('OUTPUT'), [portals]);
      assert.equal(await ensureJumps(jumps, family, flavour, exec), 0, 'nothing to do the second time');

      // Someone removed one jump and doubled another.
      ipt(family, flavour, '-t', 'nat', '-D', 'OUTPUT', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES');
      ipt(family, flavour, '-t', 'nat', '-A', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES');
      assert.equal(await ensureJumps(jumps, family, flavour, exec), 2);
      nat = (await save(family, flavour, 'nat')).get('nat')!;
      assert.deepEqual(nat.chains.get('PREROUTING'), [portals, '-j OTHER']);
      assert.deepEqual(nat.chains.get('OUTPUT'), [portals]);
      assert.equal(nat.chains.get('POSTROUTING')!.length, 1);
    });

    test('the canary dies with a table flush and with a chain deletion', async () => {
      assert.equal(await canaryAlive(family, flavour, exec), false, 'no canary yet');
      await restore(CANARIES, family, flavour, exec);
      assert.equal(await canaryAlive(family, flavour, exec), true);
      for (const table of ['nat', 'filter', 'mangle']) {
        ipt(family, flavour, '-t', table, '-F');
        assert.equal(await canaryAlive(family, flavour, exec), false, `after -t ${table} -F`);
        await restore(CANARIES, family, flavour, exec);
        assert.equal(await canaryAlive(family, flavour, exec), true);
      }
      ipt(family, flavour, '-t', 'filter', '-F', CANARY_CHAIN);
      ipt(family, flavour, '-t', 'filter', '-X', CANARY_CHAIN);
      assert.equal(await canaryAlive(family, flavour, exec), false, 'after -X');
      // The other flavour's canary does not count.
      await restore(CANARIES, family, other, exec);
      assert.equal(await canaryAlive(family, flavour, exec), false);
    });
  });
}

describe('flavour detection', () => {
  test('nothing anywhere: nft', async () => {
    assert.equal((await detectFlavour(exec)).flavour, 'nft');
  });

  for (const family of ['IPv4', 'IPv6'] as const) {
    for (const chain of ['KUBE-KUBELET-CANARY', 'KUBE-IPTABLES-HINT']) {
      test(`kubelet's ${chain} in legacy ${family} mangle: legacy, even with more nft rules`, async () => {
        ipt(family, 'legacy', '-t', 'mangle', '-N', chain);
        for (let i = 0; i < 3; i++) ipt('IPv4', 'nft', '-A', 'INPUT', '-s', `192.0.2.${i}`, '-j', 'ACCEPT');
        const got = await detectFlavour(exec);
        assert.equal(got.flavour, 'legacy', got.reason);
        assert.match(got.reason, /kubelet/);
      });
    }
  }

  test("kubelet's chain in nft mangle: nft, even with more legacy rules", async () => {
    ipt('IPv6', 'nft', '-t', 'mangle', '-N', 'KUBE-KUBELET-CANARY');
    for (let i = 0; i < 3; i++) ipt('IPv4', 'legacy', '-A', 'INPUT', '-s', `192.0.2.${i}`, '-j', 'ACCEPT');
    assert.equal((await detectFlavour(exec)).flavour, 'nft');
  });

  test('no kubelet chains: the flavour with more rules', async () => {
    ipt('IPv4', 'legacy', '-A', 'INPUT', '-s', '192.0.2.1', '-j', 'ACCEPT');
    ipt('IPv6', 'legacy', '-A', 'INPUT', '-s', '2001:db8::1', '-j', 'ACCEPT');
    ipt('IPv4', 'nft', '-A', 'INPUT', '-s', '192.0.2.1', '-j', 'ACCEPT');
    const got = await detectFlavour(exec);
    assert.equal(got.flavour, 'legacy', got.reason);
    ipt('IPv6', 'nft', '-A', 'INPUT', '-s', '2001:db8::1', '-j', 'ACCEPT');
    assert.equal((await detectFlavour(exec)).flavour, 'nft', 'a tie goes to nft');
  });
});

/** Our chains with a jump from a built-in chain, and kubelet's chains, in one family and flavour. */
async function populate(family: IPFamily, flavour: Flavour): Promise<void> {
  await restore(
    [
      '*nat',
      ':KUBE-SERVICES - [0:0]',
      ':KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]',
      ':KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]',
      ':KUBE-NODE-PORT - [0:0]',
      '-A KUBE-SERVICES -j KUBE-SVC-XPGD46QRK7WJZT7O',
      '-A KUBE-SERVICES -j KUBE-NODE-PORT',
      '-A KUBE-SVC-XPGD46QRK7WJZT7O -j KUBE-SEP-SXIVWICOYRO3J4NJ',
      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      'COMMIT',
      '*filter',
      ':KUBE-FIREWALL - [0:0]',
      ':KUBE-PROXY-CANARY - [0:0]',
      '-A INPUT -j KUBE-FIREWALL',
      'COMMIT',
      '*mangle',
      ':KUBE-KUBELET-CANARY - [0:0]',
      ':KUBE-IPTABLES-HINT - [0:0]',
      ':KUBE-PROXY-CANARY - [0:0]',
      'COMMIT',
      '',
    ].join('\n'),
    family,
    flavour,
    exec,
  );
}

const KUBELETS = [':KUBE-FIREWALL ', ':KUBE-KUBELET-CANARY ', ':KUBE-IPTABLES-HINT ', '-A INPUT -j KUBE-FIREWALL'];

describe('leftovers and cleanup', () => {
  test('cleanupIptables removes ours from both flavours and families and leaves kubelet chains alone', async () => {
    for (const [family, flavour] of cases) await populate(family, flavour);
    assert.equal(await cleanupIptables(exec), 4 * 6);
    for (const [family, flavour] of cases) {
      const text = await saveTables(family, flavour, exec);
      assert.doesNotMatch(text, /KUBE-(SERVICES|SVC|SEP|NODE-PORT|PROXY-CANARY)/, `${family} ${flavour}`);
      for (const k of KUBELETS) assert.ok(text.includes(k), `${family} ${flavour} keeps ${k}`);
    }
    assert.equal(await cleanupIptables(exec), 0, 'nothing left the second time');
  });

  test('nftables mode removes ours from both flavours', async () => {
    await populate('IPv4', 'legacy');
    await populate('IPv6', 'nft');
    const report = await removeLeftovers(exec);
    assert.equal(report.iptablesChains, 12);
    assert.doesNotMatch(await saveTables('IPv4', 'legacy', exec), /KUBE-SERVICES/);
    assert.doesNotMatch(await saveTables('IPv6', 'nft', exec), /KUBE-SERVICES/);
  });

  test('iptables mode (legacy node): the other flavour is cleaned, the IPVS-only chains and the nftables tables go', async () => {
    await populate('IPv4', 'legacy');
    await populate('IPv4', 'nft');
    execFileSync('ip', ['netns', 'exec', ns, 'nft', 'add table ip kube-proxy; add table ip6 kube-proxy; add table ip other']);
    const report = await removeLeftoversForIptables('legacy', exec);
    assert.equal(report.nftablesTables, true);
    const nft = await saveTables('IPv4', 'nft', exec);
    assert.doesNotMatch(nft, /KUBE-(SERVICES|SVC|SEP|NODE-PORT|PROXY-CANARY)/);
    for (const k of KUBELETS) assert.ok(nft.includes(k), `nft keeps ${k}`);
    const legacy = parseSave(await saveTables('IPv4', 'legacy', exec));
    assert.equal(legacy.get('nat')!.chains.has('KUBE-NODE-PORT'), false);
    assert.deepEqual(legacy.get('nat')!.chains.get('KUBE-SERVICES'), ['-j KUBE-SVC-XPGD46QRK7WJZT7O']);
    assert.ok(legacy.get('filter')!.chains.has('KUBE-PROXY-CANARY'));
    const tables = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables']).toString();
    assert.doesNotMatch(tables, /kube-proxy/);
    assert.match(tables, /table ip other/);
  });

  test('iptables mode hands on what it read of our tables, in the flavour in use, when it removed nothing there', async () => {
    await restore('*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 10.96.0.1/32 -j RETURN\nCOMMIT\n', 'IPv4', 'nft', exec);
    await populate('IPv4', 'legacy');
    const report = await removeLeftoversForIptables('nft', exec);
    assert.ok(report.iptablesChains > 0, 'the legacy leftovers went');
    // Our tables as read then, as the backend's own read gives them now.
    const reader = kernelChainsReader(keptWhole);
    forEachLine(await saveTables('IPv4', 'nft', exec, IPTABLES_MODE_TABLES), reader.line);
    assert.deepEqual(report.unchanged.get('IPv4'), reader.done());
    assert.deepEqual(report.unchanged.get('IPv4')!.whole.get('nat/KUBE-SERVICES'), ['-d 10.96.0.1/32 -j RETURN']);
  });

  test('iptables mode removes the IPVS mode leftovers: its own chains, its ipset rules, its ipsets and kube-ipvs0', async () => {
    const inNs = (cmd: string, ...args: string[]): string => execFileSync('ip', ['netns', 'exec', ns, cmd, ...args]).toString();
    inNs('ipset', 'create', 'KUBE-CLUSTER-IP', 'hash:ip,port');
    inNs('ipset', 'create', 'SOMEONE-ELSES', 'hash:ip');
    // A bridge stands in for the dummy device: this kernel may lack the dummy module.
    inNs('ip', 'link', 'add', 'kube-ipvs0', 'type', 'bridge');
    inNs('ip', 'addr', 'add', '10.96.0.10/32', 'dev', 'kube-ipvs0');
    await restore(
      [
        '*nat',
        ':KUBE-SERVICES - [0:0]',
        ':KUBE-MARK-MASQ - [0:0]',
        ':KUBE-NODE-PORT - [0:0]',
        ':KUBE-FIREWALL - [0:0]',
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ',
        '-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT',
        '-A KUBE-SERVICES -d 10.96.0.10/32 -j RETURN',
        'COMMIT',
        '',
      ].join('\n'),
      'IPv4',
      'nft',
      exec,
    );
    const report = await removeLeftoversForIptables('nft', exec);
    assert.equal(report.iptablesChains, 2);
    assert.equal(report.unchanged.has('IPv4'), false, 'a save followed by a removal is stale');
    assert.equal(report.ipsets, 1);
    assert.equal(report.removedInterface, true);
    const nat = parseSave(await saveTables('IPv4', 'nft', exec)).get('nat')!;
    assert.deepEqual([...nat.chains.keys()].filter((n) => n.startsWith('KUBE-')).sort(), ['KUBE-MARK-MASQ', 'KUBE-SERVICES']);
    assert.deepEqual(nat.chains.get('KUBE-SERVICES'), ['-d 10.96.0.10/32 -j RETURN']);
    assert.deepEqual(nat.chains.get('PREROUTING'), ['-m comment --comment "kubernetes service portals" -j KUBE-SERVICES']);
    assert.deepEqual(inNs('ipset', 'list', '-n').trim().split('\n'), ['SOMEONE-ELSES']);
    assert.doesNotMatch(inNs('ip', '-o', 'link'), /kube-ipvs0/);
  });
});
