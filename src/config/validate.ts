// Upstream KubeProxyConfiguration validation. The first problem found is reported as a
// ConfigError naming the field (wire name, e.g. `iptables.syncPeriod`) and its value.
import { MODES, PROXY_MODE_NAMES } from '../backend/modes.js';
import { parseCIDR, parseIP, type ParseOptions } from '../net/ip.js';
import { splitHostPort } from './defaults.js';
import { parseDurationNs } from './duration.js';
import { invalidField } from './errors.js';
import type { KubeProxyConfiguration } from './types.js';

export const PROXY_MODES = [...PROXY_MODE_NAMES, ''] as const;
export const LOCAL_MODES = ['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix', ''] as const;
export const IPVS_SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'sh', 'dh', 'sed', 'nq', 'mh', ''] as const;
export const NODE_PORT_ADDRESSES_PRIMARY = 'primary';

/**
 * How upstream reads configured addresses and CIDRs (Go's ParseIPSloppy): IPv4 octets and
 * prefix lengths may have leading zeros and IPv4-mapped IPv6 is accepted; zones are not.
 */
export const SLOPPY_IP: ParseOptions = { leadingZeros: true, v4Mapped: true };

function durationNs(field: string, value: string): bigint {
  try {
    return parseDurationNs(value);
  } catch {
    throw invalidField(field, value, 'must be a duration such as "30s", "1m0s" or "500ms"');
  }
}

function positive(field: string, value: string): void {
  if (durationNs(field, value) <= 0n) throw invalidField(field, value, 'must be greater than 0');
}

function nonNegative(field: string, value: string): void {
  if (durationNs(field, value) < 0n) throw invalidField(field, value, 'must be greater than or equal to 0');
}

function syncPeriods(prefix: string, c: { syncPeriod: string; minSyncPeriod: string }): void {
  positive(`${prefix}.syncPeriod`, c.syncPeriod);
  nonNegative(`${prefix}.minSyncPeriod`, c.minSyncPeriod);
  if (durationNs('', c.minSyncPeriod) > durationNs('', c.syncPeriod)) {
    throw invalidField(
      `${prefix}.minSyncPeriod`,
      c.minSyncPeriod,
      `must be less than or equal to ${prefix}.syncPeriod (${c.syncPeriod})`,
    );
  }
}

function masqueradeBit(field: string, bit: number): void {
  if (!Number.isInteger(bit) || bit < 0 || bit > 31) throw invalidField(field, bit, 'must be within the range [0, 31]');
}

function hostPort(field: string, value: string): void {
  const hp = splitHostPort(value);
  if (hp === null) throw invalidField(field, value, 'must be IP:port');
  if (parseIP(hp.host, SLOPPY_IP) === null) throw invalidField(field, value, `host ${JSON.stringify(hp.host)} must be a valid IP`);
  if (!/^\d+$/.test(hp.port) || Number(hp.port) < 1 || Number(hp.port) > 65535) {
    throw invalidField(field, value, `port ${JSON.stringify(hp.port)} must be a valid port (1-65535)`);
  }
}

function cidrList(field: string, list: readonly string[]): void {
  list.forEach((cidr, i) => {
    if (parseCIDR(cidr, SLOPPY_IP) === null) {
      throw invalidField(`${field}[${i}]`, cidr, 'must be a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)');
    }
  });
}

function portInRange(p: string): boolean {
  return /^\d+$/.test(p) && Number(p) <= 65535;
}

// utilnet.ParsePortRange forms: "", "N", "A-B", "A+OFFSET".
function validPortRange(text: string): boolean {
  if (text === '') return true;
  const dash = /^(\d+)-(\d+)$/.exec(text);
  if (dash) return portInRange(dash[1]!) && portInRange(dash[2]!) && Number(dash[2]) >= Number(dash[1]);
  const plus = /^(\d+)\+(\d+)$/.exec(text);
  if (plus) return portInRange(plus[1]!) && portInRange(String(Number(plus[1]) + Number(plus[2])));
  return portInRange(text);
}

