// Upstream KubeProxyConfiguration validation. Every problem found is reported, each as a
// ConfigError naming the field (wire name, e.g. `iptables.syncPeriod`) and its value.
import { MODES, PROXY_MODE_NAMES } from '../backend/modes.js';
import { parseCIDR, parseIP, type ParseOptions } from '../net/ip.js';
import { splitHostPort } from './defaults.js';
import { parseDurationNs } from './duration.js';
import { ConfigError, invalidField, throwAll } from './errors.js';
import { KNOWN_FEATURE_GATES } from './feature-gates.js';
import type { KubeProxyConfiguration } from './types.js';

export const PROXY_MODES = [...PROXY_MODE_NAMES, ''] as const;
export const LOCAL_MODES = ['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix', ''] as const;
export const IPVS_SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'sh', 'dh', 'sed', 'nq', 'mh', ''] as const;
export const NODE_PORT_ADDRESSES_PRIMARY = 'primary';
/** nftables mode (KEP-6032): NodePorts also answer on 127.0.0.1 and ::1, through the in-process proxy. */
export const NODE_PORT_ADDRESSES_LOCALHOST = 'localhost';
export const LOCALHOST_NODE_PORTS_GATE = 'KubeProxyNFTablesLocalhostNodePorts';

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
  return text === '' || parsePortRange(text) !== undefined;
}

/** `begin-end`, `begin+offset` or a single port, as upstream's --proxy-port-range; undefined when invalid or empty. */
export function parsePortRange(text: string): { min: number; max: number } | undefined {
  const dash = /^(\d+)-(\d+)$/.exec(text);
  if (dash) return portInRange(dash[1]!) && portInRange(dash[2]!) && Number(dash[2]) >= Number(dash[1]) ? { min: Number(dash[1]), max: Number(dash[2]) } : undefined;
  const plus = /^(\d+)\+(\d+)$/.exec(text);
  if (plus) {
    const max = Number(plus[1]) + Number(plus[2]);
    return portInRange(plus[1]!) && portInRange(String(max)) ? { min: Number(plus[1]), max } : undefined;
  }
  return portInRange(text) ? { min: Number(text), max: Number(text) } : undefined;
}

