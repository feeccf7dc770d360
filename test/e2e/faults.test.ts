// Faults injected into a running proxy (nftables mode, real kernel): a relay between the proxy
// and the fake API server freezes or cuts the connection, the API server loses its watch
// history, objects are hostile, a second proxy starts. Real packets show what users see; the
// healing times are printed as test diagnostics.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { E2ECluster } from '../support/e2e-cluster.js';
import { COMMAND } from '../support/command.js';
import { kubeconfigFor } from '../support/kubeconfig.js';
import { requestMany, tcpRequest } from '../support/netclient.js';
import type { Proc } from '../../src/sandbox/processes.js';
import type { PodSpec } from '../support/topology.js';

const PODS: PodSpec[] = [
  { name: 'a-1', node: 1, ip: '10.244.1.10', ip6: 'fd00:244:1::10' },
  { name: 'b-1', node: 2, ip: '10.244.2.10', ip6: 'fd00:244:2::10' },
  { name: 'c-1', node: 1, ip: '10.244.1.20', ip6: 'fd00:244:1::20' },
];
const NODE1_IP = '10.0.0.1';
const DROP_MS = 1500;
const WEB_VIP = '10.96.0.10';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** PIDs of the live children of a process. */
/** A process that exists and is not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

describe('fault injection, nftables mode', () => {
  let c: E2ECluster;
  const extra: Proc[] = [];

  /** HTTP status of a GET from inside node1 (0: no answer). */
  async function httpStatus(url: string): Promise<number> {
    const r = await c.topo.exec('node1', 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', url], { check: false });
    return Number(r.stdout.trim()) || 0;
  }

  /** Polls until every request to web's ClusterIP is answered by `pod`; returns the seconds it took. */
  async function webServedBy(pod: string, startedMs: number, limitS: number): Promise<number> {
    for (;;) {
      const r = await requestMany(c.topo, 'c-1', WEB_VIP, 80, 5, { timeoutMs: 1000 });
      if (r.pods[pod] === 5) return (Date.now() - startedMs) / 1000;
      if (Date.now() - startedMs > limitS * 1000) {
        assert.fail(`web not served by ${pod} within ${limitS} s: ${JSON.stringify(r.pods)} ${JSON.stringify(r.errors)}\n${c.proxyLog().slice(-3000)}`);
      }
      await sleep(250);
    }
  }

  before(async () => {
    c = await E2ECluster.start({ pods: PODS, relay: true });
    await c.addService({ name: 'web', clusterIPs: [WEB_VIP], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c.setEndpoints('web', ['a-1']);
  });

  after(async () => {
    for (const p of extra) await p.stop();
    await c?.destroy();
  });

  it('/healthz: 503 before the first sync (here: API server unreachable), /livez 200; 200 once synced', async () => {
    assert.equal(await httpStatus(`http://${NODE1_IP}:10256/healthz`), 200);
    const unreachable = kubeconfigFor('http://127.0.0.1:1');
    const p = c.topo.spawn('node1', process.execPath, [
      COMMAND, '--dry-run', '--watch', '--kubeconfig', unreachable, '--hostname-override', 'node-1', '--proxy-mode', 'nftables',
      '--healthz-bind-address', '127.0.0.1:10400', '--metrics-bind-address=',
    ]);
    extra.push(p);
    let code = 0;
    for (let i = 0; i < 40 && code === 0; i++) {
      await sleep(250);
      code = await httpStatus('http://127.0.0.1:10400/healthz');
    }
    assert.equal(code, 503);
    assert.equal(await httpStatus('http://127.0.0.1:10400/livez'), 200);
    await p.stop();
  });

  it('a frozen watch (silent, never closed) is replaced: a change made meanwhile lands within 90 s', async (t) => {
    const frozen = await c.relay!.send('freeze');
    assert.ok(frozen >= 3, `froze ${frozen} connections`);
    const started = Date.now();
    await c.setEndpoints('web', ['b-1'], { expectRules: false });
    const took = await webServedBy('b-1', started, 90);
    t.diagnostic(`frozen watch healed in ${took.toFixed(1)} s`);
    assert.match(c.proxyLog(), /Watch stalled/);
  });

  it('API server down 10 s, back without watch history (410): the change lands within 10 s; /healthz stays 200', async (t) => {
    await c.relay!.send('refuse');
    await c.api.send({ op: 'compact' });
    await c.setEndpoints('web', ['a-1'], { expectRules: false });
    const outageEnds = Date.now() + 10_000;
    while (Date.now() < outageEnds) {
      // The rules in place stay, and so does health: the control plane being away is no reason to drain.
      assert.equal(await httpStatus(`http://${NODE1_IP}:10256/healthz`), 200);
      assert.deepEqual((await tcpRequest(c.topo, 'c-1', WEB_VIP, 80)).ok, true);
      await sleep(1000);
    }
    await c.relay!.send('accept');
    const took = await webServedBy('a-1', Date.now(), 10);
    t.diagnostic(`after a 10 s outage with 410, the change landed ${took.toFixed(1)} s after the API server answered`);
  });

  it('a LoadBalancer whose only source range is invalid drops every external client at its LB IP', async () => {
    await c.addService({
      name: 'fw-bad',
      type: 'LoadBalancer',
      clusterIPs: ['10.96.0.21'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30081 }],
      loadBalancerIPs: ['192.0.2.21'],
      loadBalancerSourceRanges: ['10.0.0.100/33'],
    });
    await c.setEndpoints('fw-bad', ['a-1']);
    for (const client of ['ext', 'ext2']) {
      assert.deepEqual(await tcpRequest(c.topo, client, '192.0.2.21', 80, { timeoutMs: DROP_MS }), { ok: false, error: 'timeout' }, client);
    }
    // In-cluster traffic is not subject to source ranges.
    assert.equal((await tcpRequest(c.topo, 'c-1', '10.96.0.21', 80)).ok, true);
    assert.match(c.proxyLog(), /object="default\/fw-bad" reason="source-ranges-deny-all"/);
    // The owner is told through an Event on the Service.
    const events = (await c.api.send({ op: 'events' })).objects as Array<{ reason: string; type: string; regarding: { kind: string; name: string } }>;
    assert.ok(events.some((e) => e.regarding.kind === 'Service' && e.regarding.name === 'fw-bad' && e.reason === 'LoadBalancerSourceRangesUnusable' && e.type === 'Warning'), JSON.stringify(events));
  });

  it("unusable external IPs and another Service's ClusterIP are ignored; the valid external IP works", async () => {
    await c.addService({ name: 'victim', clusterIPs: ['10.96.0.60'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c.setEndpoints('victim', ['a-1']);
    await c.addService({
      name: 'thief',
      clusterIPs: ['10.96.0.61'],
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      externalIPs: ['127.0.0.1', '0.0.0.0', '224.0.0.5', '255.255.255.255', '10.96.0.60', '192.0.2.30'],
    });
    await c.setEndpoints('thief', ['b-1']);
    assert.deepEqual((await requestMany(c.topo, 'ext', '192.0.2.30', 80, 10)).pods, { 'b-1': 10 });
    assert.deepEqual((await requestMany(c.topo, 'c-1', '10.96.0.60', 80, 20)).pods, { 'a-1': 20 });
    const loop = await tcpRequest(c.topo, 'node1', '127.0.0.1', 80, { timeoutMs: DROP_MS });
    assert.equal(loop.ok, false, JSON.stringify(loop));
    const table = (await c.nftTable('ip'))!;
    for (const bad of ['127.0.0.1 . tcp', '0.0.0.0 . tcp', '224.0.0.5 . tcp', '255.255.255.255 . tcp']) assert.ok(!table.includes(bad), bad);
    const log = c.proxyLog();
    assert.match(log, /object="default\/thief" reason="unusable-external-ip"/);
    assert.match(log, /object="default\/thief" reason="external-ip-is-cluster-ip"/);
  });

  it('two Services on one ClusterIP:port: the older is served; the other takes over when it goes', async () => {
    await c.addService({ name: 'dup-old', clusterIPs: ['10.96.0.70'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await c.setEndpoints('dup-old', ['a-1']);
    await c.addService({ name: 'dup-new', clusterIPs: ['10.96.0.70'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] }, { expectRules: false });
    await c.setEndpoints('dup-new', ['b-1'], { expectRules: false });
    await c.barrier();
    assert.deepEqual((await requestMany(c.topo, 'c-1', '10.96.0.70', 80, 20)).pods, { 'a-1': 20 });
    assert.match(c.proxyLog(), /object="default\/dup-new" reason="duplicate-cluster-ip-port"/);
    await c.removeService('dup-old');
    await c.barrier();
    assert.deepEqual((await requestMany(c.topo, 'c-1', '10.96.0.70', 80, 20)).pods, { 'b-1': 20 });
  });

  it('a second proxy on the same node exits non-zero, naming the running one by PID', async () => {
    const second = c.topo.spawn('node1', process.execPath, [
      COMMAND, '--kubeconfig', c.kubeconfigPath, '--hostname-override', 'node-1', '--proxy-mode', 'nftables',
      '--healthz-bind-address', '127.0.0.1:10401', '--metrics-bind-address=',
    ]);
    extra.push(second);
    const timeout = sleep(30_000).then(() => 'timeout' as const);
    const res = await Promise.race([second.exited, timeout]);
    assert.notEqual(res, 'timeout', 'the second proxy kept running');
    assert.notEqual((res as { code: number | null }).code, 0);
    assert.match(second.stderr(), new RegExp(`PID ${c.proxy.pid}\\b`));
    // The first one still serves.
    assert.equal((await tcpRequest(c.topo, 'c-1', WEB_VIP, 80)).ok, true);
  });

  it('SIGKILL leaves no helper process behind; the next start removes its temporary files', async () => {
    const pid = c.proxy.pid;
    const helpers = childrenOf(pid);
    assert.ok(helpers.length > 0, 'the proxy runs helper shells');
    const dirs = readdirSync(tmpdir()).filter((n) => n.startsWith(`kpt-exec-${pid}-`));
    assert.ok(dirs.length > 0, 'the helper shells have their temporary directories');
    process.kill(pid, 'SIGKILL');
    await c.proxy.exited;
    // The kernel kills them at once; a loaded machine may take a moment to schedule and reap them.
    for (let i = 0; i < 100 && helpers.some(running); i++) await sleep(50);
    assert.deepEqual(helpers.filter(running), [], 'helpers outlived the proxy');
    assert.ok(dirs.every((d) => existsSync(`${tmpdir()}/${d}`)), 'a killed proxy cannot clean up after itself');
    await c.restartProxy();
    assert.deepEqual(dirs.filter((d) => existsSync(`${tmpdir()}/${d}`)), []);
    assert.match(c.proxyLog(), /taking over a stale instance lock/);
    assert.equal((await tcpRequest(c.topo, 'c-1', WEB_VIP, 80)).ok, true);
  });
});
