// Incremental IPVS changes: from what `ipvsadm -Sn` lists to what a render wants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diffVirtualServers } from '../../src/backend/ipvs/diff.js';
import { parseIpvsadmSave, toIpvsadmRestore } from '../../src/backend/ipvs/ipvsadm.js';
import type { VirtualServer } from '../../src/backend/ipvs/types.js';

const vs = (address: string, rs: Array<[string, number]>, over: Partial<VirtualServer> = {}): VirtualServer => ({
  protocol: 'TCP',
  address,
  port: 80,
  scheduler: 'rr',
  realServers: rs.map(([a, w]) => ({ address: a, port: 8080, weight: w })),
  ...over,
});

test('nothing to do when the kernel already holds the render', () => {
  const want = [vs('10.96.0.10', [['10.244.1.5', 1]]), vs('10.96.0.11', [])];
  assert.deepEqual(diffVirtualServers(parseIpvsadmSave(toIpvsadmRestore(want)), want, 'IPv4'), { commands: [], draining: [] });
});

test('one endpoint added and one removed: one add, one drain to weight 0', () => {
  const kernel = parseIpvsadmSave(toIpvsadmRestore([vs('10.96.0.10', [['10.244.1.5', 1], ['10.244.2.7', 1]])]));
  const d = diffVirtualServers(kernel, [vs('10.96.0.10', [['10.244.1.5', 1], ['10.244.2.9', 1]])], 'IPv4');
  assert.deepEqual(d.commands, ['-a -t 10.96.0.10:80 -r 10.244.2.9:8080 -m -w 1', '-e -t 10.96.0.10:80 -r 10.244.2.7:8080 -m -w 0']);
  assert.deepEqual(d.draining, [{ service: '-t 10.96.0.10:80', realServer: '10.244.2.7:8080' }]);
  // Already drained: nothing to send, still reported until the apply layer deletes it.
  const again = diffVirtualServers(parseIpvsadmSave('-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.2.7:8080 -m -w 0\n'), [vs('10.96.0.10', [])], 'IPv4');
  assert.deepEqual(again.commands, []);
  assert.equal(again.draining.length, 1);
  // An endpoint that comes back while draining gets its weight back.
  const back = diffVirtualServers(parseIpvsadmSave('-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.2.7:8080 -m -w 0\n'), [vs('10.96.0.10', [['10.244.2.7', 1]])], 'IPv4');
  assert.deepEqual(back.commands, ['-e -t 10.96.0.10:80 -r 10.244.2.7:8080 -m -w 1']);
});

test('changed scheduler or affinity edits the service; stale services go; others’ services stay', () => {
  const kernel = parseIpvsadmSave(
    ['-A -t 10.96.0.10:80 -s rr', '-A -t 10.96.0.99:80 -s rr', '-A -t 172.16.0.1:80 -s wlc', '-A -t [fd00::1]:80 -s rr', ''].join('\n'),
  );
  const d = diffVirtualServers(kernel, [vs('10.96.0.10', [], { scheduler: 'lc', persistenceTimeoutSeconds: 10800 })], 'IPv4', ['172.16.0.0/12']);
  assert.deepEqual(d.commands, ['-E -t 10.96.0.10:80 -s lc -p 10800', '-D -t 10.96.0.99:80']);
});

test('a real server that is not masqueraded is corrected or removed', () => {
  const kernel = parseIpvsadmSave('-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -g -w 1\n-a -t 10.96.0.10:80 -r 10.244.1.6:8080 -g -w 1\n');
  const d = diffVirtualServers(kernel, [vs('10.96.0.10', [['10.244.1.5', 1]])], 'IPv4');
  assert.deepEqual(d.commands, ['-e -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1', '-d -t 10.96.0.10:80 -r 10.244.1.6:8080']);
});
