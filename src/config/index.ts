// Configuration entry points, and the resolution of a configuration into what each
// per-family backend and the sync runner need.
import { MODES } from '../backend/modes.js';
import type { BackendConfig, DetectLocalMode } from '../backend/types.js';
import { log } from '../log.js';
import type { IPFamily } from '../model/types.js';
import { parseDuration } from './duration.js';
import type { KubeProxyConfiguration, ProxyMode } from './types.js';
import { parseCIDR, parseIP } from '../net/ip.js';
import { NODE_PORT_ADDRESSES_LOCALHOST, NODE_PORT_ADDRESSES_PRIMARY, SLOPPY_IP, parsePortRange } from './validate.js';

export * from './defaults.js';
export * from './duration.js';
export * from './errors.js';
export * from './load.js';
export * from './validate.js';
export * from './write.js';
export type * from './types.js';

/** The proxy mode actually used: '' means iptables, as upstream on Linux. */
export function effectiveMode(config: KubeProxyConfiguration): ProxyMode {
  return config.mode === '' ? 'iptables' : config.mode;
}

/** The detect-local mode actually used: '' means ClusterCIDR, as upstream. */
export function effectiveDetectLocalMode(config: KubeProxyConfiguration): DetectLocalMode {
  return config.detectLocalMode === '' ? 'ClusterCIDR' : config.detectLocalMode;
}

/** syncPeriod / minSyncPeriod of the active mode, in milliseconds. */
export function syncPeriodsMs(config: KubeProxyConfiguration): { syncPeriodMs: number; minSyncPeriodMs: number } {
  const section = config[MODES[effectiveMode(config)].syncSection];
  return { syncPeriodMs: parseDuration(section.syncPeriod), minSyncPeriodMs: parseDuration(section.minSyncPeriod) };
}

/**
 * One BackendConfig per IP family present in the node's IPs, IPv4 first. A node without
 * any usable IP gets a single IPv4 backend, upstream's default family.
 */
export function resolveBackendConfigs(
  config: KubeProxyConfiguration,
  node: { ips: string[]; podCIDRs: string[] },
): BackendConfig[] {
  const nodeIPs = node.ips.filter((ip) => {
    if (parseIP(ip, SLOPPY_IP) !== null) return true;
    log.warn('ignoring invalid node IP', { ip });
    return false;
  });
  let families: IPFamily[] = (['IPv4', 'IPv6'] as const).filter((f) =>
    nodeIPs.some((ip) => parseIP(ip, SLOPPY_IP)?.family === f),
  );
  if (families.length === 0) {
    log.warn('node has no usable IP address; assuming IPv4 single-stack');
    families = ['IPv4'];
  }

  const masq = config[MODES[effectiveMode(config)].masqueradeSection];
  const detectLocalMode = effectiveDetectLocalMode(config);
  const clusterCIDRs = config.clusterCIDR === '' ? [] : config.clusterCIDR.split(',').map((s) => s.trim());

  return families.map((family) => {
    const ofFamily = (cidrs: string[]): string[] => cidrs.filter((c) => parseCIDR(c, SLOPPY_IP)?.family === family);
    let localCIDRs: string[] = [];
    if (detectLocalMode === 'ClusterCIDR') localCIDRs = ofFamily(clusterCIDRs);
    else if (detectLocalMode === 'NodeCIDR') localCIDRs = ofFamily(node.podCIDRs);
    return {
      family,
      masqueradeAll: masq.masqueradeAll,
      masqueradeBit: masq.masqueradeBit,
      detectLocalMode,
      localCIDRs,
      bridgeInterface: config.detectLocal.bridgeInterface,
      interfaceNamePrefix: config.detectLocal.interfaceNamePrefix,
      nodePortAddresses: (config.nodePortAddresses ?? []).filter(
        (a) => a === NODE_PORT_ADDRESSES_PRIMARY || parseCIDR(a, SLOPPY_IP)?.family === family,
      ),
      nodeIPs: nodeIPs.filter((ip) => parseIP(ip, SLOPPY_IP)?.family === family),
      localhostNodePorts: config.iptables.localhostNodePorts,
      ipvs: {
        scheduler: config.ipvs.scheduler ?? '',
        excludeCIDRs: config.ipvs.excludeCIDRs ?? [],
        strictARP: config.ipvs.strictARP ?? false,
        tcpSec: parseDuration(config.ipvs.tcpTimeout) / 1000,
        tcpFinSec: parseDuration(config.ipvs.tcpFinTimeout) / 1000,
        udpSec: parseDuration(config.ipvs.udpTimeout) / 1000,
      },
      userspaceProxy: {
        ...(parsePortRange(config.portRange) ? { portRange: parsePortRange(config.portRange)! } : {}),
        udpIdleTimeoutMs: parseDuration(config.udpIdleTimeout),
        localhostNodePorts: (config.nodePortAddresses ?? []).includes(NODE_PORT_ADDRESSES_LOCALHOST),
      },
    };
  });
}