/** Throws ConfigError for the first invalid field of a defaulted configuration. */
export function validateConfiguration(c: KubeProxyConfiguration): void {
  for (const [name, v] of Object.entries(c.featureGates)) {
    if (typeof v !== 'boolean') throw invalidField(`featureGates.${name}`, v, 'must be true or false');
  }

  if (!(PROXY_MODES as readonly string[]).includes(c.mode)) {
    throw invalidField('mode', c.mode, 'must be iptables, nftables, ipvs, userspace or blank (blank means iptables)');
  }

  // As upstream: the iptables section always, the mode's own sections besides.
  const mode = MODES[c.mode === '' ? 'iptables' : c.mode];
  syncPeriods('iptables', c.iptables);
  masqueradeBit('iptables.masqueradeBit', c.iptables.masqueradeBit);
  if (mode.syncSection !== 'iptables') syncPeriods(mode.syncSection, c[mode.syncSection]);
  if (mode.masqueradeSection !== 'iptables') {
    masqueradeBit(`${mode.masqueradeSection}.masqueradeBit`, c[mode.masqueradeSection].masqueradeBit);
  }
  if (mode.syncSection === 'ipvs') {
    if (!(IPVS_SCHEDULERS as readonly string[]).includes(c.ipvs.scheduler)) {
      throw invalidField('ipvs.scheduler', c.ipvs.scheduler, `must be one of ${IPVS_SCHEDULERS.filter(Boolean).join(', ')} or blank (rr)`);
    }
    nonNegative('ipvs.tcpTimeout', c.ipvs.tcpTimeout);
    nonNegative('ipvs.tcpFinTimeout', c.ipvs.tcpFinTimeout);
    nonNegative('ipvs.udpTimeout', c.ipvs.udpTimeout);
    cidrList('ipvs.excludeCIDRs', c.ipvs.excludeCIDRs ?? []);
  }

  const ct = c.conntrack;
  if (!Number.isInteger(ct.maxPerCore) || ct.maxPerCore < 0) {
    throw invalidField('conntrack.maxPerCore', ct.maxPerCore, 'must be greater than or equal to 0');
  }
  if (!Number.isInteger(ct.min) || ct.min < 0) {
    throw invalidField('conntrack.min', ct.min, 'must be greater than or equal to 0');
  }
  nonNegative('conntrack.tcpEstablishedTimeout', ct.tcpEstablishedTimeout);
  nonNegative('conntrack.tcpCloseWaitTimeout', ct.tcpCloseWaitTimeout);
  nonNegative('conntrack.udpTimeout', ct.udpTimeout);
  nonNegative('conntrack.udpStreamTimeout', ct.udpStreamTimeout);

  if (!Number.isInteger(c.oomScoreAdj) || c.oomScoreAdj < -1000 || c.oomScoreAdj > 1000) {
    throw invalidField('oomScoreAdj', c.oomScoreAdj, 'must be within the range [-1000, 1000]');
  }
  if (!Number.isInteger(c.clientConnection.burst) || c.clientConnection.burst < 0) {
    throw invalidField('clientConnection.burst', c.clientConnection.burst, 'must be greater than or equal to 0');
  }
  positive('configSyncPeriod', c.configSyncPeriod);
  positive('logging.flushFrequency', c.logging.flushFrequency);
  if (c.logging.format !== 'text' && c.logging.format !== 'json') {
    throw invalidField('logging.format', c.logging.format, 'must be text or json');
  }
  if (!Number.isInteger(c.logging.verbosity) || c.logging.verbosity < 0) {
    throw invalidField('logging.verbosity', c.logging.verbosity, 'must be a non-negative integer');
  }

  if (parseIP(c.bindAddress, SLOPPY_IP) === null) {
    throw invalidField('bindAddress', c.bindAddress, 'must be a valid IP address');
  }
  // An empty listen address disables that server, as with the upstream flags.
  if (c.healthzBindAddress !== '') hostPort('healthzBindAddress', c.healthzBindAddress);
  if (c.metricsBindAddress !== '') hostPort('metricsBindAddress', c.metricsBindAddress);

  if (!validPortRange(c.portRange)) {
    throw invalidField('portRange', c.portRange, 'must be a valid port range (e.g. 300-2000)');
  }
  if (c.showHiddenMetricsForVersion !== '' && !/^\d+\.\d+$/.test(c.showHiddenMetricsForVersion)) {
    throw invalidField('showHiddenMetricsForVersion', c.showHiddenMetricsForVersion, 'must be a version such as 1.29');
  }

  if (c.clusterCIDR !== '') {
    const cidrs = c.clusterCIDR.split(',').map((s) => s.trim());
    const families = cidrs.map((cidr) => {
      const parsed = parseCIDR(cidr, SLOPPY_IP);
      if (parsed === null) {
        throw invalidField('clusterCIDR', c.clusterCIDR, `${JSON.stringify(cidr)} is not a valid CIDR (e.g. 10.244.0.0/16 or fd00:10:244::/56)`);
      }
      return parsed.family;
    });
    const v4 = families.filter((f) => f === 'IPv4').length;
    if (cidrs.length > 2 || v4 > 1 || cidrs.length - v4 > 1) {
      throw invalidField('clusterCIDR', c.clusterCIDR, 'must be a single CIDR or a dual-stack pair (at most one per IP family)');
    }
  }

  const npa = c.nodePortAddresses ?? [];
  for (let i = 0; i < npa.length; i++) {
    const entry = npa[i]!;
    if (entry === NODE_PORT_ADDRESSES_PRIMARY) {
      if (npa.length !== 1) {
        throw invalidField(`nodePortAddresses[${i}]`, entry, "can't use both 'primary' and CIDRs");
      }
      continue;
    }
    if (parseCIDR(entry, SLOPPY_IP) === null) {
      throw invalidField(`nodePortAddresses[${i}]`, entry, "must be a valid CIDR or 'primary'");
    }
  }

  if (!(LOCAL_MODES as readonly string[]).includes(c.detectLocalMode)) {
    throw invalidField(
      'detectLocalMode',
      c.detectLocalMode,
      `must be one of ${LOCAL_MODES.filter(Boolean).join(', ')} or blank (ClusterCIDR)`,
    );
  }
  if (c.detectLocalMode === 'BridgeInterface' && c.detectLocal.bridgeInterface === '') {
    throw invalidField('detectLocal.bridgeInterface', '', 'must be set when detectLocalMode is BridgeInterface');
  }
  if (c.detectLocalMode === 'InterfaceNamePrefix' && c.detectLocal.interfaceNamePrefix === '') {
    throw invalidField('detectLocal.interfaceNamePrefix', '', 'must be set when detectLocalMode is InterfaceNamePrefix');
  }
}
