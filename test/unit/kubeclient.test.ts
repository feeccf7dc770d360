// The API client's connections, seen from a server: kept alive between requests, replaced on
// request without cutting a request short, and a silent server is an error, not a hang.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { KubeClient, loadKubeConfig } from '../../src/source/kubeclient.js';

let server: http.Server;
let url = '';
const sockets: Socket[] = [];
// Requests to /slow are answered when `release` is called; /silent never; /stall sends headers only.
let release: (() => void) | undefined;
before(async () => {
  server = http.createServer((req, res) => {
    if (req.url === '/silent') return;
    if (req.url === '/stall') return void res.writeHead(200).write('{"partial":');
    if (req.url === '/slow') return void (release = () => res.end('slow'));
    if (req.url === '/late') return void setTimeout(() => res.end('late'), 600);
    res.end('ok');
  });
  server.on('connection', (s: Socket) => sockets.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  for (const s of sockets) s.destroy();
  server.close();
});

/** Runs `fn` with a client of the test server, closed after it whatever happens. */
async function withClient(fn: (c: KubeClient) => Promise<void>): Promise<void> {
  const c = new KubeClient(loadKubeConfig({ master: url }));
  try {
    await fn(c);
  } finally {
    await c.close();
  }
}

test('a server that says nothing, before or within the body, fails the request after the idle timeout', () =>
  withClient(async (c) => {
    const t0 = Date.now();
    await assert.rejects(c.request('/silent', { idleTimeoutMs: 300 }), /no data from 127\.0\.0\.1:\d+ for 300 ms/);
    const res = await c.request('/stall', { idleTimeoutMs: 300 });
    assert.equal(res.status, 200);
    await assert.rejects(res.body.text());
    assert.ok(Date.now() - t0 < 3000, `gave up after ${Date.now() - t0} ms`);
  }));

test('requests reuse one connection; after a reset a running request finishes and the next uses a new one', () =>
  withClient(async (c) => {
    const before = sockets.length;
    assert.equal(await (await c.request('/a')).body.text(), 'ok');
    assert.equal(await (await c.request('/b')).body.text(), 'ok');
    assert.equal(sockets.length - before, 1, 'one connection for two requests');

    const slow = c.request('/slow');
    while (!release) await new Promise((r) => setTimeout(r, 10));
    const old = sockets.at(-1)!;
    c.resetConnections();
    release();
    assert.equal(await (await slow).body.text(), 'slow', 'a request running at the reset completes');
    assert.equal(await (await c.request('/c')).body.text(), 'ok');
    const used = new Set(sockets.slice(before));
    assert.ok(used.size >= 2, 'the request after the reset used a new connection');
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(old.destroyed || old.closed, 'the old pool closed its connections once free');
  }));

test("a connection reused by a request without a timeout keeps no earlier request's timeout", () =>
  withClient(async (c) => {
    const before = sockets.length;
    assert.equal(await (await c.request('/a', { idleTimeoutMs: 200 })).body.text(), 'ok');
    assert.equal(await (await c.request('/late', { idleTimeoutMs: 0 })).body.text(), 'late');
    assert.equal(sockets.length - before, 1, 'both on one connection');
  }));
