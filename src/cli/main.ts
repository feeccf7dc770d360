#!/usr/bin/env node
// kube-proxy-ts entry point: flags and config file → a running proxy (or a one-shot action).
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createBackend, cleanupAll } from '../backend/index.js';
import { ConfigError, effectiveMode, serializeConfiguration, syncPeriodsMs } from '../config/index.js';
import { log, setVerbosity } from '../log.js';
import { Proxy } from '../proxy.js';
import { ApiServerSource } from '../source/apiserver.js';
import { EventRecorder } from '../source/events.js';
import { KubeClient } from '../source/kubeclient.js';
import { ManifestsSource } from '../source/manifests.js';
import type { Source } from '../source/types.js';
import { runSandbox } from '../sandbox/index.js';
import { healthCheckHosts, ProxierHealth, ServiceHealthServers, startHealthServer } from '../server/health.js';
import type { RunningServer } from '../server/http.js';
import { ProxyMetrics, startMetricsServer } from '../server/metrics.js';
import { registerWatchFreshness } from '../server/watch-metrics.js';
import { explainCommand } from './explain-cmd.js';
import { acquireInstanceLock, removeStaleTempDirs, type LockResult } from './instance.js';
import { applyProcessSettings } from './process-settings.js';
import { helpText, parseCommandLine, VERSION, type CommandLine } from './flags.js';

/** Subcommands parse their own arguments. */
const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  explain: explainCommand,
  sandbox: runSandbox,
};

function nodeNameOf(cmd: CommandLine): string {
  return (cmd.config.hostnameOverride || hostname()).trim().toLowerCase();
}

async function runProxy(cmd: CommandLine): Promise<number> {
  const nodeName = nodeNameOf(cmd);
  const mode = effectiveMode(cmd.config);
  let source: Source;
  let events: EventRecorder | undefined;
  if (cmd.manifestsDir) {
    source = new ManifestsSource(cmd.manifestsDir);
  } else {
    const client = KubeClient.load({ kubeconfig: cmd.config.clientConnection.kubeconfig || undefined, master: cmd.master || undefined });
    source = new ApiServerSource({ client, nodeName });
    events = new EventRecorder(client, nodeName);
    log.info('using the API server', { server: client.server });
  }
  // The lock is taken when the first kernel backend is made: a dry run, or a mode without
  // a kernel backend, programs nothing and cannot fight another instance.
  let lock: LockResult | undefined;
  const proxy = new Proxy({
    config: cmd.config,
    nodeName,
    source,
    ...(events ? { onObjectWarning: (w) => events.warn(w) } : {}),
    createBackend: (cfg) => {
      const backend = createBackend(mode, cfg, { dryRun: cmd.dryRun });
      if (backend !== null && !cmd.dryRun && lock === undefined) {
        lock = acquireInstanceLock();
        if (!lock.ok) {
          log.error(`another kube-proxy-ts (PID ${lock.holderPid}) already programs this node's rules; exiting`, { lock: lock.path, holderPid: lock.holderPid });
          process.exit(1);
        }
      }
      return backend;
    },
  });
  log.info('starting kube-proxy-ts', { version: VERSION, mode, node: nodeName, dryRun: cmd.dryRun });
  applyProcessSettings(cmd.config, { dryRun: cmd.dryRun });
  removeStaleTempDirs();

  let servers: { close(): Promise<void> }[];
  try {
    servers = await startServers(cmd, proxy, source, mode, nodeName);
  } catch (err) {
    log.error(err instanceof Error ? err.message : String(err));
    return 1;
  }

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    // Rules stay in the kernel: a restart must not interrupt service traffic.
    log.info('stopping; kernel rules are left in place', { signal });
    Promise.all(servers.map((s) => s.close()))
      .then(() => proxy.stop())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  await proxy.start();
  return new Promise<number>(() => {
    /* runs until a signal */
  });
}

/**
 * The healthz and metrics servers (an empty address disables one) and the service
 * health-check node ports. A bind failure rejects only with bindAddressHardFail.
 */
async function startServers(cmd: CommandLine, proxy: Proxy, source: Source, mode: string, nodeName: string): Promise<{ close(): Promise<void> }[]> {
  const config = cmd.config;
  const hardFail = config.bindAddressHardFail;
  const metrics = new ProxyMetrics({
    mode,
    sources: {
      runner: proxy.runner,
      model: { pendingChanges: () => proxy.pendingChanges(), invalidObjects: proxy.model.invalidObjects },
      snapshots: () => proxy.lastSnapshots.values(),
    },
  });
  const health = new ProxierHealth({
    state: proxy.runner,
    healthTimeoutMs: 2 * syncPeriodsMs(config).syncPeriodMs,
    nodeName,
    kernelInSync: () => proxy.kernelInSync(),
  });
  if (source instanceof ApiServerSource) registerWatchFreshness(metrics.registry, source);
  proxy.observe(metrics);
  proxy.observe(health);
  const started: RunningServer[] = [];
  try {
    if (config.healthzBindAddress !== '') {
      started.push(await startHealthServer(config.healthzBindAddress, { health, counters: metrics, hardFail }));
    }
    if (config.metricsBindAddress !== '') {
      started.push(await startMetricsServer(config.metricsBindAddress, metrics, { hardFail }));
    }
  } catch (err) {
    await Promise.all(started.map((s) => s.close()));
    throw err;
  }
  // A dry run programs nothing, so it must not tell load balancers this node can take traffic.
  if (cmd.dryRun) return started;
  const checks = new ServiceHealthServers(health);
  proxy.runner.onSync((r) => {
    if (r.ok) void checks.update(proxy.lastSnapshots.values(), healthCheckHosts(proxy.backendConfigs, mode));
  });
  return [...started, checks];
}

export async function main(argv: string[]): Promise<number> {
  const sub = argv[0] !== undefined ? SUBCOMMANDS[argv[0]] : undefined;
  if (sub) return sub(argv.slice(1));

  let cmd: CommandLine;
  try {
    cmd = parseCommandLine(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`kube-proxy-ts: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (cmd.help) {
    process.stdout.write(helpText());
    return 0;
  }
  if (cmd.version) {
    process.stdout.write(`kube-proxy-ts ${VERSION}\n`);
    return 0;
  }
  setVerbosity(cmd.verbosity);
  if (cmd.writeConfigTo) {
    writeFileSync(cmd.writeConfigTo, serializeConfiguration(cmd.config));
    log.info('wrote the effective configuration', { file: cmd.writeConfigTo });
    return 0;
  }
  if (cmd.cleanup) {
    await cleanupAll();
    log.info('cleanup done');
    return 0;
  }
  return runProxy(cmd);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`kube-proxy-ts: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
