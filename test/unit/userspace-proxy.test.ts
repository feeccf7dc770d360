import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { Balancer } from '../../src/backend/userspace/proxy-balancer.js';
import type { UserspaceProxy } from '../../src/backend/userspace/proxy.js';
import {
  HOST,
  connect,
  deadPort,
  ep,
  newProxy,
  outcome,
  request,
  sleep,
  tcpEndpoint,
  until,
  udpEndpoint,
  type Endpoint,
} from './userspace-proxy-helpers.js';

function cleanup(t: TestContext, proxy: UserspaceProxy, endpoints: Endpoint[]): void {
  t.after(async () => {
    await proxy.close();
    await Promise.all(endpoints.map((e) => e.close()));
  });
}

const KEY = 'ns/web:http/TCP';

test('userspace proxy: round robin over the endpoints, bytes both ways, half-close kept', async (t) => {
  const eps = await Promise.all(['a', 'b', 'c'].map(tcpEndpoint));
  const proxy = newProxy();
  cleanup(t, proxy, eps);
  const ports = await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: eps.map(ep) }]);
  const port = ports.get(KEY)!;
  assert.ok(port > 0);
  const answers: string[] = [];
  for (let i = 0; i < 6; i++) answers.push(await request(port, `req${i}`));
  assert.deepEqual(answers, ['a:req0', 'b:req1', 'c:req2', 'a:req3', 'b:req4', 'c:req5']);
  // One large payload: pipe() carries it whole, and the answer only comes after the client's FIN.
  const big = 'x'.repeat(1 << 20);
  assert.equal(await request(port, big), `a:${big}`);
  const s = proxy.stats();
  assert.equal(s.listeners, 1);
  assert.equal(s.accepted, 7);
  assert.ok(s.bytesIn >= big.length && s.bytesOut >= big.length, JSON.stringify(s));
});

test('userspace proxy: ClientIP affinity keeps a client on one endpoint until its timeout', async (t) => {
  const eps = await Promise.all(['a', 'b', 'c'].map(tcpEndpoint));
  const proxy = newProxy();
  cleanup(t, proxy, eps);
  const port = (await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: eps.map(ep), affinityTimeoutSeconds: 10800 }])).get(KEY)!;
  const answers = new Set<string>();
  for (let i = 0; i < 5; i++) answers.add(await request(port));
  assert.deepEqual([...answers], ['a:']);

  // The timeout itself, on the balancer with a clock of our own.
  const b = new Balancer();
  b.setEndpoints([{ ip: '10.0.0.1', port: 80 }, { ip: '10.0.0.2', port: 80 }], 10);
  assert.equal(b.pick('1.1.1.1', 0)!.ip, '10.0.0.1');
  assert.equal(b.pick('2.2.2.2', 1)!.ip, '10.0.0.2');
  assert.equal(b.pick('1.1.1.1', 10_000)!.ip, '10.0.0.1', 'used within 10 s: still sticky');
  assert.equal(b.pick('1.1.1.1', 20_000)!.ip, '10.0.0.1', 'each use restarts the timeout');
  assert.equal(b.pick('1.1.1.1', 30_001)!.ip, '10.0.0.1', 'expired: round robin picks again (here the same one)');
  assert.equal(b.pick('3.3.3.3', 30_002)!.ip, '10.0.0.2');
  assert.equal(b.pick('1.1.1.1', 50_000)!.ip, '10.0.0.1');
  // Removing the client's endpoint moves it; affinity off forgets every client.
  b.setEndpoints([{ ip: '10.0.0.2', port: 80 }, { ip: '10.0.0.3', port: 80 }], 10);
  assert.notEqual(b.pick('1.1.1.1', 50_001)!.ip, '10.0.0.1');
  b.setEndpoints([{ ip: '10.0.0.2', port: 80 }, { ip: '10.0.0.3', port: 80 }], undefined);
  assert.deepEqual([0, 1, 2, 3].map((i) => b.pick('1.1.1.1', 60_000 + i)!.ip), ['10.0.0.2', '10.0.0.3', '10.0.0.2', '10.0.0.3']);
});

