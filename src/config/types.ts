// KubeProxyConfiguration, kubeproxy.config.k8s.io/v1alpha1, as written in a config file.
// Durations are Go duration strings ("30s", "1m0s"). After defaulting every field is set.

import type { ProxyMode } from '../backend/modes.js';

export type { ProxyMode };
export type LocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix';

export interface ClientConnectionConfiguration {
  kubeconfig: string;
  acceptContentTypes: string;
  contentType: string;
  qps: number;
  burst: number;
}

export interface LoggingConfiguration {
  format: string;
  flushFrequency: string;
  verbosity: number;
  options: Record<string, unknown>;
}

export interface KubeProxyIPTablesConfiguration {
  masqueradeBit: number;
  masqueradeAll: boolean;
  localhostNodePorts: boolean;
  syncPeriod: string;
  minSyncPeriod: string;
}

export interface KubeProxyIPVSConfiguration {
  syncPeriod: string;
  minSyncPeriod: string;
  scheduler: string;
  excludeCIDRs: string[] | null;
  strictARP: boolean;
  tcpTimeout: string;
  tcpFinTimeout: string;
  udpTimeout: string;
}

export interface KubeProxyNFTablesConfiguration {
  masqueradeBit: number;
  masqueradeAll: boolean;
  syncPeriod: string;
  minSyncPeriod: string;
}

export interface KubeProxyConntrackConfiguration {
  maxPerCore: number;
  min: number;
  tcpEstablishedTimeout: string;
  tcpCloseWaitTimeout: string;
  tcpBeLiberal: boolean;
  udpTimeout: string;
  udpStreamTimeout: string;
}

export interface DetectLocalConfiguration {
  bridgeInterface: string;
  interfaceNamePrefix: string;
}

export interface KubeProxyConfiguration {
  apiVersion: 'kubeproxy.config.k8s.io/v1alpha1';
  kind: 'KubeProxyConfiguration';
  featureGates: Record<string, boolean>;
  clientConnection: ClientConnectionConfiguration;
  logging: LoggingConfiguration;
  hostnameOverride: string;
  bindAddress: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  bindAddressHardFail: boolean;
  enableProfiling: boolean;
  showHiddenMetricsForVersion: string;
  /** '' means iptables, as upstream. */
  mode: ProxyMode | '';
  iptables: KubeProxyIPTablesConfiguration;
  ipvs: KubeProxyIPVSConfiguration;
  nftables: KubeProxyNFTablesConfiguration;
  /** Windows-only upstream; accepted and ignored here. */
  winkernel: Record<string, unknown>;
  detectLocalMode: LocalMode | '';
  detectLocal: DetectLocalConfiguration;
  /** Comma-separated CIDRs (one per family at most). */
  clusterCIDR: string;
  nodePortAddresses: string[] | null;
  oomScoreAdj: number;
  conntrack: KubeProxyConntrackConfiguration;
  configSyncPeriod: string;
  portRange: string;
  /** userspace mode: how long an idle UDP session is kept (upstream's udpIdleTimeout). */
  udpIdleTimeout: string;
  windowsRunAsService: boolean;
}
