// Rules removed behind the proxy's back, while no Service changes: the periodic verification
// finds the difference and rewrites it within the sync period, in every mode. Real packets
// show the Service working again; /healthz, the repairs metric and the log show the repair.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { E2ECluster, iptablesTool, type ClusterOptions, type IptablesFlavour } from '../support/e2e-cluster.js';
import type { KubeObject } from '../../src/model/k8s.js';
import { requestMany } from '../support/netclient.js';
import { PODS, sorted } from './scenarios.js';

const SYNC_PERIOD_S = 5;
/** The periodic sync comes at most one period after the fault; reading back and repairing take a moment more. */
const HEAL_LIMIT_MS = SYNC_PERIOD_S * 1000 + 4000;
const WEB = { v4: '10.96.0.10', v6: 'fd00:96::10', pods: ['a-1', 'b-1'] };
const API = { v4: '10.96.0.11', v6: 'fd00:96::11', pods: ['a-2', 'b-2'] };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** HTTP status and body of a GET from inside node1 (status 0: no answer). */
async function httpGet(c: E2ECluster, url: string): Promise<{ status: number; body: string }> {
  const r = await c.topo.exec('node1', 'curl', ['-s', '-w', '\n%{http_code}', '--max-time', '2', url], { check: false });
  const nl = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(nl + 1).trim()) || 0, body: r.stdout.slice(0, nl) };
}

const healthz = async (c: E2ECluster): Promise<number> => (await httpGet(c, 'http://127.0.0.1:10256/healthz')).status;

/** Whether /healthz answers 503 within ~half a second: a monitor saw the foreign change at once. */
async function soon503(c: E2ECluster): Promise<boolean> {
  for (let i = 0; i < 10; i++) {
    if ((await healthz(c)) === 503) return true;
    await sleep(50);
  }
  return false;
}

/** kubeproxy_sync_proxy_rules_repairs_total for the cluster's mode. */
async function repairs(c: E2ECluster): Promise<number> {
  const { body } = await httpGet(c, 'http://127.0.0.1:10249/metrics');
  const m = new RegExp(`^kubeproxy_sync_proxy_rules_repairs_total\\{mode="${c.mode}"\\} (\\d+)$`, 'm').exec(body);
  assert.ok(m, `repairs metric present:\n${body.slice(0, 2000)}`);
  return Number(m[1]);
}

/**
 * Polls until every request to ip:80 is answered and by exactly `pods`; returns the ms since
 * `since`. Meanwhile records whether /healthz answered 503.
 */
async function healed(c: E2ECluster, ip: string, pods: string[], since: number): Promise<{ ms: number; saw503: boolean }> {
  let saw503 = false;
  for (;;) {
    if ((await healthz(c)) === 503) saw503 = true;
    const r = await requestMany(c.topo, 'c-1', ip, 80, 12, { timeoutMs: 700 });
    const ms = Date.now() - since;
    if (Object.keys(r.errors).length === 0 && sorted(r.pods).join() === pods.join()) return { ms, saw503 };
    if (ms > HEAL_LIMIT_MS) assert.fail(`${ip}:80 not served by ${pods.join(', ')} within ${HEAL_LIMIT_MS} ms: ${JSON.stringify(r)}\n${c.proxyLog().slice(-3000)}`);
    await sleep(150);
  }
}

async function servedBy(c: E2ECluster, ip: string, pods: string[]): Promise<void> {
  const r = await requestMany(c.topo, 'c-1', ip, 80, 24);
  assert.deepEqual(r.errors, {}, `${ip}: no failed request`);
  assert.deepEqual(sorted(r.pods), pods, `${ip}: answered by ${pods.join(', ')}`);
}

/** Waits for the repair's log line (it follows the write the traffic already shows) and returns the log since `from`. */
async function repairLogged(c: E2ECluster, from: number, what: RegExp): Promise<string> {
  for (let i = 0; i < 40; i++) {
    const log = c.proxyLog().slice(from);
    if (/repaired kernel rules/.test(log) && what.test(log)) return log;
    await sleep(100);
  }
  assert.fail(`no "repaired kernel rules" line matching ${what} in:\n${c.proxyLog().slice(from).slice(-3000)}`);
}

