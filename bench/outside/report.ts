// Results of the outside benchmark: one record per mode and workload, and their table.

export interface Result {
  mode: string;
  workload: string;
  services: number;
  endpoints: number;
  /** Proxy process start → the last service's VIP answers. */
  fullSyncMs: number;
  /** A bare load of the same ruleset into an empty namespace. */
  kernelFloorMs: number;
  proxyShareMs: number;
  /** One new Service: API write → its VIP answers. */
  changeP50Ms: number;
  changeP99Ms: number;
  changes: number;
  /** Every change's time in the order made, to see when the slow ones came (e.g. right after start). */
  changeMs: number[];
  /** Restart over the rules already in the kernel → first sync done (the median with --restarts). */
  restartMs: number;
  /** Each restart's figure, with --restarts. */
  restartsMs?: number[];
  /** SIGTERM → the proxy exited, before that restart (a clean stop writes its checkpoint). */
  stopMs: number;
  peakRssMiB: number;
  /** The restarted proxy's peak, its first verification (a read-back of the table) included. */
  restartPeakRssMiB: number;
  rssAfterStartMiB: number;
  /** syncs: those that carried the burst and the Service written after it (which shows the burst is in the kernel). */
  burst: { changes: number; syncs: number; rssBeforeMiB: number; rssAfterMiB: number };
  /** connect() to a ClusterIP → established. */
  firstPacketP50Ms: number;
  firstPacketP99Ms: number;
  profile?: string;
  /** With --stages: medians of one change's stages (ms), from the proxy's log timestamps (1 ms resolution). */
  stages?: ChangeStages;
}

/**
 * One change split at the proxy's log lines: API write sent → the proxy logs the Service event
 * (API server write, watch fan-out, decoding) → the sync starts (runner, snapshot) → the backend
 * is done (render, `nft` transaction) → the prober's connection is established.
 */
export interface ChangeStages {
  writeToEvent: number;
  eventToSyncStart: number;
  backend: number;
  syncDoneToReachable: number;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '–');

export function markdownTable(results: Result[]): string {
  const head =
    '| mode | workload | start → last VIP answers (ms) | kernel floor (ms) | proxy share (ms) | change p50 / p99 (ms) | restart → synced (ms) | peak RSS, run / after restart (MiB) | burst: syncs, RSS before → after (MiB) | first packet p50 / p99 (ms) |\n' +
    '|---|---|---|---|---|---|---|---|---|---|';
  const rows = results.map(
    (r) =>
      `| ${r.mode} | ${r.workload} | ${f0(r.fullSyncMs)} | ${f0(r.kernelFloorMs)} | ${f0(r.proxyShareMs)} | ${f1(r.changeP50Ms)} / ${f1(r.changeP99Ms)} | ` +
      `${f0(r.restartMs)} | ${f0(r.peakRssMiB)} / ${f0(r.restartPeakRssMiB)} | ${r.burst.syncs}, ${f0(r.burst.rssBeforeMiB)} → ${f0(r.burst.rssAfterMiB)} | ` +
      `${f1(r.firstPacketP50Ms)} / ${f1(r.firstPacketP99Ms)} |`,
  );
  return [head, ...rows].join('\n');
}
