import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parsePodServerArgs } from '../support/podserver.js';
import { requestBatch, requestMany, tcpRequest, udpRequest } from '../support/netclient.js';
import { pidAlive } from '../support/process.js';
import { createTopology, listNamespaces, type PodSpec, type Topology } from '../support/topology.js';

const TOPOLOGY_MODULE = fileURLToPath(new URL('../support/topology.js', import.meta.url));

const PODS: PodSpec[] = [
  { name: 'a-1', node: 1, ip: '10.244.1.10', ip6: 'fd00:244:1::10' },
  { name: 'a-2', node: 1, ip: '10.244.1.11', ip6: 'fd00:244:1::11' },
  { name: 'b-1', node: 2, ip: '10.244.2.10', ip6: 'fd00:244:2::10' },
  { name: 'b-2', node: 2, ip: '10.244.2.11', ip6: 'fd00:244:2::11' },
];

function rootLinks(): string[] {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(':')[1]?.trim() ?? '')
    .filter((n) => n !== '')
    .sort();
}

async function eventually(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs a child Node process that builds a one-pod topology, reports it, then dies as told. */
async function crashingChild(mode: 'throw' | 'sigterm'): Promise<{ id: string; pids: number[]; code: number | null; signal: string | null }> {
  const script = `
    import { createTopology } from ${JSON.stringify(TOPOLOGY_MODULE)};
    const t = await createTopology({ nodes: 1, pods: [{ name: 'c-1', node: 1, ip: '10.244.1.20' }] });
    process.stdout.write(JSON.stringify({ id: t.id, pids: t.pids() }) + '\\n');
    // Wait for the parent's go-ahead so it can see the topology before the crash.
    process.stdin.once('data', () => {
      if (${JSON.stringify(mode)} === 'throw') throw new Error('test body failed');
    });
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  try {
    await eventually(() => out.includes('\n') || child.exitCode !== null, 'the child to report its topology');
    const info = JSON.parse(out.split('\n')[0]!) as { id: string; pids: number[] };
    assert.equal(listNamespaces(`${info.id}-`).length, 5, 'child topology exists before the crash');
    if (mode === 'sigterm') process.kill(child.pid!, 'SIGTERM');
    else child.stdin.write('go\n');
    const st = await exited;
    return { ...info, ...st };
  } catch (e) {
    if (child.exitCode === null) process.kill(child.pid!, 'SIGKILL');
    throw new Error(`${(e as Error).message}; child stderr: ${err}`);
  }
}

describe('network-namespace topology', () => {
  let topo: Topology;
  let linksBefore: string[];

  before(async () => {
    linksBefore = rootLinks();
    topo = await createTopology({ pods: PODS });
  });

  after(() => topo?.destroy());

  it('leaves the root namespace links untouched', () => {
    assert.deepEqual(rootLinks(), linksBefore);
  });

  it('names every namespace with the instance prefix and enables forwarding on nodes', async () => {
    assert.match(topo.id, /^kpt[0-9a-f]{4}$/);
    const names = listNamespaces(`${topo.id}-`).sort();
    assert.deepEqual(names, topo.namespaces().sort());
    assert.deepEqual(
      names,
      ['ext', 'ext2', 'net', 'node1', 'node2', 'pod-a-1', 'pod-a-2', 'pod-b-1', 'pod-b-2'].map((n) => `${topo.id}-${n}`).sort(),
    );
    const res = await topo.exec('node1', 'sysctl', ['-n', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']);
    assert.deepEqual(res.stdout.trim().split('\n'), ['1', '1']);
  });

  it('pod on node1 reaches a pod on node2 over TCP and UDP, which sees the client pod IP', async () => {
    assert.deepEqual(await tcpRequest(topo, 'a-1', '10.244.2.10', 8080), { ok: true, pod: 'b-1', seenSource: '10.244.1.10' });
    assert.deepEqual(await udpRequest(topo, 'a-1', '10.244.2.11', 5353), { ok: true, pod: 'b-2', seenSource: '10.244.1.10' });
    assert.deepEqual(await tcpRequest(topo, 'b-2', '10.244.1.11', 80), { ok: true, pod: 'a-2', seenSource: '10.244.2.11' });
  });

  it('pods on the same node reach each other over the bridge', async () => {
    assert.deepEqual(await tcpRequest(topo, 'a-1', '10.244.1.11', 80), { ok: true, pod: 'a-2', seenSource: '10.244.1.10' });
    assert.deepEqual(await udpRequest(topo, 'a-2', '10.244.1.10', 53), { ok: true, pod: 'a-1', seenSource: '10.244.1.11' });
  });

  it('IPv6 pod-to-pod works across nodes', async () => {
    assert.deepEqual(await tcpRequest(topo, 'b-1', 'fd00:244:1::11', 8080), { ok: true, pod: 'a-2', seenSource: 'fd00:244:2::10' });
    assert.deepEqual(await udpRequest(topo, 'a-1', 'fd00:244:2::11', 53), { ok: true, pod: 'b-2', seenSource: 'fd00:244:1::10' });
  });

  it('external clients reach node1 by its node IP and an added address', async () => {
    const server = topo.spawn('node1', process.execPath, [fileURLToPath(new URL('../support/podserver-main.js', import.meta.url)), '--name', 'node1', '--tcp', '9000', '--udp', '9000']);
    await server.waitFor('ready', { stream: 'stdout' });
    assert.deepEqual(await tcpRequest(topo, 'ext', '10.0.0.1', 9000), { ok: true, pod: 'node1', seenSource: '10.0.0.100' });
    assert.deepEqual(await udpRequest(topo, 'ext2', '10.0.0.1', 9000), { ok: true, pod: 'node1', seenSource: '10.0.0.101' });
    assert.deepEqual(await tcpRequest(topo, 'ext', 'fd00:10::1', 9000), { ok: true, pod: 'node1', seenSource: 'fd00:10::100' });

    // Reached through ext's default route via node1, the way LoadBalancer/external IPs are.
    assert.equal((await tcpRequest(topo, 'ext', '192.0.2.10', 9000, { timeoutMs: 500 })).ok, false);
    await topo.addAddress('node1', 'lo', '192.0.2.10/32');
    assert.deepEqual(await tcpRequest(topo, 'ext', '192.0.2.10', 9000), { ok: true, pod: 'node1', seenSource: '10.0.0.100' });
    await topo.removeAddress('node1', 'lo', '192.0.2.10/32');
    await server.stop();
    assert.equal(pidAlive(server.pid), false);
  });

  it('a closed port is refused, a dropped one times out', async () => {
    assert.deepEqual(await tcpRequest(topo, 'a-1', '10.244.2.10', 9999), { ok: false, error: 'refused' });
    assert.deepEqual(await udpRequest(topo, 'a-1', '10.244.2.10', 9999), { ok: false, error: 'refused' });
    assert.deepEqual(await tcpRequest(topo, 'a-1', 'fd00:244:2::10', 9999), { ok: false, error: 'refused' });

    await topo.exec('b-1', 'nft', ['-f', '-'], {
      input: 'table inet blk {\n chain inp {\n type filter hook input priority 0;\n tcp dport 8080 drop\n udp dport 5353 drop\n }\n}\n',
    });
    assert.deepEqual(await tcpRequest(topo, 'a-1', '10.244.2.10', 8080, { timeoutMs: 300 }), { ok: false, error: 'timeout' });
    assert.deepEqual(await udpRequest(topo, 'a-1', '10.244.2.10', 5353, { timeoutMs: 300 }), { ok: false, error: 'timeout' });
    await topo.exec('b-1', 'nft', ['delete', 'table', 'inet', 'blk']);
    assert.equal((await tcpRequest(topo, 'a-1', '10.244.2.10', 8080)).ok, true);
  });

  it('a node DNAT rule serves hairpin and same-node endpoints the way a proxy needs', async () => {
    // A hand-written Service: 10.96.0.10:80 → a-1:80, masquerading only hairpin traffic, as kube-proxy does.
    await topo.exec('node1', 'nft', ['-f', '-'], {
      input: [
        'table ip svc {',
        ' chain pre {',
        '  type nat hook prerouting priority -100;',
        '  ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.1.10:80',
        ' }',
        ' chain post {',
        '  type nat hook postrouting priority 100;',
        '  ip saddr 10.244.1.10 ip daddr 10.244.1.10 masquerade',
        ' }',
        '}',
        '',
      ].join('\n'),
    });
    try {
      assert.deepEqual(await tcpRequest(topo, 'a-1', '10.96.0.10', 80), { ok: true, pod: 'a-1', seenSource: '10.244.1.1' });
      assert.deepEqual(await tcpRequest(topo, 'b-1', '10.96.0.10', 80), { ok: false, error: 'unreachable', detail: 'ENETUNREACH' }, 'node2 has no route for it');
      const sameNode = await tcpRequest(topo, 'a-2', '10.96.0.10', 80, { timeoutMs: 500 });
      if (topo.brNetfilter) {
        assert.deepEqual(sameNode, { ok: true, pod: 'a-1', seenSource: '10.244.1.11' });
      } else {
        // The bridged reply bypasses conntrack, so the client never sees an answer from the Service IP.
        assert.equal(sameNode.ok, false);
      }
    } finally {
      await topo.exec('node1', 'nft', ['delete', 'table', 'ip', 'svc']);
    }
  });

  it('batches many requests in one client process and counts answers per pod', async () => {
    const many = await requestMany(topo, 'ext', '10.244.2.11', 80, 25);
    assert.deepEqual(many.pods, { 'b-2': 25 });
    assert.deepEqual(many.errors, {});
    assert.deepEqual(many.sources, { '10.0.0.100': 25 });

    const udp = await requestMany(topo, 'a-2', '10.244.2.10', 53, 10, { proto: 'udp', sourcePort: 40000 });
    assert.deepEqual(udp.pods, { 'b-1': 10 });

    const mixed = await requestBatch(topo, 'a-1', [
      { proto: 'tcp', ip: '10.244.1.11', port: 80 },
      { proto: 'udp', ip: '10.244.2.10', port: 53 },
      { proto: 'tcp', ip: 'fd00:244:2::11', port: 8080 },
      { proto: 'tcp', ip: '10.244.2.10', port: 1 },
      { proto: 'tcp', ip: 'not-an-ip', port: 80 },
    ]);
    assert.deepEqual(
      mixed.map((r) => (r.ok ? r.pod : r.error)),
      ['a-2', 'b-1', 'b-2', 'refused', 'error'],
    );
  });

  it('adds and removes pods at run time', async () => {
    const p = await topo.addPod({ name: 'b-3', node: 2, ip: '10.244.2.12', ip6: 'fd00:244:2::12', tcp: [7000], udp: [] });
    assert.deepEqual(await tcpRequest(topo, 'a-1', '10.244.2.12', 7000), { ok: true, pod: 'b-3', seenSource: '10.244.1.10' });
    assert.deepEqual(await tcpRequest(topo, 'a-1', 'fd00:244:2::12', 7000), { ok: true, pod: 'b-3', seenSource: 'fd00:244:1::10' });
    assert.deepEqual(await udpRequest(topo, 'a-1', '10.244.2.12', 53), { ok: false, error: 'refused' });
    await assert.rejects(topo.addPod({ name: 'b-4', node: 2, ip: '10.244.2.12' }), /already used/);
    await assert.rejects(topo.addPod({ name: 'b-3', node: 2, ip: '10.244.2.13' }), /duplicate pod name/);

    const serverPid = p.server!.pid;
    await topo.removePod('b-3');
    assert.equal(pidAlive(serverPid), false);
    assert.equal(listNamespaces(p.ns).length, 0);
    assert.equal((await tcpRequest(topo, 'a-1', '10.244.2.12', 7000, { timeoutMs: 500 })).ok, false);
    assert.throws(() => topo.pod('b-3'), /no pod/);
  });

  it('rejects bad pod specs with a clear error and creates nothing', async () => {
    // Only the pod name of these specs is unique to this test; other runs may create namespaces meanwhile.
    const leftovers = (): string[] => listNamespaces('kpt').filter((n) => /^kpt[0-9a-f]{4}-(pod-x|pod-Bad_Name)$/.test(n));
    await assert.rejects(createTopology({ pods: [{ name: 'x', node: 1, ip: '10.244.2.10' }] }), /not an address in 10\.244\.1\.0\/24/);
    await assert.rejects(createTopology({ pods: [{ name: 'x', node: 3, ip: '10.244.3.10' }] }), /node 3 does not exist/);
    await assert.rejects(createTopology({ pods: [{ name: 'Bad_Name', node: 1, ip: '10.244.1.10' }] }), /DNS label/);
    await assert.rejects(createTopology({ pods: [{ name: 'x', node: 1, ip: '10.244.1.10', ip6: 'fd00:244:2::1' }] }), /not an address in fd00:244:1::\/64/);
    await assert.rejects(createTopology({ nodes: 0 }), /nodes must be/);
    assert.deepEqual(leftovers(), []);
  });

  it('destroy() kills every started process and deletes every namespace, and is idempotent', async () => {
    const pids = topo.pids();
    assert.ok(pids.length >= 4, `pod servers running: ${pids}`);
    const sleeper = topo.spawn('node2', 'sleep', ['300']);
    await Promise.all([topo.destroy(), topo.destroy()]);
    for (const pid of [...pids, sleeper.pid]) assert.equal(pidAlive(pid), false, `pid ${pid} still alive`);
    assert.deepEqual(listNamespaces(`${topo.id}-`), []);
    assert.deepEqual(topo.pids(), []);
    await topo.destroy();
    assert.throws(() => topo.spawn('node1', 'true'), /destroyed/);
  });
});

describe('cleanup when a test fails', () => {
  it('try/finally destroys the topology when the body throws', async () => {
    let t: Topology | undefined;
    await assert.rejects(async () => {
      t = await createTopology({ nodes: 1, pods: [{ name: 'f-1', node: 1, ip: '10.244.1.30' }] });
      try {
        assert.equal((await tcpRequest(t, 'node1', '10.244.1.30', 80)).ok, true);
        throw new Error('body failed');
      } finally {
        await t.destroy();
      }
    }, /body failed/);
    assert.ok(t);
    assert.deepEqual(listNamespaces(`${t.id}-`), []);
    assert.deepEqual(t.pids(), []);
  });

  it('an uncaught exception in the test process still removes namespaces and processes', async () => {
    const r = await crashingChild('throw');
    assert.notEqual(r.code, 0);
    assert.deepEqual(listNamespaces(`${r.id}-`), []);
    await eventually(() => r.pids.every((p) => !pidAlive(p)), 'pod servers to exit');
  });

  it('SIGTERM to the test process still removes namespaces and processes', async () => {
    const r = await crashingChild('sigterm');
    assert.equal(r.code, 143);
    assert.deepEqual(listNamespaces(`${r.id}-`), []);
    await eventually(() => r.pids.every((p) => !pidAlive(p)), 'pod servers to exit');
  });
});

describe('pod server arguments', () => {
  it('parses repeated and comma-separated ports', () => {
    assert.deepEqual(parsePodServerArgs(['--name', 'web-1', '--tcp', '80,8080', '--udp', '53', '--tcp', '9000']), {
      name: 'web-1',
      tcp: [80, 8080, 9000],
      udp: [53],
    });
  });

  it('rejects bad arguments with a clear message, and the standalone server exits 2', async () => {
    assert.throws(() => parsePodServerArgs(['--name', 'w', '--tcp', '70000']), /--tcp: invalid port "70000"/);
    assert.throws(() => parsePodServerArgs(['--tcp', '80']), /--name is required/);
    assert.throws(() => parsePodServerArgs(['--name', 'w']), /at least one/);
    assert.throws(() => parsePodServerArgs(['--name', 'w', '--bogus', '1']), /unknown argument "--bogus"/);
    const child = spawn(process.execPath, [fileURLToPath(new URL('../support/podserver-main.js', import.meta.url)), '--name', 'w', '--udp', 'x'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const code = await new Promise((resolve) => child.once('close', resolve));
    assert.equal(code, 2);
    assert.match(err, /--udp: invalid port "x"/);
  });
});
