// On the host, in-process (no kernel): what one endpoint change costs the IPVS backend's
// JavaScript at 10,000 × 10 by default, the partial update of IpvsState against a full
// renderIpvs plus diffVirtualServers of every virtual server (what each change cost before).
// Run: npm run build && node dist/bench/ipvs/partial.js. Prints one JSON line.
import { diffVirtualServers } from '../../src/backend/ipvs/diff.js';
import { renderIpvs } from '../../src/backend/ipvs/render.js';
import { IpvsState } from '../../src/backend/ipvs/state.js';
import { servicePortKey, type Snapshot } from '../../src/model/types.js';
import { backendConfig, emptyChanges, endpoint, servicePort, snapshot, syntheticCluster } from '../../test/support/snapshots.js';

const SERVICES = Number(process.env.KPT_BENCH_SERVICES ?? 10000);
const ENDPOINTS = Number(process.env.KPT_BENCH_ENDPOINTS ?? 10);
const CHANGES = Number(process.env.KPT_BENCH_CHANGES ?? 30);

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

const config = { ...backendConfig(), scheduler: 'rr' };
let snap: Snapshot = snapshot(syntheticCluster(SERVICES, ENDPOINTS));
const state = new IpvsState(config).load(snap);
let previous = renderIpvs(snap, config);
const keys = [...snap.services.keys()];
const partial: number[] = [];
const whole: number[] = [];
for (let i = 0; i < CHANGES; i++) {
  const key = keys[(i * 7919) % keys.length]!;
  const old = snap.services.get(key)!;
  const eps = [...old.endpoints];
  eps[i % eps.length] = endpoint(`10.110.${i >> 8}.${i & 255}`, 8080);
  const changed = servicePort({ ...old.info, endpoints: eps });
  const services = new Map(snap.services);
  services.set(servicePortKey(changed.info), changed);
  snap = { ...snap, services, changes: { ...emptyChanges(false), changed: new Set([key]) } };
  let t = process.hrtime.bigint();
  state.update(snap, snap.changes.changed);
  partial.push(ms(t));
  t = process.hrtime.bigint();
  const rs = renderIpvs(snap, config);
  const kernel = previous.virtualServers.map((v) => ({ ...v, realServers: v.realServers.map((r) => ({ ...r, forwarding: 'masq' as const })) }));
  diffVirtualServers(kernel, rs.virtualServers, 'IPv4');
  whole.push(ms(t));
  previous = rs;
}
process.stdout.write(
  JSON.stringify({
    services: SERVICES,
    endpoints: ENDPOINTS,
    partialUpdate: { p50Ms: pct(partial, 50), p95Ms: pct(partial, 95) },
    renderAndDiffAll: { p50Ms: pct(whole, 50), p95Ms: pct(whole, 95) },
  }) + '\n',
);
