// Configuration accepted for upstream compatibility that nothing here acts on: reported once at
// start-up, never silently accepted. (oomScoreAdj, conntrack and sysctls: cli/agent.ts.)
import { defaultConfiguration } from '../config/index.js';
import type { KubeProxyConfiguration } from '../config/types.js';
import { log } from '../log.js';

/** Reports, once at start-up, the settings this proxy accepts but does not act on. */
export function reportInertSettings(config: KubeProxyConfiguration): void {
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
  'showHiddenMetricsForVersion',
  'logging.flushFrequency',
  'windowsRunAsService',
  'winkernel',
] as const;

/** Fields only the userspace mode's in-process proxy acts on. */
const USERSPACE_FIELDS = ['portRange', 'udpIdleTimeout'] as const;

/** The inert fields set to something other than their default. */
export function inertSettings(config: KubeProxyConfiguration): string[] {
  const defaults = defaultConfiguration();
  const read = (c: KubeProxyConfiguration, path: string): unknown =>
    path.split('.').reduce<unknown>((v, k) => (typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[k] : undefined), c);
  const inert: readonly string[] = config.mode === 'userspace' ? INERT_FIELDS : [...INERT_FIELDS, ...USERSPACE_FIELDS];
  return inert.filter((f) => JSON.stringify(read(config, f)) !== JSON.stringify(read(defaults, f)));
}
