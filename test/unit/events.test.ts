import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { waitFor } from '../support/wait-for.js';
import { kubeconfigFor } from '../support/kubeconfig.js';
import { KubeClient } from '../../src/source/kubeclient.js';
import { EventRecorder } from '../../src/node/events.js';
import { ProxyModel, type ObjectWarning } from '../../src/model/tracker.js';
import type { KubeObject } from '../../src/model/k8s.js';

test('a Service failed closed gets one Warning Event per change, posted to the API server', async () => {
  const server = await FakeApiServer.start({ token: 't' });
  const client = KubeClient.load({ kubeconfig: kubeconfigFor(server, { token: 't' }) });
  try {
    const recorder = new EventRecorder(client, 'node-1');
    const seen: ObjectWarning[] = [];
    const model = new ProxyModel({ nodeName: 'node-1', onWarning: (w) => (seen.push(w), recorder.warn(w)) });
    const lb = (ranges: string[]): KubeObject =>
      ({
        metadata: { namespace: 'default', name: 'lb', uid: 'u-1' },
        spec: { type: 'LoadBalancer', clusterIP: '10.96.0.5', ports: [{ port: 80 }], loadBalancerSourceRanges: ranges },
      }) as KubeObject;
    model.apply({ kind: 'Service', type: 'ADDED', object: lb(['bogus']) });
    // The same object again (a relist) is no news.
    model.apply({ kind: 'Service', type: 'MODIFIED', object: lb(['bogus']) });
    model.apply({ kind: 'Service', type: 'MODIFIED', object: lb(['192.0.2.0/24']) });
    // One for the bad ranges; none for the repeat, none once a usable range arrives.
    assert.equal(seen.length, 1, JSON.stringify(seen));
    await waitFor(() => server.events.size === 1, 'the Event');
    const ev = [...server.events.values()][0] as { reason: string; type: string; regarding: Record<string, unknown>; metadata: { namespace: string } };
    assert.equal(ev.reason, 'LoadBalancerSourceRangesUnusable');
    assert.equal(ev.type, 'Warning');
    assert.deepEqual(ev.regarding, { kind: 'Service', apiVersion: 'v1', namespace: 'default', name: 'lb', uid: 'u-1' });
    assert.equal(ev.metadata.namespace, 'default');
  } finally {
    await client.close();
    await server.stop();
  }
});

test('a repeat recorded while its Event is still being created becomes a series on that Event', async () => {
  const server = await FakeApiServer.start({ token: 't' });
  const client = KubeClient.load({ kubeconfig: kubeconfigFor(server, { token: 't' }) });
  try {
    const recorder = new EventRecorder(client, 'node-1');
    // Both start before the first POST has returned.
    await Promise.all([1, 2].map(() => recorder.record('Warning', 'InvalidConfiguration', 'ReloadConfiguration', 'bad file')));
    assert.equal(server.events.size, 1, 'one Event, not two');
    const ev = [...server.events.values()][0] as { series?: { count: number } };
    assert.equal(ev.series?.count, 2);
  } finally {
    await client.close();
    await server.stop();
  }
});
