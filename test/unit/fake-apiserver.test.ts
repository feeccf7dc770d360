import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseLabelSelector } from '../support/apiserver/selectors.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import type { KubeObject } from '../../src/model/k8s.js';
import { LineSplitter } from '../../src/lines.js';

const TOKEN = 'secret-token';
const auth = { Authorization: `Bearer ${TOKEN}` };

function svc(ns: string, name: string, labels?: Record<string, string>): KubeObject {
  return { metadata: { namespace: ns, name, ...(labels ? { labels } : {}) } };
}

async function getJSON(
  server: FakeApiServer,
  path: string,
  headers: Record<string, string> = auth,
): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(server.url + path, { headers });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

// Reads a watch stream line by line.
class WatchReader {
  private lines: string[] = [];
  private waiters: Array<() => void> = [];
  ended = false;
  private readonly ac = new AbortController();

  static async open(server: FakeApiServer, path: string): Promise<WatchReader> {
    const w = new WatchReader();
    const res = await fetch(server.url + path, { headers: auth, signal: w.ac.signal });
    assert.equal(res.status, 200);
    void w.pump(res.body!);
    return w;
  }

  private async pump(body: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    const lines = new LineSplitter((line) => this.lines.push(line));
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
        lines.push(dec.decode(chunk, { stream: true }));
        this.notify();
      }
    } catch {
      // aborted or dropped: reported as ended
    }
    this.ended = true;
    this.notify();
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async nextLine(timeoutMs = 5000): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0 && !this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a watch line');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.lines.shift();
  }

  async next(timeoutMs = 5000): Promise<{ type: string; object: any } | undefined> {
    const l = await this.nextLine(timeoutMs);
    return l === undefined ? undefined : JSON.parse(l);
  }

  close(): void {
    this.ac.abort();
  }
}

