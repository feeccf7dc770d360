// Connection counts for graceful termination read from /proc/net/ip_vs (no process) agree with
// `ipvsadm -Ln`'s. Both texts below were taken from the User-Mode Linux kernel's IPVS, in one
// namespace, after a few connections to the services.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConnectionCounts } from '../../src/backend/ipvs/apply.js';
import { parseProcIpVs } from '../../src/backend/ipvs/procfs.js';

const PROC = [
  'IP Virtual Server version 1.2.1 (size=4096)',
  'Prot LocalAddress:Port Scheduler Flags',
  '  -> RemoteAddress:Port Forward Weight ActiveConn InActConn',
  'UDP  0A60000A:0035 rr  persistent 1080000 FFFFFFFF',
  '  -> 0AF40105:14E9      Masq    1      0          1         ',
  'TCP  [2001:0db8:0000:0000:0000:0000:0000:000a]:01BB mh ',
  '  -> [fd00:0000:0000:0000:0000:0000:0000:0005]:20FB      Masq    1      1          0         ',
  'TCP  0A60000A:0050 rr  ',
  '  -> 0AF40106:1F90      Masq    0      0          0         ',
  '  -> 0AF40105:1F90      Masq    1      2          0         ',
  'SCTP  0A60000A:0009 rr  ',
  'FWM  00000007 rr ',
  '  -> 0AF40107:0000      Masq    1      0          0         ',
  '',
].join('\n');

const LIST = [
  'IP Virtual Server version 1.2.1 (size=4096)',
  'Prot LocalAddress:Port Scheduler Flags',
  '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
  'TCP  10.96.0.10:80 rr',
  '  -> 10.244.1.5:8080              Masq    1      2          0         ',
  '  -> 10.244.1.6:8080              Masq    0      0          0         ',
  'UDP  10.96.0.10:53 rr persistent 10800',
  '  -> 10.244.1.5:5353              Masq    1      0          1         ',
  'SCTP 10.96.0.10:9 rr',
  'TCP  [2001:db8::a]:443 mh (mh-port)',
  '  -> [fd00::5]:8443               Masq    1      1          0         ',
  'FWM  7 rr',
  '  -> 10.244.1.7:0                 Masq    1      0          0         ',
  '',
].join('\n');

const EXPECTED = {
  '-u 10.96.0.10:53 10.244.1.5:5353': 1,
  '-t [2001:db8::a]:443 [fd00::5]:8443': 1,
  '-t 10.96.0.10:80 10.244.1.6:8080': 0,
  '-t 10.96.0.10:80 10.244.1.5:8080': 2,
};

test('/proc/net/ip_vs: hex addresses and ports, IPv6 in full form, keyed as the diff names real servers', () => {
  assert.deepEqual(Object.fromEntries(parseProcIpVs(PROC)), EXPECTED);
});

test('/proc/net/ip_vs and ipvsadm -Ln give the same counts; firewall-mark services are not ours', () => {
  assert.deepEqual(Object.fromEntries(parseConnectionCounts(LIST)), EXPECTED);
  assert.deepEqual(parseProcIpVs(PROC), parseConnectionCounts(LIST));
});

test('/proc/net/ip_vs: the header alone, and malformed lines, give no counts instead of an error', () => {
  assert.equal(parseProcIpVs(PROC.split('\n').slice(0, 3).join('\n')).size, 0);
  const bad = ['TCP  0A60000:0050 rr ', '  -> 0AF40105:1F90      Masq    1      2          0', 'TCP  [zz::1]:0050 rr ', '  -> 0AF40105:1F90      Masq    1      2          0', 'TCP  0A60000A:0050 rr ', '  -> 0AF4010G:1F90      Masq    1      2          0', ''].join('\n');
  assert.equal(parseProcIpVs(bad).size, 0);
  assert.equal(parseProcIpVs('').size, 0);
});
