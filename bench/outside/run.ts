// One workload in one mode, measured from outside the proxy (see main.ts for the setup).
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TOOL_ENV } from '../../src/node/exec.js';
import { kubeconfigFor } from '../../test/support/kubeconfig.js';
import { LineClient } from '../../test/support/line-client.js';
import { fullSyncScript, iptablesLoadMs, loadMs } from './floor.js';
import { addNamespace, deleteNamespace, ip, memoryMiB, spawnIn, stopChild } from './procs.js';
import { percentile, type ChangeStages, type Result } from './report.js';
import {
  CLUSTER_CIDR,
  ENDPOINT_RANGE,
  endpointSlice,
  NODE_IP,
  NAMESPACE,
  NODE_NAME,
  node,
  service,
  serviceName,
  SERVICE_PORT,
  vip,
  type Workload,
} from './workload.js';

/** The modes measured here; ipvs needs a kernel with IP_VS (bench/ipvs runs it in User-Mode Linux). */
export const MODES = ['nftables', 'iptables', 'userspace'] as const;
export type Mode = (typeof MODES)[number];

export interface RunOptions {
  changes: number;
  connects: number;
  /** Restarts over the existing rules (the median is reported). */
  restarts: number;
  profileDir: string | undefined;
  /** Run the proxy at --v 4 and time each change's stages from its log. */
  stages: boolean;
  proxyMain: string;
  apiMain: string;
  probeMain: string;
}

const INSPECT_PORT = 9229;
const BURST = 2000;
/** Time given to the sync a new EndpointSlice (no Service yet) causes before its Service is written. */
const SLICE_SYNC_MS = 50;

