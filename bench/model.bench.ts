// Model throughput: N services × M endpoints applied, then snapshotted, then a small
// update applied and snapshotted again. Prints the timings; run with
// Run through `npm run bench` (bench/run.ts).
import { performance } from 'node:perf_hooks';
import { ProxyModel } from '../src/model/tracker.js';
import type { SourceEvent } from '../src/source/types.js';

const services = 10000;
const perService = 10;

function ip(n: number): string {
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

function serviceEvent(i: number): SourceEvent {
  return {
    kind: 'Service',
    type: 'ADDED',
    object: {
      metadata: { namespace: `ns${i % 50}`, name: `svc${i}` },
      spec: {
        clusterIP: `172.${16 + ((i >> 16) & 15)}.${(i >> 8) & 255}.${i & 255}`,
        ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
      },
    } as SourceEvent['object'],
  };
}

function sliceEvent(i: number, type: SourceEvent['type'], ready = true): SourceEvent {
  const endpoints = [];
  for (let j = 0; j < perService; j++) {
    endpoints.push({
      addresses: [ip(i * perService + j)],
      conditions: { ready },
      nodeName: `node${j % 20}`,
      zone: `zone-${j % 3}`,
    });
  }
  return {
    kind: 'EndpointSlice',
    type,
    object: {
      metadata: {
        namespace: `ns${i % 50}`,
        name: `svc${i}-abcde`,
        labels: { 'kubernetes.io/service-name': `svc${i}` },
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints,
    } as SourceEvent['object'],
  };
}

/** Applies a whole cluster's events to the model and takes snapshots; prints the timings. */
export async function run(): Promise<void> {
  const events: SourceEvent[] = [];
  for (let i = 0; i < services; i++) events.push(serviceEvent(i), sliceEvent(i, 'ADDED'));

  const model = new ProxyModel({ nodeName: 'node0', families: ['IPv4'] });
  const t0 = performance.now();
  for (const e of events) model.apply(e);
  const t1 = performance.now();
  const first = model.snapshot('IPv4');
  const t2 = performance.now();
  for (let i = 0; i < 100; i++) model.apply(sliceEvent(i, 'MODIFIED', false));
  const t3 = performance.now();
  const second = model.snapshot('IPv4');
  const t4 = performance.now();

  // One Service changed, then a snapshot, as a sync does: should not grow with the cluster.
  const changes = 100;
  const t5 = performance.now();
  for (let i = 0; i < changes; i++) {
    const e = serviceEvent(i);
    const spec = (e.object as { spec: { ports: Array<{ port: number }> } }).spec;
    spec.ports[0]!.port = 81;
    model.apply({ ...e, type: 'MODIFIED' });
    model.snapshot('IPv4');
  }
  const t6 = performance.now();

  const ms = (x: number): string => `${x.toFixed(1)} ms`;
  console.log(`model: ${services} services x ${perService} endpoints`);
  console.log(`  apply ${events.length} events: ${ms(t1 - t0)}`);
  console.log(`  first snapshot (${first.services.size} service ports, ${first.changes.changed.size} changed): ${ms(t2 - t1)}`);
  console.log(`  total initial: ${ms(t2 - t0)}`);
  console.log(`  100 slice updates + snapshot (${second.changes.changed.size} changed): ${ms(t4 - t2)} (apply ${ms(t3 - t2)})`);
  console.log(`  one Service changed + snapshot, mean of ${changes}: ${((t6 - t5) / changes).toFixed(2)} ms`);
}
