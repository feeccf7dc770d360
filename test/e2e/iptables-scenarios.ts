// `--proxy-mode iptables` end to end, for one iptables flavour: every shared scenario, plus what
// is particular to the mode: the flavour the proxy picks by itself, upstream's chain names, the
// canary that brings flushed rules back, and other modes' and flavours' leftovers removed.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { it } from 'node:test';
import { iptablesTool, type E2ECluster, type IptablesFlavour } from '../support/e2e-cluster.js';
import type { Family } from '../support/proxy-sync-log.js';
import { requestMany, tcpRequest } from '../support/netclient.js';
import type { Topology } from '../support/topology.js';
import { modeSuite, sorted } from './scenarios.js';

/** Short enough to test that the canary brings flushed rules back in time. */
const SYNC_PERIOD_S = 5;
/** The sync that follows the canary check also takes a moment. */
const RESTORE_DEADLINE_MS = SYNC_PERIOD_S * 1000 + 3000;
const KUBELET_CHAINS = /^KUBE-(KUBELET-CANARY|IPTABLES-HINT)$/;

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32, unpadded. */
function base32(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** Upstream's per-service-port chain suffix: first 16 chars of base32(sha256(text)). */
export function chainHash(text: string): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, 16);
}

const otherOf = (f: IptablesFlavour): IptablesFlavour => (f === 'nft' ? 'legacy' : 'nft');

/** Rules another mode and the other flavour left behind on node1, which the proxy must remove. */
function leaveOtherModesBehind(flavour: IptablesFlavour): (topo: Topology) => Promise<void> {
  return async (topo) => {
    await topo.exec('node1', 'nft', ['add table ip kube-proxy; add chain ip kube-proxy services; add table ip6 kube-proxy']);
    const stale = [
      '*nat',
      ':KUBE-SERVICES - [0:0]',
      ':KUBE-SVC-STALESTALESTALE1 - [0:0]',
      '-A KUBE-SERVICES -j KUBE-SVC-STALESTALESTALE1',
      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      'COMMIT',
      '',
    ].join('\n');
    for (const family of ['IPv4', 'IPv6'] as const) {
      await topo.exec('node1', iptablesTool(family, otherOf(flavour), '-restore'), ['--noflush'], { input: stale });
    }
  };
}

