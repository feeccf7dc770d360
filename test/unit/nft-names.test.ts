import { test } from 'node:test';
import assert from 'node:assert/strict';
import { endpointBase, hashedName, servicePortBase } from '../../src/backend/nftables/names.js';
import { canonicalCIDR, canonicalIP, cidrContains } from '../../src/backend/nftables/addr.js';

test('per-service chain names follow upstream hashing (DESIGN.md vectors)', () => {
  assert.equal(hashedName('ns1/svc1/tcp/p80'), 'ULMVA6XW-ns1/svc1/tcp/p80');
  assert.equal(hashedName('testing/service/tcp/http'), 'P4ZYZVCF-testing/service/tcp/http');
});

test('service and endpoint name bases', () => {
  assert.equal(servicePortBase({ namespace: 'ns1', serviceName: 'svc1', protocol: 'TCP', portName: 'p80' }), 'ns1/svc1/tcp/p80');
  assert.equal(servicePortBase({ namespace: 'ns', serviceName: 's', protocol: 'UDP', portName: '' }), 'ns/s/udp/');
  assert.equal(endpointBase('ns1/svc1/tcp/p80', '10.180.0.1', 80), 'ns1/svc1/tcp/p80__10.180.0.1/80');
  // nft identifiers have no ':'.
  assert.equal(endpointBase('ns/s/tcp/', 'fd00::1', 80), 'ns/s/tcp/__fd00..1/80');
});

test('addresses are written the way nft lists them back', () => {
  assert.equal(canonicalIP('FD00:0:0:0:0:0:0:1', true), 'fd00::1');
  assert.equal(canonicalIP('2001:db8:0:0:1:0:0:1', true), '2001:db8::1:0:0:1');
  assert.equal(canonicalIP('::ffff:10.0.0.1', true), '::ffff:10.0.0.1');
  assert.equal(canonicalIP('10.0.0.1', true), undefined);
  assert.equal(canonicalIP('10.0.0.256', false), undefined);
  assert.equal(canonicalIP('not-an-ip', false), undefined);
  assert.equal(canonicalCIDR('10.1.2.3/8', false), '10.0.0.0/8');
  assert.equal(canonicalCIDR('10.1.2.3/32', false), '10.1.2.3');
  assert.equal(canonicalCIDR('2001:db8::5/32', true), '2001:db8::/32');
  assert.equal(canonicalCIDR('10.0.0.0/33', false), undefined);
  assert.ok(cidrContains('192.168.50.0/24', '192.168.50.11'));
  assert.ok(!cidrContains('192.168.50.0/24', '192.168.51.11'));
  assert.ok(!cidrContains('fd00::/8', '10.0.0.1'));
});
