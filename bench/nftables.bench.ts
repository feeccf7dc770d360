// nftables backend benchmark: 10,000 services x 10 endpoints in a throwaway network namespace.
// `run()` creates the namespace and re-runs this file inside it (`--child`), so that every nft
// call is made exactly as the proxy makes it, without a per-call `ip netns exec`.
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { NftablesBackend } from '../src/backend/nftables/backend.js';
import { readTable } from '../src/backend/nftables/readback.js';
import { render } from '../src/backend/nftables/render.js';
import { RulesetState } from '../src/backend/nftables/state.js';
import { servicePortKey, type Snapshot } from '../src/model/types.js';
import { backendConfig, emptyChanges, endpoint, servicePort, snapshot, syntheticCluster } from '../test/support/snapshots.js';

const SERVICES = Number(process.env.KPT_BENCH_SERVICES ?? 10000);
const ENDPOINTS = Number(process.env.KPT_BENCH_ENDPOINTS ?? 10);
const CHANGES = 50;

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function child(): Promise<void> {
  const cfg = backendConfig();
  const ports = syntheticCluster(SERVICES, ENDPOINTS);
  let snap: Snapshot = snapshot(ports);
  const rows: Array<[string, string, string]> = [];

  // Pure render timings in their own scope so their results are garbage before the syncs.
  (() => {
    const t0 = process.hrtime.bigint();
    const rs = render(snap, cfg);
    const renderMs = ms(t0);
    const elements = rs.sets.reduce((n, s) => n + s.elements.size, 0);
    const t1 = process.hrtime.bigint();
    new RulesetState(cfg).load(snap);
    const stateMs = ms(t1);
    rows.push(['render (pure, full)', `${renderMs.toFixed(0)} ms`, `${elements} elements, ${rs.chains.length} chains`]);
    rows.push(['render (incremental state)', `${stateMs.toFixed(0)} ms`, 'what a full sync builds']);
  })();
  let t: bigint;
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();

  const be = new NftablesBackend(cfg, { removeLeftovers: false });
  t = process.hrtime.bigint();
  const full = await be.sync(snap);
  const fullMs = ms(t);
  rows.push(['full sync, empty kernel', `${fullMs.toFixed(0)} ms`, `${be.lastTransactions} transactions, ${full.operations} ops (target <= 5000 ms)`]);

  // A restart: a new backend finds the table in place and sends only the difference.
  const restarted = new NftablesBackend(cfg, { removeLeftovers: false });
  t = process.hrtime.bigint();
  const reload = await restarted.sync(snap);
  const reloadMs = ms(t);
  rows.push(['full sync, table present (restart)', `${reloadMs.toFixed(0)} ms`, `${reload.operations} ops`]);

  // Steady state of a proxy holding one ruleset: what the partial syncs below run in.
  gc?.();
  const steadyRss = process.memoryUsage().rss;
  const times: number[] = [];
  let ops = 0;
  for (let i = 0; i < CHANGES; i++) {
    const idx = (i * 197) % SERVICES;
    const old = snap.services.get(servicePortKey(ports[idx]!.info))!;
    const eps = [...old.clusterEndpoints];
    eps[i % eps.length] = endpoint(`10.250.${i >> 8}.${i & 255}`, 8080);
    const changed = servicePort({ ...old.info, endpoints: eps });
    const key = servicePortKey(changed.info);
    const services = new Map(snap.services);
    services.set(key, changed);
    snap = { ...snap, generation: snap.generation + 1, services, changes: { ...emptyChanges(false), changed: new Set([key]) } };
    t = process.hrtime.bigint();
    const r = await restarted.sync(snap);
    times.push(ms(t));
    ops += r.operations;
  }
  rows.push([
    'one endpoint change (render+diff+apply)',
    `p50 ${pct(times, 50).toFixed(1)} ms, p95 ${pct(times, 95).toFixed(1)} ms`,
    `${CHANGES} changes, ${(ops / CHANGES).toFixed(1)} ops each (target p50 <= 20 ms)`,
  ]);

  const kernel = await readTable('ip');
  const want = restarted.ruleset()!;
  const mismatched = want.sets.filter((s) => {
    const k = kernel?.sets.find((x) => x.name === s.name);
    return !s.dynamic && (!k || k.elements.size !== s.elements.size || [...s.elements].some(([e, v]) => k.elements.get(e) !== v));
  });
  rows.push(['kernel matches last render', mismatched.length === 0 ? 'yes' : `NO: ${mismatched.map((s) => s.name).join(',')}`, '']);
  rows.push(['RSS after full sync', `${(steadyRss / 1048576).toFixed(0)} MiB`, 'snapshot + rendered state, after GC']);
  rows.push(['peak RSS', `${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`, 'whole benchmark process, incl. reading the kernel table']);
  await restarted.cleanup();

  const w = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]!.length)));
  process.stdout.write(`nftables backend, ${SERVICES} services x ${ENDPOINTS} endpoints\n`);
  for (const r of rows) process.stdout.write(`  ${r[0].padEnd(w[0]!)}  ${r[1].padEnd(w[1]!)}  ${r[2]}\n`);
}

export async function run(): Promise<void> {
  const ns = `kptnft-bench-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const code = await new Promise<number>((resolve, reject) => {
      const c = spawn('ip', ['netns', 'exec', ns, process.execPath, '--expose-gc', fileURLToPath(import.meta.url), '--child'], { stdio: 'inherit' });
      c.on('error', reject);
      c.on('close', (code) => resolve(code ?? 1));
    });
    if (code !== 0) throw new Error(`nftables benchmark failed (exit ${code})`);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

if (process.argv.includes('--child')) {
  child().catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