test('balancer: duplicates count once, removed endpoints are reported, lookups follow every change', () => {
  const b = new Balancer();
  const e = (last: number) => ({ ip: `10.0.0.${last}`, port: 80 });
  assert.deepEqual(b.setEndpoints([e(1), e(2), e(1)], undefined), []);
  assert.equal(b.size, 2);
  assert.deepEqual([0, 1, 2].map((i) => b.pick('c', i)!.ip), ['10.0.0.1', '10.0.0.2', '10.0.0.1']);
  assert.equal(b.has('10.0.0.2:80'), true);
  assert.deepEqual(b.setEndpoints([e(2), e(3)], undefined), ['10.0.0.1:80']);
  assert.equal(b.has('10.0.0.1:80'), false, 'an index made before the change follows it');
  assert.equal(b.has('10.0.0.3:80'), true);
  const fresh = new Balancer();
  fresh.setEndpoints([e(4)], undefined);
  fresh.setEndpoints([e(5)], undefined);
  assert.deepEqual([fresh.has('10.0.0.4:80'), fresh.has('10.0.0.5:80')], [false, true], 'an index made after changes sees the last set');
});

test('userspace proxy: a failed connect tries the next endpoint; all failing: reset', async (t) => {
  const good = await tcpEndpoint('good');
  const dead = await deadPort();
  const proxy = newProxy();
  cleanup(t, proxy, [good]);
  const port = (
    await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: [{ ip: HOST, port: dead }, ep(good)], affinityTimeoutSeconds: 60 }])
  ).get(KEY)!;
  for (let i = 0; i < 4; i++) assert.equal(await request(port, 'hi'), 'good:hi');
  assert.ok(proxy.stats().connectFailures >= 1);

  const deadOnly = 'ns/dead:p/TCP';
  const ports = await proxy.update([{ key: deadOnly, protocol: 'TCP', endpoints: [{ ip: HOST, port: dead }] }]);
  assert.equal(await outcome(ports.get(deadOnly)!), 'ECONNRESET');
});

test('userspace proxy: connectRetries bounds the endpoints one connection tries', async (t) => {
  const good = await tcpEndpoint('good');
  const deads = [await deadPort(), await deadPort()];
  const proxy = newProxy({ connectRetries: 2 });
  cleanup(t, proxy, [good]);
  const endpoints = [...deads.map((port) => ({ ip: HOST, port })), ep(good)];
  const port = (await proxy.update([{ key: KEY, protocol: 'TCP', endpoints }])).get(KEY)!;
  // Round robin starts at the first dead one: two attempts, both dead, the client is reset.
  assert.equal(await outcome(port), 'ECONNRESET');
  assert.equal(proxy.stats().connectFailures, 2);
});

test('userspace proxy: no endpoints: nothing listens on the port, so the kernel refuses TCP and UDP at once; endpoints back, same port', async (t) => {
  const a = await tcpEndpoint('a');
  // Ports of its own, below the kernel's ephemeral range: a parked port is free in the kernel,
  // and another test file's proxy, scanning the ephemeral range from its start, took it and
  // answered (about one run in three).
  const min = 20_000 + Math.floor(Math.random() * 12_000);
  const proxy = newProxy({ portRange: { min, max: min + 9 } });
  cleanup(t, proxy, [a]);
  const udpKey = 'ns/dns:dns/UDP';
  const ports = await proxy.update([
    { key: KEY, protocol: 'TCP', endpoints: [] },
    { key: udpKey, protocol: 'UDP', endpoints: [] },
  ]);
  const started = Date.now();
  assert.equal(await outcome(ports.get(KEY)!), 'ECONNREFUSED');
  assert.ok(Date.now() - started < 500);
  // A connected UDP socket hears of the kernel's ICMP port unreachable as ECONNREFUSED.
  const client = dgram.createSocket('udp4');
  t.after(() => client.close());
  await new Promise<void>((resolve) => client.connect(ports.get(udpKey)!, HOST, resolve));
  const refused = new Promise<string>((resolve) => client.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? '')));
  client.send('q');
  assert.equal(await refused, 'ECONNREFUSED');

  const again = await proxy.update([
    { key: KEY, protocol: 'TCP', endpoints: [ep(a)] },
    { key: udpKey, protocol: 'UDP', endpoints: [] },
  ]);
  assert.equal(again.get(KEY), ports.get(KEY), 'the port was kept for the service port');
  assert.equal(await request(again.get(KEY)!, 'hi'), 'a:hi');
  // Losing its endpoints again: the listener goes, the port stays reserved.
  const empty = await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: [] }]);
  assert.equal(empty.get(KEY), ports.get(KEY));
  assert.equal(await outcome(empty.get(KEY)!), 'ECONNREFUSED');
});

