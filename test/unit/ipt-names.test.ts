import { test } from 'node:test';
import assert from 'node:assert/strict';
import { endpointChainName, serviceChainName } from '../../src/backend/iptables/names.js';
import { hashedName } from '../../src/backend/nftables/names.js';

test('iptables chain names follow upstream hashing (DESIGN.md vectors)', () => {
  assert.equal(serviceChainName('KUBE-SVC-', 'ns1/svc1:p80', 'tcp'), 'KUBE-SVC-XPGD46QRK7WJZT7O');
  assert.equal(serviceChainName('KUBE-SVC-', 'ns2/svc2:p80', 'tcp'), 'KUBE-SVC-GNZBNJ2PO5MGZ6GT');
  assert.equal(endpointChainName('ns1/svc1:p80', 'tcp', '10.180.0.1:80'), 'KUBE-SEP-SXIVWICOYRO3J4NJ');
});

test('the four per-service prefixes share one hash; the protocol is hashed in lower case', () => {
  for (const p of ['KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-'] as const) {
    assert.equal(serviceChainName(p, 'ns1/svc1:p80', 'TCP'), `${p}XPGD46QRK7WJZT7O`);
  }
  assert.notEqual(serviceChainName('KUBE-SVC-', 'ns1/svc1:p80', 'udp'), 'KUBE-SVC-XPGD46QRK7WJZT7O');
  assert.equal(endpointChainName('ns1/svc1:p80', 'TCP', '10.180.0.1:80'), 'KUBE-SEP-SXIVWICOYRO3J4NJ');
  // Names stay within iptables' 28-character chain name limit.
  assert.ok(endpointChainName('ns/a-very-long-service-name:port', 'sctp', '[fd00::1]:65535').length <= 28);
});

test('the shared hash still gives the nftables vectors', () => {
  assert.equal(hashedName('ns1/svc1/tcp/p80'), 'ULMVA6XW-ns1/svc1/tcp/p80');
  assert.equal(hashedName('testing/service/tcp/http'), 'P4ZYZVCF-testing/service/tcp/http');
});
