// Golden renders of the fixed part of the layout: fixed chains, hooks, NodePort addresses.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { baseChains, jumpRules, render, renderContext } from '../../src/backend/iptables/render.js';
import { CANARY_RULE } from '../../src/backend/iptables/canary.js';
import type { BackendConfig } from '../../src/backend/types.js';
import { backendConfig, snapshot } from '../support/snapshots.js';

const cfg = backendConfig();

function renderEmpty(config: BackendConfig = cfg): Map<string, string[]> {
  return new Map(render(snapshot([], { family: config.family }), config).chains.map((c) => [`${c.table}/${c.name}`, c.rules]));
}

const NODEPORTS_TAIL =
  '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS';
const CLUSTER_IPS_TAIL = '-m comment --comment "cluster IPs on ports no service has" -j KUBE-CLUSTER-IPS';

describe('fixed chains and hooks', () => {
  test('an empty snapshot: every fixed chain with its fixed rules', () => {
    assert.deepEqual(
      [...renderEmpty()],
      [
        ['nat/KUBE-SERVICES', [NODEPORTS_TAIL]],
        ['nat/KUBE-NODEPORTS', []],
        [
          'nat/KUBE-POSTROUTING',
          [
            '-m mark ! --mark 0x4000/0x4000 -j RETURN',
            '-j MARK --set-xmark 0x4000/0x0',
            '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
          ],
        ],
        ['nat/KUBE-MARK-MASQ', ['-j MARK --set-xmark 0x4000/0x4000']],
        ['nat/KUBE-PROXY-CANARY', [CANARY_RULE]],
        ['filter/KUBE-SERVICES', [CLUSTER_IPS_TAIL]],
        ['filter/KUBE-CLUSTER-IPS', []],
        ['filter/KUBE-EXTERNAL-SERVICES', []],
        ['filter/KUBE-NODEPORTS', []],
        [
          'filter/KUBE-FORWARD',
          [
            '-m conntrack --ctstate INVALID -j DROP',
            '-m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
            '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
          ],
        ],
        ['filter/KUBE-PROXY-FIREWALL', []],
        ['filter/KUBE-PROXY-CANARY', [CANARY_RULE]],
        ['mangle/KUBE-PROXY-CANARY', [CANARY_RULE]],
        [
          'filter/KUBE-FIREWALL',
          [
            '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
          ],
        ],
      ],
    );
  });

  test('the masquerade mark follows masqueradeBit', () => {
    const c = renderEmpty(backendConfig({ masqueradeBit: 3 }));
    assert.deepEqual(c.get('nat/KUBE-MARK-MASQ'), ['-j MARK --set-xmark 0x8/0x8']);
    assert.equal(c.get('nat/KUBE-POSTROUTING')![0], '-m mark ! --mark 0x8/0x8 -j RETURN');
  });

  test('hooks from the built-in chains, new connections only where upstream has it', () => {
    assert.deepEqual(jumpRules(renderContext(cfg)), [
      { table: 'filter', chain: 'INPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES' },
      { table: 'filter', chain: 'FORWARD', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES' },
      // Beyond upstream: the node's own connections to external addresses without endpoints are refused, as in nftables mode.
      { table: 'filter', chain: 'OUTPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES' },
      { table: 'filter', chain: 'INPUT', rule: '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS' },
      { table: 'filter', chain: 'FORWARD', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' },
      { table: 'filter', chain: 'OUTPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' },
      { table: 'filter', chain: 'FORWARD', rule: '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD' },
      { table: 'filter', chain: 'INPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL' },
      { table: 'filter', chain: 'OUTPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL' },
      { table: 'filter', chain: 'FORWARD', rule: '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL' },
      { table: 'nat', chain: 'OUTPUT', rule: '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES' },
      { table: 'nat', chain: 'PREROUTING', rule: '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES' },
      { table: 'nat', chain: 'POSTROUTING', rule: '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING' },
      { table: 'filter', chain: 'INPUT', rule: '-j KUBE-FIREWALL' },
      { table: 'filter', chain: 'OUTPUT', rule: '-j KUBE-FIREWALL' },
    ]);
    // Without localhost NodePorts, and on IPv6, there is no localnet guard.
    for (const c of [backendConfig({ localhostNodePorts: false }), backendConfig({ family: 'IPv6' })]) {
      assert.ok(!jumpRules(renderContext(c)).some((j) => j.rule.includes('KUBE-FIREWALL')));
      assert.ok(!baseChains(renderContext(c)).some((b) => b.name === 'KUBE-FIREWALL'));
    }
  });

  test('nodePortAddresses: every local address, CIDRs, primary, localhost', () => {
    const tail = (over: Partial<BackendConfig>): string[] =>
      renderEmpty(backendConfig({ nodeIPs: ['192.168.50.11', '10.0.0.5'], ...over })).get('nat/KUBE-SERVICES')!;
    const np = (ip: string): string =>
      `-d ${ip}/32 -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -j KUBE-NODEPORTS`;
    assert.deepEqual(tail({ nodePortAddresses: ['0.0.0.0/0'] }), [NODEPORTS_TAIL]);
    assert.deepEqual(tail({ localhostNodePorts: false }), [
      '! -d 127.0.0.0/8 -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    ]);
    assert.deepEqual(tail({ nodePortAddresses: ['10.0.0.0/8'] }), [np('10.0.0.5')]);
    assert.deepEqual(tail({ nodePortAddresses: ['primary'] }), [np('192.168.50.11')]);
    assert.deepEqual(tail({ nodePortAddresses: ['primary', '10.0.0.0/8', '127.0.0.0/8'] }), [np('192.168.50.11'), np('10.0.0.5'), np('127.0.0.1')]);
    assert.deepEqual(tail({ nodePortAddresses: ['127.0.0.0/8'], localhostNodePorts: false }), []);
    assert.deepEqual(tail({ nodePortAddresses: ['172.16.0.0/12'] }), []);
    const v6 = renderEmpty(backendConfig({ family: 'IPv6' })).get('nat/KUBE-SERVICES')!;
    assert.deepEqual(v6, [
      '! -d ::1/128 -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    ]);
  });
});