function repairSuite(title: string, opts: Omit<ClusterOptions, 'pods'>, faults: (c: () => E2ECluster) => void): void {
  describe(title, () => {
    let cluster: E2ECluster | undefined;
    const c = (): E2ECluster => {
      if (!cluster) throw new Error('the cluster did not start');
      return cluster;
    };
    before(async () => {
      cluster = await E2ECluster.start({ ...opts, pods: PODS, extraArgs: ['--iptables-sync-period', `${SYNC_PERIOD_S}s`] });
      for (const [name, svc] of [['web', WEB], ['api', API]] as const) {
        await c().addService({ name, clusterIPs: [svc.v4, svc.v6], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
        await c().setEndpoints(name, svc.pods);
      }
    });
    after(async () => {
      await cluster?.destroy();
    });

    it('before any fault: both Services answer, /healthz 200, nothing repaired', async () => {
      await servedBy(c(), WEB.v4, WEB.pods);
      await servedBy(c(), API.v6, API.pods);
      // Verification has run (at the first sync and every period since) and found nothing.
      await sleep(SYNC_PERIOD_S * 1000 + 500);
      assert.equal(await healthz(c()), 200);
      assert.equal(await repairs(c()), 0);
      assert.doesNotMatch(c().proxyLog(), /rules differ from the rules last written/);
    });

    faults(c);
  });
}

repairSuite('repair of foreign changes, nftables mode', { mode: 'nftables' }, (c) => {
  const nft = (args: string): Promise<unknown> => c().topo.exec('node1', 'nft', [args]);

  it('one deleted dispatch element (its tuple in cluster-2-tuples): only that Service stops, /healthz 503 until the repair, then both serve and the repair is counted', async (t) => {
    const before = await repairs(c());
    const from = c().proxyLog().length;
    await nft(`delete element ip kube-proxy cluster-2-tuples { ${API.v4} . tcp . 80 }`);
    const since = Date.now();
    // The monitor reports the foreign change at once: health turns 503 before the periodic repair.
    const early503 = await soon503(c());
    const { ms } = await healed(c(), API.v4, API.pods, since);
    t.diagnostic(`dispatch element restored ${ms} ms after its deletion`);
    assert.ok(early503, '/healthz answered 503 while the deleted element was not restored');
    await servedBy(c(), WEB.v4, WEB.pods);
    await servedBy(c(), API.v6, API.pods);
    assert.equal(await healthz(c()), 200);
    const log = await repairLogged(c(), from, /missing element in cluster-2-tuples: 1/);
    assert.match(log, /foreign change to our nftables table seen/);
    assert.equal(await repairs(c()), before + 1, 'one repaired item counted');
  });

  it('deleted tables (both families) are rebuilt within the sync period', async (t) => {
    const before = await repairs(c());
    const from = c().proxyLog().length;
    await nft('delete table ip kube-proxy');
    await nft('delete table ip6 kube-proxy');
    const since = Date.now();
    const v4 = await healed(c(), WEB.v4, WEB.pods, since);
    const v6 = await healed(c(), WEB.v6, WEB.pods, since);
    t.diagnostic(`tables rebuilt: IPv4 served ${v4.ms} ms, IPv6 ${v6.ms} ms after the deletion`);
    await servedBy(c(), API.v4, API.pods);
    await servedBy(c(), API.v6, API.pods);
    await repairLogged(c(), from, /table missing, rebuilt/);
    assert.equal(await healthz(c()), 200);
    assert.equal(await repairs(c()), before + 2, 'one rebuilt table per family');
  });

  it('a flushed dispatch chain is rewritten, and nothing else', async (t) => {
    const before = await repairs(c());
    const from = c().proxyLog().length;
    await nft('flush chain ip kube-proxy services');
    const { ms } = await healed(c(), WEB.v4, WEB.pods, Date.now());
    t.diagnostic(`flushed chain rewritten ${ms} ms after the flush`);
    const log = await repairLogged(c(), from, /changed chain services: 1/);
    assert.doesNotMatch(log, /missing element|unexpected element|table missing/);
    assert.equal(await repairs(c()), before + 1);
  });
});

function iptablesFaults(flavour: IptablesFlavour): (c: () => E2ECluster) => void {
  return (c) => {
    const natRules = async (): Promise<string[]> => {
      const save = await c().iptablesSave('IPv4');
      const nat = save.slice(save.indexOf('*nat\n'));
      return nat.slice(0, nat.indexOf('\nCOMMIT')).split('\n');
    };
    /** Deletes one rule, given as iptables-save prints it, with the node's own restore tool. */
    const deleteRule = async (saved: string): Promise<void> => {
      const input = `*nat\n${saved.replace(/^-A /, '-D ')}\nCOMMIT\n`;
      await c().topo.exec('node1', iptablesTool('IPv4', flavour, '-restore'), ['--noflush'], { input });
    };
    const find = async (re: RegExp): Promise<string> => {
      const rule = (await natRules()).find((l) => re.test(l));
      assert.ok(rule, `a nat rule matching ${re}`);
      return rule;
    };

    it(
      flavour === 'nft'
        ? 'with nothing foreign, the periodic verification does not read the rules back (xtables-monitor vouches for them)'
        : 'with nothing foreign, the periodic verification reads the rules back (legacy has no change notifications)',
      async () => {
        const from = c().proxyLog().length;
        await sleep(2 * SYNC_PERIOD_S * 1000 + 1000);
        const log = c().proxyLog().slice(from);
        const readBacks = log.match(/reading the kernel rules back/g)?.length ?? 0;
        const skipped = log.match(/kernel rules not read back: the xtables-monitor saw no foreign change/g)?.length ?? 0;
        if (flavour === 'nft') {
          assert.equal(readBacks, 0, `no read-back:\n${log.slice(-3000)}`);
          assert.ok(skipped >= 2, `verifications ran and were vouched for (${skipped}):\n${log.slice(-3000)}`);
        } else {
          assert.ok(readBacks >= 2, `legacy reads back every period (${readBacks}):\n${log.slice(-3000)}`);
          assert.equal(skipped, 0);
        }
        assert.equal(await repairs(c()), 0);
      },
    );

    it('a deleted KUBE-SEP DNAT rule is restored within the sync period; the repair is counted', async (t) => {
      const before = await repairs(c());
      const from = c().proxyLog().length;
      await deleteRule(await find(/^-A KUBE-SEP-\S+ .*DNAT --to-destination 10\.244\.2\.11:8080$/));
      const since = Date.now();
      // On the nft flavour the monitor reports the foreign change at once: 503 before the periodic repair.
      const early503 = flavour === 'nft' && (await soon503(c()));
      const { ms } = await healed(c(), API.v4, API.pods, since);
      t.diagnostic(`KUBE-SEP DNAT rule restored ${ms} ms after its deletion`);
      if (flavour === 'nft') assert.ok(early503, '/healthz answered 503 while the deleted rule was not restored');
      await repairLogged(c(), from, /changed chain \(nat\/KUBE-SEP-/);
      assert.equal(await healthz(c()), 200);
      assert.equal(await repairs(c()), before + 1, 'one rewritten chain');
    });

    it('a deleted KUBE-SERVICES rule is restored within the sync period', async (t) => {
      const before = await repairs(c());
      const from = c().proxyLog().length;
      await deleteRule(await find(new RegExp(`^-A KUBE-SERVICES -d ${WEB.v4.replace(/\./g, '\\.')}/32 .*-j KUBE-SVC-`)));
      const { ms } = await healed(c(), WEB.v4, WEB.pods, Date.now());
      t.diagnostic(`KUBE-SERVICES rule restored ${ms} ms after its deletion`);
      await repairLogged(c(), from, /changed chain \(nat\/KUBE-SERVICES\)/);
      assert.equal(await repairs(c()), before + 1);
      await servedBy(c(), API.v4, API.pods);
    });

    it('a flushed KUBE-SERVICES chain is rewritten within the sync period, /healthz 503 until then', async (t) => {
      const before = await repairs(c());
      const from = c().proxyLog().length;
      await c().topo.exec('node1', iptablesTool('IPv4', flavour), ['-t', 'nat', '-F', 'KUBE-SERVICES']);
      const { ms, saw503 } = await healed(c(), WEB.v4, WEB.pods, Date.now());
      t.diagnostic(`flushed KUBE-SERVICES rewritten ${ms} ms after the flush`);
      if (flavour === 'nft') assert.ok(saw503, '/healthz answered 503 while KUBE-SERVICES was empty');
      await repairLogged(c(), from, /changed chain \(nat\/KUBE-SERVICES\)/);
      assert.equal(await repairs(c()), before + 1);
      await servedBy(c(), API.v4, API.pods);
      assert.equal(await healthz(c()), 200);
    });

    it('a deleted jump from PREROUTING is re-inserted', async (t) => {
      const before = await repairs(c());
      const from = c().proxyLog().length;
      await deleteRule(await find(/^-A PREROUTING .*-j KUBE-SERVICES$/));
      const since = Date.now();
      // c-1 is on node1: its traffic enters through PREROUTING.
      const { ms, saw503 } = await healed(c(), WEB.v4, WEB.pods, since);
      if (flavour === 'nft') assert.ok(saw503, '/healthz answered 503 while the jump was missing');
      t.diagnostic(`PREROUTING jump re-inserted ${ms} ms after its deletion`);
      await repairLogged(c(), from, /missing or doubled jump from a built-in chain: 1/);
      assert.equal(await repairs(c()), before + 1);
      assert.equal((await natRules()).filter((l) => /^-A PREROUTING .*-j KUBE-SERVICES$/.test(l)).length, 1, 'exactly one jump');
    });

    it('a flushed nat table comes back within the sync period', async (t) => {
      await c().topo.exec('node1', iptablesTool('IPv4', flavour), ['-t', 'nat', '-F']);
      const since = Date.now();
      const web = await healed(c(), WEB.v4, WEB.pods, since);
      await healed(c(), API.v4, API.pods, since);
      t.diagnostic(`nat flush healed ${web.ms} ms after it`);
      assert.equal(await healthz(c()), 200);
    });

    if (flavour === 'nft') {
      it('a change too large for xtables-monitor (a Service of 200 endpoints) is written without it: no monitor exits, and a foreign change after it is seen at once', async () => {
        const from = c().proxyLog().length;
        const endpoints = 200;
        await c().addService({ name: 'big', clusterIPs: ['10.96.0.12'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
        await c().create('EndpointSlice', {
          metadata: { name: 'big-ipv4', namespace: 'default', labels: { 'kubernetes.io/service-name': 'big' } },
          addressType: 'IPv4',
          ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
          endpoints: Array.from({ length: endpoints }, (_, i) => ({
            addresses: [`10.250.${i >> 8}.${i & 255}`],
            conditions: { ready: true, serving: true, terminating: false },
          })),
        } as KubeObject);
        const written = async (): Promise<number> => (await natRules()).filter((l) => /DNAT --to-destination 10\.250\./.test(l)).length;
        for (let i = 0; i < 100 && (await written()) < endpoints; i++) await sleep(100);
        assert.equal(await written(), endpoints, 'every endpoint of the large Service written');
        // Time for a monitor started after the write to subscribe, and for one that overflowed to say so.
        await sleep(1500);
        assert.doesNotMatch(c().proxyLog().slice(from), /xtables-monitor exited/);

        await deleteRule(await find(/^-A KUBE-SEP-\S+ .*DNAT --to-destination 10\.244\.2\.11:8080$/));
        const since = Date.now();
        const early503 = await soon503(c());
        assert.ok(early503, `/healthz answered 503 at once: the monitor saw the foreign change\n${c().proxyLog().slice(from).slice(-3000)}`);
        await healed(c(), API.v4, API.pods, since);
        assert.equal(await healthz(c()), 200);
      });
    }
  };
}

for (const flavour of ['nft', 'legacy'] as const) {
  repairSuite(`repair of foreign changes, iptables mode (${flavour} flavour)`, { mode: 'iptables', iptablesFlavour: flavour }, iptablesFaults(flavour));
}
