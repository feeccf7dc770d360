// Kernel settings of the IPVS mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ipvsSysctls, ipvsTimeoutArgs } from '../../src/backend/ipvs/sysctls.js';

const names = (s: ReturnType<typeof ipvsSysctls>): string[] => s.map((x) => `${x.name}=${x.value}`);

test('upstream sysctls; conn_reuse_mode only on kernels that need it; strictARP adds the ARP settings', () => {
  assert.deepEqual(names(ipvsSysctls({ strictARP: false, kernelRelease: '6.1.0-13-amd64' })), [
    'net/ipv4/vs/conntrack=1',
    'net/ipv4/vs/expire_nodest_conn=1',
    'net/ipv4/vs/expire_quiescent_template=1',
    'net/ipv4/ip_forward=1',
  ]);
  assert.ok(names(ipvsSysctls({ strictARP: false, kernelRelease: '5.4.0-100-generic' })).includes('net/ipv4/vs/conn_reuse_mode=0'));
  assert.ok(!names(ipvsSysctls({ strictARP: false, kernelRelease: '3.10.0' })).some((n) => n.includes('conn_reuse_mode')));
  assert.ok(!names(ipvsSysctls({ strictARP: false, kernelRelease: 'garbage' })).some((n) => n.includes('conn_reuse_mode')));
  assert.deepEqual(names(ipvsSysctls({ strictARP: true, kernelRelease: '6.1.0' })).slice(-2), [
    'net/ipv4/conf/all/arp_ignore=1',
    'net/ipv4/conf/all/arp_announce=2',
  ]);
});

test('IPVS timeouts are set only when one is given; 0 keeps the kernel value', () => {
  assert.equal(ipvsTimeoutArgs({ tcpSec: 0, tcpFinSec: 0, udpSec: 0 }), undefined);
  assert.deepEqual(ipvsTimeoutArgs({ tcpSec: 900, tcpFinSec: 0, udpSec: 300 }), ['--set', '900', '0', '300']);
});
