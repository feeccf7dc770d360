#!/usr/bin/env -S node --max-semi-space-size=2
// kube-proxy-ts entry point: flags and config file → a running proxy (or a one-shot action).
// The interpreter line keeps V8's young generation at 2 × 2 MiB instead of up to 2 × 16 MiB:
// 10,000 Services × 10 endpoints peaked at 222–225 MiB instead of 252 (docs/performance.md),
// with the same sync and change times.
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { cleanupAll, createBackend, listLeftovers, prepareBackends, type BackendOptions } from '../backend/index.js';
import type { Backend, BackendConfig } from '../backend/types.js';
import { ConfigError, effectiveMode, serializeConfiguration, syncPeriodsMs, type KubeProxyConfiguration, type ProxyMode } from '../config/index.js';
import { log, setLogFormat, setSplitStream, setVerbosity, setVmodule } from '../log.js';
import { ConntrackReconciler, mayLeaveStaleFlows } from '../node/conntrack-reconcile.js';
import { EventRecorder } from '../node/events.js';
import { Proxy } from '../proxy.js';
import { ApiServerSource } from '../source/apiserver.js';
import { KubeClient } from '../source/kubeclient.js';
import { ManifestsSource } from '../source/manifests.js';
import type { Source } from '../source/types.js';
import { healthCheckHosts, ProxierHealth, ServiceHealthServers, startHealthServer } from '../server/health.js';
import { debugRoutes, SyncHistory } from '../server/debug.js';
import type { RunningServer } from '../server/http.js';
import { ProxyMetrics, startMetricsServer } from '../server/metrics.js';
import { pprofRoutes } from '../server/pprof.js';
import { nodeUsable, prepareNode } from './agent.js';
import { ConfigWatcher, configChanges } from './config-watch.js';
import { registerWatchFreshness } from '../server/watch-metrics.js';
import { acquireInstanceLock, defaultStatePrefix, removeStaleTempDirs, type LockResult } from './instance.js';
import { reportInertSettings } from './process-settings.js';
import { helpText, parseCommandLine, parseVmodule, SUBCOMMANDS, VERSION, type CommandLine } from './flags.js';

/** Subcommands parse their own arguments (flags.ts lists them for --help). They, and explain
 *  on the debug endpoint, are loaded when used: the proxy's start does not wait for them. */
const COMMANDS: Record<keyof typeof SUBCOMMANDS, (argv: string[]) => Promise<number>> = {
  explain: async (argv) => (await import('./explain-cmd.js')).explainCommand(argv),
  sandbox: async (argv) => (await import('../sandbox/index.js')).runSandbox(argv),
};

function nodeNameOf(cmd: CommandLine): string {
  return (cmd.config.hostnameOverride || hostname()).trim().toLowerCase();
}

async function runProxy(cmd: CommandLine, argv: string[]): Promise<number> {
  const nodeName = nodeNameOf(cmd);
  const mode = effectiveMode(cmd.config);
  if (!(await nodeUsable(cmd.config, cmd.dryRun))) return 1;
  // A bad kubeconfig fails before anything on the node is changed.
  let source: Source;
  let client: KubeClient | undefined;
  if (cmd.manifestsDir) {
    source = new ManifestsSource(cmd.manifestsDir);
  } else {
    client = KubeClient.load({ kubeconfig: cmd.config.clientConnection.kubeconfig || undefined, master: cmd.master || undefined });
    source = new ApiServerSource({ client, nodeName });
  }
  prepareNode(cmd.config, cmd.dryRun);
  if (client) log.info('using the API server', { server: client.server });
  // Events write to the API server: not in a dry run.
  const events = client && !cmd.dryRun ? new EventRecorder(client, nodeName) : undefined;
  // The lock is taken before anything touches the node's rules: a dry run programs nothing and
  // cannot fight another instance.
  let lock: LockResult | undefined;
  const takeLock = (): void => {
    if (cmd.dryRun || lock !== undefined) return;
    lock = acquireInstanceLock();
    if (!lock.ok) {
      log.error(`another kube-proxy-ts (PID ${lock.holderPid}) already programs this node's rules; exiting`, { lock: lock.path, holderPid: lock.holderPid });
      process.exit(1);
    }
  };
  // One options object per mode: the backends of its families share one start-up.
  const backendOptions = new Map<ProxyMode, BackendOptions>();
  const optionsFor = (m: ProxyMode): BackendOptions => {
    let o = backendOptions.get(m);
    if (!o) backendOptions.set(m, (o = { dryRun: cmd.dryRun, stateFilePrefix: defaultStatePrefix() }));
    return o;
  };
  const backendsFor = (m: ProxyMode) => (cfg: BackendConfig) => {
    takeLock();
    return createBackend(m, cfg, optionsFor(m));
  };
  const proxy = new Proxy({
    config: cmd.config,
    nodeName,
    source,
    ...(events ? { onObjectWarning: (w) => events.warn(w) } : {}),
    createBackend: backendsFor(mode),
  });
  log.info('starting kube-proxy-ts', { version: VERSION, mode, node: nodeName, dryRun: cmd.dryRun });
  reportInertSettings(cmd.config);
  if (!cmd.dryRun) removeStaleTempDirs();
  void events?.record('Normal', 'Starting', 'StartKubeProxy', 'Starting kube-proxy-ts');

  const syncs = new SyncHistory();
  proxy.observe(syncs);
  let servers: Servers;
  try {
    servers = await startServers(cmd, proxy, source, mode, nodeName, syncs);
  } catch (err) {
    log.error(err instanceof Error ? err.message : String(err));
    return 1;
  }
  const stopReconciler = cmd.dryRun ? () => undefined : startConntrackReconciler(proxy, servers.proxyMetrics);

  const watcher = cmd.configFile
    ? new ConfigWatcher({
        path: cmd.configFile,
        load: () => parseCommandLine(argv).config,
        apply: (next) => applyConfiguration(proxy, servers, next, backendsFor),
        rejected: (error) => void events?.record('Warning', 'InvalidConfiguration', 'ReloadConfiguration', error),
      })
    : undefined;
  watcher?.start();

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    // Rules stay in the kernel: a restart must not interrupt service traffic.
    log.info('stopping; kernel rules are left in place', { signal });
    stopReconciler();
    Promise.all([watcher?.stop(), ...servers.all().map((s) => s.close())])
      .then(() => proxy.stop())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  if (cmd.dryRun && !cmd.watch) {
    // A plain dry run answers "what would be programmed?" once, then gets out of the way.
    const off = proxy.runner.onSync((r) => {
      off();
      if (!r.ok) log.error('the dry run could not render the rules');
      void Promise.all([watcher?.stop(), ...servers.all().map((s) => s.close())])
        .then(() => proxy.stop())
        .finally(() => process.exit(r.ok ? 0 : 1));
    });
  }
  if (!cmd.dryRun) {
    takeLock();
    // The flavour and the other modes' leftovers while the first lists load.
    void prepareBackends(mode, optionsFor(mode));
  }
  await proxy.start();
  return new Promise<number>(() => {
    /* runs until a signal */
  });
}

