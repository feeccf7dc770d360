// Watches the --config file of a running proxy. A ConfigMap volume replaces its files by
// swapping a `..data` symlink in the mounted directory, so the directory is watched (and the
// file polled, as inotify misses changes on some filesystems); the file's content decides
// whether anything changed. A new file is parsed and validated with the flags re-applied on
// top, exactly as at start-up; an invalid one is logged with its error and the running
// configuration is kept.
import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '../config/index.js';
import type { KubeProxyConfiguration } from '../config/types.js';
import { log } from '../log.js';

export interface ConfigWatchOptions {
  path: string;
  /** Builds the configuration from the current file (flags applied); throws ConfigError when invalid. */
  load: () => KubeProxyConfiguration;
  /** A valid, different configuration; the next change waits until this resolves. */
  apply: (next: KubeProxyConfiguration) => Promise<void>;
  /** An invalid file was found (the running configuration stays). */
  rejected?: (error: string) => void;
  pollMs?: number;
}

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

export class ConfigWatcher {
  private last: string | null;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private busy: Promise<void> = Promise.resolve();
  private checking = false;
  private again = false;

  constructor(private readonly opts: ConfigWatchOptions) {
    this.last = readOrNull(opts.path);
  }

  start(): void {
    try {
      this.watcher = watch(dirname(this.opts.path), () => this.check());
      this.watcher.on('error', (e) => log.warn('watching the config directory failed; polling only', { error: String(e) }));
    } catch (e) {
      log.warn('cannot watch the config directory; polling only', { dir: dirname(this.opts.path), error: String(e) });
    }
    this.timer = setInterval(() => this.check(), this.opts.pollMs ?? 2000);
    this.timer.unref();
    this.watcher?.unref();
  }

  stop(): Promise<void> {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    return this.busy;
  }

  /** Compares the file with the last one seen; a change is loaded and applied, one at a time. */
  check(): void {
    if (this.checking) {
      this.again = true;
      return;
    }
    const text = readOrNull(this.opts.path);
    // A missing file is the middle of a symlink swap, or a mistake: either way keep running.
    if (text === null || text === this.last) return;
    this.checking = true;
    this.last = text;
    this.busy = this.reload().finally(() => {
      this.checking = false;
      if (this.again) {
        this.again = false;
        this.check();
      }
    });
  }

  private async reload(): Promise<void> {
    let next: KubeProxyConfiguration;
    try {
      next = this.opts.load();
    } catch (e) {
      const error = e instanceof ConfigError || e instanceof Error ? e.message : String(e);
      log.error('new configuration rejected; keeping the running one', { file: this.opts.path, error });
      this.opts.rejected?.(error);
      return;
    }
    log.info('configuration file changed; applying it', { file: this.opts.path });
    try {
      await this.opts.apply(next);
    } catch (e) {
      log.error('applying the new configuration failed', { error: e instanceof Error ? e.message : String(e) });
    }
  }
}

const RESTART_ONLY = ['hostnameOverride', 'clientConnection', 'featureGates', 'configSyncPeriod', 'enableProfiling', 'bindAddressHardFail'] as const;

/** What a new configuration changes in a running proxy. */
export interface ConfigChanges {
  /** Fields that only take effect on a restart (the running values stay). */
  needRestart: Array<(typeof RESTART_ONLY)[number]>;
  healthzAddress: boolean;
  metricsAddress: boolean;
  /** 'mode': a different proxy mode; 'rebuild': the same mode with other rule settings. */
  backends: 'none' | 'rebuild' | 'mode';
  nodeSettings: boolean;
  logging: boolean;
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Rule-relevant configuration: everything but what is applied elsewhere (periods, servers, node settings, logging). */
function ruleSettings(c: KubeProxyConfiguration): unknown {
  const strip = <T extends { syncPeriod: string; minSyncPeriod: string }>(s: T): Omit<T, 'syncPeriod' | 'minSyncPeriod'> => {
    const { syncPeriod: _s, minSyncPeriod: _m, ...rest } = s;
    return rest;
  };
  return {
    iptables: strip(c.iptables),
    ipvs: strip(c.ipvs),
    nftables: strip(c.nftables),
    detectLocalMode: c.detectLocalMode,
    detectLocal: c.detectLocal,
    clusterCIDR: c.clusterCIDR,
    nodePortAddresses: c.nodePortAddresses,
  };
}

export function configChanges(old: KubeProxyConfiguration, next: KubeProxyConfiguration, modeOf: (c: KubeProxyConfiguration) => string): ConfigChanges {
  return {
    needRestart: RESTART_ONLY.filter((f) => !same(old[f], next[f])),
    healthzAddress: old.healthzBindAddress !== next.healthzBindAddress,
    metricsAddress: old.metricsBindAddress !== next.metricsBindAddress,
    backends: modeOf(old) !== modeOf(next) ? 'mode' : same(ruleSettings(old), ruleSettings(next)) ? 'none' : 'rebuild',
    nodeSettings: !same(old.conntrack, next.conntrack) || old.oomScoreAdj !== next.oomScoreAdj || !same(old.iptables.localhostNodePorts, next.iptables.localhostNodePorts),
    logging: !same(old.logging, next.logging),
  };
}
