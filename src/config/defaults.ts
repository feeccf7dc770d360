// Upstream kubeproxy.config.k8s.io/v1alpha1 defaulting. As upstream, a field left at its
// zero value (absent, null, "", 0, "0s") is "unset" for the fields upstream defaults that
// way; pointer fields upstream (masqueradeBit, oomScoreAdj, conntrack limits, ...) keep an
// explicit 0.
import { isIP } from 'node:net';
import { normalizeDuration } from './duration.js';
import { ConfigError, invalidField } from './errors.js';
import type { KubeProxyConfiguration } from './types.js';

export const API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KIND = 'KubeProxyConfiguration';
export const DEFAULT_HEALTHZ_PORT = 10256;
export const DEFAULT_METRICS_PORT = 10249;

type PartialDeep<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: PartialDeep<T[K]> | null }
    : T;

/** A configuration as read from a file: any field may be missing or null. */
export type PartialConfiguration = PartialDeep<KubeProxyConfiguration>;

export function defaultConfiguration(): KubeProxyConfiguration {
  return applyDefaults({});
}

/** Adds `:port` to a bare IP (IPv6 in brackets); anything else is returned unchanged. */
export function appendPortIfNeeded(address: string, port: number): string {
  if (splitHostPort(address) !== null) return address;
  const family = isIP(address);
  if (family === 4) return `${address}:${port}`;
  if (family === 6) return `[${address}]:${port}`;
  return address;
}

/** Go net.SplitHostPort: "host:port" or "[v6]:port"; null when the shape is wrong. */
export function splitHostPort(address: string): { host: string; port: string } | null {
  if (address.startsWith('[')) {
    const end = address.indexOf(']');
    if (end < 0 || address[end + 1] !== ':') return null;
    const host = address.slice(1, end);
    const port = address.slice(end + 2);
    if (host.includes('[') || host.includes(']') || port.includes(':')) return null;
    return { host, port };
  }
  const colon = address.lastIndexOf(':');
  if (colon < 0) return null;
  const host = address.slice(0, colon);
  // An unbracketed host may not itself contain a colon (IPv6 needs brackets).
  if (host.includes(':') || host.includes('[') || host.includes(']')) return null;
  return { host, port: address.slice(colon + 1) };
}

function str(v: string | null | undefined): string {
  return v ?? '';
}

function orDefault<T>(v: T | null | undefined, def: T): T {
  return v === null || v === undefined ? def : v;
}

/** Zero-as-unset string: '' or missing → default. */
function strOr(v: string | null | undefined, def: string): string {
  return v === null || v === undefined || v === '' ? def : v;
}

function dur(field: string, v: string | null | undefined, def: string): string {
  const text = v === null || v === undefined || v === '' ? def : v;
  try {
    return normalizeDuration(text);
  } catch (e) {
    throw invalidField(field, text, e instanceof Error ? e.message : String(e));
  }
}

/** Zero-as-unset duration: missing, '' or any zero duration → default. */
function durOr(field: string, v: string | null | undefined, def: string): string {
  const d = dur(field, v, def);
  return d === '0s' ? normalizeDuration(def) : d;
}

function list(v: readonly string[] | null | undefined): string[] | null {
  return v === null || v === undefined ? null : [...v];
}

function record<T>(v: Record<string, T | null | undefined> | null | undefined): Record<string, T> {
  const out: Record<string, T> = {};
  for (const [k, x] of Object.entries(v ?? {})) {
    if (x !== null && x !== undefined) out[k] = x;
  }
  return out;
}

/**
 * Fills every unset field with upstream's default and normalises durations to Go's
 * canonical text. Throws ConfigError for a duration that does not parse.
 */
