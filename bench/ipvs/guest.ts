// Run inside User-Mode Linux by main.ts (this machine's kernel has no IPVS). 10,000 services x 10
// endpoints by default: (i) the proxy's full sync from empty, (ii) the floor: bare `ipset restore`,
// `ipvsadm --restore` and `iptables-legacy-restore` of the same content into a fresh namespace,
// plus the `ip -batch` that puts the service addresses on kube-ipvs0, (iii) one endpoint change at
// a time, snapshot handed to the backend until the kernel holds it. The backend runs inside the
// namespace it programs, as the proxy does (this file starts itself again there), so it reads
// /proc/net/ip_vs instead of running ipvsadm. Each step's process starts are counted too: in the
// guest a process start costs 0.3-0.6 s. Prints one JSON line.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { IpvsBackend } from '../../src/backend/ipvs/backend.js';
import { toIpsetRestore } from '../../src/backend/ipvs/ipsets.js';
import { toIpvsadmRestore } from '../../src/backend/ipvs/ipvsadm.js';
import { renderIpvs } from '../../src/backend/ipvs/render.js';
import { toRestoreInput } from '../../src/backend/iptables/syntax.js';
import { servicePortKey, type Snapshot } from '../../src/model/types.js';
import { run } from '../../src/node/exec.js';
import { backendConfig, emptyChanges, endpoint, servicePort, snapshot, syntheticCluster } from '../../test/support/snapshots.js';

const SERVICES = Number(process.env.KPT_BENCH_SERVICES ?? 10000);
const ENDPOINTS = Number(process.env.KPT_BENCH_ENDPOINTS ?? 10);
const CHANGES = Number(process.env.KPT_BENCH_CHANGES ?? 30);

const PROXY_NS = 'kpt-bench-ipvs-proxy';
const FLOOR_NS = 'kpt-bench-ipvs-floor';
/** A full sync of 10,000 services runs ipvsadm --restore with 110,000 lines: minutes in the guest. */
const FULL_SYNC_TOOL_TIMEOUT_MS = 1_800_000;

/** Processes the guest kernel has started since boot. */
const processesStarted = (): number => Number(/^processes (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function ip(args: string[]): Promise<void> {
  const res = await run(['ip', ...args], '');
  if (res.code !== 0) throw new Error(`ip ${args.join(' ')}: ${res.stderr}`);
}

/** A fresh namespace where the endpoints' subnet is routable (the kernel takes no real server otherwise). */
async function namespace(name: string): Promise<string[]> {
  await ip(['netns', 'add', name]);
  await ip(['-n', name, 'link', 'add', 'd0', 'type', 'dummy']);
  await ip(['-n', name, 'addr', 'add', '10.100.0.1/10', 'dev', 'd0']);
  await ip(['-n', name, 'link', 'set', 'd0', 'up']);
  return ['ip', 'netns', 'exec', name];
}

/** One tool fed on stdin, timed from spawn to exit. */
function timed(argv: string[], input: string): Promise<number> {
  const t = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(ms(t)) : reject(new Error(`${argv.join(' ')}: exit ${code}: ${err.slice(0, 500)}`))));
    c.stdin.end(input);
  });
}

/** In the proxy's namespace: the measurements. */
async function measure(): Promise<void> {
  const config = { ...backendConfig(), scheduler: 'rr' };
  const full = snapshot(syntheticCluster(SERVICES, ENDPOINTS));
  const be = new IpvsBackend(config, { flavour: 'legacy', commandTimeoutMs: FULL_SYNC_TOOL_TIMEOUT_MS });
  let p = processesStarted();
  let t = process.hrtime.bigint();
  await be.sync(full);
  const fullSyncMs = ms(t);
  const fullSyncProcesses = processesStarted() - p;

  const floorWrap = await namespace(FLOOR_NS);
  const rs = renderIpvs(full, config);
  const floor = {
    ipsetMs: await timed([...floorWrap, 'ipset', 'restore'], toIpsetRestore(rs.ipsets)),
    ipvsadmMs: await timed([...floorWrap, 'ipvsadm', '--restore'], toIpvsadmRestore(rs.virtualServers)),
    iptablesMs: await timed([...floorWrap, 'iptables-legacy-restore', '--noflush'], toRestoreInput(rs.iptables)),
    dummyMs: 0,
  };
  await run([...floorWrap, 'ip', 'link', 'add', 'kube-ipvs0', 'type', 'dummy'], '');
  floor.dummyMs = await timed([...floorWrap, 'ip', '-batch', '-'], rs.dummyAddresses.map((a) => `addr add ${a}/32 dev kube-ipvs0\n`).join(''));

  const times: number[] = [];
  const processes: number[] = [];
  let snap: Snapshot = full;
  const keys = [...full.services.keys()];
  for (let i = 0; i < CHANGES; i++) {
    const key = keys[(i * 7919) % keys.length]!;
    const old = snap.services.get(key)!;
    const eps = [...old.endpoints];
    eps[i % eps.length] = endpoint(`10.110.${i >> 8}.${i & 255}`, 8080);
    const changed = servicePort({ ...old.info, endpoints: eps });
    const services = new Map(snap.services);
    services.set(servicePortKey(changed.info), changed);
    snap = { ...snap, generation: snap.generation + 1, services, changes: { ...emptyChanges(false), changed: new Set([key]) } };
    p = processesStarted();
    t = process.hrtime.bigint();
    await be.sync(snap);
    times.push(ms(t));
    processes.push(processesStarted() - p);
  }
  const floorMs = floor.ipsetMs + floor.ipvsadmMs + floor.iptablesMs;
  process.stdout.write(
    JSON.stringify({
      services: SERVICES,
      endpoints: ENDPOINTS,
      fullSyncMs,
      fullSyncProcesses,
      floor: { ...floor, totalMs: floorMs, withDummyMs: floorMs + floor.dummyMs },
      ratio: fullSyncMs / floorMs,
      ratioWithDummy: fullSyncMs / (floorMs + floor.dummyMs),
      change: { count: CHANGES, p50Ms: pct(times, 50), p95Ms: pct(times, 95), processesP50: pct(processes, 50), processesMax: Math.max(...processes) },
      virtualServers: rs.virtualServers.length,
    }) + '\n',
  );
}

/** Outside: the proxy's namespace, this file run again inside it, and the clean-up. */
async function main(): Promise<number> {
  try {
    const wrap = await namespace(PROXY_NS);
    const child = spawn(wrap[0]!, [...wrap.slice(1), process.execPath, fileURLToPath(import.meta.url), '--in-namespace'], { stdio: 'inherit' });
    return await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve(code ?? 1));
    });
  } finally {
    for (const n of [PROXY_NS, FLOOR_NS]) await run(['ip', 'netns', 'del', n], '');
  }
}

if (process.argv[2] === '--in-namespace') await measure();
else process.exitCode = await main();
