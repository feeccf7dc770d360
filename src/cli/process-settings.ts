// Configuration that acts on the process or the node rather than on the rules. Every field
// here either takes effect or is reported once at start-up: nothing is silently accepted.
import { writeFileSync } from 'node:fs';
import { defaultConfiguration } from '../config/index.js';
import type { KubeProxyConfiguration } from '../config/types.js';
import { log } from '../log.js';

/** Applies oomScoreAdj and reports the settings this proxy does not act on yet. */
export function applyProcessSettings(config: KubeProxyConfiguration, opts: { dryRun: boolean; oomScoreAdjFile?: string }): void {
  if (opts.dryRun) {
    log.info('dry run: oomScoreAdj is not applied', { oomScoreAdj: config.oomScoreAdj });
  } else {
    try {
      writeFileSync(opts.oomScoreAdjFile ?? '/proc/self/oom_score_adj', `${config.oomScoreAdj}\n`);
      log.v(2, 'applied oomScoreAdj', { oomScoreAdj: config.oomScoreAdj });
    } catch (err) {
      log.warn('cannot apply oomScoreAdj', { oomScoreAdj: config.oomScoreAdj, error: err instanceof Error ? err.message : String(err) });
    }
  }
  // Upstream tunes these node-wide sysctls; here they are left to the node's own settings.
  const ct = config.conntrack;
  log.warn('conntrack settings are not applied by this proxy; the node keeps its own nf_conntrack sysctls', {
    maxPerCore: ct.maxPerCore,
    min: ct.min,
    tcpEstablishedTimeout: ct.tcpEstablishedTimeout,
    tcpCloseWaitTimeout: ct.tcpCloseWaitTimeout,
    tcpBeLiberal: ct.tcpBeLiberal,
    udpTimeout: ct.udpTimeout,
    udpStreamTimeout: ct.udpStreamTimeout,
  });
  if (config.logging.format !== '' && config.logging.format !== 'text') {
    log.warn('logging format is not supported; logging as text', { format: config.logging.format });
  }
  const inert = inertSettings(config);
  if (inert.length > 0) log.warn('settings accepted for compatibility have no effect in this proxy', { fields: inert });
}

/**
 * Fields accepted for upstream compatibility that nothing here acts on. A backend or server
 * that starts honouring one takes it off this list.
 */
const INERT_FIELDS = [
  'clientConnection.qps',
  'clientConnection.burst',
  'clientConnection.acceptContentTypes',
  'clientConnection.contentType',
  'configSyncPeriod',
  'portRange',
  'enableProfiling',
  'showHiddenMetricsForVersion',
  'logging.flushFrequency',
  'windowsRunAsService',
  'winkernel',
] as const;

/** The inert fields set to something other than their default. */
export function inertSettings(config: KubeProxyConfiguration): string[] {
  const defaults = defaultConfiguration();
  const read = (c: KubeProxyConfiguration, path: string): unknown =>
    path.split('.').reduce<unknown>((v, k) => (typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[k] : undefined), c);
  return INERT_FIELDS.filter((f) => JSON.stringify(read(config, f)) !== JSON.stringify(read(defaults, f)));
}
