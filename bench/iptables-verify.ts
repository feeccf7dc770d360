// What one periodic verify() costs in iptables mode: syncs SERVICES × ENDPOINTS once into a
// throwaway namespace, times 2 × FULL_READ_EVERY + 1 verifications (each logs, at verbosity 2,
// whether it read the rules back), then deletes the PREROUTING jump as someone else would and
// times kernelInSync() turning false and the repairing verify().
// Usage (root): node dist/bench/iptables-verify.js SERVICES ENDPOINTS FULL_READ_EVERY [nft|legacy]
import { execFileSync } from 'node:child_process';
import { IptablesBackend } from '../src/backend/iptables/backend.js';
import { toolFor, type Flavour } from '../src/backend/iptables/apply.js';
import { setVerbosity } from '../src/log.js';
import { backendConfig, emptyChanges, snapshot, syntheticCluster } from '../test/support/snapshots.js';

const [services, endpoints, every] = process.argv.slice(2, 5).map(Number) as [number, number, number];
const flavour = (process.argv[5] ?? 'nft') as Flavour;
const ns = `kpt-bench-verify-${process.pid}`;
const since = (t: number): number => Math.round(performance.now() - t);

setVerbosity(2);
execFileSync('ip', ['netns', 'add', ns]);
try {
  const wrap = ['ip', 'netns', 'exec', ns];
  const be = new IptablesBackend(backendConfig(), { wrap, flavour, fullReadEvery: every });
  let t = performance.now();
  await be.sync(snapshot(syntheticCluster(services, endpoints), { changes: emptyChanges(true) }));
  console.log(`full sync: ${since(t)} ms`);
  for (let i = 1; i <= 2 * every + 1; i++) {
    t = performance.now();
    const r = await be.verify();
    console.log(`verify ${i}: ${since(t)} ms, repaired ${r.repaired}`);
  }
  execFileSync('ip', ['netns', 'exec', ns, toolFor('IPv4', flavour, 'iptables'), '-t', 'nat', '-D', 'PREROUTING', '1']);
  t = performance.now();
  while (be.kernelInSync() && performance.now() - t < 5000) await new Promise((r) => setTimeout(r, 10));
  console.log(`PREROUTING jump deleted: kernelInSync() ${be.kernelInSync()} after ${since(t)} ms`);
  t = performance.now();
  const r = await be.verify();
  console.log(`verify after it: ${since(t)} ms, repaired ${r.repaired}, kernelInSync() ${be.kernelInSync()}`);
} finally {
  execFileSync('ip', ['netns', 'del', ns]);
}
// The nft monitor and session outlive the backend.
process.exit(0);
