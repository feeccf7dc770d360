// The mode descriptors: what each proxy mode means for its backend, configuration sections,
// NodePort addresses, metrics and explain.
import assert from 'node:assert/strict';
import { render as renderIptables, toRestoreInput } from '../../src/backend/iptables/render.js';
import { describe, test } from 'node:test';
import { MODES, modeDescriptor, nodePortIPsOf, PROXY_MODE_NAMES } from '../../src/backend/index.js';
import { render } from '../../src/backend/nftables/render.js';
import { renderIpvs } from '../../src/backend/ipvs/render.js';
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

  test('ipvs mode builds the IPVS backend; a dry run prints ipvsadm, ipset and iptables input', async () => {
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
    let printed = '';
    const be = MODES.nftables.createBackend(backendConfig(), { dryRun: true, out: (t) => (printed += t) });
    assert.equal(be.mode, 'nftables');
    const res = await be.sync(snapshot([web]));
    assert.equal(res.full, true);
    assert.match(printed, /table ip kube-proxy/);
    assert.match(printed, /10\.96\.0\.10/);
  });

  test('userspace mode builds its backend; a dry run prints the redirect chains and binds nothing', async () => {
    let printed = '';
    const be = MODES.userspace.createBackend(backendConfig(), { dryRun: true, out: (t) => (printed += t), wrap: ['/nonexistent/tool'] });
    assert.equal(be.mode, 'userspace');
    await be.sync(snapshot([web]));
    assert.match(printed, /^:KUBE-PORTALS-CONTAINER - \[0:0\]$/m);
    assert.match(printed, /^-A KUBE-PORTALS-HOST -d 10\.96\.0\.10\/32 -p tcp .* -j REDIRECT --to-ports 0$/m);
    assert.match(printed, /^-A KUBE-NODEPORT-HOST -p tcp .* --dport 30010 -j REDIRECT --to-ports 0$/m);
    await be.stop?.(true);
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

  test('sync failure metrics carry upstream names (ipvs and userspace count iptables restore failures)', () => {
    assert.equal(MODES.nftables.syncFailureMetric?.name, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total');
    for (const name of ['iptables', 'ipvs', 'userspace'] as const) {
      assert.equal(MODES[name].syncFailureMetric?.name, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total', name);
    }
  });

  test('nftables, iptables and ipvs have traceable rules: the rendered ruleset, tagged by syntax', () => {
    const snap = snapshot([web]);
    const cfg = backendConfig();
    assert.deepEqual(MODES.nftables.traceableRules?.(snap, cfg), { syntax: 'nftables', ruleset: render(snap, cfg) });
    assert.deepEqual(MODES.iptables.traceableRules?.(snap, cfg), { syntax: 'iptables', text: toRestoreInput(renderIptables(snap, cfg)) });
    assert.deepEqual(MODES.ipvs.traceableRules?.(snap, cfg), { syntax: 'ipvs', ruleset: renderIpvs(snap, cfg) });
    assert.equal(MODES.userspace.traceableRules, undefined);
  });

  test('the sandbox learns its tools and rule dump from the mode', () => {
    assert.deepEqual(MODES.nftables.sandbox, { tools: ['nft'], dumpRules: ['nft', 'list', 'table', 'ip', 'kube-proxy'] });
    assert.deepEqual(MODES.iptables.sandbox.dumpRules, ['iptables-save']);
  });
});