function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function progress(text: string): void {
  process.stderr.write(`\r\x1b[K${text}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The proxy process and what its log says. */
class ProxyProcess {
  syncs = 0;
  lastSyncAt = 0;
  /** Service ports in the snapshot of the last sync logged. */
  servicePorts = 0;
  /** Log time of each Service event received (--v 4), by object name. */
  readonly serviceEventAt = new Map<string, number>();
  /** Log time and backend duration of each sync. */
  readonly syncLog: Array<{ at: number; ms: number }> = [];
  private tail = '';
  private readonly syncWaiters: Array<() => void> = [];

  constructor(readonly child: ChildProcess) {
    if (process.env.KPB_PROXY_LOG) child.once('exit', () => process.stderr.write(`proxy ${child.pid} exited ${new Date().toISOString()}\n`));
    child.stderr!.setEncoding('utf8');
    if (process.env.KPB_PROXY_LOG) child.stdout!.pipe(process.stderr, { end: false });
    else child.stdout!.resume();
    child.stderr!.on('data', (chunk: string) => {
      const text = this.tail + chunk;
      const lines = text.split('\n');
      this.tail = lines.pop()!;
      for (const l of lines) {
        if (process.env.KPB_PROXY_LOG) process.stderr.write(l + '\n');
        if (l.includes(' change received kind="Service"')) {
          const name = / object="([^"]+)"/.exec(l)?.[1];
          if (name) this.serviceEventAt.set(name, logTime(l));
        }
        if (!l.includes(' synced proxy rules ')) continue;
        this.syncLog.push({ at: logTime(l), ms: Number(/ ms=(\d+)/.exec(l)?.[1] ?? NaN) });
        this.syncs++;
        this.servicePorts = Number(/ servicePorts=(\d+)/.exec(l)?.[1] ?? NaN);
        this.lastSyncAt = nowMs();
        for (const w of this.syncWaiters.splice(0)) w();
      }
    });
  }

  nextSync(): Promise<void> {
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** Resolves once a sync has logged more service ports than `than`, or after timeoutMs. */
  async syncedBeyond(than: number, timeoutMs: number): Promise<void> {
    const deadline = nowMs() + timeoutMs;
    while (!(this.servicePorts > than) && nowMs() < deadline) await Promise.race([this.nextSync(), sleep(1000)]);
  }

  /** Resolves once no sync was logged for quietMs. */
  async settled(quietMs: number): Promise<void> {
    while (nowMs() - this.lastSyncAt < quietMs) await sleep(quietMs / 4);
  }
}

/** The time of a text log line (`I2026-…Z msg`), epoch ms. */
function logTime(line: string): number {
  return Date.parse(line.slice(1, line.indexOf(' ')));
}

/** Medians of each stage over the changes (see ChangeStages). */
function stagesOf(changes: Array<{ sent: number; event: number; synced: { at: number; ms: number } | undefined; reachable: number }>): ChangeStages {
  const at = (f: (c: (typeof changes)[number]) => number): number => percentile(changes.map(f).filter(Number.isFinite), 50);
  return {
    writeToEvent: at((c) => c.event - c.sent),
    eventToSyncStart: at((c) => (c.synced ? c.synced.at - c.synced.ms - c.event : NaN)),
    backend: at((c) => c.synced?.ms ?? NaN),
    syncDoneToReachable: at((c) => (c.synced ? c.reachable - c.synced.at : NaN)),
  };
}

/** The proxy's flags (after the program), the same for its runs and for building the floor's script. */
function proxyFlags(mode: Mode, kubeconfig: string, verbosity = 0): string[] {
  return [
    '--kubeconfig', kubeconfig,
    '--hostname-override', NODE_NAME,
    '--proxy-mode', mode,
    '--cluster-cidr', CLUSTER_CIDR,
    '--iptables-min-sync-period', '0s',
    '--v', String(verbosity),
  ];
}

/**
 * The kernel's own cost of the proxy's full sync: the same ruleset loaded into an empty
 * namespace, by the tool the proxy uses in the environment it gives it (TOOL_ENV). nftables and iptables: the proxy's own full-sync input (floor.ts); userspace:
 * iptables-save output of its four chains, one transaction as the proxy writes them.
 */
async function kernelFloorMs(mode: Mode, w: Workload, ns: string, kubeconfig: string, scratch: string): Promise<number> {
  const floorNs = `${ns}-floor`;
  addNamespace(floorNs);
  try {
    if (mode === 'nftables') return loadMs(floorNs, fullSyncScript(proxyFlags(mode, kubeconfig), w), scratch);
    // The bench namespace has no kubelet chains and no legacy rules: the proxy picks iptables-nft.
    if (mode === 'iptables') return await iptablesLoadMs(floorNs, proxyFlags(mode, kubeconfig), w);
    const dump = join(scratch, 'ruleset');
    let save = '';
    let tool = '';
    for (const flavour of ['nft', 'legacy']) {
      save = execFileSync('ip', ['netns', 'exec', ns, `iptables-${flavour}-save`], { maxBuffer: 1 << 30, encoding: 'utf8' });
      tool = `iptables-${flavour}-restore`;
      if (/^:KUBE-/m.test(save)) break;
    }
    writeFileSync(dump, save);
    const t0 = nowMs();
    execFileSync('ip', ['netns', 'exec', floorNs, tool, dump], { env: TOOL_ENV });
    return nowMs() - t0;
  } finally {
    deleteNamespace(floorNs);
  }
}

/** The node flags of a script's interpreter line (`#!/usr/bin/env -S node --flag`): the proxy runs as its users start it. */
function interpreterFlags(main: string): string[] {
  const first = readFileSync(main, 'utf8').split('\n', 1)[0]!;
  if (!first.startsWith('#!')) return [];
  const words = first.slice(2).trim().split(/\s+/);
  const node = words.findIndex((w) => w === 'node' || w.endsWith('/node'));
  return node < 0 ? [] : words.slice(node + 1);
}

async function startProxy(mode: Mode, ns: string, kubeconfig: string, opts: RunOptions, inspect: boolean): Promise<{ proxy: ProxyProcess; startedAt: number }> {
  const argv = [
    process.execPath,
    ...interpreterFlags(opts.proxyMain),
    ...(inspect ? [`--inspect=127.0.0.1:${INSPECT_PORT}`] : []),
    ...(process.env.KPB_NODE_ARGS ? process.env.KPB_NODE_ARGS.split(' ') : []),
    opts.proxyMain,
    ...proxyFlags(mode, kubeconfig, opts.stages ? 4 : Number(process.env.KPB_PROXY_V ?? 0)),
  ];
  const startedAt = nowMs();
  return { proxy: new ProxyProcess(spawnIn(ns, argv)), startedAt };
}

/** Times from `from` until the prober connects to ip:port: when it started and when it connected. */
async function reachableAfter(
  probe: LineClient,
  ipAddr: string,
  from: () => number | Promise<number>,
  timeoutMs = 120000,
): Promise<{ ms: number; t0: number; at: number }> {
  const answer = probe.send({ op: 'wait', ip: ipAddr, port: SERVICE_PORT, timeoutMs });
  await probe.nextOther(); // the first attempt is out
  const t0 = await from();
  const at = (await answer).at as number;
  return { ms: at - t0, t0, at };
}

export async function runWorkload(mode: Mode, w: Workload, opts: RunOptions): Promise<Result> {
  const label = `${mode} ${w.name}`;
  const ns = `kpb-${process.pid}`;
  const scratch = mkdtempSync(join(tmpdir(), 'kpb-'));
  let proxy: ProxyProcess | undefined;
  let api: LineClient | undefined;
  let probe: LineClient | undefined;
  try {
    progress(`${label}: namespace`);
    addNamespace(ns);
    // The node's interface: a veth whose peer drops everything, so a VIP without rules is silent.
    ip('-n', ns, 'link', 'add', 'kpb0', 'type', 'veth', 'peer', 'name', 'kpb1');
    ip('-n', ns, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'kpb0');
    ip('-n', ns, 'link', 'set', 'kpb0', 'up');
    ip('-n', ns, 'link', 'set', 'kpb1', 'up');
    ip('-n', ns, 'neigh', 'add', '10.0.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'kpb0', 'nud', 'permanent');
    ip('-n', ns, 'route', 'add', 'default', 'via', '10.0.0.2', 'dev', 'kpb0');
    // Every endpoint IP is local: one server answers for all of them.
    ip('-n', ns, 'route', 'add', 'local', ENDPOINT_RANGE, 'dev', 'lo');

    api = new LineClient(spawnIn(ns, [process.execPath, opts.apiMain]), 'fake API server');
    const url = (await api.nextOther()).url as string;
    const kubeconfig = kubeconfigFor(url, { dir: scratch });
    probe = new LineClient(spawnIn(ns, [process.execPath, opts.probeMain]), 'prober');
    await probe.nextOther();

    progress(`${label}: loading ${w.services} services into the API server`);
    const writes: Array<Promise<unknown>> = [api.send({ op: 'create', kind: 'Node', object: node() })];
    for (let i = 0; i < w.services; i++) {
      writes.push(api.send({ op: 'create', kind: 'EndpointSlice', object: endpointSlice(i, w.endpoints) }));
      writes.push(api.send({ op: 'create', kind: 'Service', object: service(i, w.mixed) }));
      if (writes.length >= 2000) await Promise.all(writes.splice(0));
    }
    await Promise.all(writes);

    let floorMs = NaN;
    const measureFloor = async (): Promise<void> => {
      progress(`${label}: kernel floor`);
      try {
        floorMs = await kernelFloorMs(mode, w, ns, kubeconfig, scratch);
      } catch (e) {
        // Some dumps do not load back as they are listed; the figure is then missing, not the run.
        process.stderr.write(`\n${label}: kernel floor not measured: ${(e as Error).message.split('\n')[0]}\n`);
      }
    };
    // nftables: before the proxy starts. A monitor subscribed in any namespace (the
    // proxy's own) slows a large transaction in every other one: 10k×10 1.7 s → 3.5–4.8 s.
    if (mode === 'nftables') await measureFloor();

    progress(`${label}: full sync from process start`);
    const started = await startProxy(mode, ns, kubeconfig, opts, opts.profileDir !== undefined);
    proxy = started.proxy;
    const fullSyncMs = (await reachableAfter(probe, vip(w.services - 1), () => started.startedAt)).ms;
    // The VIP answers once nft commits, a little before the proxy's sync ends (nft still reads
    // the kernel's replies): a change made meanwhile would time the start-up sync's tail.
    if (proxy.syncs === 0) await proxy.nextSync();
    const rssAfterStart = memoryMiB(proxy.child.pid!, 'VmRSS');

    // iptables and userspace: after the start (measured before, the floor namespace's teardown
    // slowed the proxy's first changes to seconds).
    if (mode !== 'nftables') await measureFloor();

    if (opts.profileDir) await probe.send({ op: 'profile-start', inspectPort: INSPECT_PORT });
    const changeMs: number[] = [];
    const timed: Parameters<typeof stagesOf>[0] = [];
    for (let k = 0; k < opts.changes; k++) {
      progress(`${label}: change ${k + 1}/${opts.changes}`);
      const i = w.services + k;
      await api.send({ op: 'create', kind: 'EndpointSlice', object: endpointSlice(i, w.endpoints) });
      // The slice's own sync changes nothing, so below -v 2 it logs no line for settled() to see:
      // without the pause it may still run when the Service arrives, which then waits for it.
      await sleep(SLICE_SYNC_MS);
      await proxy.settled(30);
      const syncsBefore = proxy.syncLog.length;
      const r = await reachableAfter(probe, vip(i), () => {
        const t0 = nowMs();
        void api!.send({ op: 'create', kind: 'Service', object: service(i, w.mixed) });
        return t0;
      });
      changeMs.push(r.ms);
      if (opts.stages) {
        // The sync that carried the Service: the log line may trail the probe's answer.
        await proxy.settled(30);
        const event = proxy.serviceEventAt.get(`${NAMESPACE}/${serviceName(i)}`) ?? NaN;
        const synced = proxy.syncLog.slice(syncsBefore).find((s) => s.at >= event);
        timed.push({ sent: r.t0, event, synced, reachable: r.at });
      }
    }
    let profile: string | undefined;
    if (opts.profileDir) {
      mkdirSync(opts.profileDir, { recursive: true });
      profile = join(opts.profileDir, `${mode}-${w.name.replace(/[^\w]+/g, '-')}.cpuprofile`);
      await probe.send({ op: 'profile-stop', file: profile });
    }

    progress(`${label}: first-packet latency`);
    const connect = (await probe.send({ op: 'connects', ip: vip(0), port: SERVICE_PORT, count: opts.connects })).ms as number[];

    progress(`${label}: burst of ${BURST} changes`);
    await proxy.settled(200);
    const rssBeforeBurst = memoryMiB(proxy.child.pid!, 'VmRSS');
    const syncsBefore = proxy.syncs;
    const burst: Array<Promise<unknown>> = [];
    for (let k = 0; k < BURST; k++) {
      burst.push(api.send({ op: 'update', kind: 'EndpointSlice', object: endpointSlice(k % w.services, w.endpoints, 1 + Math.floor(k / w.services)) }));
    }
    await Promise.all(burst);
    // A Service written after the burst: once the sync that holds it has ended, every burst
    // change is in the kernel (the watch delivers in order). Its VIP may answer before: a long
    // sync goes in several transactions, and the sentinel's need not be the last. Quiet logs
    // alone could hide a long sync still running, which the restart below would then have to
    // finish, and RSS would be taken in the middle of it.
    const sentinel = w.services + opts.changes;
    const portsBeforeSentinel = proxy.servicePorts;
    await api.send({ op: 'create', kind: 'EndpointSlice', object: endpointSlice(sentinel, w.endpoints) });
    await reachableAfter(probe, vip(sentinel), () => {
      void api!.send({ op: 'create', kind: 'Service', object: service(sentinel, w.mixed) });
      return nowMs();
    });
    await proxy.syncedBeyond(portsBeforeSentinel, 120000);
    await proxy.settled(1000);
    const burstSyncs = proxy.syncs - syncsBefore;
    const rssAfterBurst = memoryMiB(proxy.child.pid!, 'VmRSS');
    const peakRss = memoryMiB(proxy.child.pid!, 'VmHWM');

    // As the DaemonSet's pods are stopped: Kubernetes' default grace of 30 s before SIGKILL (a
    // stop during a read-back of a large ruleset waits for it before writing the checkpoint).
    const restartsMs: number[] = [];
    const stopsMs: number[] = [];
    let restartPeakRss = NaN;
    for (let r = 1; r <= opts.restarts; r++) {
      progress(`${label}: restart over the existing rules${opts.restarts > 1 ? ` ${r}/${opts.restarts}` : ''}`);
      const stopStarted = nowMs();
      await stopChild(proxy.child, 'SIGTERM', 30_000);
      stopsMs.push(nowMs() - stopStarted);
      const again = await startProxy(mode, ns, kubeconfig, opts, false);
      proxy = again.proxy;
      // A restart that never syncs (its sync keeps failing) is a figure too: NaN after a minute.
      const synced = await Promise.race([proxy.nextSync().then(() => true), sleep(60000).then(() => false)]);
      const restartMs = synced ? nowMs() - again.startedAt : NaN;
      restartsMs.push(restartMs);
      // The restarted proxy reads its table back at its first verification, right after that
      // sync: its peak is taken once that had time to end (twice the restart, 5 to 30 s), and the
      // next stop then finds it idle.
      await sleep(Math.min(30000, Math.max(5000, 2 * (Number.isFinite(restartMs) ? restartMs : 0))));
      if (r === 1) restartPeakRss = memoryMiB(proxy.child.pid!, 'VmHWM');
    }

    return {
      mode,
      workload: w.name,
      services: w.services,
      endpoints: w.endpoints,
      fullSyncMs,
      kernelFloorMs: floorMs,
      proxyShareMs: fullSyncMs - floorMs,
      changeP50Ms: percentile(changeMs, 50),
      changeP99Ms: percentile(changeMs, 99),
      changes: changeMs.length,
      changeMs: changeMs.map((ms) => Math.round(ms * 10) / 10),
      restartMs: percentile(restartsMs, 50),
      ...(restartsMs.length > 1 ? { restartsMs: restartsMs.map((ms) => Math.round(ms)) } : {}),
      stopMs: percentile(stopsMs, 50),
      peakRssMiB: peakRss,
      restartPeakRssMiB: restartPeakRss,
      rssAfterStartMiB: rssAfterStart,
      burst: { changes: BURST, syncs: burstSyncs, rssBeforeMiB: rssBeforeBurst, rssAfterMiB: rssAfterBurst },
      firstPacketP50Ms: percentile(connect, 50),
      firstPacketP99Ms: percentile(connect, 99),
      ...(profile ? { profile } : {}),
      ...(opts.stages ? { stages: stagesOf(timed) } : {}),
    };
  } finally {
    for (const c of [proxy?.child, probe?.child, api?.child]) if (c) await stopChild(c);
    deleteNamespace(ns);
    rmSync(scratch, { recursive: true, force: true });
  }
}
