// The IPVS mode inside a User-Mode Linux kernel (this machine's own has no IPVS): run there by
// uml-ipvs.test.ts (`node --test` in the guest; the name has no `.test`, so the host's runner leaves
// it alone). The shared scenarios, then what only IPVS shows: `ipvsadm -Ln`, graceful
// termination, and every scheduler accepted by the kernel.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { SCHEDULERS } from '../../src/backend/ipvs/types.js';
import { IpvsBackend } from '../../src/backend/ipvs/backend.js';
import { parseConnectionCounts } from '../../src/backend/ipvs/apply.js';
import { parseProcIpVs } from '../../src/backend/ipvs/procfs.js';
import type { E2ECluster } from '../support/e2e-cluster.js';
import { requestMany } from '../support/netclient.js';
import { run } from '../../src/node/exec.js';
import { backendConfig, endpoint, servicePort, snapshot } from '../support/snapshots.js';
import { KERNEL_MODE, modeSuite, sorted } from './scenarios.js';

const ipvsadm = async (c: () => E2ECluster): Promise<string> => (await c().topo.exec('node1', 'ipvsadm', ['-Ln'])).stdout;

/** The real servers `ipvsadm -Ln` lists under one virtual server: address → weight. */
function realServers(list: string, service: RegExp): Record<string, number> {
  const out: Record<string, number> = {};
  let inside = false;
  for (const line of list.split('\n')) {
    if (/^(TCP|UDP|SCTP) /.test(line)) inside = service.test(line);
    const m = /^\s+-> (\S+)\s+Masq\s+(\d+)/.exec(line);
    if (inside && m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** Processes the guest kernel has started since boot: in the guest, starting one is the cost that counts. */
const processesStarted = (): number => Number(/^processes (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
let startedBefore = 0;
beforeEach(() => {
  startedBefore = processesStarted();
});
afterEach((t) => {
  if ('diagnostic' in t) t.diagnostic(`processes started: ${processesStarted() - startedBefore}`);
});

function ipvsScenarios(c: () => E2ECluster): void {
  it('ipvsadm -Ln lists each service as a virtual server with masqueraded real servers; affinity is persistence', async () => {
    await c().addService({ name: 'view', clusterIPs: ['10.96.0.81'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('view', ['a-1', 'b-1']);
    await c().addService({ name: 'persist', clusterIPs: ['10.96.0.82'], sessionAffinity: 'ClientIP', ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('persist', ['a-1']);
    const list = await ipvsadm(c);
    assert.match(list, /^TCP {2}10\.96\.0\.81:80 rr\s*$/m, list);
    assert.deepEqual(realServers(list, /10\.96\.0\.81:80 /), { '10.244.1.10:8080': 1, '10.244.2.10:8080': 1 }, list);
    assert.match(list, /^TCP {2}10\.96\.0\.82:80 rr persistent 10800\s*$/m, list);
    const addrs = (await c().topo.exec('node1', 'ip', ['-o', 'addr', 'show', 'dev', 'kube-ipvs0'])).stdout;
    assert.match(addrs, /inet 10\.96\.0\.81\/32/, addrs);
  });

  it('graceful termination: a removed endpoint with connections drains at weight 0, one without goes within the drain period', async () => {
    await c().addService({ name: 'drain', clusterIPs: ['10.96.0.83'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c().setEndpoints('drain', ['a-1', 'b-1']);
    assert.deepEqual(sorted((await requestMany(c().topo, 'c-1', '10.96.0.83', 80, 4)).pods), ['a-1', 'b-1']);
    await c().setEndpoints('drain', ['a-1', 'b-1', 'b-2']);
    await c().setEndpoints('drain', ['a-1']);
    // b-1's closed connections linger in IPVS (TIME_WAIT); b-2 never had one. A partial sync leaves
    // removed real servers at weight 0 and the drain timer (every 2 s) deletes the idle ones.
    let list = await ipvsadm(c);
    let rs = realServers(list, /10\.96\.0\.83:80 /);
    for (const deadline = Date.now() + 6000; Object.keys(rs).length > 2 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 500));
      list = await ipvsadm(c);
      rs = realServers(list, /10\.96\.0\.83:80 /);
    }
    assert.equal(Object.keys(rs).length, 2, JSON.stringify(rs));
    assert.deepEqual(Object.values(rs).sort(), [0, 1], JSON.stringify(rs));
    // The proxy decides from the kernel's procfs view, read in its namespace: it must agree with ipvsadm's.
    const proc = parseProcIpVs((await c().topo.exec('node1', 'cat', ['/proc/net/ip_vs'])).stdout);
    assert.ok((proc.get('-t 10.96.0.83:80 10.244.2.10:8080') ?? 0) > 0, JSON.stringify([...proc]));
    assert.deepEqual(proc, parseConnectionCounts(list));
    const after = await requestMany(c().topo, 'c-1', '10.96.0.83', 80, 10);
    assert.deepEqual(after.pods, { 'a-1': 10 });
  });
}

// A Local-policy NodePort has local endpoints only, for every client (by design, as upstream).
modeSuite('ipvs mode in User-Mode Linux', { mode: 'ipvs', iptablesFlavour: 'legacy' }, ipvsScenarios, { ...KERNEL_MODE, localPolicyFromInside: 'local', noNftTables: true });

describe('ipvs schedulers', () => {
  const ns = 'ipvs-sched';
  const wrap = ['ip', 'netns', 'exec', ns];
  before(async () => {
    // The kernel takes a real server only at a unicast-routable address: the endpoint's subnet needs a route.
    for (const argv of [['netns', 'add', ns], ['-n', ns, 'link', 'add', 'd0', 'type', 'dummy'], ['-n', ns, 'addr', 'add', '10.244.1.1/24', 'dev', 'd0'], ['-n', ns, 'link', 'set', 'd0', 'up']]) {
      const res = await run(['ip', ...argv], '');
      assert.equal(res.code, 0, `ip ${argv.join(' ')}: ${res.stderr}`);
    }
  });
  after(async () => {
    await run(['ip', 'netns', 'del', ns], '');
  });

  it('every scheduler is programmed and listed by the kernel (a changed scheduler edits the service in place)', async () => {
    const web = servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: '10.96.0.10', port: 80, endpoints: [endpoint('10.244.1.5', 8080)] });
    for (const scheduler of SCHEDULERS) {
      const be = new IpvsBackend({ ...backendConfig(), scheduler }, { wrap, flavour: 'legacy' });
      await be.sync(snapshot([web]));
      const list = (await run([...wrap, 'ipvsadm', '-Ln'], '')).stdout;
      assert.match(list, new RegExp(`^TCP {2}10\\.96\\.0\\.10:80 ${scheduler}( |$)`, 'm'), `${scheduler}: ${list}`);
      assert.match(list, /^ {2}-> 10\.244\.1\.5:8080 +Masq +1 /m, list);
    }
  });
});
