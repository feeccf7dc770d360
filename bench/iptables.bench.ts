// iptables backend benchmark: 10,000 services x 10 endpoints, on iptables-nft and on
// iptables-legacy, each in throwaway network namespaces. For each flavour: a bare
// iptables-restore of the full input into an empty namespace (the kernel floor), the proxy's full
// sync into another empty namespace, and one endpoint change at a time (render, diff, restore).
// `run()` re-runs this file inside each namespace (`--child`) so every tool call is made exactly
// as the proxy makes it.
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { IptablesBackend } from '../src/backend/iptables/backend.js';
import { toolFor, type Flavour } from '../src/backend/iptables/apply.js';
import { servicePortKey, type Snapshot } from '../src/model/types.js';
import { bareRestoreMs } from './outside/floor.js';
import { backendConfig, emptyChanges, endpoint, servicePort, snapshot, syntheticCluster } from '../test/support/snapshots.js';

const SERVICES = Number(process.env.KPT_BENCH_SERVICES ?? 10000);
const ENDPOINTS = Number(process.env.KPT_BENCH_ENDPOINTS ?? 10);
const CHANGES = 40;

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function median(xs: number[]): number {
  return pct(xs, 50);
}

type Row = [string, string, string];

/** Inside a fresh namespace: the bare restore of the same transactions the proxy sends for its full sync. */
async function floor(flavour: Flavour): Promise<void> {
  const { ms: floorMs, transactions } = await bareRestoreMs(backendConfig(), snapshot(syntheticCluster(SERVICES, ENDPOINTS)), flavour, {});
  process.stdout.write(JSON.stringify({ floorMs, transactions }) + '\n');
}

/** Inside a fresh namespace: the proxy's full sync, then single endpoint changes. */
async function proxy(flavour: Flavour): Promise<void> {
  const cfg = backendConfig();
  const ports = syntheticCluster(SERVICES, ENDPOINTS);
  let snap: Snapshot = snapshot(ports);
  const be = new IptablesBackend(cfg, { flavour });
  let t = process.hrtime.bigint();
  await be.sync(snap);
  const fullMs = ms(t);
  const times: number[] = [];
  let bytes = 0;
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
    await be.sync(snap);
    times.push(ms(t));
    bytes += be.lastInputBytes;
  }
  // The kernel's floor for a change on this (shared) machine: a bare restore rewriting one
  // service chain unchanged, as a whole process, in the same table.
  const svc = be.ruleset()!.chains.find((c) => c.table === 'nat' && c.name.startsWith('KUBE-SVC-'))!;
  const rewrite = ['*nat', `:${svc.name} - [0:0]`, ...svc.rules.map((r) => `-A ${svc.name} ${r}`), 'COMMIT', ''].join('\n');
  const bare: number[] = [];
  for (let i = 0; i < CHANGES; i++) {
    t = process.hrtime.bigint();
    execFileSync(toolFor('IPv4', flavour, 'restore'), ['--noflush'], { input: rewrite });
    bare.push(ms(t));
  }
  process.stdout.write(
    JSON.stringify({
      fullMs,
      p50: pct(times, 50),
      p95: pct(times, 95),
      bareP50: pct(bare, 50),
      bytesPerChange: bytes / CHANGES,
      rssMiB: process.resourceUsage().maxRSS / 1024,
    }) + '\n',
  );
}

function inNetns<T>(role: 'floor' | 'proxy', flavour: Flavour): Promise<T> {
  const ns = `kptipt-bench-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  return new Promise<T>((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--child', role, flavour], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => {
      if (code !== 0) return reject(new Error(`iptables benchmark (${role}, ${flavour}) failed (exit ${code})`));
      const last = out.trim().split('\n').pop() ?? '{}';
      resolve(JSON.parse(last) as T);
    });
  }).finally(() => execFileSync('ip', ['netns', 'del', ns]));
}

export async function run(): Promise<void> {
  const rows: Row[] = [];
  const reps = Number(process.env.KPT_BENCH_REPS ?? 3);
  // KPT_BENCH_FLAVOURS=nft measures one flavour only.
  const flavours = (process.env.KPT_BENCH_FLAVOURS ?? 'nft,legacy').split(',').filter((f): f is Flavour => f === 'nft' || f === 'legacy');
  for (const flavour of flavours) {
    const floors: number[] = [];
    const fulls: number[] = [];
    let last: { p50: number; p95: number; bareP50: number; bytesPerChange: number; rssMiB: number } | undefined;
    for (let r = 0; r < reps; r++) {
      floors.push((await inNetns<{ floorMs: number }>('floor', flavour)).floorMs);
      const p = await inNetns<{ fullMs: number; p50: number; p95: number; bareP50: number; bytesPerChange: number; rssMiB: number }>('proxy', flavour);
      fulls.push(p.fullMs);
      last = p;
    }
    const f = median(floors);
    const s = median(fulls);
    rows.push([`${flavour}: bare iptables-restore, empty namespace`, `${f.toFixed(0)} ms`, `median of ${reps}`]);
    rows.push([`${flavour}: proxy full sync, empty namespace`, `${s.toFixed(0)} ms`, `${(s / f).toFixed(2)}x the bare restore (target <= 1.2x)`]);
    rows.push([
      `${flavour}: one endpoint change`,
      `p50 ${last!.p50.toFixed(1)} ms, p95 ${last!.p95.toFixed(1)} ms`,
      `${CHANGES} changes, ${last!.bytesPerChange.toFixed(0)} bytes of restore input each${flavour === 'nft' ? ' (target p50 <= 100 ms)' : ''}`,
    ]);
    rows.push([`${flavour}: bare restore of one chain`, `p50 ${last!.bareP50.toFixed(1)} ms`, 'the kernel floor for a change, same table, same time']);
    rows.push([`${flavour}: peak RSS`, `${last!.rssMiB.toFixed(0)} MiB`, 'proxy side']);
  }
  const w = [0, 1].map((c) => Math.max(...rows.map((r) => r[c]!.length)));
  process.stdout.write(`iptables backend, ${SERVICES} services x ${ENDPOINTS} endpoints\n`);
  for (const r of rows) process.stdout.write(`  ${r[0].padEnd(w[0]!)}  ${r[1].padEnd(w[1]!)}  ${r[2]}\n`);
}

if (process.argv.includes('--child')) {
  const [role, flavour] = process.argv.slice(process.argv.indexOf('--child') + 1) as ['floor' | 'proxy', Flavour];
  // The backend's long-lived helpers (shell, monitor) would keep the child running: exit when done.
  (role === 'floor' ? floor(flavour) : proxy(flavour)).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}