test('userspace proxy: UDP sessions per client, replies from the service port, idle timeout', async (t) => {
  const eps = await Promise.all(['a', 'b'].map(udpEndpoint));
  const proxy = newProxy({ udpIdleTimeoutMs: 150 });
  cleanup(t, proxy, eps);
  const key = 'ns/dns:dns/UDP';
  const port = (await proxy.update([{ key, protocol: 'UDP', endpoints: eps.map(ep) }])).get(key)!;
  const client = dgram.createSocket('udp4');
  t.after(() => client.close());
  const replies: { text: string; from: number }[] = [];
  client.on('message', (m, r) => replies.push({ text: m.toString(), from: r.port }));
  const ask = async (q: string): Promise<void> => {
    const n = replies.length;
    client.send(q, port, HOST);
    for (let i = 0; i < 100 && replies.length === n; i++) await sleep(5);
  };
  await ask('1');
  await ask('2');
  assert.deepEqual(replies, [
    { text: 'a:1', from: port },
    { text: 'a:2', from: port },
  ]);
  assert.equal(proxy.stats().udpSessions, 1);
  // A second client address is a second session, on the next endpoint.
  const other = dgram.createSocket('udp4');
  t.after(() => other.close());
  const otherReply = new Promise<string>((resolve) => other.once('message', (m) => resolve(m.toString())));
  other.send('x', port, HOST);
  assert.equal(await otherReply, 'b:x');
  assert.equal(proxy.stats().udpSessions, 2);
  await sleep(300);
  assert.equal(proxy.stats().udpSessions, 0, 'idle sessions ended');
  await ask('3');
  assert.equal(replies.at(-1)!.text, 'a:3', 'a new session, round robin went on');
});

test('userspace proxy: a removed endpoint takes no new connection; its open ones close after the grace period', async (t) => {
  const eps = await Promise.all(['a', 'b'].map(tcpEndpoint));
  const proxy = newProxy({ removedEndpointGraceMs: 300 });
  cleanup(t, proxy, eps);
  const port = (await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: eps.map(ep) }])).get(KEY)!;
  const held = await connect(port); // to a
  const closedAt = new Promise<number>((resolve) => held.on('close', () => resolve(Date.now())));
  held.on('error', () => {});
  held.write('still here');
  await sleep(50);
  const removedAt = Date.now();
  await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: [ep(eps[1]!)] }]);
  assert.equal(await request(port, 'new'), 'b:new');
  assert.equal(await request(port, 'new'), 'b:new');
  assert.equal(proxy.stats().activeConnections, 1, 'the connection to a is still open inside the grace period');
  const after = (await closedAt) - removedAt;
  assert.ok(after >= 250 && after < 1500, `closed ${after} ms after the removal`);
  assert.ok(await until(() => proxy.stats().activeConnections === 0));
});

test('userspace proxy: an endpoint back within the grace period keeps its connections', async (t) => {
  const a = await tcpEndpoint('a');
  const proxy = newProxy({ removedEndpointGraceMs: 150 });
  cleanup(t, proxy, [a]);
  const port = (await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: [ep(a)] }])).get(KEY)!;
  const held = await connect(port);
  const answer = new Promise<string>((resolve) => {
    let text = '';
    held.on('data', (c: Buffer) => (text += c.toString()));
    held.on('end', () => resolve(text));
  });
  await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: [] }]);
  await proxy.update([{ key: KEY, protocol: 'TCP', endpoints: [ep(a)] }]);
  await sleep(300);
  held.end('kept');
  assert.equal(await answer, 'a:kept');
});