/** Throws ConfigError (ConfigErrors for several) naming every invalid field of a defaulted configuration. */
export function validateConfiguration(c: KubeProxyConfiguration): void {
  const problems: ConfigError[] = [];
  // Each check stops at its own first problem; the other checks still run.
  const check = (fn: () => void): void => {
    try {
      fn();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(e);
    }
  };

  for (const [name, v] of Object.entries(c.featureGates)) {
    check(() => {
      if (typeof v !== 'boolean') throw invalidField(`featureGates.${name}`, v, 'must be true or false');
      if (!KNOWN_FEATURE_GATES.has(name)) throw invalidField(`featureGates.${name}`, name, 'unrecognized feature gate');
    });
  }

  const validMode = (PROXY_MODES as readonly string[]).includes(c.mode);
  check(() => {
    if (!validMode) throw invalidField('mode', c.mode, 'must be iptables, nftables, ipvs, userspace or blank (blank means iptables)');
  });

  // As upstream: the iptables section always, the mode's own sections besides.
  check(() => syncPeriods('iptables', c.iptables));
  check(() => masqueradeBit('iptables.masqueradeBit', c.iptables.masqueradeBit));
  if (validMode) {
    const mode = MODES[c.mode === '' ? 'iptables' : c.mode];
    if (mode.syncSection !== 'iptables') check(() => syncPeriods(mode.syncSection, c[mode.syncSection]));
    if (mode.masqueradeSection !== 'iptables') {
      check(() => masqueradeBit(`${mode.masqueradeSection}.masqueradeBit`, c[mode.masqueradeSection].masqueradeBit));
    }
    if (mode.syncSection === 'ipvs') {
      check(() => {
        if (!(IPVS_SCHEDULERS as readonly string[]).includes(c.ipvs.scheduler)) {
          throw invalidField('ipvs.scheduler', c.ipvs.scheduler, `must be one of ${IPVS_SCHEDULERS.filter(Boolean).join(', ')} or blank (rr)`);
        }
      });
      check(() => nonNegative('ipvs.tcpTimeout', c.ipvs.tcpTimeout));
      check(() => nonNegative('ipvs.tcpFinTimeout', c.ipvs.tcpFinTimeout));
      check(() => nonNegative('ipvs.udpTimeout', c.ipvs.udpTimeout));
      check(() => cidrList('ipvs.excludeCIDRs', c.ipvs.excludeCIDRs ?? []));
    }
  }

  const ct = c.conntrack;
  check(() => {
    if (!Number.isInteger(ct.maxPerCore) || ct.maxPerCore < 0) {
      throw invalidField('conntrack.maxPerCore', ct.maxPerCore, 'must be greater than or equal to 0');
    }
  });
  check(() => {
    if (!Number.isInteger(ct.min) || ct.min < 0) throw invalidField('conntrack.min', ct.min, 'must be greater than or equal to 0');
  });
  check(() => nonNegative('conntrack.tcpEstablishedTimeout', ct.tcpEstablishedTimeout));
  check(() => nonNegative('conntrack.tcpCloseWaitTimeout', ct.tcpCloseWaitTimeout));
  check(() => nonNegative('conntrack.udpTimeout', ct.udpTimeout));
  check(() => nonNegative('conntrack.udpStreamTimeout', ct.udpStreamTimeout));

  check(() => {
    if (!Number.isInteger(c.oomScoreAdj) || c.oomScoreAdj < -1000 || c.oomScoreAdj > 1000) {
      throw invalidField('oomScoreAdj', c.oomScoreAdj, 'must be within the range [-1000, 1000]');
    }
  });
  check(() => {
    if (!Number.isInteger(c.clientConnection.burst) || c.clientConnection.burst < 0) {
      throw invalidField('clientConnection.burst', c.clientConnection.burst, 'must be greater than or equal to 0');
    }
  });
  check(() => positive('configSyncPeriod', c.configSyncPeriod));
  check(() => positive('logging.flushFrequency', c.logging.flushFrequency));
  check(() => {
    if (c.logging.format !== 'text' && c.logging.format !== 'json') throw invalidField('logging.format', c.logging.format, 'must be text or json');
  });
  check(() => {
    if (!Number.isInteger(c.logging.verbosity) || c.logging.verbosity < 0) {
      throw invalidField('logging.verbosity', c.logging.verbosity, 'must be a non-negative integer');
    }
  });
  check(() => validateLoggingOptions(c.logging.options));

  check(() => {
    if (parseIP(c.bindAddress, SLOPPY_IP) === null) throw invalidField('bindAddress', c.bindAddress, 'must be a valid IP address');
  });
  // An empty listen address disables that server, as with the upstream flags.
  if (c.healthzBindAddress !== '') check(() => hostPort('healthzBindAddress', c.healthzBindAddress));
  if (c.metricsBindAddress !== '') check(() => hostPort('metricsBindAddress', c.metricsBindAddress));

  check(() => positive('udpIdleTimeout', c.udpIdleTimeout));
  check(() => {
    if (!validPortRange(c.portRange)) throw invalidField('portRange', c.portRange, 'must be a valid port range (e.g. 300-2000)');
  });
  check(() => {
    if (c.showHiddenMetricsForVersion !== '' && !/^\d+\.\d+$/.test(c.showHiddenMetricsForVersion)) {
      throw invalidField('showHiddenMetricsForVersion', c.showHiddenMetricsForVersion, 'must be a version such as 1.29');
    }
  });

  if (c.clusterCIDR !== '') check(() => clusterCIDR(c.clusterCIDR));

  const npa = c.nodePortAddresses ?? [];
  const effectiveModeName = c.mode === '' ? 'iptables' : c.mode;
  npa.forEach((entry, i) =>
    check(() => {
      if (entry === NODE_PORT_ADDRESSES_LOCALHOST) {
        if (effectiveModeName !== 'nftables' || c.featureGates[LOCALHOST_NODE_PORTS_GATE] !== true) {
          throw invalidField(`nodePortAddresses[${i}]`, entry, `needs mode nftables and the feature gate ${LOCALHOST_NODE_PORTS_GATE}=true`);
        }
        return;
      }
      if (entry === NODE_PORT_ADDRESSES_PRIMARY) {
        if (npa.filter((a) => a !== NODE_PORT_ADDRESSES_LOCALHOST).length !== 1) throw invalidField(`nodePortAddresses[${i}]`, entry, "can't use both 'primary' and CIDRs");
        return;
      }
      if (parseCIDR(entry, SLOPPY_IP) === null) throw invalidField(`nodePortAddresses[${i}]`, entry, "must be a valid CIDR, 'primary' or 'localhost'");
    }),
  );

  check(() => {
    if (!(LOCAL_MODES as readonly string[]).includes(c.detectLocalMode)) {
      throw invalidField('detectLocalMode', c.detectLocalMode, `must be one of ${LOCAL_MODES.filter(Boolean).join(', ')} or blank (ClusterCIDR)`);
    }
  });
  check(() => {
    if (c.detectLocalMode === 'BridgeInterface' && c.detectLocal.bridgeInterface === '') {
      throw invalidField('detectLocal.bridgeInterface', '', 'must be set when detectLocalMode is BridgeInterface');
    }
  });
  check(() => {
    if (c.detectLocalMode === 'InterfaceNamePrefix' && c.detectLocal.interfaceNamePrefix === '') {
      throw invalidField('detectLocal.interfaceNamePrefix', '', 'must be set when detectLocalMode is InterfaceNamePrefix');
    }
  });
  throwAll(problems);
}

function clusterCIDR(value: string): void {
  const cidrs = value.split(',').map((s) => s.trim());
  const families = cidrs.map((cidr) => {
    const parsed = parseCIDR(cidr, SLOPPY_IP);
    if (parsed === null) {
      throw invalidField('clusterCIDR', value, `${JSON.stringify(cidr)} is not a valid CIDR (e.g. 10.244.0.0/16 or fd00:10:244::/56)`);
    }
    return parsed.family;
  });
  const v4 = families.filter((f) => f === 'IPv4').length;
  if (cidrs.length > 2 || v4 > 1 || cidrs.length - v4 > 1) {
    throw invalidField('clusterCIDR', value, 'must be a single CIDR or a dual-stack pair (at most one per IP family)');
  }
}

/**
 * logging.options as upstream's component-base reads them: text.splitStream and
 * json.splitStream (booleans) and their infoBufferSize; other keys pass unchecked.
 */
function validateLoggingOptions(options: Record<string, unknown>): void {
  for (const format of ['text', 'json']) {
    const section = options[format];
    if (section === undefined || section === null) continue;
    if (typeof section !== 'object' || Array.isArray(section)) throw invalidField(`logging.options.${format}`, section, 'must be a map');
    const split = (section as Record<string, unknown>).splitStream;
    if (split !== undefined && typeof split !== 'boolean') throw invalidField(`logging.options.${format}.splitStream`, split, 'must be true or false');
  }
}
