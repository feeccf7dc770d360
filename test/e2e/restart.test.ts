// A clean stop leaves a checkpoint; the next start takes the rules over without reading them back
// or rewriting them (affinity entries survive), trusts the checkpoint only while its marker is in
// the kernel, and reads the rules back at its first verification to repair what changed while no
// proxy was running. nftables mode, and iptables mode in both flavours.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { E2ECluster, iptablesTool, type ClusterOptions, type IptablesFlavour } from '../support/e2e-cluster.js';
import { requestMany } from '../support/netclient.js';
import { PODS, sorted } from './scenarios.js';

const SYNC_PERIOD_S = 3;
const STICKY = '10.96.0.40';
const WEB = '10.96.0.41';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What differs between the modes: where the marker is, what a first sync logs, how to damage the rules. */
interface ModeKit {
  title: string;
  options: Pick<ClusterOptions, 'mode' | 'iptablesFlavour'>;
  /** The backend's log line after each sync. */
  syncDone: string;
  /** Operations of a first sync that only deletes the marker. */
  markerOperations: number;
  /** The checkpoint markers in the IPv4 kernel rules. */
  markers(c: E2ECluster): Promise<string[]>;
  /** While the proxy is down: breaks the web Service's rules; returns what the repair logs. */
  breakWeb(c: E2ECluster): Promise<RegExp>;
  /** While the proxy is down: removes the marker, and breaks the web Service's rules too. */
  dropMarker(c: E2ECluster): Promise<void>;
  /** Rules outside our own chains that a restart must leave as they were (none: []). */
  rulesOutsideOurs(c: E2ECluster): Promise<string[]>;
}

const nftables: ModeKit = {
  title: 'nftables mode',
  options: {},
  syncDone: 'nftables sync done',
  markerOperations: 1,
  markers: async (c) => (await c.topo.exec('node1', 'nft', ['list', 'chains', 'ip'])).stdout.match(/checkpoint-[0-9a-f]{16}/g) ?? [],
  breakWeb: async (c) => {
    await c.topo.exec('node1', 'nft', ['delete', 'element', 'ip', 'kube-proxy', 'cluster-2-tuples', `{ ${WEB} . tcp . 80 }`]);
    return /missing element in cluster-2-tuples/;
  },
  dropMarker: async (c) => void (await c.topo.exec('node1', 'nft', ['delete', 'table', 'ip', 'kube-proxy'])),
  rulesOutsideOurs: async () => [],
};

function iptables(flavour: IptablesFlavour): ModeKit {
  const run = async (c: E2ECluster, ...args: string[]): Promise<string> => (await c.topo.exec('node1', iptablesTool('IPv4', flavour), args)).stdout;
  /** The chain the web Service's cluster IP jumps to. */
  const webChain = async (c: E2ECluster): Promise<string> => {
    const chain = new RegExp(`^-A KUBE-SERVICES -d ${WEB}/32 .*-j (KUBE-SVC-\\w+)$`, 'm').exec(await c.iptablesSave('IPv4'))?.[1];
    assert.ok(chain, 'the web Service has its KUBE-SVC chain');
    return chain;
  };
  const markers = async (c: E2ECluster): Promise<string[]> => (await run(c, '-t', 'filter', '-S')).match(/(?<=^-N )KUBE-CKPT-[0-9a-f]{16}$/gm) ?? [];
  return {
    title: `iptables mode (${flavour})`,
    options: { mode: 'iptables', iptablesFlavour: flavour },
    syncDone: 'iptables sync done',
    // One transaction declaring and deleting the marker.
    markerOperations: 2,
    markers,
    breakWeb: async (c) => {
      const chain = await webChain(c);
      await run(c, '-t', 'nat', '-F', chain);
      return new RegExp(`changed chain \\(nat/${chain}\\)`);
    },
    dropMarker: async (c) => {
      const [marker] = await markers(c);
      assert.ok(marker, 'the stop left a marker');
      await run(c, '-t', 'filter', '-X', marker);
      await run(c, '-t', 'nat', '-F', await webChain(c));
    },
    // The jumps into our chains: neither lost nor doubled.
    rulesOutsideOurs: async (c) => (await c.iptablesSave('IPv4')).split('\n').filter((l) => /^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) /.test(l)),
  };
}