/** After each successful sync that touched a UDP/SCTP service, and every sync period, stale UDP/SCTP conntrack entries go. */
function startConntrackReconciler(proxy: Proxy, metrics: ProxyMetrics): () => void {
  const reconciler = new ConntrackReconciler({}, (family, deleted, seconds) => metrics.conntrackReconciled(family, deleted, seconds));
  const pass = (): void => {
    if (proxy.lastSnapshots.size === 0) return;
    void reconciler.reconcile(proxy.lastSnapshots.values(), {
      ips: (family) => proxy.backendConfigs.find((c) => c.family === family)?.nodeIPs ?? [],
      proxyPorts: (family) => proxy.backends?.get(family)?.conntrackReplyPorts?.(),
    });
  };
  const off = proxy.runner.onSync((r) => {
    if (r.ok && [...proxy.lastSnapshots.values()].some((s) => mayLeaveStaleFlows(s.changes))) pass();
  });
  const timer = setInterval(pass, syncPeriodsMs(proxy.configuration).syncPeriodMs);
  timer.unref();
  return () => {
    off();
    clearInterval(timer);
  };
}

/** The running servers; healthz and metrics are replaced when their address changes. */
class Servers {
  healthz: RunningServer | undefined;
  metrics: RunningServer | undefined;
  constructor(
    readonly proxyMetrics: ProxyMetrics,
    readonly health: ProxierHealth,
    readonly startHealthz: (address: string) => Promise<RunningServer>,
    readonly startMetrics: (address: string) => Promise<RunningServer>,
    readonly others: { close(): Promise<void> }[],
  ) {}
  all(): { close(): Promise<void> }[] {
    return [...(this.healthz ? [this.healthz] : []), ...(this.metrics ? [this.metrics] : []), ...this.others];
  }
}

/**
 * The healthz and metrics servers (an empty address disables one) and the service
 * health-check node ports. A bind failure rejects only with bindAddressHardFail.
 */
