import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, unlinkSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ManifestsSource, type ManifestsSourceOptions } from '../../src/source/manifests.js';
import type { SourceEvent, SourceHandler } from '../../src/source/types.js';
import type { EndpointSlice, KubeObject, ObjectKind, Service } from '../../src/model/k8s.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples', import.meta.url));

class Recorder implements SourceHandler {
  events: SourceEvent[] = [];
  synced: ObjectKind[] = [];
  /** Index into events at which each onSynced arrived. */
  syncedAt: number[] = [];
  private waiters: Array<{ n: number; resolve: () => void }> = [];

  onEvent(event: SourceEvent): void {
    this.events.push(event);
    this.waiters = this.waiters.filter((w) => {
      if (this.events.length >= w.n) w.resolve();
      return this.events.length < w.n;
    });
  }
  onSynced(kind: ObjectKind): void {
    this.synced.push(kind);
    this.syncedAt.push(this.events.length);
  }
  /** Removes and returns the events recorded so far. */
  take(): SourceEvent[] {
    return this.events.splice(0);
  }
  waitForEvents(n: number, timeoutMs: number): Promise<void> {
    if (this.events.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${n} events`)), timeoutMs);
      this.waiters.push({ n, resolve: () => (clearTimeout(t), resolve()) });
    });
  }
}

function ids(events: SourceEvent[]): string[] {
  return events.map((e) => `${e.type} ${e.kind} ${e.object.metadata?.namespace ?? ''}/${e.object.metadata?.name}`);
}

/** Collects stderr output while fn runs (the log module writes there). */
async function captureStderr(fn: () => Promise<void>): Promise<string> {
  const orig = process.stderr.write.bind(process.stderr);
  let out = '';
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stderr.write = orig;
  }
  return out;
}

const svcYaml = (name: string, port: number, extra = ''): string => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
${extra}spec:
  clusterIP: 10.96.1.${port % 250}
  ports:
    - port: ${port}
      protocol: TCP
`;

describe('ManifestsSource', () => {
  let dir = '';
  let source: ManifestsSource | null = null;

  function setup(files: Record<string, string>, opts: ManifestsSourceOptions = { debounceMs: 10_000, rescanIntervalMs: 0, stableMs: 0 }): ManifestsSource {
    dir = mkdtempSync(join(tmpdir(), 'manifests-test-'));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    source = new ManifestsSource(dir, opts);
    return source;
  }

  afterEach(async () => {
    await source?.stop();
    source = null;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  test('loads every object of examples/, then reports all three kinds synced', async () => {
    source = new ManifestsSource(EXAMPLES, { rescanIntervalMs: 0 });
    const rec = new Recorder();
    await source.start(rec);
    const byKind = (k: ObjectKind) => rec.events.filter((e) => e.kind === k).map((e) => e.object.metadata?.name).sort();
    assert.deepEqual(byKind('Node'), ['node-1', 'node-2']);
    assert.deepEqual(byKind('Service'), [
      'dns', 'external-db', 'web', 'web-external', 'web-headless', 'web-lb', 'web-local', 'web-nodeport', 'web-sticky',
    ]);
    assert.equal(byKind('EndpointSlice').length, 8);
    assert.equal(rec.events.length, 19);
    assert.ok(rec.events.every((e) => e.type === 'ADDED'));
    // Every service except ExternalName has a slice naming it.
    const sliceServices = rec.events
      .filter((e) => e.kind === 'EndpointSlice')
      .map((e) => e.object.metadata?.labels?.['kubernetes.io/service-name'])
      .sort();
    assert.deepEqual(sliceServices, [
      'dns', 'web', 'web-external', 'web-headless', 'web-lb', 'web-local', 'web-nodeport', 'web-sticky',
    ]);
    assert.deepEqual([...rec.synced].sort(), ['EndpointSlice', 'Node', 'Service']);
    assert.deepEqual(rec.syncedAt, [19, 19, 19]);
    // resourceVersions are synthesized and distinct.
    const rvs = new Set(rec.events.map((e) => e.object.metadata?.resourceVersion));
    assert.equal(rvs.size, 19);
    assert.ok(!rvs.has(undefined));
    const dns = rec.events.find((e) => e.kind === 'EndpointSlice' && e.object.metadata?.name?.startsWith('dns-'))!
      .object as EndpointSlice;
    assert.equal(dns.endpoints!.filter((ep) => ep.conditions?.terminating).length, 1);
    const lb = rec.events.find((e) => e.object.metadata?.name === 'web-lb')!.object as Service;
    assert.equal(lb.status?.loadBalancer?.ingress?.[0]?.ip, '192.0.2.10');
  });

  test('reads multi-document YAML, Lists, typed Lists and JSON; ignores other kinds and files', async () => {
    const src = setup({
      'a.yaml': `${svcYaml('one', 81)}---\n# comment only document\n---\n${svcYaml('two', 82, '  namespace: prod\n')}---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: knative
`,
      'b.yml': `apiVersion: v1
kind: ServiceList
items:
  - metadata:
      name: typed-item
    spec:
      clusterIP: 10.96.1.3
`,
      'c.json': JSON.stringify({
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: 'node-1' },
        status: { addresses: [{ type: 'InternalIP', address: '10.0.0.1' }] },
      }),
      'd.json': JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'discovery.k8s.io/v1',
            kind: 'EndpointSlice',
            metadata: { name: 'one-abc', namespace: 'default', labels: { 'kubernetes.io/service-name': 'one' } },
            addressType: 'IPv4',
            endpoints: [{ addresses: ['10.244.1.5'] }],
          },
          { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web' } },
        ],
      }),
      'notes.txt': svcYaml('not-a-manifest', 83),
      '.hidden.yaml': svcYaml('hidden', 84),
    });
    const rec = new Recorder();
    await src.start(rec);
    assert.deepEqual(ids(rec.events), [
      'ADDED Node /node-1',
      'ADDED Service default/one',
      'ADDED Service default/typed-item',
      'ADDED Service prod/two',
      'ADDED EndpointSlice default/one-abc',
    ]);
    const typed = rec.events[2]!.object;
    assert.equal(typed.kind, 'Service');
    assert.equal(typed.apiVersion, 'v1');
  });

  test('an edited object is MODIFIED, a rewrite with the same content is no event', async () => {
    const src = setup({ 's.yaml': svcYaml('web', 80) });
    const rec = new Recorder();
    await src.start(rec);
    const added = rec.take();
    assert.deepEqual(ids(added), ['ADDED Service default/web']);

    writeFileSync(join(dir, 's.yaml'), svcYaml('web', 8080));
    await src.resync();
    const modified = rec.take();
    assert.deepEqual(ids(modified), ['MODIFIED Service default/web']);
    assert.equal((modified[0]!.object as Service).spec?.ports?.[0]?.port, 8080);
    assert.ok(
      Number(modified[0]!.object.metadata?.resourceVersion) > Number(added[0]!.object.metadata?.resourceVersion),
    );

    // Same object, keys in another order and a comment added: not a change.
    writeFileSync(
      join(dir, 's.yaml'),
      `# reformatted\nkind: Service\napiVersion: v1\nspec:\n  ports:\n    - protocol: TCP\n      port: 8080\n  clusterIP: 10.96.1.80\nmetadata:\n  name: web\n`,
    );
    await src.resync();
    assert.deepEqual(rec.take(), []);
  });

  test('an object removed from a file is DELETED with its last state; a removed file deletes all of its objects', async () => {
    const src = setup({
      's.yaml': `${svcYaml('a', 81)}---\n${svcYaml('b', 82)}`,
      't.yaml': `${svcYaml('c', 83)}---\n${svcYaml('d', 84)}`,
    });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();

    writeFileSync(join(dir, 's.yaml'), svcYaml('a', 81));
    await src.resync();
    const deleted = rec.take();
    assert.deepEqual(ids(deleted), ['DELETED Service default/b']);
    assert.equal((deleted[0]!.object as Service).spec?.ports?.[0]?.port, 82);

    unlinkSync(join(dir, 't.yaml'));
    await src.resync();
    assert.deepEqual(ids(rec.take()), ['DELETED Service default/c', 'DELETED Service default/d']);
  });

  test('a new file adds its objects; a renamed file changes nothing', async () => {
    const src = setup({ 's.yaml': svcYaml('a', 81) });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();

    writeFileSync(join(dir, 'new.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'n' } }));
    await src.resync();
    assert.deepEqual(ids(rec.take()), ['ADDED Service default/n']);

    renameSync(join(dir, 'new.json'), join(dir, 'renamed.json'));
    await src.resync();
    assert.deepEqual(rec.take(), []);
  });

  test('a broken file keeps its objects and is logged by name; other files still update; fixing it applies the change', async () => {
    const src = setup({ 'bad.yaml': svcYaml('keep', 81), 'good.yaml': svcYaml('other', 82) });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();

    const logged = await captureStderr(async () => {
      writeFileSync(join(dir, 'bad.yaml'), 'apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n');
      writeFileSync(join(dir, 'good.yaml'), svcYaml('other', 9090));
      await src.resync();
    });
    assert.match(logged, /bad\.yaml/);
    assert.match(logged, /cannot parse manifest file/);
    assert.deepEqual(ids(rec.take()), ['MODIFIED Service default/other']);

    // A broken JSON file is reported the same way, with the parser's message.
    const loggedJson = await captureStderr(async () => {
      writeFileSync(join(dir, 'broken.json'), '{"kind": "Service",');
      await src.resync();
    });
    assert.match(loggedJson, /broken\.json/);
    assert.match(loggedJson, /JSON/);
    assert.deepEqual(rec.take(), []);

    // Rescanning an unchanged broken file does not log it again.
    const again = await captureStderr(() => src.resync());
    assert.doesNotMatch(again, /bad\.yaml/);

    writeFileSync(join(dir, 'bad.yaml'), svcYaml('keep', 8181));
    await src.resync();
    const fixed = rec.take();
    assert.deepEqual(ids(fixed), ['MODIFIED Service default/keep']);
    assert.equal((fixed[0]!.object as Service).spec?.ports?.[0]?.port, 8181);
  });

  test('a file broken from the start loads nothing but does not stop the others', async () => {
    const src = setup({ 'a.yaml': 'kind: Service\n  bad: indentation\n: x', 'b.yaml': svcYaml('fine', 80) });
    const rec = new Recorder();
    const logged = await captureStderr(() => src.start(rec));
    assert.match(logged, /a\.yaml/);
    assert.deepEqual(ids(rec.events), ['ADDED Service default/fine']);
    assert.equal(rec.synced.length, 3);
  });

  test('hostile files (100,000 deep in JSON and YAML, over 16 MiB) are rejected alone, by name and position; the rest loads', async () => {
    const deepJson = '['.repeat(100_000) + ']'.repeat(100_000);
    const deepYaml = `apiVersion: v1\nkind: Service\nmetadata:\n  name: deep\nspec: ${'{a: '.repeat(100_000)}1${'}'.repeat(100_000)}\n`;
    const src = setup({ 'deep.json': deepJson, 'deep.yaml': deepYaml, 'ok.yaml': svcYaml('fine', 80) });
    writeFileSync(join(dir, 'huge.yaml'), Buffer.alloc(16 * 1024 * 1024 + 1, 0x20));
    const rec = new Recorder();
    const logged = await captureStderr(() => src.start(rec));
    assert.match(logged, /deep\.json.*line 1, column 201|line 1, column 201.*deep\.json/);
    assert.match(logged, /deep\.yaml/);
    assert.match(logged, /huge\.yaml/);
    assert.match(logged, /too large/);
    assert.doesNotMatch(logged, /call stack/);
    assert.deepEqual(ids(rec.events), ['ADDED Service default/fine']);
    assert.equal(rec.synced.length, 3);
  });

  test('a good file turned deep keeps its objects until fixed', async () => {
    const src = setup({ 's.yaml': svcYaml('keep', 81) });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();
    writeFileSync(join(dir, 's.yaml'), '{'.repeat(100_000));
    await captureStderr(() => src.resync());
    assert.deepEqual(rec.take(), []);
    writeFileSync(join(dir, 's.yaml'), svcYaml('keep', 82));
    await src.resync();
    assert.deepEqual(ids(rec.take()), ['MODIFIED Service default/keep']);
  });

  test('a file rewritten in place (truncated, then written slowly) never drops its services', async () => {
    // The stable period is far longer than the pause between writes, so a half-written file is
    // not taken for a finished one; unless the machine stalls this process past it (a loaded CI
    // runner did once), when a partial file may be loaded: its Service is still never deleted.
    const stableMs = 1000;
    const src = setup({ 's.yaml': svcYaml('steady', 81) }, { debounceMs: 20, rescanIntervalMs: 0, stableMs });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();
    const text = svcYaml('steady', 82);
    const fd = openSync(join(dir, 's.yaml'), 'w');
    let longestPause = 0;
    let last = performance.now();
    for (let i = 0; i < text.length; i += 16) {
      writeSync(fd, text.slice(i, i + 16));
      longestPause = Math.max(longestPause, performance.now() - last);
      last = performance.now();
      await src.resync();
      await new Promise((r) => setTimeout(r, 30));
    }
    closeSync(fd);
    const finished = (e: SourceEvent): boolean => JSON.stringify(e.object).includes('"ports":[{"port":82,"protocol":"TCP"}]');
    const deadline = Date.now() + 5000;
    while (!rec.events.some(finished)) {
      assert.ok(Date.now() < deadline, 'the finished file is loaded');
      await new Promise((r) => setTimeout(r, 20));
    }
    const events = rec.take();
    assert.deepEqual(ids(events.filter((e) => e.type === 'DELETED')), [], 'its Service is never deleted');
    assert.ok(finished(events.at(-1)!), 'the last event is the finished file');
    if (longestPause < stableMs) assert.deepEqual(ids(events), ['MODIFIED Service default/steady'], 'no partial file was loaded');
  });

  test('an editor saving by moving the file away and writing a new one does not drop its services', async () => {
    const src = setup({ 's.yaml': svcYaml('kept', 81) }, { debounceMs: 20, rescanIntervalMs: 0, stableMs: 200 });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();
    renameSync(join(dir, 's.yaml'), join(dir, 's.yaml~'));
    await src.resync();
    await new Promise((r) => setTimeout(r, 50));
    writeFileSync(join(dir, 's.yaml'), svcYaml('kept', 82));
    unlinkSync(join(dir, 's.yaml~'));
    await src.resync();
    await rec.waitForEvents(1, 3000);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(ids(rec.take()), ['MODIFIED Service default/kept']);
  });

  test('a file that stays gone is removed after the stable period', async () => {
    const src = setup({ 's.yaml': svcYaml('gone', 81) }, { debounceMs: 20, rescanIntervalMs: 0, stableMs: 100 });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();
    unlinkSync(join(dir, 's.yaml'));
    await src.resync();
    assert.deepEqual(rec.take(), []);
    await rec.waitForEvents(1, 3000);
    assert.deepEqual(ids(rec.take()), ['DELETED Service default/gone']);
  });

  test('objects without a name or of an unsupported version are skipped with a warning', async () => {
    const src = setup({
      'a.yaml': `apiVersion: v1\nkind: Service\nmetadata: {}\n---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: old\n---\n- just\n- a list\n---\n${svcYaml('ok', 80)}`,
    });
    const rec = new Recorder();
    const logged = await captureStderr(() => src.start(rec));
    assert.match(logged, /without metadata\.name/);
    assert.match(logged, /unsupported API version/);
    assert.match(logged, /not an object/);
    assert.deepEqual(ids(rec.events), ['ADDED Service default/ok']);
  });

  test('the same object in two files: the last file by name wins, with a warning', async () => {
    const src = setup({ '10-base.yaml': svcYaml('dup', 80), '20-override.yaml': svcYaml('dup', 8080) });
    const rec = new Recorder();
    const logged = await captureStderr(() => src.start(rec));
    assert.match(logged, /more than one manifest file/);
    assert.match(logged, /20-override\.yaml/);
    const added = rec.take();
    assert.deepEqual(ids(added), ['ADDED Service default/dup']);
    assert.equal((added[0]!.object as Service).spec?.ports?.[0]?.port, 8080);

    unlinkSync(join(dir, '20-override.yaml'));
    await src.resync();
    const back = rec.take();
    assert.deepEqual(ids(back), ['MODIFIED Service default/dup']);
    assert.equal((back[0]!.object as Service).spec?.ports?.[0]?.port, 80);
  });

  test('notices changes by itself through the directory watch', async () => {
    const src = setup({ 's.yaml': svcYaml('a', 81) }, { debounceMs: 20, rescanIntervalMs: 0, stableMs: 0 });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();
    writeFileSync(join(dir, 't.yaml'), svcYaml('b', 82));
    await rec.waitForEvents(1, 10_000);
    assert.deepEqual(ids(rec.take()), ['ADDED Service default/b']);
    unlinkSync(join(dir, 's.yaml'));
    await rec.waitForEvents(1, 10_000);
    assert.deepEqual(ids(rec.take()), ['DELETED Service default/a']);
  });

  test('a missing directory fails start with a clear error', async () => {
    const missing = join(tmpdir(), `manifests-test-missing-${process.pid}`);
    source = new ManifestsSource(missing);
    await assert.rejects(source.start(new Recorder()), (err: Error) => err.message.includes(missing));
  });

  test('concurrent rescans deliver each change once and in order; nothing after stop()', async () => {
    const src = setup({ 's.yaml': svcYaml('a', 81) });
    const rec = new Recorder();
    await src.start(rec);
    rec.take();
    writeFileSync(join(dir, 's.yaml'), svcYaml('a', 82));
    const p1 = src.resync();
    const p2 = src.resync();
    await Promise.all([p1, p2]);
    writeFileSync(join(dir, 's.yaml'), svcYaml('a', 83));
    await src.resync();
    const events = rec.take();
    assert.deepEqual(ids(events), ['MODIFIED Service default/a', 'MODIFIED Service default/a']);
    assert.deepEqual(
      events.map((e) => (e.object as Service).spec?.ports?.[0]?.port),
      [82, 83],
    );
    const rvs = events.map((e: { object: KubeObject }) => Number(e.object.metadata?.resourceVersion));
    assert.ok(rvs[0]! < rvs[1]!);

    await src.stop();
    writeFileSync(join(dir, 's.yaml'), svcYaml('a', 84));
    await src.resync();
    assert.deepEqual(rec.take(), []);
  });
});