for (const kit of [nftables, iptables('nft'), iptables('legacy')]) {
  describe(`restart from a checkpoint, ${kit.title}`, () => {
    let cluster: E2ECluster | undefined;
    const c = (): E2ECluster => {
      if (!cluster) throw new Error('the cluster did not start');
      return cluster;
    };
    /** The log of the proxy's first IPv4 sync after `from`. */
    const firstSync = (from: number): string => new RegExp(`${kit.syncDone} family="IPv4"[^\\n]*`).exec(c().proxyLog().slice(from))?.[0] ?? '';

    before(async () => {
      cluster = await E2ECluster.start({ pods: PODS, ...kit.options, extraArgs: ['--iptables-sync-period', `${SYNC_PERIOD_S}s`] });
      await c().addService({ name: 'sticky', clusterIPs: [STICKY], sessionAffinity: 'ClientIP', ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
      await c().setEndpoints('sticky', ['a-1', 'a-2', 'b-1', 'b-2']);
      await c().addService({ name: 'web', clusterIPs: [WEB], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
      await c().setEndpoints('web', ['a-1', 'b-1']);
    });
    after(async () => {
      await cluster?.destroy();
    });

    it('a clean restart takes the rules over unchanged: only the marker is deleted, affinity kept', async () => {
      const first = await requestMany(c().topo, 'c-1', STICKY, 80, 5);
      assert.equal(Object.keys(first.pods).length, 1, JSON.stringify(first));
      const outside = await kit.rulesOutsideOurs(c());
      const from = c().proxyLog().length;
      await c().proxy.stop();
      assert.match(c().proxyLog().slice(from), /wrote a restart checkpoint family="IPv4"/);
      assert.equal((await kit.markers(c())).length, 1, 'the marker is in the kernel while the proxy is down');
      const restartedFrom = c().proxyLog().length;
      await c().restartProxy();
      assert.match(c().proxyLog().slice(restartedFrom), /restarting from the checkpoint of the previous clean stop;[^\n]*family="IPv4"/);
      assert.match(firstSync(restartedFrom), new RegExp(`full=true operations=${kit.markerOperations} `), 'only the marker was deleted');
      assert.deepEqual(await kit.markers(c()), []);
      assert.deepEqual(await kit.rulesOutsideOurs(c()), outside);
      const again = await requestMany(c().topo, 'c-1', STICKY, 80, 5);
      assert.deepEqual(again.pods, first.pods, 'the client keeps its pod: the affinity state was not rewritten');
    });

    it('Services changed while the proxy was down are written at its first sync, from the checkpoint', async () => {
      const from = c().proxyLog().length;
      await c().restartProxy(() => c().setEndpoints('web', ['a-2'], { expectRules: false }));
      assert.match(c().proxyLog().slice(from), /restarting from the checkpoint/);
      // The first sync wrote the web Service's change, nothing of the others.
      const ops = Number(/full=true operations=(\d+)/.exec(firstSync(from))?.[1] ?? NaN);
      assert.ok(ops > kit.markerOperations && ops < 30, firstSync(from));
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', WEB, 80, 10)).pods), ['a-2']);
      await c().setEndpoints('web', ['a-1', 'b-1']);
    });

    it('what changed while the proxy was down is repaired at its first verification', async () => {
      await c().proxy.stop();
      const repairLogged = await kit.breakWeb(c());
      const from = c().proxyLog().length;
      await c().restartProxy();
      assert.match(c().proxyLog().slice(from), /restarting from the checkpoint/);
      for (let waited = 0; ; waited += 200) {
        const r = await requestMany(c().topo, 'c-1', WEB, 80, 10, { timeoutMs: 700 });
        if (Object.keys(r.errors).length === 0 && sorted(r.pods).join() === 'a-1,b-1') break;
        if (waited > (SYNC_PERIOD_S + 6) * 1000) assert.fail(`${WEB} not repaired: ${JSON.stringify(r)}\n${c().proxyLog().slice(from).slice(-3000)}`);
        await sleep(200);
      }
      assert.match(c().proxyLog().slice(from), repairLogged);
    });

    it('a checkpoint whose marker is gone is not trusted: the rules are read back at start', async () => {
      await c().proxy.stop();
      await kit.dropMarker(c());
      const from = c().proxyLog().length;
      await c().restartProxy();
      assert.match(c().proxyLog().slice(from), /the restart checkpoint does not match the kernel[^\n]*family="IPv4"/);
      assert.doesNotMatch(c().proxyLog().slice(from), /restarting from the checkpoint[^\n]*family="IPv4"/);
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', WEB, 80, 10)).pods), ['a-1', 'b-1'], 'repaired by the first sync');
      assert.equal(Object.keys((await requestMany(c().topo, 'c-1', STICKY, 80, 5)).pods).length, 1);
    });
  });
}
