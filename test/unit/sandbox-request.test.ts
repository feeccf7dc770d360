// The request core against small servers on loopback: what a client sees for a reply, a refusal,
// a silent peer, a close without reply and a reply in the wrong format.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { requestOnce, runLimited, validateTarget } from '../../src/sandbox/request.js';
import { probe } from '../../src/sandbox/probe.js';

function tcpServer(onConnection: (sock: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve) => {
    const server = net.createServer(onConnection);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function portOf(server: net.Server | dgram.Socket): number {
  const a = server.address();
  assert.ok(a && typeof a === 'object');
  return a.port;
}

/** A port nobody listens on: bound once, then released. */
async function freePort(): Promise<number> {
  const s = await tcpServer(() => {});
  const port = portOf(s);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('requestOnce', () => {
  const servers: net.Server[] = [];
  let silentUdp: dgram.Socket;
  let pod: number;
  let closer: number;
  let chatter: number;

  before(async () => {
    servers.push(await tcpServer((s) => s.end(`web-1 ${s.remoteAddress}\n`)));
    servers.push(await tcpServer((s) => s.end()));
    servers.push(await tcpServer((s) => s.end('hello\n')));
    [pod, closer, chatter] = servers.map(portOf) as [number, number, number];
    silentUdp = dgram.createSocket('udp4');
    await new Promise<void>((r) => silentUdp.bind(0, '127.0.0.1', () => r()));
  });
  after(async () => {
    for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
    silentUdp.close();
  });

  test('a pod reply names the pod and the source it saw', async () => {
    assert.deepEqual(await requestOnce({ proto: 'tcp', ip: '127.0.0.1', port: pod, timeoutMs: 2000 }), {
      ok: true,
      pod: 'web-1',
      seenSource: '127.0.0.1',
    });
  });

  test('the client source address is the one asked for', async () => {
    const r = await requestOnce({ proto: 'tcp', ip: '127.0.0.1', port: pod, timeoutMs: 2000, sourceIp: '127.0.0.2' });
    assert.deepEqual(r, { ok: true, pod: 'web-1', seenSource: '127.0.0.2' });
  });

  test('nobody listening is refused, over TCP and UDP', async () => {
    const port = await freePort();
    assert.deepEqual(await requestOnce({ proto: 'tcp', ip: '127.0.0.1', port, timeoutMs: 2000 }), { ok: false, error: 'refused' });
    assert.deepEqual(await requestOnce({ proto: 'udp', ip: '127.0.0.1', port, timeoutMs: 2000 }), { ok: false, error: 'refused' });
  });

  test('a peer that never answers is a timeout', async () => {
    const r = await requestOnce({ proto: 'udp', ip: '127.0.0.1', port: portOf(silentUdp), timeoutMs: 200 });
    assert.deepEqual(r, { ok: false, error: 'timeout' });
  });

  test('a close without a reply is closed; a reply in another format is an error', async () => {
    assert.deepEqual(await requestOnce({ proto: 'tcp', ip: '127.0.0.1', port: closer, timeoutMs: 2000 }), { ok: false, error: 'closed' });
    const r = await requestOnce({ proto: 'tcp', ip: '127.0.0.1', port: chatter, timeoutMs: 2000 });
    assert.equal(r.ok, false);
    assert.ok(!r.ok && r.error === 'error' && r.detail?.includes('hello'), JSON.stringify(r));
  });

  test('the probe counts answers per pod and folds closed into error', async () => {
    assert.deepEqual(await probe({ proto: 'tcp', ip: '127.0.0.1', port: pod, count: 5, concurrency: 2, timeoutMs: 2000 }), {
      sent: 5,
      answered: { 'web-1': 5 },
      failures: {},
    });
    assert.deepEqual(await probe({ proto: 'tcp', ip: '127.0.0.1', port: closer, count: 3, concurrency: 1, timeoutMs: 2000 }), {
      sent: 3,
      answered: {},
      failures: { error: 3 },
    });
  });
});

test('validateTarget names the bad field', () => {
  assert.equal(validateTarget({ proto: 'tcp', ip: '10.0.0.1', port: 80 }), undefined);
  assert.equal(validateTarget({ proto: 'sctp' as 'tcp', ip: '10.0.0.1', port: 80 }), 'bad proto "sctp"');
  assert.equal(validateTarget({ proto: 'udp', ip: '10.0.0', port: 80 }), 'bad ip "10.0.0"');
  assert.equal(validateTarget({ proto: 'udp', ip: 'fd00::1', port: 65536 }), 'bad port 65536');
});

test('runLimited runs every task once with at most width in flight', async () => {
  const seen: number[] = [];
  let inFlight = 0;
  let most = 0;
  await runLimited(10, 3, async (i) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 5));
    seen.push(i);
    inFlight--;
  });
  assert.deepEqual(seen.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(most, 3);
});