test('userspace proxy: ports from the range, skipping busy ones; exhausted is a clear failure; freed ports come back', async (t) => {
  const a = await tcpEndpoint('a');
  // A range of three ports, the middle one taken by someone else. Below the kernel's ephemeral
  // range (32768 and up), so no connection of this process takes one meanwhile.
  const free = async (port: number): Promise<boolean> => {
    const probe = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(port, HOST, () => resolve(true));
    });
    if (ok) await new Promise<void>((resolve) => probe.close(() => resolve()));
    return ok;
  };
  let busy = 0;
  for (let i = 0; i < 50 && !busy; i++) {
    const p = 20_000 + Math.floor(Math.random() * 12_000);
    if ((await free(p - 1)) && (await free(p)) && (await free(p + 1))) busy = p;
  }
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(busy, HOST, resolve));
  t.after(() => blocker.close());
  const range = { min: busy - 1, max: busy + 1 };
  const logs: string[] = [];
  const proxy = newProxy({ portRange: range }, logs);
  cleanup(t, proxy, [a]);
  const sp = (name: string): { key: string; protocol: 'TCP'; endpoints: { ip: string; port: number }[] } => ({
    key: `ns/${name}:p/TCP`,
    protocol: 'TCP',
    endpoints: [ep(a)],
  });
  const ports = await proxy.update([sp('one'), sp('two'), sp('three')]);
  assert.deepEqual([...ports.values()].sort(), [range.min, range.max]);
  const portless = ['one', 'two', 'three'].map((n) => `ns/${n}:p/TCP`).filter((k) => !ports.has(k));
  for (const k of portless) {
    assert.match(proxy.failures().get(k)!, /no free port in the proxy port range \d+-\d+: \d+ held by this proxy, [1-3] in use by others/);
    assert.ok(logs.some((l) => l.includes(k) && l.includes('no free port')));
  }
  for (const [key, p] of ports) assert.equal(await request(p, key), `a:${key}`);
  // Removing one frees its port for the first one that had none.
  const firstKey = [...ports.keys()][0]!;
  const freed = ports.get(firstKey)!;
  const again = await proxy.update(['one', 'two', 'three'].map(sp).filter((s) => s.key !== firstKey));
  assert.equal(again.get(portless[0]!), freed);
  assert.throws(() => newProxy({ portRange: { min: 10, max: 5 } }), /invalid proxy port range 10-5/);
});

test('userspace proxy: a key keeps its port across updates; a removed key stops listening; SCTP is a logged skip', async (t) => {
  const a = await tcpEndpoint('a');
  const b = await tcpEndpoint('b');
  const u = await udpEndpoint('u');
  const logs: string[] = [];
  const proxy = newProxy({ removedEndpointGraceMs: 200 }, logs);
  cleanup(t, proxy, [a, b, u]);
  const first = await proxy.update([
    { key: 'ns/x:p/TCP', protocol: 'TCP', endpoints: [ep(a)] },
    { key: 'ns/y:p/UDP', protocol: 'UDP', endpoints: [ep(u)] },
    { key: 'ns/z:p/SCTP', protocol: 'SCTP', endpoints: [ep(a)] },
  ]);
  assert.deepEqual([...first.keys()].sort(), ['ns/x:p/TCP', 'ns/y:p/UDP']);
  assert.match(proxy.failures().get('ns/z:p/SCTP')!, /SCTP/);
  const held = await connect(first.get('ns/x:p/TCP')!);
  held.on('error', () => {});
  const heldClosed = new Promise<void>((resolve) => held.on('close', () => resolve()));
  for (let i = 0; i < 3; i++) {
    const next = await proxy.update([
      { key: 'ns/x:p/TCP', protocol: 'TCP', endpoints: [ep(i % 2 ? a : b)] },
      { key: 'ns/y:p/UDP', protocol: 'UDP', endpoints: [ep(u)] },
      { key: 'ns/z:p/SCTP', protocol: 'SCTP', endpoints: [ep(a)] },
      { key: `ns/new${i}:p/TCP`, protocol: 'TCP', endpoints: [ep(a)] },
    ]);
    assert.equal(next.get('ns/x:p/TCP'), first.get('ns/x:p/TCP'));
    assert.equal(next.get('ns/y:p/UDP'), first.get('ns/y:p/UDP'));
    assert.equal(await request(next.get('ns/x:p/TCP')!), i % 2 ? 'a:' : 'b:', 'new endpoints apply to new connections at once');
  }
  assert.equal(logs.filter((l) => l.includes('ns/z:p/SCTP')).length, 1, 'the skip is logged once, not at every update');
  assert.equal(proxy.stats().listeners, 3);

  await proxy.update([]);
  assert.equal(proxy.stats().listeners, 0);
  assert.equal(await outcome(first.get('ns/x:p/TCP')!), 'ECONNREFUSED', 'the port is released at once');
  assert.equal(proxy.stats().activeConnections, 1, 'an open connection of a removed service runs out its grace period');
  await heldClosed;
  assert.ok(await until(() => proxy.stats().activeConnections === 0));
});