async function startServers(cmd: CommandLine, proxy: Proxy, source: Source, mode: ProxyMode, nodeName: string, syncs: SyncHistory): Promise<Servers> {
  const config = cmd.config;
  const hardFail = config.bindAddressHardFail;
  const metrics = new ProxyMetrics({
    mode,
    sources: {
      runner: proxy.runner,
      model: { pendingChanges: () => proxy.pendingChanges(), invalidObjects: proxy.model.invalidObjects },
      snapshots: () => proxy.lastSnapshots.values(),
      families: () => proxy.backends?.keys() ?? [],
      carriedTraffic: () =>
        [...(proxy.backends ?? new Map()).entries()].flatMap(([family, b]) => {
          const traffic = b.carriedTraffic?.();
          return traffic ? [{ family, traffic }] : [];
        }),
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
  const routes = debugRoutes({
    snapshots: () => proxy.lastSnapshots.values(),
    rules: () =>
      [...(proxy.backends ?? new Map()).entries()].map(([family, b]) => ({
        family,
        mode: b?.mode ?? effectiveMode(proxy.configuration),
        text: b ? (b.describe?.() ?? '') : undefined,
      })),
    syncs,
    config: () => proxy.configuration,
    explain: async (argv) => (await import('./explain-cmd.js')).explainLive(proxy, argv),
  });
  const servers = new Servers(
    metrics,
    health,
    (address) => startHealthServer(address, { health, counters: metrics, hardFail }),
    (address) => startMetricsServer(address, metrics, { hardFail, routes: config.enableProfiling ? { ...routes, ...pprofRoutes() } : routes }),
    [],
  );
  // A dry run binds a port only when asked to on the command line: the defaults are a running
  // kube-proxy's ports.
  const wanted = (flag: string, address: string): boolean => address !== '' && (!cmd.dryRun || cmd.given.has(flag));
  try {
    if (wanted('healthz-bind-address', config.healthzBindAddress)) servers.healthz = await servers.startHealthz(config.healthzBindAddress);
    if (wanted('metrics-bind-address', config.metricsBindAddress)) servers.metrics = await servers.startMetrics(config.metricsBindAddress);
  } catch (err) {
    await Promise.all(servers.all().map((s) => s.close()));
    throw err;
  }
  // A dry run programs nothing, so it must not tell load balancers this node can take traffic.
  if (cmd.dryRun) return servers;
  const checks = new ServiceHealthServers(health);
  proxy.runner.onSync((r) => {
    if (r.ok) void checks.update(proxy.lastSnapshots.values(), healthCheckHosts(proxy.backendConfigs, effectiveMode(proxy.configuration)));
  });
  servers.others.push(checks);
  return servers;
}

/** Applies a validated new configuration to the running proxy, without dropping traffic. */
async function applyConfiguration(
  proxy: Proxy,
  servers: Servers,
  next: KubeProxyConfiguration,
  backendsFor: (m: ProxyMode) => (cfg: BackendConfig) => Backend,
): Promise<void> {
  const old = proxy.configuration;
  const changes = configChanges(old, next, effectiveMode);
  if (changes.needRestart.length > 0) {
    log.warn('these settings take effect only after a restart; their running values stay', { fields: changes.needRestart });
    for (const f of changes.needRestart) (next as unknown as Record<string, unknown>)[f] = old[f];
  }
  if (changes.logging) {
    setVerbosity(next.logging.verbosity);
    setLogFormat(next.logging.format === 'json' ? 'json' : 'text');
  }
  if (changes.nodeSettings) prepareNode(next, false);
  const rebind = async (which: 'healthz' | 'metrics', address: string): Promise<void> => {
    await servers[which]?.close();
    servers[which] = undefined;
    if (address !== '') servers[which] = await (which === 'healthz' ? servers.startHealthz(address) : servers.startMetrics(address));
    log.info(`${which} server moved`, { address });
  };
  if (changes.healthzAddress) await rebind('healthz', next.healthzBindAddress);
  if (changes.metricsAddress) await rebind('metrics', next.metricsBindAddress);
  const mode = effectiveMode(next);
  if (changes.backends === 'none') {
    await proxy.reconfigure(next);
  } else {
    log.info(changes.backends === 'mode' ? 'switching proxy mode: new rules first, then the old ones go' : 'rule settings changed; reprogramming', {
      from: effectiveMode(old),
      to: mode,
    });
    await proxy.reconfigure(next, { create: backendsFor(mode), removeOld: changes.backends === 'mode' });
  }
  servers.proxyMetrics.setMode(mode);
  servers.health.setHealthTimeout(2 * syncPeriodsMs(next).syncPeriodMs);
  log.info('new configuration applied', { mode, ...syncPeriodsMs(next) });
}

export async function main(argv: string[]): Promise<number> {
  const first = argv[0] ?? '';
  if (Object.hasOwn(COMMANDS, first)) return COMMANDS[first as keyof typeof COMMANDS](argv.slice(1));

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
  setLogFormat(cmd.config.logging.format === 'json' ? 'json' : 'text');
  setVmodule(parseVmodule(cmd.vmodule));
  setSplitStream((cmd.config.logging.options.text as { splitStream?: boolean } | undefined)?.splitStream === true);
  if (cmd.writeConfigTo) {
    writeFileSync(cmd.writeConfigTo, serializeConfiguration(cmd.config));
    log.info('wrote the effective configuration', { file: cmd.writeConfigTo });
    return 0;
  }
  if (cmd.cleanup && cmd.dryRun) {
    const found = await listLeftovers();
    process.stdout.write(found.length === 0 ? 'nothing to remove\n' : `--cleanup would remove:\n${found.map((f) => `  ${f}\n`).join('')}`);
    return 0;
  }
  if (cmd.cleanup) {
    await cleanupAll();
    log.info('cleanup done');
    return 0;
  }
  if (cmd.initOnly) {
    // The privileged part of start-up, for an init container; the proxy then runs unprivileged.
    const ok = await nodeUsable(cmd.config, cmd.dryRun);
    if (ok) prepareNode(cmd.config, cmd.dryRun);
    log.info(ok ? 'node set-up done (--init-only)' : 'node set-up failed (--init-only)');
    return ok ? 0 : 1;
  }
  return runProxy(cmd, argv);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`kube-proxy-ts: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