async function waitUntilServed(c: E2ECluster, ip: string, what: string): Promise<number> {
  const started = Date.now();
  for (;;) {
    const r = await tcpRequest(c.topo, 'c-1', ip, 80, { timeoutMs: 500 });
    if (r.ok) return Date.now() - started;
    if (Date.now() - started > RESTORE_DEADLINE_MS) assert.fail(`${what}: ${ip}:80 not served again within ${RESTORE_DEADLINE_MS} ms (${JSON.stringify(r)})`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

function iptablesScenarios(c: () => E2ECluster, flavour: IptablesFlavour): void {
  const tool = (family: Family, suffix: '' | '-save' | '-restore' = ''): string => iptablesTool(family, flavour, suffix);

  it(`the proxy picked the ${flavour} flavour by itself; the other flavour and the nftables mode hold nothing of ours`, async () => {
    for (const family of ['IPv4', 'IPv6'] as const) {
      const ours = await c().ruleText(family);
      assert.match(ours ?? '', /^-A PREROUTING .*-j KUBE-SERVICES$/m, `${family} ${flavour}`);
      assert.doesNotMatch(ours ?? '', /STALE/);
      const other = await c().iptablesSave(family, otherOf(flavour));
      assert.doesNotMatch(other, /KUBE-(SERVICES|SVC-|SEP-|PROXY-CANARY|MARK-MASQ|POSTROUTING|NODEPORTS|FORWARD)/, `${family} ${otherOf(flavour)}: ${other}`);
      assert.match(await c().iptablesSave(family), /^:KUBE-KUBELET-CANARY /m, "kubelet's chain stays");
    }
    const tables = await c().topo.exec('node1', 'nft', ['list', 'tables']);
    assert.doesNotMatch(tables.stdout, /kube-proxy/, 'the nftables-mode tables were removed at start-up');
  });

  it("iptables-save shows upstream's chain names for a Service port and its endpoints", async () => {
    assert.equal(chainHash('ns1/svc1:p80tcp'), 'XPGD46QRK7WJZT7O', 'the hash of the test follows upstream');
    assert.equal(chainHash('ns1/svc1:p80tcp10.180.0.1:80'), 'SXIVWICOYRO3J4NJ');
    await c().addService({ name: 'names', clusterIPs: ['10.96.0.80', 'fd00:96::80'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('names', ['a-1', 'b-1']);
    const svc = `KUBE-SVC-${chainHash('default/names:httptcp')}`;
    for (const [family, vip, eps] of [
      ['IPv4', '10.96.0.80/32', ['10.244.1.10:8080', '10.244.2.10:8080']],
      ['IPv6', 'fd00:96::80/128', ['[fd00:244:1::10]:8080', '[fd00:244:2::10]:8080']],
    ] as const) {
      const saved = await c().iptablesSave(family);
      const nat = saved.slice(saved.indexOf('*nat'));
      assert.match(nat, new RegExp(`^:${svc} - `, 'm'), `${family}: ${svc} declared`);
      const toSvc = nat.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ') && l.endsWith(`-j ${svc}`));
      assert.equal(toSvc.length, 1, `${family}: one KUBE-SERVICES rule jumps to ${svc}`);
      assert.ok(toSvc[0]!.includes(`-d ${vip} `), toSvc[0]);
      for (const ep of eps) {
        const sep = `KUBE-SEP-${chainHash(`default/names:httptcp${ep}`)}`;
        assert.match(nat, new RegExp(`^-A ${svc} .*-j ${sep}$`, 'm'), `${family}: ${svc} → ${sep} (${ep})`);
        assert.match(nat, new RegExp(`^-A ${sep} .*DNAT --to-destination ${ep.replace(/[[\]]/g, '\\$&')}$`, 'm'), `${family}: ${sep} DNATs to ${ep}`);
      }
      for (const table of ['mangle', 'nat', 'filter']) {
        const t = saved.slice(saved.indexOf(`*${table}`));
        assert.match(t.slice(0, t.indexOf('COMMIT')), /^:KUBE-PROXY-CANARY /m, `${family}: canary in ${table}`);
      }
    }
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.80', 80, 30)).pods), ['a-1', 'b-1']);
  });

  it('a restarted proxy rewrites only the chains that changed while it was down', async (t) => {
    await c().addService({ name: 'down', clusterIPs: ['10.96.0.91'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('down', ['a-1']);
    const from = c().proxyLog().length;
    await c().restartProxy(() => c().setEndpoints('down', ['b-1'], { expectRules: false }));
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.91', 80, 20)).pods), ['b-1']);
    const log = c().proxyLog().slice(from);
    const written = (family: Family): number => Number(new RegExp(`iptables sync done family="${family}" full=true operations=(\\d+)`).exec(log)?.[1] ?? NaN);
    const total = (await c().iptablesSave('IPv4')).split('\n').filter((l) => /^(:KUBE-|-A )/.test(l)).length;
    t.diagnostic(`restart wrote ${written('IPv4')} of ${total} IPv4 lines, ${written('IPv6')} IPv6`);
    // The Service's chain, its new endpoint chain and the old one's deletion: a few lines, not the ruleset.
    assert.ok(written('IPv4') > 0 && written('IPv4') <= 12, `IPv4: ${written('IPv4')} lines written of ${total}`);
    // Only the clean stop's checkpoint marker goes (declared and deleted: two lines).
    assert.equal(written('IPv6'), 2, 'nothing changed for IPv6');
  });

  it('a Service created while the proxy was down: the restart inserts its rule into KUBE-SERVICES, not the whole chain', async (t) => {
    const from = c().proxyLog().length;
    await c().restartProxy(async () => {
      await c().addService({ name: 'while-down', clusterIPs: ['10.96.0.92'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] }, { expectRules: false });
      await c().setEndpoints('while-down', ['a-1'], { expectRules: false });
    });
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.92', 80, 20)).pods), ['a-1']);
    const log = c().proxyLog().slice(from);
    const written = Number(/iptables sync done family="IPv4" full=true operations=(\d+)/.exec(log)?.[1] ?? NaN);
    const services = (await c().iptablesSave('IPv4')).split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ')).length;
    t.diagnostic(`restart wrote ${written} IPv4 lines; KUBE-SERVICES holds ${services} rules`);
    // Legacy replaces the whole table at every commit and writes changed chains whole.
    if (flavour === 'nft') assert.ok(written > 0 && written < services, `${written} lines written, KUBE-SERVICES has ${services} rules`);
  });

  /** Our chains in node1 for a family, kubelet's left out. */
  const ourChains = async (family: Family, table: string): Promise<string[]> => {
    const saved = await c().iptablesSave(family);
    const t = saved.slice(saved.indexOf(`*${table}\n`));
    const block = t.slice(0, t.indexOf('\nCOMMIT'));
    const kubelets = (n: string): boolean => KUBELET_CHAINS.test(n) || (table === 'filter' && n === 'KUBE-FIREWALL');
    return [...block.matchAll(/^:(KUBE-\S+) - /gm)].map((m) => m[1]!).filter((n) => !kubelets(n));
  };

  const flushAndCheck = async (deleteChains: boolean): Promise<void> => {
    for (const family of ['IPv4', 'IPv6'] as const) {
      if (!deleteChains) {
        for (const table of ['mangle', 'nat', 'filter']) await c().topo.exec('node1', tool(family), ['-t', table, '-F']);
        continue;
      }
      // Flush and deletion in one transaction per table: a repair by the proxy in between
      // would refill a chain and make its deletion fail.
      const blocks: string[] = [];
      for (const table of ['mangle', 'nat', 'filter']) {
        blocks.push([`*${table}`, '-F', ...(await ourChains(family, table)).map((n) => `-X ${n}`), 'COMMIT'].join('\n'));
      }
      await c().topo.exec('node1', tool(family, '-restore'), ['--noflush'], { input: blocks.join('\n') + '\n' });
    }
    // Every command above is checked for success; what they removed is not read back, as a
    // periodic sync may already have restored it.
  };

  for (const [what, deleteChains] of [
    ['a flush of mangle, nat and filter', false],
    ['a flush and the deletion of our chains', true],
  ] as const) {
    it(`after ${what}, the canary brings the Services back within the sync period`, async (t) => {
      if (!deleteChains) {
        await c().addService({ name: 'canary', clusterIPs: ['10.96.0.90', 'fd00:96::90'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
        await c().setEndpoints('canary', ['a-1', 'b-1']);
      }
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.90', 80, 20)).pods), ['a-1', 'b-1']);
      await flushAndCheck(deleteChains);
      const ms = await waitUntilServed(c(), '10.96.0.90', what);
      await waitUntilServed(c(), 'fd00:96::90', what);
      t.diagnostic(`served again ${ms} ms after ${what}`);
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.90', 80, 30)).pods), ['a-1', 'b-1']);
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', 'fd00:96::90', 80, 30)).pods), ['a-1', 'b-1']);
      // The Services added before the flush are all back, not only this one.
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.10', 80, 30)).pods), ['a-1', 'a-2', 'b-1', 'b-2']);
      assert.match(await c().iptablesSave('IPv4'), /^:KUBE-KUBELET-CANARY /m, "kubelet's chain was not touched");
    });
  }
}

export function iptablesModeSuite(flavour: IptablesFlavour): void {
  modeSuite(
    `iptables mode (${flavour} flavour) on a real kernel`,
    {
      mode: 'iptables',
      iptablesFlavour: flavour,
      extraArgs: ['--iptables-sync-period', `${SYNC_PERIOD_S}s`],
      beforeProxy: leaveOtherModesBehind(flavour),
    },
    (c) => iptablesScenarios(c, flavour),
  );
}