export function applyDefaults(partial: PartialConfiguration): KubeProxyConfiguration {
  if (partial === null || typeof partial !== 'object') {
    throw new ConfigError(`configuration must be an object, got ${JSON.stringify(partial)}`);
  }
  const p = partial;
  const cc = p.clientConnection ?? {};
  const lg = p.logging ?? {};
  const ipt = p.iptables ?? {};
  const ipvs = p.ipvs ?? {};
  const nft = p.nftables ?? {};
  const ct = p.conntrack ?? {};
  const dl = p.detectLocal ?? {};

  const bindAddress = strOr(p.bindAddress, '0.0.0.0');
  // The default listen addresses follow the family of bindAddress.
  const v6 = isIP(bindAddress) === 6;
  const healthzHost = v6 ? '[::]' : '0.0.0.0';
  const metricsHost = v6 ? '[::1]' : '127.0.0.1';
  const healthz = str(p.healthzBindAddress);
  const metrics = str(p.metricsBindAddress);

  return {
    apiVersion: API_VERSION,
    kind: KIND,
    featureGates: record<boolean>(p.featureGates),
    clientConnection: {
      kubeconfig: str(cc.kubeconfig),
      acceptContentTypes: str(cc.acceptContentTypes),
      contentType: strOr(cc.contentType, 'application/vnd.kubernetes.protobuf'),
      qps: cc.qps ? cc.qps : 5,
      burst: cc.burst ? cc.burst : 10,
    },
    logging: {
      format: strOr(lg.format, 'text'),
      flushFrequency: durOr('logging.flushFrequency', lg.flushFrequency, '5s'),
      verbosity: orDefault(lg.verbosity, 0),
      options: record<unknown>(lg.options as Record<string, unknown> | null | undefined),
    },
    hostnameOverride: str(p.hostnameOverride),
    bindAddress,
    healthzBindAddress:
      healthz === '' ? `${healthzHost}:${DEFAULT_HEALTHZ_PORT}` : appendPortIfNeeded(healthz, DEFAULT_HEALTHZ_PORT),
    metricsBindAddress:
      metrics === '' ? `${metricsHost}:${DEFAULT_METRICS_PORT}` : appendPortIfNeeded(metrics, DEFAULT_METRICS_PORT),
    bindAddressHardFail: orDefault(p.bindAddressHardFail, false),
    enableProfiling: orDefault(p.enableProfiling, false),
    showHiddenMetricsForVersion: str(p.showHiddenMetricsForVersion),
    mode: orDefault(p.mode, ''),
    iptables: {
      masqueradeBit: orDefault(ipt.masqueradeBit, 14),
      masqueradeAll: orDefault(ipt.masqueradeAll, false),
      localhostNodePorts: orDefault(ipt.localhostNodePorts, true),
      syncPeriod: durOr('iptables.syncPeriod', ipt.syncPeriod, '30s'),
      minSyncPeriod: durOr('iptables.minSyncPeriod', ipt.minSyncPeriod, '1s'),
    },
    ipvs: {
      syncPeriod: durOr('ipvs.syncPeriod', ipvs.syncPeriod, '30s'),
      minSyncPeriod: dur('ipvs.minSyncPeriod', ipvs.minSyncPeriod, '0s'),
      scheduler: str(ipvs.scheduler),
      excludeCIDRs: list(ipvs.excludeCIDRs),
      strictARP: orDefault(ipvs.strictARP, false),
      tcpTimeout: dur('ipvs.tcpTimeout', ipvs.tcpTimeout, '0s'),
      tcpFinTimeout: dur('ipvs.tcpFinTimeout', ipvs.tcpFinTimeout, '0s'),
      udpTimeout: dur('ipvs.udpTimeout', ipvs.udpTimeout, '0s'),
    },
    nftables: {
      masqueradeBit: orDefault(nft.masqueradeBit, 14),
      masqueradeAll: orDefault(nft.masqueradeAll, false),
      syncPeriod: durOr('nftables.syncPeriod', nft.syncPeriod, '30s'),
      minSyncPeriod: durOr('nftables.minSyncPeriod', nft.minSyncPeriod, '1s'),
    },
    winkernel: record<unknown>(p.winkernel as Record<string, unknown> | null | undefined),
    detectLocalMode: orDefault(p.detectLocalMode, ''),
    detectLocal: {
      bridgeInterface: str(dl.bridgeInterface),
      interfaceNamePrefix: str(dl.interfaceNamePrefix),
    },
    clusterCIDR: str(p.clusterCIDR),
    nodePortAddresses: list(p.nodePortAddresses),
    oomScoreAdj: orDefault(p.oomScoreAdj, -999),
    conntrack: {
      maxPerCore: orDefault(ct.maxPerCore, 32768),
      min: orDefault(ct.min, 131072),
      tcpEstablishedTimeout: dur('conntrack.tcpEstablishedTimeout', ct.tcpEstablishedTimeout, '24h'),
      tcpCloseWaitTimeout: dur('conntrack.tcpCloseWaitTimeout', ct.tcpCloseWaitTimeout, '1h'),
      tcpBeLiberal: orDefault(ct.tcpBeLiberal, false),
      udpTimeout: dur('conntrack.udpTimeout', ct.udpTimeout, '0s'),
      udpStreamTimeout: dur('conntrack.udpStreamTimeout', ct.udpStreamTimeout, '0s'),
    },
    configSyncPeriod: durOr('configSyncPeriod', p.configSyncPeriod, '15m'),
    portRange: str(p.portRange),
    udpIdleTimeout: durOr('udpIdleTimeout', p.udpIdleTimeout, '250ms'),
    windowsRunAsService: orDefault(p.windowsRunAsService, false),
  };
}
