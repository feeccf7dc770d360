// --write-config-to: the effective configuration as a v1alpha1 YAML file that loads back
// to the same configuration.
import { stringify } from 'yaml';
import { normalizeDuration } from './duration.js';
import type { KubeProxyConfiguration } from './types.js';

// Recursively orders map keys alphabetically, as upstream's YAML output does.
function sorted(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sorted);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) out[key] = sorted((value as Record<string, unknown>)[key]);
    return out;
  }
  return value;
}

/**
 * Serialises every field, durations in Go's canonical form. Note that, as upstream, a
 * field whose zero value means "use the default" (e.g. iptables.minSyncPeriod: 0s,
 * healthzBindAddress: "") reads back as that default.
 */
export function serializeConfiguration(config: KubeProxyConfiguration): string {
  const c = structuredClone(config);
  c.logging.flushFrequency = normalizeDuration(c.logging.flushFrequency);
  for (const section of [c.iptables, c.ipvs, c.nftables]) {
    section.syncPeriod = normalizeDuration(section.syncPeriod);
    section.minSyncPeriod = normalizeDuration(section.minSyncPeriod);
  }
  c.ipvs.tcpTimeout = normalizeDuration(c.ipvs.tcpTimeout);
  c.ipvs.tcpFinTimeout = normalizeDuration(c.ipvs.tcpFinTimeout);
  c.ipvs.udpTimeout = normalizeDuration(c.ipvs.udpTimeout);
  c.conntrack.tcpEstablishedTimeout = normalizeDuration(c.conntrack.tcpEstablishedTimeout);
  c.conntrack.tcpCloseWaitTimeout = normalizeDuration(c.conntrack.tcpCloseWaitTimeout);
  c.conntrack.udpTimeout = normalizeDuration(c.conntrack.udpTimeout);
  c.conntrack.udpStreamTimeout = normalizeDuration(c.conntrack.udpStreamTimeout);
  c.configSyncPeriod = normalizeDuration(c.configSyncPeriod);
  return stringify(sorted(c), { lineWidth: 0, nullStr: 'null' });
}
