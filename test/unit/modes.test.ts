// The mode descriptors: what each proxy mode means for its backend, configuration sections,
// NodePort addresses, metrics and explain.
import assert from 'node:assert/strict';
import { render as renderIptables, toRestoreInput } from '../../src/backend/iptables/render.js';
import { describe, test } from 'node:test';
import { LogOnlyBackend, MODES, modeDescriptor, nodePortIPsOf, PROXY_MODE_NAMES } from '../../src/backend/index.js';
import { render } from '../../src/backend/nftables/render.js';
import { describeSnapshot } from '../../src/model/describe.js';
import { backendConfig, endpoint, servicePort, snapshot } from '../support/snapshots.js';

const web = servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: '10.96.0.10', nodePort: 30010, endpoints: [endpoint('10.244.2.5', 80)] });

describe('mode descriptors', () => {
  test('every mode has a descriptor under its own name; unknown names have none', () => {
    assert.deepEqual(Object.keys(MODES).sort(), [...PROXY_MODE_NAMES].sort());
    for (const name of PROXY_MODE_NAMES) assert.equal(modeDescriptor(name)?.name, name);
    assert.equal(modeDescriptor('kernelspace'), undefined);
    assert.equal(modeDescriptor('toString'), undefined);
  });

  test('configuration sections follow upstream: nftables its own, ipvs its own sync periods with iptables masquerading', () => {
    const sections = Object.fromEntries(PROXY_MODE_NAMES.map((m) => [m, [MODES[m].syncSection, MODES[m].masqueradeSection]]));
    assert.deepEqual(sections, {
      nftables: ['nftables', 'nftables'],
      iptables: ['iptables', 'iptables'],
      ipvs: ['ipvs', 'iptables'],
      userspace: ['iptables', 'iptables'],
    });
  });

  test('a mode without a kernel backend gets a log-only backend that prints the snapshot and programs nothing', async () => {
    for (const name of ['userspace'] as const) {
      const printed: string[] = [];
      // A wrap that cannot run: any attempt to run a kernel tool would fail the sync.
      const be = MODES[name].createBackend(backendConfig(), { dryRun: false, out: (t) => printed.push(t), wrap: ['/nonexistent/tool'] });
      assert.ok(be instanceof LogOnlyBackend, name);
      assert.equal(MODES[name].programsKernel, false);
      assert.equal(be.mode, name);
      const snap = snapshot([web]);
      assert.deepEqual(await be.sync(snap), { operations: 0, full: true });
      assert.deepEqual(printed, [describeSnapshot(snap) + '\n']);
      assert.match(printed[0]!, /ns1\/web TCP 10\.96\.0\.10:80 nodePort=30010/);
      assert.equal(be.describe?.(), describeSnapshot(snap));
      await be.cleanup();
    }
  });

  test('ipvs mode builds the IPVS backend; a dry run prints ipvsadm, ipset and iptables input', async () => {
    assert.equal(MODES.ipvs.programsKernel, true);
    let printed = '';
    const be = MODES.ipvs.createBackend(backendConfig(), { dryRun: true, out: (t) => (printed += t), wrap: ['/nonexistent/tool'] });
    assert.equal(be.mode, 'ipvs');
    await be.sync(snapshot([web]));
    assert.match(printed, /^-A -t 10\.96\.0\.10:80 -s rr$/m);
    assert.match(printed, /^-a -t 10\.96\.0\.10:80 -r 10\.244\.2\.5:80 -m -w 1$/m);
    assert.match(printed, /^add KUBE-CLUSTER-IP 10\.96\.0\.10,tcp:80$/m);
    assert.match(printed, /^\*nat$/m);
  });

  test('nftables mode builds the nftables backend; a dry run prints its ruleset', async () => {
    assert.equal(MODES.nftables.programsKernel, true);
    let printed = '';
    const be = MODES.nftables.createBackend(backendConfig(), { dryRun: true, out: (t) => (printed += t) });
    assert.equal(be.mode, 'nftables');
    const res = await be.sync(snapshot([web]));
    assert.equal(res.full, true);
    assert.match(printed, /table ip kube-proxy/);
    assert.match(printed, /10\.96\.0\.10/);
  });

  test('NodePort addresses: nftables as its renderer, the other modes every local address by default', () => {
    const ips = ['192.168.1.10', '10.0.0.10'];
    const cfg = (nodePortAddresses: string[]) => backendConfig({ nodePortAddresses, nodeIPs: ips });
    assert.deepEqual(MODES.nftables.nodePortIPs(cfg([])), ['192.168.1.10']);
    assert.deepEqual(MODES.nftables.nodePortIPs(cfg(['10.0.0.0/8'])), ['10.0.0.10']);
    for (const name of ['ipvs', 'userspace'] as const) {
      const m = MODES[name];
      assert.equal(m.nodePortIPs(cfg([])), null, name);
      assert.equal(m.nodePortIPs(cfg(['0.0.0.0/0'])), null, name);
      assert.deepEqual(m.nodePortIPs(cfg(['primary'])), ['192.168.1.10'], name);
      assert.deepEqual(m.nodePortIPs(cfg(['010.0.0.0/8', '172.16.0.0/12'])), ['10.0.0.10'], name);
    }
    const v6 = backendConfig({ family: 'IPv6', nodePortAddresses: [], nodeIPs: ['fd00::10'] });
    assert.deepEqual(nodePortIPsOf(MODES.nftables, [cfg([]), v6]), ['192.168.1.10', 'fd00::10']);
    assert.equal(nodePortIPsOf(MODES.iptables, [cfg(['primary']), v6]), null);
  });

  test('sync failure metrics carry upstream names (ipvs counts iptables restore failures, as upstream); userspace has none', () => {
    assert.equal(MODES.nftables.syncFailureMetric?.name, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total');
    assert.equal(MODES.iptables.syncFailureMetric?.name, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total');
    assert.equal(MODES.ipvs.syncFailureMetric?.name, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total');
    assert.equal(MODES.userspace.syncFailureMetric, undefined);
  });

  test('nftables and iptables have traceable rules: the rendered ruleset, tagged by syntax', () => {
    const snap = snapshot([web]);
    const cfg = backendConfig();
    assert.deepEqual(MODES.nftables.traceableRules?.(snap, cfg), { syntax: 'nftables', ruleset: render(snap, cfg) });
    assert.deepEqual(MODES.iptables.traceableRules?.(snap, cfg), { syntax: 'iptables', text: toRestoreInput(renderIptables(snap, cfg)) });
    for (const name of ['ipvs', 'userspace'] as const) assert.equal(MODES[name].traceableRules, undefined, name);
  });

  test('the sandbox learns its tools and rule dump from the mode', () => {
    assert.deepEqual(MODES.nftables.sandbox, { tools: ['nft'], dumpRules: ['nft', 'list', 'table', 'ip', 'kube-proxy'] });
    assert.deepEqual(MODES.iptables.sandbox.dumpRules, ['iptables-save']);
  });
});
