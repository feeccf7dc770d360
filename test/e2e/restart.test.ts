// A clean stop leaves a checkpoint; the next start takes the rules over without reading them back
// or rewriting them (affinity entries survive), trusts the checkpoint only while its marker is in
// the kernel, and reads the rules back at its first verification to repair what changed while no
// proxy was running. nftables mode, and iptables mode in both flavours.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { E2ECluster, iptablesTool, type IptablesFlavour } from '../support/e2e-cluster.js';
import { requestMany } from '../support/netclient.js';
import { PODS, sorted } from './scenarios.js';

const SYNC_PERIOD_S = 3;
const STICKY = '10.96.0.40';
const WEB = '10.96.0.41';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('restart from a checkpoint, nftables mode', () => {
  let cluster: E2ECluster | undefined;
  const c = (): E2ECluster => {
    if (!cluster) throw new Error('the cluster did not start');
    return cluster;
  };
  const nft = async (...args: string[]): Promise<string> => (await c().topo.exec('node1', 'nft', args)).stdout;
  const chains = async (): Promise<string> => nft('list', 'chains', 'ip');
  /** The log of the proxy's first IPv4 sync after `from`. */
  const firstSync = (from: number): string => /nftables sync done family="IPv4"[^\n]*/.exec(c().proxyLog().slice(from))?.[0] ?? '';

  before(async () => {
    cluster = await E2ECluster.start({ pods: PODS, extraArgs: ['--iptables-sync-period', `${SYNC_PERIOD_S}s`] });
    await c().addService({ name: 'sticky', clusterIPs: [STICKY], sessionAffinity: 'ClientIP', ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('sticky', ['a-1', 'a-2', 'b-1', 'b-2']);
    await c().addService({ name: 'web', clusterIPs: [WEB], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('web', ['a-1', 'b-1']);
  });
  after(async () => {
    await cluster?.destroy();
  });

  it('a clean restart takes the rules over unchanged: one operation (the marker), affinity entries kept', async () => {
    const first = await requestMany(c().topo, 'c-1', STICKY, 80, 5);
    assert.equal(Object.keys(first.pods).length, 1, JSON.stringify(first));
    const from = c().proxyLog().length;
    await c().proxy.stop();
    assert.match(c().proxyLog().slice(from), /wrote a restart checkpoint family="IPv4"/);
    assert.match(await chains(), /chain checkpoint-[0-9a-f]{16} \{/, 'the marker is in the kernel while the proxy is down');
    const restartedFrom = c().proxyLog().length;
    await c().restartProxy();
    assert.match(c().proxyLog().slice(restartedFrom), /restarting from the checkpoint of the previous clean stop;[^\n]*family="IPv4"/);
    assert.match(firstSync(restartedFrom), /full=true operations=1 /, 'only the marker was deleted');
    assert.doesNotMatch(await chains(), /checkpoint-/);
    const again = await requestMany(c().topo, 'c-1', STICKY, 80, 5);
    assert.deepEqual(again.pods, first.pods, 'the client keeps its pod: the affinity set was not rewritten');
  });

  it('Services changed while the proxy was down are written at its first sync, from the checkpoint', async () => {
    const from = c().proxyLog().length;
    await c().restartProxy(() => c().setEndpoints('web', ['a-2'], { expectRules: false }));
    assert.match(c().proxyLog().slice(from), /restarting from the checkpoint/);
    // The first sync wrote the web Service's change, nothing of the others (a few operations).
    const ops = Number(/full=true operations=(\d+)/.exec(firstSync(from))?.[1] ?? NaN);
    assert.ok(ops > 1 && ops < 20, firstSync(from));
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', WEB, 80, 10)).pods), ['a-2']);
    await c().setEndpoints('web', ['a-1', 'b-1']);
  });

  it('what changed while the proxy was down is repaired at its first verification', async () => {
    await c().proxy.stop();
    await nft('delete', 'element', 'ip', 'kube-proxy', 'cluster-2-tuples', `{ ${WEB} . tcp . 80 }`);
    const from = c().proxyLog().length;
    await c().restartProxy();
    assert.match(c().proxyLog().slice(from), /restarting from the checkpoint/);
    for (let waited = 0; ; waited += 200) {
      const r = await requestMany(c().topo, 'c-1', WEB, 80, 10, { timeoutMs: 700 });
      if (Object.keys(r.errors).length === 0 && sorted(r.pods).join() === 'a-1,b-1') break;
      if (waited > (SYNC_PERIOD_S + 6) * 1000) assert.fail(`${WEB} not repaired: ${JSON.stringify(r)}\n${c().proxyLog().slice(from).slice(-3000)}`);
      await sleep(200);
    }
    assert.match(c().proxyLog().slice(from), /missing element in cluster-2-tuples/);
  });

  it('a checkpoint whose marker is gone is not trusted: the table is rebuilt', async () => {
    await c().proxy.stop();
    await nft('delete', 'table', 'ip', 'kube-proxy');
    const from = c().proxyLog().length;
    await c().restartProxy();
    assert.match(c().proxyLog().slice(from), /the restart checkpoint does not match the kernel/);
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', WEB, 80, 10)).pods), ['a-1', 'b-1']);
    assert.equal(Object.keys((await requestMany(c().topo, 'c-1', STICKY, 80, 5)).pods).length, 1);
  });
});

for (const flavour of ['nft', 'legacy'] as IptablesFlavour[]) {
  describe(`restart from a checkpoint, iptables mode (${flavour})`, () => {
    let cluster: E2ECluster | undefined;
    const c = (): E2ECluster => {
      if (!cluster) throw new Error('the cluster did not start');
      return cluster;
    };
    const iptables = async (...args: string[]): Promise<string> => (await c().topo.exec('node1', iptablesTool('IPv4', flavour), args)).stdout;
    const markers = async (): Promise<string[]> => (await iptables('-t', 'filter', '-S')).match(/^-N KUBE-CKPT-[0-9a-f]{16}$/gm) ?? [];
    const firstSync = (from: number): string => /iptables sync done family="IPv4"[^\n]*/.exec(c().proxyLog().slice(from))?.[0] ?? '';
    /** The rules of the built-in chains of every table, as iptables-save prints them. */
    const builtinRules = async (): Promise<string[]> =>
      (await c().iptablesSave('IPv4')).split('\n').filter((l) => /^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) /.test(l));
    /** The chain the web Service's cluster IP jumps to. */
    const webChain = async (): Promise<string> => {
      const chain = new RegExp(`^-A KUBE-SERVICES -d ${WEB}/32 .*-j (KUBE-SVC-\\w+)$`, 'm').exec(await c().iptablesSave('IPv4'))?.[1];
      assert.ok(chain, 'the web Service has its KUBE-SVC chain');
      return chain;
    };

    before(async () => {
      cluster = await E2ECluster.start({ pods: PODS, mode: 'iptables', iptablesFlavour: flavour, extraArgs: ['--iptables-sync-period', `${SYNC_PERIOD_S}s`] });
      await c().addService({ name: 'sticky', clusterIPs: [STICKY], sessionAffinity: 'ClientIP', ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
      await c().setEndpoints('sticky', ['a-1', 'a-2', 'b-1', 'b-2']);
      await c().addService({ name: 'web', clusterIPs: [WEB], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
      await c().setEndpoints('web', ['a-1', 'b-1']);
    });
    after(async () => {
      await cluster?.destroy();
    });

    it('a clean restart takes the rules over without reading them: only the marker is deleted, affinity kept', async () => {
      const first = await requestMany(c().topo, 'c-1', STICKY, 80, 5);
      assert.equal(Object.keys(first.pods).length, 1, JSON.stringify(first));
      const jumpsBefore = await builtinRules();
      const from = c().proxyLog().length;
      await c().proxy.stop();
      assert.match(c().proxyLog().slice(from), /wrote a restart checkpoint family="IPv4"/);
      assert.equal((await markers()).length, 1, 'the marker is in the filter table while the proxy is down');
      const restartedFrom = c().proxyLog().length;
      await c().restartProxy();
      assert.match(c().proxyLog().slice(restartedFrom), /restarting from the checkpoint of the previous clean stop;[^\n]*family="IPv4"/);
      assert.match(firstSync(restartedFrom), /full=true operations=2 /, 'one transaction declaring and deleting the marker');
      assert.deepEqual(await markers(), []);
      assert.deepEqual(await builtinRules(), jumpsBefore, 'the jumps from the built-in chains are neither lost nor doubled');
      const again = await requestMany(c().topo, 'c-1', STICKY, 80, 5);
      assert.deepEqual(again.pods, first.pods, 'the client keeps its pod');
    });

    it('Services changed while the proxy was down are written at its first sync, from the checkpoint', async () => {
      const from = c().proxyLog().length;
      await c().restartProxy(() => c().setEndpoints('web', ['a-2'], { expectRules: false }));
      assert.match(c().proxyLog().slice(from), /restarting from the checkpoint/);
      const ops = Number(/full=true operations=(\d+)/.exec(firstSync(from))?.[1] ?? NaN);
      assert.ok(ops > 2 && ops < 30, firstSync(from));
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', WEB, 80, 10)).pods), ['a-2']);
      await c().setEndpoints('web', ['a-1', 'b-1']);
    });

    it('what changed while the proxy was down is repaired at its first verification', async () => {
      const chain = await webChain();
      await c().proxy.stop();
      await iptables('-t', 'nat', '-F', chain);
      const from = c().proxyLog().length;
      await c().restartProxy();
      assert.match(c().proxyLog().slice(from), /restarting from the checkpoint/);
      for (let waited = 0; ; waited += 200) {
        const r = await requestMany(c().topo, 'c-1', WEB, 80, 10, { timeoutMs: 700 });
        if (Object.keys(r.errors).length === 0 && sorted(r.pods).join() === 'a-1,b-1') break;
        if (waited > (SYNC_PERIOD_S + 6) * 1000) assert.fail(`${WEB} not repaired: ${JSON.stringify(r)}\n${c().proxyLog().slice(from).slice(-3000)}`);
        await sleep(200);
      }
      assert.match(c().proxyLog().slice(from), new RegExp(`changed chain \\(nat/${chain}\\)`));
    });

    it('a checkpoint whose marker is gone is not trusted: the rules are read back at start', async () => {
      const chain = await webChain();
      await c().proxy.stop();
      const [marker] = await markers();
      assert.ok(marker, 'the stop left a marker');
      await iptables('-t', 'filter', '-X', marker.slice('-N '.length));
      await iptables('-t', 'nat', '-F', chain);
      const from = c().proxyLog().length;
      await c().restartProxy();
      assert.match(c().proxyLog().slice(from), /the restart checkpoint does not match the kernel[^\n]*family="IPv4"/);
      assert.doesNotMatch(c().proxyLog().slice(from), /restarting from the checkpoint[^\n]*family="IPv4"/, "IPv6's marker is still there");
      assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', WEB, 80, 10)).pods), ['a-1', 'b-1'], 'repaired by the first sync');
    });
  });
}