describe('fake API server', () => {
  let server: FakeApiServer;
  before(async () => {
    server = await FakeApiServer.start({ token: TOKEN, bookmarkIntervalMs: 50 });
  });
  after(async () => {
    await server.stop();
  });

  test('rejects a missing or wrong bearer token with a 401 Status', async () => {
    for (const headers of [{}, { Authorization: 'Bearer nope' }] as Array<Record<string, string>>) {
      const r = await getJSON(server, '/api/v1/services', headers);
      assert.equal(r.status, 401);
      assert.equal(r.body.kind, 'Status');
      assert.equal(r.body.code, 401);
      assert.equal(r.body.reason, 'Unauthorized');
    }
  });

  test('create assigns uid and increasing resourceVersions; list is sorted and typed', async () => {
    const a = server.create('Service', svc('ns-b', 'a'));
    const b = server.create('Service', svc('ns-a', 'z'));
    assert.ok(a.metadata?.uid && b.metadata?.uid && a.metadata.uid !== b.metadata.uid);
    assert.ok(Number(b.metadata!.resourceVersion) > Number(a.metadata!.resourceVersion));
    assert.throws(() => server.create('Service', svc('ns-b', 'a')), /already exists/);
    const r = await getJSON(server, '/api/v1/services');
    assert.equal(r.status, 200);
    assert.equal(r.body.kind, 'ServiceList');
    assert.equal(r.body.apiVersion, 'v1');
    assert.equal(r.body.metadata.resourceVersion, server.resourceVersion);
    assert.deepEqual(
      r.body.items.map((i: KubeObject) => `${i.metadata!.namespace}/${i.metadata!.name}`),
      ['ns-a/z', 'ns-b/a'],
    );
    // Items of a typed list carry no kind on the wire, as with the real server.
    assert.equal(r.body.items[0].kind, undefined);
    const ns = await getJSON(server, '/api/v1/namespaces/ns-b/services');
    assert.deepEqual(ns.body.items.map((i: KubeObject) => i.metadata!.name), ['a']);
    const one = await getJSON(server, '/api/v1/namespaces/ns-a/services/z');
    assert.equal(one.body.metadata.uid, b.metadata!.uid);
    const missing = await getJSON(server, '/api/v1/namespaces/ns-a/services/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.reason, 'NotFound');
    server.remove('Service', 'ns-b', 'a');
    server.remove('Service', 'ns-a', 'z');
  });

  test('paginates with limit/continue over a consistent snapshot; compaction expires tokens', async () => {
    for (let i = 0; i < 7; i++) server.create('EndpointSlice', svc('pg', `s${i}`));
    const base = '/apis/discovery.k8s.io/v1/endpointslices';
    const p1 = await getJSON(server, `${base}?limit=3`);
    assert.equal(p1.body.items.length, 3);
    assert.equal(p1.body.metadata.remainingItemCount, 4);
    const token = p1.body.metadata.continue as string;
    assert.ok(token);
    // Changes after the first page do not show up in later pages.
    server.remove('EndpointSlice', 'pg', 's5');
    server.create('EndpointSlice', svc('pg', 's9'));
    const p2 = await getJSON(server, `${base}?limit=3&continue=${encodeURIComponent(token)}`);
    const p3 = await getJSON(server, `${base}?limit=3&continue=${encodeURIComponent(p2.body.metadata.continue)}`);
    assert.equal(p3.body.metadata.continue, undefined);
    const names = [...p1.body.items, ...p2.body.items, ...p3.body.items].map((i: KubeObject) => i.metadata!.name);
    assert.deepEqual(names, ['s0', 's1', 's2', 's3', 's4', 's5', 's6']);
    assert.equal(p2.body.metadata.resourceVersion, p1.body.metadata.resourceVersion);
    server.compact();
    const expired = await getJSON(server, `${base}?limit=3&continue=${encodeURIComponent(token)}`);
    assert.equal(expired.status, 410);
    assert.equal(expired.body.reason, 'Expired');
    const old = await getJSON(server, `${base}?resourceVersion=${p1.body.metadata.resourceVersion}`);
    assert.equal(old.status, 410);
    const bad = await getJSON(server, `${base}?continue=garbage`);
    assert.equal(bad.status, 400);
    for (const o of server.list('EndpointSlice')) server.remove('EndpointSlice', o.metadata!.namespace, o.metadata!.name!);
  });

  test('label selectors: exists, not exists, =, !=, in, notin, AND', async () => {
    server.create('Service', svc('sel', 'plain'));
    server.create('Service', svc('sel', 'proxied', { 'service.kubernetes.io/service-proxy-name': 'other' }));
    server.create('Service', svc('sel', 'headless', { 'service.kubernetes.io/headless': '' }));
    server.create('Service', svc('sel', 'web', { app: 'web', tier: 'front' }));
    server.create('Service', svc('sel', 'db', { app: 'db', tier: 'back' }));
    const names = async (sel: string): Promise<string[]> => {
      const r = await getJSON(server, `/api/v1/namespaces/sel/services?labelSelector=${encodeURIComponent(sel)}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.items.map((i: KubeObject) => i.metadata!.name).sort();
    };
    assert.deepEqual(await names('!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless'), [
      'db',
      'plain',
      'web',
    ]);
    assert.deepEqual(await names('app'), ['db', 'web']);
    assert.deepEqual(await names('app=web'), ['web']);
    assert.deepEqual(await names('app==web'), ['web']);
    assert.deepEqual(await names('app!=web'), ['db', 'headless', 'plain', 'proxied']);
    assert.deepEqual(await names('tier in (front, back)'), ['db', 'web']);
    assert.deepEqual(await names('tier notin (front)'), ['db', 'headless', 'plain', 'proxied']);
    assert.deepEqual(await names('app,tier=back'), ['db']);
    const bad = await getJSON(server, `/api/v1/services?labelSelector=${encodeURIComponent('a in b')}`);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.kind, 'Status');
    assert.throws(() => parseLabelSelector('=x'), /unable to parse/);
    for (const o of server.list('Service')) server.remove('Service', o.metadata!.namespace, o.metadata!.name!);
  });

  test('field selectors on metadata.name and metadata.namespace', async () => {
    server.create('Node', { metadata: { name: 'node-1' } });
    server.create('Node', { metadata: { name: 'node-2' } });
    server.create('Service', svc('x', 'one'));
    server.create('Service', svc('y', 'one'));
    const n = await getJSON(server, '/api/v1/nodes?fieldSelector=metadata.name%3Dnode-2');
    assert.deepEqual(n.body.items.map((i: KubeObject) => i.metadata!.name), ['node-2']);
    assert.equal(n.body.items[0].metadata.namespace, undefined);
    const s = await getJSON(server, '/api/v1/services?fieldSelector=metadata.namespace%3Dy,metadata.name%3Done');
    assert.deepEqual(s.body.items.map((i: KubeObject) => i.metadata!.namespace), ['y']);
    const bad = await getJSON(server, '/api/v1/services?fieldSelector=spec.type%3DNodePort');
    assert.equal(bad.status, 400);
    server.remove('Node', undefined, 'node-1');
    server.remove('Node', undefined, 'node-2');
    server.remove('Service', 'x', 'one');
    server.remove('Service', 'y', 'one');
  });

  test('watch replays from a resourceVersion, then streams live changes in order', async () => {
    const a = server.create('Service', svc('w', 'a'));
    server.update('Service', { ...svc('w', 'a'), spec: { clusterIP: '10.0.0.1' } } as KubeObject);
    const w = await WatchReader.open(server, `/api/v1/services?watch=true&resourceVersion=${a.metadata!.resourceVersion}`);
    try {
      const e1 = await w.next();
      assert.equal(e1!.type, 'MODIFIED');
      assert.equal(e1!.object.kind, 'Service');
      assert.equal(e1!.object.spec.clusterIP, '10.0.0.1');
      assert.equal(e1!.object.metadata.uid, a.metadata!.uid);
      server.create('Service', svc('w', 'b'));
      const gone = server.remove('Service', 'w', 'a');
      const e2 = await w.next();
      const e3 = await w.next();
      assert.deepEqual([e2!.type, e2!.object.metadata.name], ['ADDED', 'b']);
      assert.deepEqual([e3!.type, e3!.object.metadata.name], ['DELETED', 'a']);
      assert.equal(e3!.object.metadata.resourceVersion, gone!.metadata!.resourceVersion);
    } finally {
      w.close();
      server.remove('Service', 'w', 'b');
    }
  });

  test('watch without a version starts with the current objects as ADDED', async () => {
    server.create('Node', { metadata: { name: 'n1' } });
    const w = await WatchReader.open(server, '/api/v1/nodes?watch=1');
    try {
      const e = await w.next();
      assert.deepEqual([e!.type, e!.object.metadata.name], ['ADDED', 'n1']);
    } finally {
      w.close();
      server.remove('Node', undefined, 'n1');
    }
  });

  test('an object leaving or entering a watch selector is seen as DELETED or ADDED', async () => {
    const rv = server.resourceVersion;
    const w = await WatchReader.open(
      server,
      `/api/v1/services?watch=true&resourceVersion=${rv}&labelSelector=${encodeURIComponent('!service.kubernetes.io/headless')}`,
    );
    try {
      server.create('Service', svc('t', 's'));
      server.update('Service', svc('t', 's', { 'service.kubernetes.io/headless': '' }));
      server.update('Service', svc('t', 's', { 'service.kubernetes.io/headless': '', x: 'y' }));
      server.update('Service', svc('t', 's'));
      const types = [];
      for (let i = 0; i < 3; i++) types.push((await w.next())!.type);
      assert.deepEqual(types, ['ADDED', 'DELETED', 'ADDED']);
    } finally {
      w.close();
      server.remove('Service', 't', 's');
    }
  });

  test('bookmarks carry the current resourceVersion; timeoutSeconds ends the stream', async () => {
    const w = await WatchReader.open(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}&allowWatchBookmarks=true&timeoutSeconds=1`,
    );
    const n = server.create('Node', { metadata: { name: 'bm' } });
    const e = await w.next();
    assert.equal(e!.type, 'BOOKMARK');
    assert.deepEqual(Object.keys(e!.object.metadata), ['resourceVersion']);
    assert.ok(Number(e!.object.metadata.resourceVersion) >= Number(n.metadata!.resourceVersion));
    let line: string | undefined;
    do line = await w.nextLine(5000);
    while (line !== undefined);
    assert.equal(w.ended, true);
    server.remove('Node', undefined, 'bm');
  });

  test('a watch from a compacted resourceVersion gets an ERROR event with a 410 Status', async () => {
    const old = server.resourceVersion;
    server.create('Service', svc('c', 'x'));
    server.compact();
    const w = await WatchReader.open(server, `/api/v1/services?watch=true&resourceVersion=${old}`);
    const e = await w.next();
    assert.equal(e!.type, 'ERROR');
    assert.equal(e!.object.kind, 'Status');
    assert.equal(e!.object.code, 410);
    assert.equal(e!.object.reason, 'Expired');
    assert.equal(await w.nextLine(), undefined);
    // The version after compaction is fine to watch from.
    const ok = await WatchReader.open(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    server.remove('Service', 'c', 'x');
    assert.equal((await ok.next())!.type, 'DELETED');
    ok.close();
  });

  test('history window: old versions expire once more changes than the limit happened', async () => {
    const s = await FakeApiServer.start({ historyLimit: 2 });
    try {
      const rv0 = s.resourceVersion;
      for (let i = 0; i < 3; i++) s.create('Service', svc('h', `s${i}`));
      const w = await WatchReader.open(s, `/api/v1/services?watch=true&resourceVersion=${rv0}`);
      assert.equal((await w.next())!.object.code, 410);
      const rv1 = String(Number(rv0) + 1);
      const w2 = await WatchReader.open(s, `/api/v1/services?watch=true&resourceVersion=${rv1}`);
      assert.equal((await w2.next())!.object.metadata.name, 's1');
      w2.close();
    } finally {
      await s.stop();
    }
  });

  test('fault injection: status with Retry-After, 410, drop, hang, garbage, open-watch drop; counters', async () => {
    const before = server.count({ kind: 'Service', verb: 'list' });
    server.fail(429, { retryAfter: 7, filter: { verb: 'list' } });
    const r429 = await getJSON(server, '/api/v1/services');
    assert.equal(r429.status, 429);
    assert.equal(r429.headers.get('retry-after'), '7');
    assert.equal(r429.body.reason, 'TooManyRequests');
    server.fail(500, { requests: 2 });
    assert.equal((await getJSON(server, '/api/v1/services')).status, 500);
    assert.equal((await getJSON(server, '/api/v1/services')).status, 500);
    assert.equal((await getJSON(server, '/api/v1/services')).status, 200);
    server.gone({ filter: { verb: 'list' } });
    assert.equal((await getJSON(server, '/api/v1/services')).status, 410);
    assert.equal(server.count({ kind: 'Service', verb: 'list' }) - before, 5);

    server.dropNext(1);
    await assert.rejects(fetch(server.url + '/api/v1/services', { headers: auth }));

    server.hang(1);
    await assert.rejects(
      fetch(server.url + '/api/v1/services', { headers: auth, signal: AbortSignal.timeout(300) }),
      /abort|timeout/i,
    );

    const w = await WatchReader.open(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    server.garbageLine();
    const line = await w.nextLine();
    assert.throws(() => JSON.parse(line!));
    assert.equal(server.openWatches, 1);
    server.dropConnections();
    assert.equal(await w.nextLine(), undefined);
    assert.equal(server.openWatches, 0);

    server.gone({ filter: { verb: 'watch' } });
    const gw = await WatchReader.open(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    assert.equal((await gw.next())!.object.code, 410);
  });

  test('hangWatches silences open watches without closing them', async () => {
    const w = await WatchReader.open(server, `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    server.hangWatches();
    server.create('Service', svc('hw', 'a'));
    await assert.rejects(w.nextLine(300), /timed out/);
    assert.equal(w.ended, false);
    w.close();
    server.remove('Service', 'hw', 'a');
  });

  test('write verbs over HTTP create, update and delete objects', async () => {
    const post = await fetch(server.url + '/api/v1/namespaces/http/services', {
      method: 'POST',
      headers: { ...auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ metadata: { name: 's' }, spec: { clusterIP: '10.0.0.9' } }),
    });
    assert.equal(post.status, 201);
    const created = (await post.json()) as KubeObject;
    assert.equal(created.metadata!.namespace, 'http');
    const put = await fetch(server.url + '/api/v1/namespaces/http/services/s', {
      method: 'PUT',
      headers: auth,
      body: JSON.stringify({ metadata: { name: 's' }, spec: { clusterIP: '10.0.0.10' } }),
    });
    assert.equal(put.status, 200);
    assert.equal(((server.list('Service')[0] as any).spec.clusterIP), '10.0.0.10');
    const del = await fetch(server.url + '/api/v1/namespaces/http/services/s', { method: 'DELETE', headers: auth });
    assert.equal(del.status, 200);
    assert.deepEqual(server.list('Service'), []);
    const dup = await fetch(server.url + '/api/v1/namespaces/http/services/s', { method: 'DELETE', headers: auth });
    assert.equal(dup.status, 404);
  });

  test('restart keeps the objects and the port', async () => {
    const s = await FakeApiServer.start();
    try {
      s.create('Node', { metadata: { name: 'keep' } });
      const port = s.port;
      await s.restart(50);
      assert.equal(s.port, port);
      const r = await getJSON(s, '/api/v1/nodes', {});
      assert.deepEqual(r.body.items.map((i: KubeObject) => i.metadata!.name), ['keep']);
    } finally {
      await s.stop();
    }
  });
});