test('userspace proxy: close() ends listeners, connections and sessions; later updates fail clearly', async (t) => {
  const a = await tcpEndpoint('a');
  const u = await udpEndpoint('u');
  t.after(async () => {
    await a.close();
    await u.close();
  });
  const proxy = newProxy();
  const ports = await proxy.update([
    { key: KEY, protocol: 'TCP', endpoints: [ep(a)] },
    { key: 'ns/y:p/UDP', protocol: 'UDP', endpoints: [ep(u)] },
  ]);
  const held = await connect(ports.get(KEY)!);
  held.on('error', () => {});
  const heldClosed = new Promise<void>((resolve) => held.on('close', () => resolve()));
  const client = dgram.createSocket('udp4');
  t.after(() => client.close());
  const reply = new Promise<void>((resolve) => client.once('message', () => resolve()));
  client.send('q', ports.get('ns/y:p/UDP')!, HOST);
  await reply;
  assert.equal(proxy.stats().udpSessions, 1);
  await proxy.close();
  await heldClosed;
  assert.deepEqual([proxy.stats().listeners, proxy.stats().activeConnections, proxy.stats().udpSessions], [0, 0, 0]);
  assert.equal(await outcome(ports.get(KEY)!), 'ECONNREFUSED');
  await assert.rejects(proxy.update([]), /closed/);
});

test('userspace proxy: change() touches only the keys it is given; the others keep their listener and endpoints', async (t) => {
  const eps = await Promise.all(['a', 'b'].map(tcpEndpoint));
  const proxy = newProxy();
  cleanup(t, proxy, eps);
  const other = 'ns/other:http/TCP';
  const first = await proxy.update([
    { key: KEY, protocol: 'TCP', endpoints: [ep(eps[0]!)] },
    { key: other, protocol: 'TCP', endpoints: [ep(eps[0]!)] },
  ]);
  // Only KEY is named: it moves to b; `other` is not in the change, so it is neither closed nor changed.
  const changed = await proxy.change([{ key: KEY, protocol: 'TCP', endpoints: [ep(eps[1]!)] }], []);
  assert.deepEqual([...changed.keys()], [KEY]);
  assert.equal(changed.get(KEY), first.get(KEY), 'the same key keeps its port');
  assert.equal(await request(first.get(KEY)!), 'b:');
  assert.equal(await request(first.get(other)!), 'a:');
  assert.equal(proxy.stats().listeners, 2);

  // A removed key stops listening (new connections are refused); an SCTP key is a failure, logged once.
  const sctp = 'ns/s:x/SCTP';
  await proxy.change([{ key: sctp, protocol: 'SCTP', endpoints: [ep(eps[0]!)] }], [other]);
  assert.equal(proxy.stats().listeners, 1);
  assert.equal(await outcome(first.get(other)!), 'ECONNREFUSED');
  assert.match(proxy.failures().get(sctp) ?? '', /SCTP/);
  await proxy.change([], [sctp]);
  assert.equal(proxy.failures().has(sctp), false);
  assert.equal(await request(first.get(KEY)!), 'b:');
});
